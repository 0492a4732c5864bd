// The compact encoding on the GPU against the HBM copy of the same dense bytes, in one run (bench/RESULTS.md):
//   copy          device-to-device copy of every tensor (the baseline: dense bytes / time)
//   diff          the GPU diff alone (positions + new values compacted on the device)
//   diff+compact  diff, gather of the old values from the device snapshot, compact encode of every tensor
//                 (the Sender's device path minus digests and the file), dense bytes / time
//   decode+apply  a compact file applied into the CUDA weight store (stream H2D, device decode and checks, add,
//                 undo copy back): wire bytes / time; and the kernels alone (stream already on the device)
// Data: --gib GiB of bf16 in --tensors tensors, --density of the elements moved by +-1 ulp (the AdamW shape),
// made on the device. Medians of --reps runs. The GPU streams are checked against the CPU encoder and the store
// against the new tensors. Without a device it prints SKIP and exits 77; DS_BENCH_SMOKE=1 shrinks everything.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "codec/compact.h"
#include "codec/delta_format.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"
#include "sync/cuda_weight_store.h"

using namespace deltasync;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
void check(const status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, st.err().describe().c_str());
    std::exit(1);
  }
}
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

__device__ uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

// base: bf16-like weights (sign, exponent near 2^-6, random mantissa); next: base moved by +-1 in its bits at
// `per_million` of the elements.
__global__ void make_kernel(uint16_t* base, uint16_t* next, uint64_t n, uint64_t seed, uint32_t per_million) {
  for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < n; i += uint64_t{gridDim.x} * blockDim.x) {
    const uint64_t h = mix(seed ^ (i * 0x9E3779B97F4A7C15ull));
    const uint16_t b = static_cast<uint16_t>(((h >> 20) & 0x8000) | (0x3C00 + ((h >> 8) & 0x3FF)));
    base[i] = b;
    const bool moved = (h % 1000000) < per_million;
    next[i] = moved ? static_cast<uint16_t>(b + (((h >> 40) & 1) ? 1 : -1)) : b;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (auto st = gpu::available(); !st.ok()) {
    std::printf("SKIP: %s\n", st.err().message.c_str());
    return 77;
  }
  const bool smoke = std::getenv("DS_BENCH_SMOKE") != nullptr;
  double gib = smoke ? 0.01 : 4;
  int tensors = 16, reps = smoke ? 1 : 5;
  double density = 0.01;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--gib") gib = std::atof(argv[i + 1]);
    if (a == "--tensors") tensors = std::atoi(argv[i + 1]);
    if (a == "--density") density = std::atof(argv[i + 1]);
    if (a == "--reps") reps = std::atoi(argv[i + 1]);
  }
  const uint64_t numel = static_cast<uint64_t>(gib * (1ull << 30) / 2 / tensors);
  const uint64_t dense = numel * 2 * tensors;
  std::printf("compact_gpu_bench: %s; %d tensors x %llu bf16 (%.2f GiB), density %.3f%%, median of %d\n",
              gpu::device_description().c_str(), tensors, static_cast<unsigned long long>(numel),
              static_cast<double>(dense) / (1ull << 30), density * 100, reps);
  gpu::stream s;
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  std::vector<gpu::device_buffer> base, next, copy;
  for (int t = 0; t < tensors; ++t) {
    base.push_back(std::move(gpu::device_buffer::allocate(numel * 2)).value());
    next.push_back(std::move(gpu::device_buffer::allocate(numel * 2)).value());
    copy.push_back(std::move(gpu::device_buffer::allocate(numel * 2)).value());
    make_kernel<<<4096, 256, 0, cs>>>(base[t].as<uint16_t>(), next[t].as<uint16_t>(), numel, 1000 + t,
                                      static_cast<uint32_t>(density * 1e6));
  }
  cuda_check(cudaGetLastError(), "make");
  check(s.synchronize(), "make");

  auto timed = [&](auto&& f) {
    std::vector<double> v;
    f();  // warm-up
    for (int r = 0; r < reps; ++r) {
      check(s.synchronize(), "sync");
      const double t0 = now_s();
      f();
      check(s.synchronize(), "sync");
      v.push_back(now_s() - t0);
    }
    return median(v);
  };

  const double copy_s = timed([&] {
    for (int t = 0; t < tensors; ++t) check(gpu::copy_d2d(copy[t].data(), next[t].data(), numel * 2, s), "copy");
  });
  const double copy_gbps = static_cast<double>(dense) / copy_s / 1e9;

  gpu::diff_encoder enc;
  std::vector<gpu::diff_input> in;
  for (int t = 0; t < tensors; ++t) in.push_back({next[t].data(), base[t].data(), numel, 2, false});
  gpu::encoded_layout layout;
  const double diff_s = timed([&] { layout = std::move(enc.encode(in, encoding::indices, s)).value(); });

  gpu::compact_scratch sc;
  std::vector<gpu::device_buffer> streams(tensors);
  std::vector<uint64_t> stream_bytes(tensors);
  gpu::device_buffer old;
  check(gpu::grow(old, 16), "grow");
  const double encode_s = timed([&] {
    layout = std::move(enc.encode(in, encoding::indices, s)).value();
    for (int t = 0; t < tensors; ++t) {
      const uint64_t n = layout.counts[t];
      const uint32_t* pos = enc.positions() + layout.val_offset[t];
      const void* vals = static_cast<const std::byte*>(enc.values()) + layout.val_offset[t] * 2;
      check(gpu::grow(old, std::max<uint64_t>(n * 2, 16)), "grow");
      check(gpu::gather(base[t].data(), 2, pos, n, old.data(), s), "gather");
      check(gpu::compact_encode(pos, old.data(), vals, n, 2, streams[t], stream_bytes[t], sc, s), "encode");
    }
  });

  // The file, and a check of the device streams against the CPU encoder.
  uint64_t changed = 0;
  delta_bucket_builder b(encoding::compact);
  native_fields nf;
  nf.base_version = 1;
  std::vector<byte_buffer> host_streams(tensors);
  int mismatches = 0;
  for (int t = 0; t < tensors; ++t) {
    const uint64_t n = layout.counts[t];
    changed += n;
    host_streams[t].resize(stream_bytes[t]);
    check(gpu::copy_d2h(host_streams[t].data(), streams[t].data(), stream_bytes[t], s), "d2h");
    if (t == 0 || t == tensors - 1) {
      std::vector<uint32_t> pos(n);
      byte_buffer vals(n * 2), oldv(n * 2);
      check(gpu::copy_d2h(pos.data(), enc.positions() + layout.val_offset[t], n * 4, s), "d2h");
      check(gpu::copy_d2h(vals.data(), static_cast<const std::byte*>(enc.values()) + layout.val_offset[t] * 2, n * 2, s), "d2h");
      check(gpu::gather(base[t].data(), 2, enc.positions() + layout.val_offset[t], n, old.data(), s), "gather");
      check(gpu::copy_d2h(oldv.data(), old.data(), n * 2, s), "d2h");
      check(s.synchronize(), "sync");
      byte_buffer cpu;
      compact::encode(pos, oldv, vals, 2, cpu);
      if (cpu != host_streams[t]) ++mismatches;
    }
    const std::string name = "t" + std::to_string(t);
    if (n > 0) b.add_compact_stream(name, dtype::BF16, {numel}, n, host_streams[t]);
    nf.tensor_digests[name] = {};
  }
  check(s.synchronize(), "sync");
  auto file = b.finish(2, 8, &nf);
  check(file.ok() ? status{} : status(file.err()), "finish");
  auto f = parse_delta_file(*file);
  check(f.ok() ? status{} : status(f.err()), "parse");
  const double wire = static_cast<double>(file->size());

  // Decode + apply into the CUDA store (from the base), undo log included; rolled back between runs.
  loaded_tensors lt;
  for (int t = 0; t < tensors; ++t) {
    byte_buffer h(numel * 2);
    check(gpu::copy_d2h(h.data(), base[t].data(), numel * 2, s), "d2h");
    check(s.synchronize(), "sync");
    lt.add(store_tensor{"t" + std::to_string(t), dtype::BF16, {numel}, numel, numel * 2}, std::move(h));
  }
  auto store = cuda_weight_store::from_tensors(std::move(lt), 0);
  check(store.ok() ? status{} : status(store.err()), "store");
  undo_log undo;
  std::vector<double> apply_runs;
  for (int r = 0; r <= reps; ++r) {
    const double t0 = now_s();
    for (const auto& p : f->manifest.params) check((*store)->apply(*(*store)->find(p.name), *f, p, undo), "apply");
    const double dt = now_s() - t0;
    if (r > 0) apply_runs.push_back(dt);
    if (r < reps) (*store)->rollback(undo);
  }
  const double apply_s = median(apply_runs);
  int wrong = 0;
  for (int t = 0; t < tensors; ++t) {
    byte_buffer got(numel * 2), want(numel * 2);
    check((*store)->read(static_cast<size_t>(t), got), "read");
    check(gpu::copy_d2h(want.data(), next[t].data(), numel * 2, s), "d2h");
    check(s.synchronize(), "sync");
    wrong += got != want;
  }

  // The kernels alone: streams on the device, decode (with its checks) + add into `copy` (holding the base).
  for (int t = 0; t < tensors; ++t) check(gpu::copy_d2d(copy[t].data(), base[t].data(), numel * 2, s), "copy");
  gpu::device_buffer dpos, ddiff;
  check(gpu::grow(dpos, changed * 4 + 16), "grow");
  check(gpu::grow(ddiff, changed * 2 + 16), "grow");
  const double kernels_s = timed([&] {
    for (int t = 0; t < tensors; ++t) {
      const uint64_t n = layout.counts[t];
      if (n == 0) continue;
      check(gpu::compact_decode(host_streams[t], streams[t].data(), n, numel, 2, dpos.as<uint32_t>(), ddiff.data(), sc, s),
            "decode");
      check(gpu::add_apply(copy[t].data(), 2, dpos.as<uint32_t>(), n, ddiff.data(), nullptr, s), "add");
    }
  });

  const double n = static_cast<double>(changed);
  std::printf("changed %llu (%.3f%%), wire %.1f MB = %.3f B/changed\n", static_cast<unsigned long long>(changed),
              100 * n / static_cast<double>(numel * tensors), wire / 1e6, wire / n);
  std::printf("copy (HBM, dense bytes)      %8.3f ms  %8.1f GB/s\n", copy_s * 1e3, copy_gbps);
  std::printf("diff                         %8.3f ms  %8.1f GB/s dense  (%.2fx copy)\n", diff_s * 1e3,
              static_cast<double>(dense) / diff_s / 1e9, static_cast<double>(dense) / diff_s / 1e9 / copy_gbps);
  std::printf("diff + compact encode        %8.3f ms  %8.1f GB/s dense  (%.2fx copy; target >= 0.5x)\n", encode_s * 1e3,
              static_cast<double>(dense) / encode_s / 1e9, static_cast<double>(dense) / encode_s / 1e9 / copy_gbps);
  std::printf("decode + apply, CUDA store   %8.3f ms  %8.1f GB/s wire  (target >= 20)\n", apply_s * 1e3, wire / apply_s / 1e9);
  std::printf("decode + add, kernels only   %8.3f ms  %8.1f GB/s wire\n", kernels_s * 1e3, wire / kernels_s / 1e9);
  std::printf("checks: device streams %s the CPU encoder's; store %s the new tensors\n",
              mismatches == 0 ? "equal" : "DIFFER FROM", wrong == 0 ? "equals" : "DIFFERS FROM");
  return mismatches == 0 && wrong == 0 ? 0 : 1;
}
