// The GPU path against its physical limits, measured in the same run (bench/RESULTS.md, docs/gpu.md):
//   limits   large device-to-device copy (HBM: bytes read + written), pinned H2D and D2H copies,
//            file write and read throughput of the same io engine (fdatasync'ed write; read after dropping
//            the page cache where allowed);
//   path     diff+encode with the snapshot on the device (every byte read and written counted), with the
//            snapshot in pinned host memory (vs pinned H2D), device XXH3-128, GPU -> pinned -> file (vs the
//            host write of the same bytes), apply of the file into the device weight store (vs disk read).
// Data: `--gib` GiB of bf16 in `--tensors` tensors, random bits, `--density` of the elements changed.
// Medians of `--reps` runs after a warm-up. `--json FILE` writes every figure (bench/torch_baseline.py reads
// it to print its ratio). DS_BENCH_SMOKE=1 or --smoke shrinks everything to a few MiB. Without a device it
// prints SKIP and exits 77.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "codec/delta_format.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "sync/cuda_weight_store.h"
#include "sync/gpu_delta_writer.h"
#include "sync/sender.h"

using namespace deltasync;

namespace {

#define CK(x)                                                                     \
  do {                                                                            \
    auto r_ = (x);                                                                \
    if (!r_.ok()) {                                                               \
      std::fprintf(stderr, "FAILED %s: %s\n", #x, r_.err().message.c_str());      \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)
#define CU(x)                                                                           \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "FAILED %s: %s\n", #x, cudaGetErrorString(e_));              \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

__device__ __forceinline__ uint32_t mix32(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// snap = random bf16 bits; cur = snap with `threshold / 2^32` of the elements changed in one mantissa bit.
__global__ void fill_kernel(uint16_t* snap, uint16_t* cur, uint64_t n, uint32_t threshold, uint64_t seed) {
  for (uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += uint64_t{gridDim.x} * blockDim.x) {
    const uint16_t v = static_cast<uint16_t>(mix32(i * 2 + seed));
    snap[i] = v;
    cur[i] = mix32(i * 2 + 1 + seed) < threshold ? static_cast<uint16_t>(v ^ (1u << (mix32(i + seed * 7) % 7))) : v;
  }
}

// Streams both inputs and keeps only an XOR of them (the read limit of a kernel that writes next to nothing).
__global__ void read_kernel(const uint4* a, const uint4* b, uint64_t n, unsigned long long* sink) {
  uint32_t x = 0;
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  for (uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += 4 * stride) {
    uint4 u[4], v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint64_t j = i + k * stride;
      u[k] = j < n ? __ldcs(a + j) : make_uint4(0, 0, 0, 0);
      v[k] = j < n ? __ldcs(b + j) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) x |= (u[k].x ^ v[k].x) | (u[k].y ^ v[k].y) | (u[k].z ^ v[k].z) | (u[k].w ^ v[k].w);
  }
  if (x == 0xFFFFFFFFu) sink[0] = x;  // never true in practice; keeps the loads
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

struct figure {
  double median_s = 0, min_s = 0, max_s = 0, bytes = 0;
  double gbps() const { return median_s > 0 ? bytes / median_s / 1e9 : 0; }
};

template <typename F>
figure measure(int reps, double bytes, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) t.push_back(f());
  figure fg;
  fg.median_s = median(t);
  fg.min_s = *std::min_element(t.begin(), t.end());
  fg.max_s = *std::max_element(t.begin(), t.end());
  fg.bytes = bytes;
  return fg;
}

bool drop_caches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  if (!f) return false;
  f << "1\n";
  f.flush();
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  double gib = 8, density = 0.01;
  int tensors = 32, reps = 5;
  std::string dir = "/tmp/deltasync-gpu-bench", json_path;
  bool smoke = std::getenv("DS_BENCH_SMOKE") != nullptr;
  bool diff_only = false;  // --diff-only: the copy limit and the device-snapshot diff variants, then exit
  std::string sizes_path;  // --sizes FILE: also diff a real model's tensors (one element count per line)
  uint64_t bucket_mib = 512;  // ... in buckets of at least this many MiB, as the Sender and slime cut them
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--gib") gib = std::stod(next());
    else if (a == "--density") density = std::stod(next());
    else if (a == "--tensors") tensors = std::stoi(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--dir") dir = next();
    else if (a == "--json") json_path = next();
    else if (a == "--smoke") smoke = true;
    else if (a == "--diff-only") diff_only = true;
    else if (a == "--sizes") sizes_path = next();
    else if (a == "--bucket-mib") bucket_mib = std::stoull(next());
    else if (a.rfind("--benchmark", 0) == 0) {}  // tolerated: the smoke test passes Google Benchmark flags
    else { std::fprintf(stderr, "unknown argument %s\n", a.c_str()); return 2; }
  }
  if (auto st = gpu::available(); !st) {
    std::printf("SKIP: %s\n", st.err().message.c_str());
    return 77;  // CTest's SKIP_RETURN_CODE: a visible skip
  }
  if (smoke) { gib = 1.0 / 64; tensors = 4; reps = 2; }
  std::printf("device: %s\n", gpu::device_description().c_str());
  const uint64_t total_elems = static_cast<uint64_t>(gib * double(1ull << 30)) / 2 / tensors / 4096 * 4096 * tensors;
  const uint64_t per = total_elems / tensors;
  const uint64_t nbytes = total_elems * 2;
  std::printf("data: %.2f GiB bf16 in %d tensors of %llu elements, density %.4f, %d reps (median)\n",
              double(nbytes) / double(1ull << 30), tensors, (unsigned long long)per, density, reps);
  std::map<std::string, double> out;

  gpu::stream s;
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  auto cur = std::move(gpu::device_buffer::allocate(nbytes)).value();
  auto snap = std::move(gpu::device_buffer::allocate(nbytes)).value();
  auto copy = std::move(gpu::device_buffer::allocate(nbytes)).value();
  fill_kernel<<<132 * 16, 256, 0, cs>>>(snap.as<uint16_t>(), cur.as<uint16_t>(), total_elems,
                                        static_cast<uint32_t>(density * 4294967296.0), 12345);
  CU(cudaGetLastError());
  CK(s.synchronize());

  gpu::event e0, e1;
  auto time_events = [&](auto&& enqueue) {
    CK(e0.record(s));
    enqueue();
    CK(e1.record(s));
    CK(e1.synchronize());
    return gpu::event::elapsed_ms(e0, e1) / 1e3;
  };
  // ---- limits ----
  const figure hbm = measure(reps, 2.0 * nbytes, [&] { return time_events([&] { CK(gpu::copy_d2d(copy.data(), cur.data(), nbytes, s)); }); });
  auto pinned = std::move(gpu::pinned_buffer::allocate(nbytes)).value();
  const figure d2h = measure(reps, double(nbytes), [&] { return time_events([&] { CK(gpu::copy_d2h(pinned.data(), snap.data(), nbytes, s)); }); });
  const figure h2d = measure(reps, double(nbytes), [&] { return time_events([&] { CK(gpu::copy_h2d(copy.data(), pinned.data(), nbytes, s)); }); });
  // pinned now holds the snapshot (the last D2H).

  // ---- diff + encode ----
  std::vector<gpu::diff_input> dev_in, host_in;
  for (int t = 0; t < tensors; ++t) {
    const uint64_t off = uint64_t(t) * per * 2;
    dev_in.push_back({cur.as<std::byte>() + off, snap.as<std::byte>() + off, per, 2, false});
    host_in.push_back({cur.as<std::byte>() + off, pinned.as<std::byte>() + off, per, 2, true});
  }
  gpu::diff_encoder enc;  // the default: tile_compact
  gpu::encoded_layout layout;
  const figure diff_dev = measure(reps, 0, [&] {
    const double t0 = now_s();
    layout = std::move(enc.encode(dev_in, encoding::deltas, s)).value();
    return now_s() - t0;
  });
  uint64_t changed = 0;
  for (uint64_t c : layout.counts) changed += c;
  auto download_bytes = [&](const void* src, uint64_t n) {
    std::vector<std::byte> v(n);
    CK(gpu::copy_d2h(v.data(), src, n, s));
    CK(s.synchronize());
    return v;
  };
  const std::vector<std::byte> want_payload = download_bytes(enc.payload(), layout.payload_bytes());
  // The other kernel shapes, for comparison; each payload must equal the default's byte for byte (the tests
  // check every shape against the CPU encoder).
  struct variant_figure {
    std::string name;
    figure f;
  };
  std::vector<variant_figure> variants;
  auto variant = [&](const std::string& name, gpu::diff_method method, int threads, int bpsm) {
    gpu::diff_encoder_options o;
    o.method = method;
    o.block_threads = threads;
    o.blocks_per_sm = bpsm;
    gpu::diff_encoder e(o);
    gpu::encoded_layout l;
    const figure f = measure(reps, 0, [&] {
      const double t0 = now_s();
      l = std::move(e.encode(dev_in, encoding::deltas, s)).value();
      return now_s() - t0;
    });
    if (l.payload_bytes() != layout.payload_bytes() || download_bytes(e.payload(), l.payload_bytes()) != want_payload) {
      std::fprintf(stderr, "FAILED: the %s payload differs from the default's\n", name.c_str());
      std::exit(1);
    }
    variants.push_back({name, f});
    return f;
  };
  variant("tile-compact, 4 blocks/SM", gpu::diff_method::tile_compact, 512, 4);
  const figure diff_mask = variant("mask two-pass, 4 blocks/SM", gpu::diff_method::mask_two_pass, 512, 4);
  variant("mask two-pass, 3 blocks/SM", gpu::diff_method::mask_two_pass, 512, 3);
  const figure diff_dev1p = variant("single pass 512 x 4", gpu::diff_method::single_pass, 512, 4);
  variant("single pass 512 x 3", gpu::diff_method::single_pass, 512, 3);
  variant("single pass 256 x 8", gpu::diff_method::single_pass, 256, 8);
  const figure diff_idx = measure(reps, 0, [&] {
    const double t0 = now_s();
    (void)std::move(enc.encode(dev_in, encoding::indices, s)).value();
    return now_s() - t0;
  });
  variants.push_back({"tile-compact, indices encoding", diff_idx});
  layout = std::move(enc.encode(dev_in, encoding::deltas, s)).value();
  // Bytes through device memory: both inputs read; compacted positions (4) + values (2) written; the
  // gaps pass reads positions; pack reads positions + values and writes the payload.
  const double diff_bytes = 2.0 * nbytes + changed * 6.0 + changed * 4.0 + changed * 6.0 + double(layout.payload_bytes());
  figure diff_dev_f = diff_dev;
  diff_dev_f.bytes = diff_bytes;
  // A second limit for reading: a kernel that only streams both inputs (XOR-reduced), nothing written.
  const figure hbm_read = measure(reps, 2.0 * nbytes, [&] {
    return time_events([&] {
      read_kernel<<<132 * 8, 512, 0, cs>>>(reinterpret_cast<const uint4*>(cur.data()),
                                            reinterpret_cast<const uint4*>(snap.data()), nbytes / 16,
                                            copy.as<unsigned long long>());
    });
  });
  // A real model's tensors (--sizes), laid out 256-byte aligned in the same buffers, diffed bucket by bucket.
  figure diff_layout, diff_layout_one;
  size_t layout_tensors = 0, layout_buckets = 0;
  uint64_t layout_bytes = 0, layout_changed = 0;
  if (!sizes_path.empty()) {
    std::ifstream f(sizes_path);
    std::vector<std::vector<gpu::diff_input>> buckets(1);
    uint64_t off = 0, in_bucket = 0, numel = 0;
    while (f >> numel) {
      if (off + numel * 2 > nbytes) {
        std::fprintf(stderr, "FAILED: the layout in %s needs more than --gib %.2f\n", sizes_path.c_str(), gib);
        return 2;
      }
      buckets.back().push_back({cur.as<std::byte>() + off, snap.as<std::byte>() + off, numel, 2, false});
      off += (numel * 2 + 255) / 256 * 256;
      layout_bytes += numel * 2;
      ++layout_tensors;
      in_bucket += numel * 2;
      if (in_bucket >= (bucket_mib << 20)) {
        buckets.emplace_back();
        in_bucket = 0;
      }
    }
    if (buckets.back().empty()) buckets.pop_back();
    layout_buckets = buckets.size();
    // The same tensors in one encode: what the per-bucket cost (launches, one sync + D2H each) adds.
    std::vector<gpu::diff_input> all;
    for (const auto& b : buckets) all.insert(all.end(), b.begin(), b.end());
    diff_layout_one = measure(reps, 2.0 * layout_bytes, [&] {
      const double t0 = now_s();
      (void)std::move(enc.encode(all, encoding::deltas, s)).value();
      return now_s() - t0;
    });
    diff_layout = measure(reps, 2.0 * layout_bytes, [&] {
      const double t0 = now_s();
      layout_changed = 0;
      for (const auto& b : buckets) {
        const gpu::encoded_layout l = std::move(enc.encode(b, encoding::deltas, s)).value();
        for (uint64_t c : l.counts) layout_changed += c;
      }
      return now_s() - t0;
    });
  }
  if (!sizes_path.empty()) {
    out["diff_layout_s"] = diff_layout.median_s;
    out["layout_buckets"] = double(layout_buckets);
    out["layout_tensors"] = double(layout_tensors);
    out["layout_changed"] = double(layout_changed);
  }
  auto print_layout = [&] {
    if (sizes_path.empty()) return;
    std::printf("  diff+encode of %s: %zu tensors, %.2f GB, %zu buckets of >= %llu MiB: %.3f ms (min %.3f, max %.3f), "
                "%llu changed, %.1f GB/s of inputs read\n", sizes_path.c_str(), layout_tensors, layout_bytes / 1e9,
                layout_buckets, (unsigned long long)bucket_mib, diff_layout.median_s * 1e3, diff_layout.min_s * 1e3,
                diff_layout.max_s * 1e3, (unsigned long long)layout_changed, diff_layout.gbps());
    std::printf("  the same tensors in one encode: %.3f ms (min %.3f, max %.3f)\n", diff_layout_one.median_s * 1e3,
                diff_layout_one.min_s * 1e3, diff_layout_one.max_s * 1e3);
  };
  auto diff_row = [&](const std::string& what, figure f) {
    f.bytes = diff_bytes;
    std::printf("  %-44s %9.3f ms  (min %.3f, max %.3f)  %8.2f GB/s  ratio to D2D copy %.3f\n", what.c_str(),
                f.median_s * 1e3, f.min_s * 1e3, f.max_s * 1e3, f.gbps(), f.gbps() / hbm.gbps());
  };
  auto write_json = [&] {
    if (json_path.empty()) return;
    std::ofstream j(json_path);
    j << "{";
    bool first = true;
    for (auto& [k, v] : out) { j << (first ? "" : ", ") << "\"" << k << "\": " << v; first = false; }
    j << ", \"tensors\": " << tensors << ", \"density\": " << density << "}\n";
  };
  if (diff_only) {
    std::printf("changed elements: %llu; D2D copy %.3f ms, %.2f GB/s; read-only stream of both inputs %.3f ms, %.2f GB/s\n",
                (unsigned long long)changed, hbm.median_s * 1e3, hbm.gbps(), hbm_read.median_s * 1e3, hbm_read.gbps());
    diff_row("diff+encode, tile-compact, 3 blocks/SM (default)", diff_dev);
    for (const auto& v : variants) diff_row("diff+encode, " + v.name, v.f);
    print_layout();
    out["diff_device_s"] = diff_dev.median_s;
    out["diff_device_mask_two_pass_s"] = diff_mask.median_s;
    out["diff_device_single_pass_s"] = diff_dev1p.median_s;
    out["hbm_gbps"] = hbm.gbps();
    out["hbm_read_gbps"] = hbm_read.gbps();
    write_json();
    return 0;
  }
  gpu::diff_encoder enc_host;
  const figure diff_pinned = measure(reps, double(nbytes), [&] {
    const double t0 = now_s();
    layout = std::move(enc_host.encode(host_in, encoding::deltas, s)).value();
    return now_s() - t0;
  });
  uint64_t changed2 = 0;
  for (uint64_t c : layout.counts) changed2 += c;
  if (changed2 != changed) { std::fprintf(stderr, "FAILED: staged diff found %llu changes, device %llu\n", (unsigned long long)changed2, (unsigned long long)changed); return 1; }
  layout = std::move(enc.encode(dev_in, encoding::deltas, s)).value();

  // ---- device digest ----
  gpu::digester dig;
  std::vector<std::pair<const void*, uint64_t>> regions;
  for (auto& in : dev_in) regions.emplace_back(in.current, per * 2);
  std::vector<digest128> digests(regions.size());
  const figure digest_f = measure(reps, double(nbytes), [&] {
    const double t0 = now_s();
    CK(dig.digest_many(regions, digests, s));
    return now_s() - t0;
  });
  const figure digest_one = measure(reps, double(per * 2), [&] {
    const double t0 = now_s();
    CK(dig.digest(regions[0].first, regions[0].second, s));
    return now_s() - t0;
  });

  // ---- GPU -> pinned -> file vs the host write of the same bytes ----
  std::filesystem::create_directories(dir);
  io::event_loop loop;
  io::io_backend_options bo;
  bo.quiet = true;
  auto backend = std::move(io::make_io_backend(loop, bo)).value();
  io::buffer_pool_options po;
  po.buffer_bytes = 16 << 20;
  po.max_total_bytes = 256 << 20;
  po.pin = [](void* p, size_t n) { return gpu::register_host(p, n); };
  po.unpin = [](void* p, size_t) { gpu::unregister_host(p); };
  auto pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
  std::vector<device_param> params;
  native_fields nf;
  nf.base_version = 0;
  for (int t = 0; t < tensors; ++t) {
    params.push_back({"model.layers." + std::to_string(t) + ".weight", dtype::BF16, {per / 4096, 4096}});
    nf.tensor_digests[params.back().name] = digests[t];
  }
  const byte_buffer header = std::move(device_delta_header(encoding::deltas, 1, params, layout, enc.payload(), 4096, &nf, dig, s)).value();
  const double file_bytes = double(header.size() + layout.payload_bytes());
  const std::string gpu_path = dir + "/rank0000_flush000000.safetensors";
  const std::string host_path = dir + "/host_copy.safetensors";
  const figure write_gpu = measure(reps, file_bytes, [&] {
    const double t0 = now_s();
    CK(write_device_file(*backend, *pool, gpu_path, header, enc.payload(), layout.payload_bytes(), s));
    return now_s() - t0;
  });
  byte_buffer host_file(header.begin(), header.end());
  host_file.resize(header.size() + layout.payload_bytes());
  CK(gpu::copy_d2h(host_file.data() + header.size(), enc.payload(), layout.payload_bytes(), s));
  CK(s.synchronize());
  const figure write_host = measure(reps, file_bytes, [&] {
    const double t0 = now_s();
    CK(io::write_file_atomic(*backend, *pool, host_path, host_file));
    return now_s() - t0;
  });
  {
    auto back = std::move(io::read_file_all(*backend, *pool, gpu_path, 1ull << 40)).value();
    if (back != host_file) { std::fprintf(stderr, "FAILED: the GPU-written file differs from its bytes\n"); return 1; }
  }

  // ---- disk read vs apply into the device store ----
  bool dropped = false;
  const figure read_f = measure(reps, file_bytes, [&] {
    dropped = drop_caches();
    const double t0 = now_s();
    auto b = io::read_file_all(*backend, *pool, gpu_path, 1ull << 40);
    CK(b);
    return now_s() - t0;
  });
  std::vector<store_tensor> st;
  std::vector<const void*> src;
  for (int t = 0; t < tensors; ++t) {
    st.push_back({params[t].name, dtype::BF16, params[t].shape, per, per * 2});
    src.push_back(snap.as<std::byte>() + uint64_t(t) * per * 2);
  }
  auto store = std::move(cuda_weight_store::from_device(st, src, 0)).value();
  const byte_buffer file = std::move(io::read_file_all(*backend, *pool, gpu_path, 1ull << 40)).value();
  const unsigned threads = 4;
  std::vector<undo_log> undos(threads);
  bool verified = false;
  double rollback_s = 0;
  // Decode (parse + checksum/payload-hash verification, CPU) and apply (device store) timed apart: in the
  // receiver they are separate pipelined stages.
  const figure parse_f = measure(reps, file_bytes, [&] {
    const double t0 = now_s();
    auto f = parse_delta_file(file);
    if (!f.ok()) { std::fprintf(stderr, "FAILED parse: %s\n", f.err().message.c_str()); std::exit(1); }
    return now_s() - t0;
  });
  const delta_file parsed = std::move(parse_delta_file(file)).value();
  const figure apply_f = measure(reps, file_bytes, [&] {
    const double t0 = now_s();
    std::vector<std::thread> ws;
    for (unsigned w = 0; w < threads; ++w)
      ws.emplace_back([&, w] {
        for (size_t k = w; k < parsed.manifest.params.size(); k += threads) {
          const auto& p = parsed.manifest.params[k];
          CK(store->apply(*store->find(p.name), parsed, p, undos[w]));
        }
      });
    for (auto& w : ws) w.join();
    const double t = now_s() - t0;
    if (!verified) {
      for (int k = 0; k < tensors; ++k)
        if (!(store->digest(k) == digests[k])) { std::fprintf(stderr, "FAILED: tensor %d digest after apply\n", k); std::exit(1); }
      verified = true;
    }
    const double r0 = now_s();
    for (auto& u : undos) store->rollback(u);
    rollback_s = now_s() - r0;
    return t;
  });

  // ---- the Sender: device tensors (buckets built on the device, GPU -> pinned -> file) vs host tensors ----
  // One sync = begin, add the 32 tensors, finish (native, deltas, default 512 MiB buckets, no receivers: the
  // files stay), the snapshot re-seeded from `snap` before each (not timed), so every sync has the changes.
  sync_report srep;
  uint64_t sversion = 0;
  byte_buffer host_cur;
  auto sender_sync = [&](sender& snd, bool device) {
    for (int t = 0; t < tensors; ++t) {
      const uint64_t off = uint64_t(t) * per * 2;
      const std::vector<uint64_t> shape = {per / 4096, 4096};
      CK(device ? snd.seed("w" + std::to_string(t), {snap.as<std::byte>() + off, dtype::BF16, shape, "cuda:0"})
                : snd.seed("w" + std::to_string(t), {pinned.as<std::byte>() + off, dtype::BF16, shape, "cpu"}));
    }
    std::filesystem::remove_all(dir + "/sender");
    std::filesystem::create_directories(dir + "/sender");
    const double t0 = now_s();
    CK(snd.begin(++sversion));
    for (int t = 0; t < tensors; ++t) {
      const uint64_t off = uint64_t(t) * per * 2;
      const std::vector<uint64_t> shape = {per / 4096, 4096};
      CK(device ? snd.add("w" + std::to_string(t), {cur.as<std::byte>() + off, dtype::BF16, shape, "cuda:0"})
                : snd.add("w" + std::to_string(t), {host_cur.data() + off, dtype::BF16, shape, "cpu"}));
    }
    srep = std::move(snd.finish()).value();
    return now_s() - t0;
  };
  sender_options sopt;
  sopt.delta_dir = dir + "/sender";
  sopt.enc = encoding::deltas;
  sopt.format = wire_format::native;
  std::vector<double> s_enc, s_write;
  figure sender_dev, sender_host;
  sync_report rep_dev, rep_host;
  {
    sender snd(sopt, nullptr);
    sender_dev = measure(reps, double(nbytes), [&] {
      const double t = sender_sync(snd, true);
      s_enc.push_back(srep.diff_encode_s);
      s_write.push_back(srep.write_s);
      return t;
    });
    rep_dev = srep;
  }
  const double sdev_enc = median(s_enc), sdev_write = median(s_write);
  s_enc.clear();
  s_write.clear();
  host_cur.resize(nbytes);
  CK(gpu::copy_d2h(host_cur.data(), cur.data(), nbytes, s));
  CK(s.synchronize());
  {
    sender snd(sopt, nullptr);
    sender_host = measure(std::min(reps, 3), double(nbytes), [&] {
      const double t = sender_sync(snd, false);
      s_enc.push_back(srep.diff_encode_s);
      s_write.push_back(srep.write_s);
      return t;
    });
    rep_host = srep;
  }
  const double shost_enc = median(s_enc), shost_write = median(s_write);
  host_cur = byte_buffer();
  std::filesystem::remove_all(dir + "/sender");
  if (rep_dev.changed_elements != changed || rep_host.changed_elements != changed || rep_dev.wire_bytes != rep_host.wire_bytes) {
    std::fprintf(stderr, "FAILED: the Sender's syncs disagree (changed %llu / %llu / %llu, bytes %llu / %llu)\n",
                 (unsigned long long)rep_dev.changed_elements, (unsigned long long)rep_host.changed_elements,
                 (unsigned long long)changed, (unsigned long long)rep_dev.wire_bytes, (unsigned long long)rep_host.wire_bytes);
    return 1;
  }

  auto row = [&](const char* what, const figure& f, const char* unit_note) {
    std::printf("  %-44s %9.3f ms  (min %.3f, max %.3f)  %8.2f GB/s  %s\n", what, f.median_s * 1e3, f.min_s * 1e3,
                f.max_s * 1e3, f.gbps(), unit_note);
  };
  std::printf("\nchanged elements: %llu (%.4f%%), payload %.1f MB, file %.1f MB\n", (unsigned long long)changed,
              100.0 * double(changed) / double(total_elems), layout.payload_bytes() / 1e6, file_bytes / 1e6);
  std::printf("limits:\n");
  row("HBM copy D2D (read + written)", hbm, "");
  row("HBM read-only stream of both inputs", hbm_read, "");
  row("pinned H2D", h2d, "");
  row("pinned D2H", d2h, "");
  row("file write, host bytes (io engine, fdatasync)", write_host, "");
  row("file read (io engine)", read_f, dropped ? "(page cache dropped)" : "(page cache NOT dropped)");
  std::printf("GPU path:\n");
  row("diff+encode, snapshot on device (all bytes)", diff_dev_f, "");
  for (const auto& v : variants) {
    figure f = v.f;
    f.bytes = diff_bytes;
    row(("  same, " + v.name).c_str(), f, "");
  }
  print_layout();
  row("diff+encode, snapshot in pinned host (snap)", diff_pinned, "");
  row("XXH3-128 on device, all tensors", digest_f, "");
  row("XXH3-128 on device, one tensor", digest_one, "");
  row("GPU -> pinned -> file", write_gpu, "");
  row("decode: parse + verify the file (CPU)", parse_f, "");
  row("apply into device store (4 threads)", apply_f, "");
  std::printf("  rollback of one apply: %.3f ms; digests after apply verified: %s\n", rollback_s * 1e3, verified ? "yes" : "no");
  const double r_hbm = diff_dev_f.gbps() / hbm.gbps();
  const double r_h2d = diff_pinned.gbps() / h2d.gbps();
  const double r_write = write_gpu.gbps() / write_host.gbps();
  const double r_apply = apply_f.gbps() / read_f.gbps();
  std::printf("Sender sync (begin .. finish, 32 adds, native deltas, %.1f MB in %zu file(s)):\n", rep_dev.wire_bytes / 1e6,
              rep_dev.files.size());
  row("device tensors (device buckets, GPU->file)", sender_dev, "");
  std::printf("    diff+encode %.3f ms, write %.3f ms (medians)\n", sdev_enc * 1e3, sdev_write * 1e3);
  row("host tensors (CPU diff, host builder)", sender_host, "");
  std::printf("    diff+encode %.3f ms, write %.3f ms (medians)\n", shost_enc * 1e3, shost_write * 1e3);
  const double s_limit = diff_dev.median_s + digest_f.median_s + write_gpu.median_s;
  std::printf("  limit: diff+encode %.3f + digest all %.3f + GPU->file %.3f = %.3f ms; sender / limit %.2fx; host / device %.2fx\n",
              diff_dev.median_s * 1e3, digest_f.median_s * 1e3, write_gpu.median_s * 1e3, s_limit * 1e3,
              sender_dev.median_s / s_limit, sender_host.median_s / sender_dev.median_s);
  out["sender_device_s"] = sender_dev.median_s;
  out["sender_device_encode_s"] = sdev_enc;
  out["sender_device_write_s"] = sdev_write;
  out["sender_host_s"] = sender_host.median_s;
  out["sender_limit_s"] = s_limit;
  std::printf("ratios (target):\n");
  std::printf("  diff+encode device snapshot / HBM copy      %.3f  (>= 0.70)\n", r_hbm);
  std::printf("  diff+encode pinned snapshot / pinned H2D    %.3f  (>= 0.85)\n", r_h2d);
  std::printf("  GPU->pinned->file / host file write         %.3f  (>= 0.90)\n", r_write);
  std::printf("  apply into device store / file read         %.3f  (>= 0.90)\n", r_apply);
  out["bytes"] = double(nbytes);
  out["changed"] = double(changed);
  out["diff_device_s"] = diff_dev_f.median_s;
  out["diff_device_bytes"] = diff_bytes;
  out["diff_device_single_pass_s"] = diff_dev1p.median_s;
  out["diff_device_mask_two_pass_s"] = diff_mask.median_s;
  out["hbm_read_gbps"] = hbm_read.gbps();
  out["diff_pinned_s"] = diff_pinned.median_s;
  out["hbm_gbps"] = hbm.gbps();
  out["h2d_gbps"] = h2d.gbps();
  out["d2h_gbps"] = d2h.gbps();
  out["write_host_gbps"] = write_host.gbps();
  out["write_gpu_gbps"] = write_gpu.gbps();
  out["read_gbps"] = read_f.gbps();
  out["apply_gbps"] = apply_f.gbps();
  out["parse_gbps"] = parse_f.gbps();
  out["digest_gbps"] = digest_f.gbps();
  out["ratio_hbm"] = r_hbm;
  out["ratio_h2d"] = r_h2d;
  out["ratio_write"] = r_write;
  out["ratio_apply"] = r_apply;
  write_json();
  store.reset();
  pool.reset();
  backend.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
