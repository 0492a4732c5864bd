// Codec micro-benchmarks: memcpy baseline, bitwise diff, diff + encode into delta files, parse + apply, and
// the zstd wrap, over bf16 tensors at RL densities. DS_BENCH_SMOKE=1 shrinks everything for the CTest run.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/zstd_frame.h"

namespace deltasync {
namespace {

bool smoke_mode() {
  const char* v = std::getenv("DS_BENCH_SMOKE");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

// Full mode: 16 tensors of 16 MiB (256 MiB), big enough to defeat the caches like a real model does.
// Smoke mode: 4 x 256 KiB, so the CTest run finishes in well under a second per benchmark.
struct bench_shape {
  size_t tensors;
  size_t rows, cols;  // bf16 elements per tensor = rows * cols
};

const bench_shape& shape() {
  static const bench_shape s = smoke_mode() ? bench_shape{4, 256, 512} : bench_shape{16, 4096, 2048};
  return s;
}

size_t tensor_elems() { return shape().rows * shape().cols; }
size_t tensor_bytes_each() { return tensor_elems() * 2; }
uint64_t dense_bytes() { return uint64_t{shape().tensors} * tensor_bytes_each(); }

// splitmix64: deterministic and fast enough that building 256 MiB of inputs does not dominate start-up.
struct splitmix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Plausible bf16 weights: random sign and mantissa, exponents of magnitudes 2^-8 .. 2^-3, which gives zstd
// and the value bytes the structure real checkpoints have (the high byte is far from uniform).
std::vector<byte_buffer> make_old_tensors() {
  std::vector<byte_buffer> out(shape().tensors);
  splitmix rng{0x5EED'0001};
  for (auto& t : out) {
    t.resize(tensor_bytes_each());
    for (size_t i = 0; i < tensor_elems(); i += 4) {
      const uint64_t r = rng.next();
      for (size_t k = 0; k < 4; ++k) {
        const uint64_t bits = r >> (16 * k);
        const auto sign = static_cast<uint16_t>((bits & 1) << 15);
        const auto exp = static_cast<uint16_t>((119 + (bits >> 1) % 6) << 7);
        const auto mant = static_cast<uint16_t>((bits >> 4) & 0x7F);
        store_le(t.data() + 2 * (i + k), static_cast<uint16_t>(sign | exp | mant));
      }
    }
  }
  return out;
}

const std::vector<byte_buffer>& old_tensors() {
  static const std::vector<byte_buffer> t = make_old_tensors();
  return t;
}

std::string param_name(size_t i) { return "model.layers." + std::to_string(i) + ".mlp.weight"; }

// Everything derived from one density. Benchmarks are registered density-major, so only one set is alive.
struct density_set {
  double density = -1;
  std::vector<byte_buffer> now;
  uint64_t changed = 0;
  std::map<encoding, std::vector<byte_buffer>> files;  // built lazily per encoding
};

density_set& current_set() {
  static density_set s;
  return s;
}

density_set& set_for(double density) {
  density_set& s = current_set();
  if (s.density == density) return s;
  s = density_set{};
  s.density = density;
  const auto& old = old_tensors();
  splitmix rng{0x5EED'0002 + static_cast<uint64_t>(density * 1e6)};
  const uint64_t n = tensor_elems();
  const auto per_tensor = static_cast<uint64_t>(density * static_cast<double>(n) + 0.5);
  for (size_t t = 0; t < old.size(); ++t) {
    byte_buffer now = old[t];
    // Random positions with replacement; a repeat is rare at these densities and the diff counts the truth.
    for (uint64_t k = 0; k < per_tensor; ++k) {
      const uint64_t pos = rng.next() % n;
      const auto flip = static_cast<uint16_t>(1 + rng.next() % 0xFFFF);  // non-zero: a different pattern
      const auto v = static_cast<uint16_t>(load_le<uint16_t>(now.data() + 2 * pos) ^ flip);
      store_le(now.data() + 2 * pos, v);
    }
    s.now.push_back(std::move(now));
  }
  std::vector<uint32_t> pos;
  byte_buffer vals;
  for (size_t t = 0; t < old.size(); ++t) {
    pos.clear();
    vals.clear();
    s.changed += diff_tensor(old[t], s.now[t], 2, pos, vals);
  }
  return s;
}

constexpr uint64_t kBucketPayloadBytes = 64ull << 20;

// Diffs every tensor and packs the deltas into buckets of ~64 MiB payload, as the sender does. Returns false
// (after SkipWithError) when the encoder fails.
bool diff_and_encode(benchmark::State* state, const std::vector<byte_buffer>& old,
                     const std::vector<byte_buffer>& now, encoding enc, std::vector<uint32_t>& pos,
                     byte_buffer& vals, std::vector<byte_buffer>& files) {
  files.clear();
  delta_bucket_builder builder(enc);
  const std::vector<uint64_t> dims = {shape().rows, shape().cols};
  auto flush = [&]() -> bool {
    if (builder.empty()) return true;
    auto r = builder.finish(1);
    if (!r.ok()) {
      if (state != nullptr) state->SkipWithError(r.err().describe().c_str());
      std::fprintf(stderr, "encode failed: %s\n", r.err().describe().c_str());
      return false;
    }
    files.push_back(std::move(r).value());
    return true;
  };
  // add() encodes the positions and copies the values (delta_format.h keeps them in the builder), so one
  // pair of scratch buffers serves every param.
  for (size_t t = 0; t < old.size(); ++t) {
    pos.clear();
    vals.clear();
    if (diff_tensor(old[t], now[t], 2, pos, vals) == 0) continue;  // unchanged params are absent from the file
    if (!builder.can_add(dtype::BF16) && !flush()) return false;
    builder.add(param_delta{param_name(t), dtype::BF16, dims, pos, vals});
    if (builder.payload_bytes() >= kBucketPayloadBytes && !flush()) return false;
  }
  return flush();
}

const std::vector<byte_buffer>& files_for(density_set& s, encoding enc) {
  auto it = s.files.find(enc);
  if (it != s.files.end()) return it->second;
  std::vector<uint32_t> pos;
  byte_buffer vals;
  std::vector<byte_buffer> files;
  diff_and_encode(nullptr, old_tensors(), s.now, enc, pos, vals, files);
  return s.files.emplace(enc, std::move(files)).first->second;
}

uint64_t total_bytes(const std::vector<byte_buffer>& files) {
  uint64_t n = 0;
  for (const auto& f : files) n += f.size();
  return n;
}

void set_density_counters(benchmark::State& state, const density_set& s) {
  state.counters["density"] = s.density;
  state.counters["changed"] = static_cast<double>(s.changed);
}

// ---- benchmarks ----

void bm_memcpy(benchmark::State& state) {
  const auto& old = old_tensors();
  std::vector<byte_buffer> dst(old.size());
  for (size_t t = 0; t < old.size(); ++t) dst[t].assign(old[t].size(), std::byte{0});  // fault pages in first
  for (auto _ : state) {
    for (size_t t = 0; t < old.size(); ++t) std::memcpy(dst[t].data(), old[t].data(), old[t].size());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * dense_bytes()));
}

void bm_diff(benchmark::State& state, double density) {
  density_set& s = set_for(density);
  const auto& old = old_tensors();
  std::vector<uint32_t> pos;
  byte_buffer vals;
  uint64_t changed = 0;
  for (auto _ : state) {
    changed = 0;
    for (size_t t = 0; t < old.size(); ++t) {
      pos.clear();
      vals.clear();
      changed += diff_tensor(old[t], s.now[t], 2, pos, vals);
    }
    benchmark::DoNotOptimize(pos.data());
  }
  if (changed != s.changed) state.SkipWithError("diff count differs from the set-up count");
  // Bytes of one side, so the rate reads directly against BM_memcpy.
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * dense_bytes()));
  set_density_counters(state, s);
}

void bm_diff_encode(benchmark::State& state, double density, encoding enc) {
  density_set& s = set_for(density);
  std::vector<uint32_t> pos;
  byte_buffer vals;
  std::vector<byte_buffer> files;
  for (auto _ : state) {
    if (!diff_and_encode(&state, old_tensors(), s.now, enc, pos, vals, files)) return;
    benchmark::DoNotOptimize(files.data());
  }
  const uint64_t wire = total_bytes(files);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * dense_bytes()));
  set_density_counters(state, s);
  state.counters["wire_bytes"] = static_cast<double>(wire);
  state.counters["files"] = static_cast<double>(files.size());
  state.counters["wire_bytes_per_changed"] = s.changed == 0 ? 0.0 : static_cast<double>(wire) / static_cast<double>(s.changed);
}

