// Decode + apply of a sync's files into the device store (issue 14 item 3), in one run:
//   device   cuda_weight_store as it ships: raw payload bytes through the pinned staging ring, positions
//            decoded, checked and scattered on the device (sync/device_apply.h);
//   host     the previous path (device_apply_options::host_decode): positions decoded and checked on the host,
//            uploaded as uint32, old values copied back into a host undo record;
//   limit    a pinned host -> device copy of the same file bytes (the wire's bytes crossing PCIe once).
// Data: the layout of a synthetic model (--model, default llama3.2-1b), random bf16 bits, --density of the
// elements changed (uniform positions), packed as the Sender packs them (512 MiB buckets) in slime `deltas`,
// slime `indices` and native/2 `deltas` files, in memory. Each figure: median (min..max) of --reps applies of
// every file's params by --threads workers (the receiver's per-param jobs, biggest first), each followed by an
// untimed rollback; the first apply of each path is verified against the new tensors' XXH3-128. "parse" is the
// host parse with checksum/payload-hash verification, the same for both paths.
// DS_BENCH_SMOKE=1 or --smoke: the tiny model, one rep. Without a device: SKIP, exit 77.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "codec/delta_format.h"
#include "gpu/gpu.h"
#include "sync/cuda_weight_store.h"
#include "sync/synthetic_model.h"

using namespace deltasync;

