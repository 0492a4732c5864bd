// Every encoding on the AdamW corpus, one core: bytes per changed element, encode and decode + apply speed, next
// to the empirical entropy of the positions and the values (bench/RESULTS.md "compact"). Plain main.
//
// For each learning rate (density follows): an AdamW trainer (sync/synthetic_model.h) takes `warm` steps, its
// bf16 view is the base, one more step gives the change set. Per encoding the change set is written as native
// files by delta_bucket_builder (encode: add + finish, digests precomputed and not timed) and read back by
// parse_delta_file + apply_param into a copy of the base (decode + apply), checked bit for bit against the
// trainer. For compact the stream codec alone is timed too (compact::encode / compact::decode to arrays, no
// container, no apply). Baseline in the same run: memcpy of the changed elements' new values (a copy of the
// dense bytes would be the GPU figure). Medians of `reps` runs.
//
// Usage: encoding_bench [MODEL [LR,LR,... [WARM [REPS]]]]; DS_BENCH_SMOKE=1 runs the tiny model once.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "codec/compact.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "sync/synthetic_model.h"

using namespace deltasync;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct tensor_change {
  std::vector<uint32_t> positions;
  byte_buffer values, old_values;
};

struct enc_result {
  uint64_t wire_bytes = 0;
  double encode_s = 0, decode_s = 0;
  bool exact = true;
};