void bm_decode_apply(benchmark::State& state, double density, encoding enc) {
  density_set& s = set_for(density);
  const auto& files = files_for(s, enc);
  if (files.size() == 0 && s.changed != 0) {
    state.SkipWithError("encoding failed");
    return;
  }
  // Applying is an idempotent overwrite, so one copy of the old weights serves every iteration.
  std::vector<byte_buffer> store = old_tensors();
  std::map<std::string, size_t, std::less<>> index;
  for (size_t t = 0; t < store.size(); ++t) index.emplace(param_name(t), t);
  auto apply_all = [&]() -> bool {
    for (const auto& file : files) {
      auto parsed = parse_delta_file(file);
      if (!parsed.ok()) {
        state.SkipWithError(parsed.err().describe().c_str());
        return false;
      }
      for (const auto& p : parsed->manifest.params) {
        const auto it = index.find(p.name);
        if (it == index.end()) {
          state.SkipWithError(("unknown param " + p.name).c_str());
          return false;
        }
        const status st = apply_param(*parsed, p, store[it->second]);
        if (!st.ok()) {
          state.SkipWithError(st.err().describe().c_str());
          return false;
        }
      }
    }
    return true;
  };
  // A benchmark of a wrong result is worthless: check the round trip once, outside the timing.
  if (!apply_all()) return;
  for (size_t t = 0; t < store.size(); ++t) {
    if (store[t] != s.now[t]) {
      state.SkipWithError(("decode+apply did not reproduce tensor " + std::to_string(t)).c_str());
      return;
    }
  }
  for (auto _ : state) {
    if (!apply_all()) return;
    benchmark::ClobberMemory();
  }
  const uint64_t wire = total_bytes(files);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * wire));
  set_density_counters(state, s);
  state.counters["wire_bytes"] = static_cast<double>(wire);
  state.counters["wire_bytes_per_changed"] = s.changed == 0 ? 0.0 : static_cast<double>(wire) / static_cast<double>(s.changed);
  // The dense-equivalent rate: how fast the receiver moves the model forward, comparable to BM_memcpy.
  state.counters["dense_bytes_per_second"] =
      benchmark::Counter(static_cast<double>(dense_bytes()), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1024);
}