namespace {

#define CK(x)                                                                \
  do {                                                                       \
    const auto& r_ = (x);                                                    \
    if (!r_.ok()) {                                                          \
      std::fprintf(stderr, "FAILED %s: %s\n", #x, r_.err().message.c_str()); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

struct figure {
  std::vector<double> s;
  double median() const {
    auto v = s;
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
  }
  double min() const { return s.empty() ? 0 : *std::min_element(s.begin(), s.end()); }
  double max() const { return s.empty() ? 0 : *std::max_element(s.begin(), s.end()); }
};

template <typename F>
void parallel(unsigned threads, size_t n, F f) {
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (size_t i = t; i < n; i += threads) f(i);
    });
  for (auto& t : ts) t.join();
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = std::getenv("DS_BENCH_SMOKE") != nullptr && std::string(std::getenv("DS_BENCH_SMOKE")) == "1";
  std::string model = "llama3.2-1b";
  double density = 0.012;
  int reps = 7;
  unsigned threads = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--smoke") smoke = true;
    else if (a == "--model") model = next();
    else if (a == "--density") density = std::stod(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--threads") threads = static_cast<unsigned>(std::stoul(next()));
    else {
      std::fprintf(stderr, "usage: device_apply_bench [--smoke] [--model M] [--density D] [--reps N] [--threads T]\n");
      return 2;
    }
  }
  if (smoke) {
    model = "tiny";
    reps = 1;
  }
  if (auto ok = gpu::available(); !ok) {
    std::printf("SKIP: %s\n", ok.err().message.c_str());
    return 77;
  }
  auto layout = synthetic_model(model);
  CK(layout);
  const unsigned gen_threads = std::max(1u, std::thread::hardware_concurrency());

  // Base and new tensors, and each tensor's changed positions.
  const size_t n = layout->tensors.size();
  std::vector<store_tensor> desc(n);
  std::vector<byte_buffer> base(n), next(n);
  std::vector<std::vector<uint32_t>> changed(n);
  const uint64_t threshold = static_cast<uint64_t>(density * 18446744073709551615.0);
  parallel(gen_threads, n, [&](size_t i) {
    const auto& t = layout->tensors[i];
    const uint64_t numel = t.numel();
    desc[i] = store_tensor{t.name, dtype::BF16, t.shape, numel, numel * 2};
    base[i].resize(numel * 2);
    for (uint64_t k = 0; k < numel; k += 4) {
      const uint64_t v = mix(i * 0x100000000ull + k);
      std::memcpy(base[i].data() + 2 * k, &v, std::min<uint64_t>(8, 2 * (numel - k)));
    }
    next[i] = base[i];
    for (uint64_t k = 0; k < numel; ++k)
      if (mix(~(i * 0x100000000ull + k)) < threshold) {
        changed[i].push_back(static_cast<uint32_t>(k));
        next[i][2 * k] ^= std::byte{0x40};
      }
  });
  uint64_t params = 0, changes = 0;
  for (size_t i = 0; i < n; ++i) {
    params += desc[i].numel;
    changes += changed[i].size();
  }

  struct kind {
    const char* label;
    encoding enc;
    bool native;
  };
  const kind kinds[] = {{"slime deltas", encoding::deltas, false},
                        {"slime indices", encoding::indices, false},
                        {"native/2 deltas", encoding::deltas, true}};
  const uint64_t bucket_bytes = 512ull << 20;

  loaded_tensors lt;
  for (size_t i = 0; i < n; ++i) lt.add(desc[i], byte_buffer(base[i]));
  auto store_r = cuda_weight_store::from_tensors(std::move(lt), 0);
  CK(store_r);
  auto store = std::move(store_r).value();
  std::vector<digest128> want(n);
  parallel(gen_threads, n, [&](size_t i) { want[i] = xxh3_128(next[i]); });

  std::printf("device_apply_bench: %s, %s, %zu tensors, %.1fM bf16 parameters, %.3f%% changed (%llu), %u threads, %d reps\n",
              gpu::device_description().c_str(), model.c_str(), n, static_cast<double>(params) / 1e6,
              100.0 * static_cast<double>(changes) / static_cast<double>(params),
              static_cast<unsigned long long>(changes), threads, reps);

  for (const kind& k : kinds) {
    // The files, as the Sender packs them.
    std::vector<byte_buffer> files;
    {
      delta_bucket_builder b(k.enc);
      native_fields nf;
      nf.base_version = 0;
      nf.records = k.native;
      auto flush = [&] {
        if (b.empty()) return;
        auto f = b.finish(1, 4096, k.native ? &nf : nullptr);
        CK(f);
        files.push_back(std::move(f).value());
        nf.tensor_digests.clear();
      };
      for (size_t i = 0; i < n; ++i) {
        if (changed[i].empty()) continue;
        if (b.payload_bytes() + changed[i].size() * 6 > bucket_bytes) flush();
        nf.tensor_digests[desc[i].name] = want[i];
        byte_buffer vals(changed[i].size() * 2);
        for (size_t q = 0; q < changed[i].size(); ++q) std::memcpy(vals.data() + 2 * q, next[i].data() + 2 * changed[i][q], 2);
        b.add(param_delta{desc[i].name, dtype::BF16, desc[i].shape, changed[i], vals});
      }
      flush();
    }
    uint64_t wire = 0;
    for (const auto& f : files) wire += f.size();
    const double wire_d = static_cast<double>(wire);

    // The limit: the wire bytes from pinned memory to the device.
    figure h2d;
    {
      auto pinned = gpu::pinned_buffer::allocate(wire);
      auto dev = gpu::device_buffer::allocate(wire);
      CK(pinned);
      CK(dev);
      gpu::stream s;
      for (int r = 0; r < reps + 1; ++r) {
        const double t0 = now_s();
        CK(gpu::copy_h2d(dev->data(), pinned->data(), wire, s));
        CK(s.synchronize());
        if (r > 0) h2d.s.push_back(now_s() - t0);
      }
    }

    figure parse;
    std::vector<delta_file> parsed;
    for (int r = 0; r < reps; ++r) {
      parsed.clear();
      const double t0 = now_s();
      for (const auto& f : files) {
        auto p = parse_delta_file(f);
        CK(p);
        parsed.push_back(std::move(p).value());
      }
      parse.s.push_back(now_s() - t0);
    }

    for (bool host_decode : {false, true}) {
      device_apply_options o;
      o.host_decode = host_decode;
      store->engine().set_options(o);
      figure apply, rollback;
      for (int r = 0; r < reps + 1; ++r) {  // rep 0 warms the lanes' buffers and is verified
        std::vector<undo_log> undos(threads);
        const double t0 = now_s();
        for (const auto& f : parsed) {
          // Biggest first, round robin over the workers: the receiver's balance, closely enough.
          std::vector<size_t> order(f.manifest.params.size());
          for (size_t q = 0; q < order.size(); ++q) order[q] = q;
          std::sort(order.begin(), order.end(),
                    [&](size_t a, size_t b) { return f.manifest.params[a].changed() > f.manifest.params[b].changed(); });
          std::vector<std::thread> ts;
          for (unsigned t = 0; t < threads; ++t)
            ts.emplace_back([&, t] {
              for (size_t q = t; q < order.size(); q += threads) {
                const param_entry& p = f.manifest.params[order[q]];
                CK(store->apply(*store->find(p.name), f, p, undos[t]));
              }
            });
          for (auto& t : ts) t.join();
        }
        const double t1 = now_s();
        if (r == 0) {
          for (size_t i = 0; i < n; ++i)
            if (!changed[i].empty() && !(store->digest(i) == want[i])) {
              std::fprintf(stderr, "FAILED: %s: tensor %s differs after apply\n", k.label, desc[i].name.c_str());
              return 1;
            }
        } else {
          apply.s.push_back(t1 - t0);
        }
        const double t2 = now_s();
        for (auto& u : undos) store->rollback(u);
        if (r > 0) rollback.s.push_back(now_s() - t2);
      }
      if (!smoke) {
        // After the rollbacks the store holds the base again.
        for (size_t i = 0; i < n; ++i)
          if (!changed[i].empty() && !(store->digest(i) == xxh3_128(base[i]))) {
            std::fprintf(stderr, "FAILED: %s: tensor %s differs after rollback\n", k.label, desc[i].name.c_str());
            return 1;
          }
      }
      const char* path = host_decode ? "host-decode" : "device-decode";
      std::printf("  %-16s %-13s files %zu  wire %.1f MB  apply %.2f ms (%.2f..%.2f)  %.2f GB/s of wire  "
                  "parse %.2f ms  sync (parse+apply) %.2f ms  rollback %.2f ms  pinned H2D of the wire %.2f ms (%.1f GB/s)\n",
                  k.label, path, files.size(), wire_d / 1e6, apply.median() * 1e3, apply.min() * 1e3, apply.max() * 1e3,
                  wire_d / apply.median() / 1e9, parse.median() * 1e3, (parse.median() + apply.median()) * 1e3,
                  rollback.median() * 1e3, h2d.median() * 1e3, wire_d / h2d.median() / 1e9);
      std::printf("{\"bench\":\"device_apply\",\"model\":\"%s\",\"kind\":\"%s\",\"path\":\"%s\",\"wire_bytes\":%llu,"
                  "\"apply_ms\":%.3f,\"apply_min_ms\":%.3f,\"apply_max_ms\":%.3f,\"parse_ms\":%.3f,\"rollback_ms\":%.3f,"
                  "\"h2d_ms\":%.3f}\n",
                  model.c_str(), k.label, path, static_cast<unsigned long long>(wire), apply.median() * 1e3,
                  apply.min() * 1e3, apply.max() * 1e3, parse.median() * 1e3, rollback.median() * 1e3,
                  h2d.median() * 1e3);
    }
  }
  return 0;
}