enc_result run_encoding(encoding enc, const model_layout& layout, const std::vector<byte_buffer>& base,
                        const rl_trainer_sim& sim, const std::vector<tensor_change>& changes,
                        const native_fields& native) {
  enc_result r;
  std::vector<byte_buffer> files;
  const double t0 = now_s();
  delta_bucket_builder b(enc);
  constexpr uint64_t kBucket = 512ull << 20;
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    const auto& t = layout.tensors[i];
    const auto& c = changes[i];
    if (c.positions.empty()) continue;
    const param_delta p{t.name, t.type, t.shape, c.positions, c.values};
    if (enc == encoding::compact)
      b.add_compact(p, c.old_values);
    else
      b.add(p);
    if (b.payload_bytes() >= kBucket) files.push_back(std::move(b.finish(2, 8, &native)).value());
  }
  if (!b.empty()) files.push_back(std::move(b.finish(2, 8, &native)).value());
  r.encode_s = now_s() - t0;
  for (const auto& f : files) r.wire_bytes += f.size();

  std::vector<byte_buffer> recv = base;
  const double t1 = now_s();
  for (const auto& bytes : files) {
    auto f = parse_delta_file(bytes);
    if (!f.ok()) {
      std::fprintf(stderr, "parse: %s\n", f.err().describe().c_str());
      std::exit(1);
    }
    for (const auto& p : f->manifest.params) {
      size_t i = 0;
      while (layout.tensors[i].name != p.name) ++i;
      if (auto st = apply_param(*f, p, recv[i]); !st.ok()) {
        std::fprintf(stderr, "apply: %s\n", st.err().describe().c_str());
        std::exit(1);
      }
    }
  }
  r.decode_s = now_s() - t1;
  for (size_t i = 0; i < recv.size(); ++i)
    if (recv[i].size() != sim.bf16(i).size() || std::memcmp(recv[i].data(), sim.bf16(i).data(), recv[i].size()) != 0)
      r.exact = false;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = std::getenv("DS_BENCH_SMOKE") != nullptr;
  std::string model = smoke ? "tiny" : "llama3.2-1b@0.125";
  std::vector<double> lrs = smoke ? std::vector<double>{1e-6} : std::vector<double>{3e-7, 1e-6, 2e-6, 6e-6, 1e-4};
  int warm = 1, reps = smoke ? 1 : 3;
  if (argc > 1) model = argv[1];
  if (argc > 2) {
    lrs.clear();
    for (const char* p = argv[2]; *p;) {
      char* end = nullptr;
      lrs.push_back(std::strtod(p, &end));
      p = *end == ',' ? end + 1 : end;
    }
  }
  if (argc > 3) warm = std::atoi(argv[3]);
  if (argc > 4) reps = std::atoi(argv[4]);
  auto layout = synthetic_model(model);
  if (!layout.ok()) return std::fprintf(stderr, "%s\n", layout.err().describe().c_str()), 2;

  std::printf("encoding_bench: model %s (%.1fM params), AdamW corpus, %d warm-up step(s), median of %d, one core\n",
              model.c_str(), static_cast<double>(layout->parameters()) / 1e6, warm, reps);
  std::printf("%-8s %8s %-12s %8s %10s %10s %10s %10s\n", "lr", "density", "encoding", "B/chg", "enc M/s",
              "dec+apl M/s", "codec enc", "codec dec");
  int failures = 0;
  for (double lr : lrs) {
    trainer_options topt;
    topt.optimizer = sim_optimizer::adamw;
    rl_trainer_sim sim(*layout, 1, 2, topt);
    for (int s = 0; s < warm; ++s) sim.step(lr);
    std::vector<byte_buffer> base;
    for (size_t i = 0; i < sim.tensor_count(); ++i) base.emplace_back(sim.bf16(i).begin(), sim.bf16(i).end());
    sim.step(lr);

    std::vector<tensor_change> changes(sim.tensor_count());
    native_fields native;
    native.base_version = 1;
    uint64_t changed = 0;
    double pos_h = 0, val_h = 0;
    byte_buffer diffs;
    for (size_t i = 0; i < sim.tensor_count(); ++i) {
      auto& c = changes[i];
      changed += diff_tensor(base[i], sim.bf16(i), 2, c.positions, c.values);
      c.old_values.resize(c.values.size());
      for (size_t k = 0; k < c.positions.size(); ++k)
        std::memcpy(c.old_values.data() + 2 * k, base[i].data() + 2 * uint64_t{c.positions[k]}, 2);
      native.tensor_digests[layout->tensors[i].name] = xxh3_128(sim.bf16(i));
      pos_h += compact::position_entropy_bits(base[i].size() / 2, c.positions.size());
      diffs.resize(c.values.size());
      for (size_t k = 0; k < c.positions.size(); ++k)
        store_le<uint16_t>(diffs.data() + 2 * k, static_cast<uint16_t>(load_le<uint16_t>(c.values.data() + 2 * k) -
                                                                      load_le<uint16_t>(c.old_values.data() + 2 * k)));
      val_h += compact::value_entropy_bits(diffs, 2);
    }
    const double n = static_cast<double>(changed);
    const double density = n / static_cast<double>(layout->parameters());
    if (changed == 0) {
      std::printf("%-8.1e %7.3f%% (nothing changed)\n", lr, density * 100);
      continue;
    }

    // The stream codec alone (compact only): encode and decode every tensor's stream, no container.
    std::vector<double> cenc, cdec;
    compact::encode_stats st;
    for (int r = 0; r < reps; ++r) {
      std::vector<byte_buffer> streams(changes.size());
      compact::encode_stats s1;
      double t0 = now_s();
      for (size_t i = 0; i < changes.size(); ++i)
        compact::encode(changes[i].positions, changes[i].old_values, changes[i].values, 2, streams[i], &s1);
      cenc.push_back(now_s() - t0);
      st = s1;
      std::vector<uint32_t> pos;
      byte_buffer d;
      t0 = now_s();
      for (size_t i = 0; i < changes.size(); ++i)
        if (!compact::decode(streams[i], changes[i].positions.size(), base[i].size() / 2, 2, pos, d).ok()) ++failures;
      cdec.push_back(now_s() - t0);
    }
    // Baseline: copying the changed elements' new values (what any encoding must at least touch).
    std::vector<double> copy;
    for (int r = 0; r < reps; ++r) {
      byte_buffer sink(changed * 2);
      const double t0 = now_s();
      size_t at = 0;
      for (const auto& c : changes) {
        if (!c.values.empty()) std::memcpy(sink.data() + at, c.values.data(), c.values.size());
        at += c.values.size();
      }
      copy.push_back(now_s() - t0);
      if (sink.size() > 0 && sink[0] == std::byte{0x42} && sink.back() == std::byte{0x17}) std::printf(" ");
    }

    for (encoding enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd, encoding::compact}) {
      std::vector<double> e, d;
      enc_result last;
      for (int r = 0; r < reps; ++r) {
        last = run_encoding(enc, *layout, base, sim, changes, native);
        e.push_back(last.encode_s);
        d.push_back(last.decode_s);
        if (!last.exact) ++failures;
      }
      const bool c = enc == encoding::compact;
      std::printf("%-8.1e %7.3f%% %-12s %8.3f %10.1f %10.1f", lr, density * 100, std::string(encoding_name(enc)).c_str(),
                  static_cast<double>(last.wire_bytes) / n, n / median(e) / 1e6, n / median(d) / 1e6);
      if (c)
        std::printf(" %10.1f %10.1f%s\n", n / median(cenc) / 1e6, n / median(cdec) / 1e6, last.exact ? "" : " MISMATCH");
      else
        std::printf(" %10s %10s%s\n", "", "", last.exact ? "" : " MISMATCH");
    }
    std::printf("%-8.1e %7.3f%% entropy: positions %.3f B/chg, values %.3f B/chg (order-0 of new - old in bf16 bits); "
                "compact positions %.3f B/chg (%.3fx), values %.3f B/chg, overhead %.3f B/chg; memcpy of the new values "
                "%.0f M/s\n",
                lr, density * 100, pos_h / 8 / n, val_h / 8 / n, static_cast<double>(st.position_bits) / 8 / n,
                static_cast<double>(st.position_bits) / pos_h, static_cast<double>(st.value_bits) / 8 / n,
                static_cast<double>(st.overhead_bits) / 8 / n, n / median(copy) / 1e6);
    std::fflush(stdout);
  }
  return failures == 0 ? 0 : 1;
}