// The limit for decode+apply: a bare scatter of already-decoded positions and values into the same tensors,
// no decoding, no checks, no checksum. Bytes processed are the `indices` wire bytes, so the ratio
// BM_decode_apply/indices : BM_scatter_limit is the codec's overhead over the memory traffic of the scatter.
void bm_scatter_limit(benchmark::State& state, double density) {
  density_set& s = set_for(density);
  const auto& old = old_tensors();
  std::vector<std::vector<uint32_t>> pos(old.size());
  std::vector<byte_buffer> vals(old.size());
  for (size_t t = 0; t < old.size(); ++t) diff_tensor(old[t], s.now[t], 2, pos[t], vals[t]);
  std::vector<byte_buffer> store = old;
  for (auto _ : state) {
    for (size_t t = 0; t < store.size(); ++t) {
      std::byte* dest = store[t].data();
      const std::byte* v = vals[t].data();
      const uint32_t* p = pos[t].data();
      for (size_t i = 0, n = pos[t].size(); i < n; ++i) std::memcpy(dest + 2 * uint64_t{p[i]}, v + 2 * i, 2);
    }
    benchmark::ClobberMemory();
  }
  const uint64_t wire = total_bytes(files_for(s, encoding::indices));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * wire));
  set_density_counters(state, s);
}

void bm_zstd_wrap(benchmark::State& state, double density) {
  density_set& s = set_for(density);
  const auto& files = files_for(s, encoding::deltas);
  uint64_t out_bytes = 0;
  for (auto _ : state) {
    out_bytes = 0;
    for (const auto& f : files) {
      auto r = zstd_wrap(f, 1);
      if (!r.ok()) {
        state.SkipWithError(r.err().describe().c_str());
        return;
      }
      out_bytes += r->size();
    }
  }
  const uint64_t in_bytes = total_bytes(files);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in_bytes));
  set_density_counters(state, s);
  state.counters["input_bytes"] = static_cast<double>(in_bytes);
  state.counters["ratio"] = out_bytes == 0 ? 0.0 : static_cast<double>(in_bytes) / static_cast<double>(out_bytes);
}

std::string density_label(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "density:%g%%", d * 100);
  return buf;
}

void register_all() {
  benchmark::RegisterBenchmark("BM_memcpy", bm_memcpy)->Unit(benchmark::kMillisecond);
  const double densities[] = {0.001, 0.01, 0.03, 0.10};
  const encoding encodings[] = {encoding::indices, encoding::deltas, encoding::deltas_zstd};
  // Density-major, so each density's inputs are built once and dropped before the next.
  for (const double d : densities) {
    const std::string dl = density_label(d);
    benchmark::RegisterBenchmark(("BM_diff/" + dl).c_str(), bm_diff, d)->Unit(benchmark::kMillisecond);
    for (const encoding e : encodings) {
      const std::string en(encoding_name(e));
      benchmark::RegisterBenchmark(("BM_diff_encode/" + en + "/" + dl).c_str(), bm_diff_encode, d, e)
          ->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark(("BM_scatter_limit/" + dl).c_str(), bm_scatter_limit, d)
        ->Unit(benchmark::kMillisecond);
    for (const encoding e : encodings) {
      const std::string en(encoding_name(e));
      benchmark::RegisterBenchmark(("BM_decode_apply/" + en + "/" + dl).c_str(), bm_decode_apply, d, e)
          ->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark(("BM_zstd_wrap/" + dl).c_str(), bm_zstd_wrap, d)->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace deltasync

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  deltasync::register_all();
  benchmark::AddCustomContext("dense_bytes", std::to_string(deltasync::dense_bytes()));
  benchmark::AddCustomContext("mode", deltasync::smoke_mode() ? "smoke" : "full");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
