// Scatter-apply (with the exact cast from a promoted values dtype), its undo, the device decode of raw
// `indices` / `deltas` positions with every check (decode_scatter), and torch.hash_tensor on the device.
// Casts follow codec's cast_element: a promoted value must round-trip to the param's dtype (narrow, widen
// back, same bits) or nothing is written; NaN payloads move bit for bit.
#include <cub/device/device_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "base/check.h"
#include "codec/sum_digest.h"
#include "gpu/cuda_check.h"
#include "gpu/kernels.h"

namespace deltasync::gpu {
namespace {

enum fkind : int { k_bf16 = 0, k_f16 = 1, k_f32 = 2, k_f64 = 3 };

bool float_kind(dtype t, int& k) {
  switch (t) {
    case dtype::BF16: k = k_bf16; return true;
    case dtype::F16: k = k_f16; return true;
    case dtype::F32: k = k_f32; return true;
    case dtype::F64: k = k_f64; return true;
    default: return false;
  }
}

__device__ __forceinline__ uint32_t f16_to_f32_bits(uint16_t h) {
  if ((h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0)  // NaN: keep sign and payload
    return (uint32_t(h & 0x8000u) << 16) | 0x7F800000u | (uint32_t(h & 0x3FFu) << 13);
  return __float_as_uint(__half2float(__ushort_as_half(h)));
}

__device__ __forceinline__ uint64_t f32_to_f64_bits(uint32_t f) {
  if ((f & 0x7F800000u) == 0x7F800000u && (f & 0x7FFFFFu) != 0)
    return (uint64_t(f & 0x80000000u) << 32) | 0x7FF0000000000000ull | (uint64_t(f & 0x7FFFFFu) << 29);
  return __double_as_longlong(double(__uint_as_float(f)));
}

// Widen a value of kind k to float64 bits exactly (payloads kept).
__device__ __forceinline__ uint64_t widen(int k, uint64_t x) {
  switch (k) {
    case k_bf16: return f32_to_f64_bits(uint32_t(x) << 16);
    case k_f16: return f32_to_f64_bits(f16_to_f32_bits(uint16_t(x)));
    case k_f32: return f32_to_f64_bits(uint32_t(x));
    default: return x;
  }
}

// Narrow float64 bits to kind k (round to nearest; NaN payload truncated, caught by the round-trip check).
__device__ __forceinline__ uint64_t narrow(int k, uint64_t d) {
  const bool nan = (d & 0x7FF0000000000000ull) == 0x7FF0000000000000ull && (d & 0xFFFFFFFFFFFFFull) != 0;
  if (k == k_f64) return d;
  uint32_t f;
  if (nan) f = uint32_t((d >> 32) & 0x80000000u) | 0x7F800000u | uint32_t((d & 0xFFFFFFFFFFFFFull) >> 29);
  else f = __float_as_uint(__double2float_rn(__longlong_as_double(static_cast<long long>(d))));
  if (k == k_f32) return f;
  const bool fnan = (f & 0x7F800000u) == 0x7F800000u && (f & 0x7FFFFFu) != 0;
  if (k == k_bf16) {
    if (fnan) return f >> 16;
    return __bfloat16_as_ushort(__float2bfloat16_rn(__uint_as_float(f)));
  }
  if (fnan) return ((f >> 16) & 0x8000u) | 0x7C00u | ((f & 0x7FFFFFu) >> 13);
  return __half_as_ushort(__float2half_rn(__uint_as_float(f)));
}

__device__ __forceinline__ uint64_t load_elem(const unsigned char* p, uint64_t i, int eb) {
  switch (eb) {
    case 1: return p[i];
    case 2: return reinterpret_cast<const uint16_t*>(p)[i];
    case 4: return reinterpret_cast<const uint32_t*>(p)[i];
    default: return reinterpret_cast<const uint64_t*>(p)[i];
  }
}
__device__ __forceinline__ void store_elem(unsigned char* p, uint64_t i, int eb, uint64_t v) {
  switch (eb) {
    case 1: p[i] = static_cast<unsigned char>(v); break;
    case 2: reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v); break;
    case 4: reinterpret_cast<uint32_t*>(p)[i] = static_cast<uint32_t>(v); break;
    default: reinterpret_cast<uint64_t*>(p)[i] = v; break;
  }
}

__global__ void check_cast_kernel(const unsigned char* values, uint64_t count, int from, int to, int veb,
                                  unsigned long long* bad) {
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < count; k += uint64_t{gridDim.x} * blockDim.x) {
    const uint64_t x = load_elem(values, k, veb);
    const uint64_t wide = widen(from, x);
    const uint64_t back = widen(to, narrow(to, wide));
    if (back != wide) atomicMin(bad, static_cast<unsigned long long>(k));
  }
}

__global__ void scatter_kernel(unsigned char* dest, int deb, const uint32_t* pos, uint64_t count,
                               const unsigned char* values, int veb, int from, int to, unsigned char* old,
                               const unsigned long long* bad) {
  if (bad != nullptr && *bad != ~0ull) return;
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < count; k += uint64_t{gridDim.x} * blockDim.x) {
    const uint32_t at = pos[k];
    if (old != nullptr) store_elem(old, k, deb, load_elem(dest, at, deb));
    uint64_t v = load_elem(values, k, veb);
    if (from != to) v = narrow(to, widen(from, v));
    store_elem(dest, at, deb, v);
  }
}

unsigned grid_for(uint64_t count) {
  const uint64_t want = (count + 255) / 256;
  return static_cast<unsigned>(std::max<uint64_t>(1, std::min<uint64_t>(want, 132ull * 16)));
}

__global__ void xor_hash_kernel(const unsigned char* p, uint64_t n, int mode, int eb, unsigned long long* out) {
  // mode: 0 zero-extend, 1 sign-extend, 2 bf16, 3 f16, 4 f32, 5 f64 (raw bits)
  uint64_t h = 0;
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < n; k += uint64_t{gridDim.x} * blockDim.x) {
    uint64_t x = load_elem(p, k, eb);
    switch (mode) {
      case 0: break;
      case 1: x = static_cast<uint64_t>(static_cast<int64_t>(x << (64 - 8 * eb)) >> (64 - 8 * eb)); break;
      // torch converts through float and then to double in hardware (cvt.f64.f32 quiets a signalling NaN).
      case 2: x = __double_as_longlong(double(__uint_as_float(uint32_t(x) << 16))); break;
      case 3: x = __double_as_longlong(double(__uint_as_float(f16_to_f32_bits(uint16_t(x))))); break;
      case 4: x = __double_as_longlong(double(__uint_as_float(uint32_t(x)))); break;
      default: break;
    }
    h ^= x;
  }
  for (int off = 16; off >= 1; off >>= 1) h ^= __shfl_xor_sync(0xFFFFFFFFu, h, off);
  if ((threadIdx.x & 31) == 0 && h != 0) atomicXor(out, static_cast<unsigned long long>(h));
}


// The additive digest's two lanes over elements k of eb bytes (codec/sum_digest.h): sums of fmix64 terms,
// reduced per warp, then added (mod 2^64) into out[0] (high) and out[1] (low).

__global__ void sum_digest_kernel(const unsigned char* p, uint64_t n, int eb, unsigned long long* out) {
  uint64_t high = 0, low = 0;
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < n; k += uint64_t{gridDim.x} * blockDim.x) {
    const uint64_t x = load_elem(p, k, eb) + k * sum_detail::kIndexMul;
    high += sum_detail::fmix64(x ^ sum_detail::kSeedHigh);
    low += sum_detail::fmix64(x ^ sum_detail::kSeedLow);
  }
  for (int off = 16; off >= 1; off >>= 1) {
    high += __shfl_xor_sync(0xFFFFFFFFu, high, off);
    low += __shfl_xor_sync(0xFFFFFFFFu, low, off);
  }
  if ((threadIdx.x & 31) == 0) {
    atomicAdd(out, static_cast<unsigned long long>(high));
    atomicAdd(out + 1, static_cast<unsigned long long>(low));
  }
}

// decode_status words on the device, in this order (see kernels.h).
enum : int { w_not_ascending = 0, w_end = 1, w_bad_value = 2, w_gate = 3, w_words = 4 };

__global__ void status_init_kernel(unsigned long long* st) {
  st[w_not_ascending] = ~0ull;
  st[w_end] = 0;
  st[w_bad_value] = ~0ull;
  st[w_gate] = 0;
}

// indices: little-endian uint32 entries (the buffer is 4-byte aligned), each checked against its predecessor.
__global__ void indices_kernel(const uint32_t* enc, uint64_t count, uint32_t* pos, unsigned long long* st) {
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < count; k += uint64_t{gridDim.x} * blockDim.x) {
    const uint32_t v = enc[k];
    pos[k] = v;
    if (k > 0 && v <= enc[k - 1] && st != nullptr) atomicMin(st + w_not_ascending, static_cast<unsigned long long>(k));
    if (k + 1 == count && st != nullptr) st[w_end] = v;
  }
}

// deltas, step 1: each gap g becomes the step g + 1 (64-bit: the sum of 2^32 steps of up to 2^32 fits).
__global__ void steps_kernel(const unsigned char* enc, int width, uint64_t count, unsigned long long* steps) {
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < count; k += uint64_t{gridDim.x} * blockDim.x)
    steps[k] = (width == 2 ? uint64_t{reinterpret_cast<const uint16_t*>(enc)[k]}
                           : uint64_t{reinterpret_cast<const uint32_t*>(enc)[k]}) + 1;
}

// deltas, step 3 (after the inclusive scan): idx = cumsum(g + 1) - 1; the total is the bound check's input.
__global__ void sums_kernel(const unsigned long long* sums, uint64_t count, uint32_t* pos, unsigned long long* st) {
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < count; k += uint64_t{gridDim.x} * blockDim.x) {
    pos[k] = static_cast<uint32_t>(sums[k] - 1);
    if (k + 1 == count && st != nullptr) st[w_end] = sums[k];
  }
}

// Opens the gate for the scatter only when every check passed. The bound checks are the host decoder's
// (codec/positions.cc): indices ascend strictly and the last is < numel; gap sums wrap only at exactly 2^64,
// where sum - 1 fails the same comparison.
__global__ void verdict_kernel(unsigned long long* st, int deltas, uint64_t numel) {
  bool ok = st[w_bad_value] == ~0ull;
  if (deltas) ok = ok && st[w_end] - 1 < numel;
  else ok = ok && st[w_not_ascending] == ~0ull && st[w_end] < numel;
  st[w_gate] = ok ? ~0ull : 0ull;
}

__global__ void carry_kernel(unsigned long long* first, const unsigned long long* previous_total) {
  *first += *previous_total;
}

// scatter_kernel's gate is "go" when it reads ~0: the verdict's word is passed as its `bad`.

}  // namespace

status scatter_apply(void* dest, dtype dest_type, uint64_t numel, const uint32_t* positions, uint64_t count,
                     const void* values, dtype values_type, void* old_values, stream& s) {
  (void)numel;  // positions were validated against numel by the caller
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  const uint32_t deb = element_bytes(dest_type);
  const uint32_t veb = element_bytes(values_type);
  if (deb == 0 || veb == 0 || deb > 8 || veb > 8 || (deb & (deb - 1)) != 0)
    return error(errc::delta_dtype_mismatch, "scatter_apply: " + std::string(name(dest_type)) + " from " +
                                                 std::string(name(values_type)) + " is not supported on the GPU");
  if (count == 0) return {};
  int from = 0, to = 0;
  unsigned long long* bad = nullptr;
  device_buffer flag;
  if (values_type != dest_type) {
    if (!float_kind(values_type, from) || !float_kind(dest_type, to))
      return error(errc::delta_dtype_mismatch, "scatter_apply: no exact cast from " + std::string(name(values_type)) +
                                                   " to " + std::string(name(dest_type)));
    DS_ASSIGN_OR_RETURN(flag, device_buffer::allocate(8));
    bad = flag.as<unsigned long long>();
    DS_CUDA_TRY(cudaMemsetAsync(bad, 0xFF, 8, cs));
    check_cast_kernel<<<grid_for(count), 256, 0, cs>>>(static_cast<const unsigned char*>(values), count, from, to,
                                                       static_cast<int>(veb), bad);
    DS_CUDA_TRY(cudaGetLastError());
  }
  scatter_kernel<<<grid_for(count), 256, 0, cs>>>(static_cast<unsigned char*>(dest), static_cast<int>(deb), positions,
                                                  count, static_cast<const unsigned char*>(values),
                                                  static_cast<int>(veb), from, to,
                                                  static_cast<unsigned char*>(old_values), bad);
  DS_CUDA_TRY(cudaGetLastError());
  if (bad != nullptr) {
    unsigned long long first_bad = 0;
    DS_CUDA_TRY(cudaMemcpyAsync(&first_bad, bad, 8, cudaMemcpyDeviceToHost, cs));
    DS_TRY_STATUS(s.synchronize());
    if (first_bad != ~0ull)
      return error(errc::delta_value_not_representable, "value #" + std::to_string(first_bad) +
                                                            " is not exactly representable as " +
                                                            std::string(name(dest_type)));
    return {};
  }
  return s.synchronize();
}

status scatter_restore(void* dest, uint32_t elem_bytes, const uint32_t* positions, uint64_t count, const void* values,
                       stream& s) {
  if (count == 0) return {};
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  scatter_kernel<<<grid_for(count), 256, 0, cs>>>(static_cast<unsigned char*>(dest), static_cast<int>(elem_bytes),
                                                  positions, count, static_cast<const unsigned char*>(values),
                                                  static_cast<int>(elem_bytes), 0, 0, nullptr, nullptr);
  DS_CUDA_TRY(cudaGetLastError());
  return s.synchronize();
}


namespace {

// Queues the decode of `count` positions (no checks when st is null); deltas need the scan scratch.
status queue_decode(bool deltas, uint32_t width, const void* encoded, uint64_t count, uint32_t* positions,
                    unsigned long long* st, decode_scratch& scratch, cudaStream_t cs) {
  if (!deltas) {
    indices_kernel<<<grid_for(count), 256, 0, cs>>>(static_cast<const uint32_t*>(encoded), count, positions, st);
    DS_CUDA_TRY(cudaGetLastError());
    return {};
  }
  // The scan runs in 2^30-element launches, each starting from the previous total (CUB's item count is int);
  // input (the steps) and output (their prefix sums) are separate halves of the scratch.
  DS_TRY_STATUS(grow(scratch.scan, count * 16));
  auto* steps = scratch.scan.as<unsigned long long>();
  auto* sums = steps + count;
  steps_kernel<<<grid_for(count), 256, 0, cs>>>(static_cast<const unsigned char*>(encoded), static_cast<int>(width),
                                                count, steps);
  DS_CUDA_TRY(cudaGetLastError());
  constexpr uint64_t kPart = 1ull << 30;
  size_t temp_bytes = 0;
  DS_CUDA_TRY(cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, steps, sums,
                                            static_cast<int>(std::min(count, kPart)), cs));
  DS_TRY_STATUS(grow(scratch.cub, std::max<size_t>(temp_bytes, 16)));
  for (uint64_t at = 0; at < count; at += kPart) {
    const uint64_t n = std::min(count - at, kPart);
    if (at > 0) {
      // Carry the previous part's total into this part's first step.
      carry_kernel<<<1, 1, 0, cs>>>(steps + at, sums + at - 1);
      DS_CUDA_TRY(cudaGetLastError());
    }
    size_t bytes = scratch.cub.size();
    DS_CUDA_TRY(cub::DeviceScan::InclusiveSum(scratch.cub.data(), bytes, steps + at, sums + at, static_cast<int>(n), cs));
  }
  sums_kernel<<<grid_for(count), 256, 0, cs>>>(sums, count, positions, st);
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

}  // namespace

result<decode_status> decode_scatter(const decode_scatter_args& a, decode_scratch& scratch, stream& s) {
  DS_CHECK(a.enc != encoding::compact, "decode_scatter: compact streams have their own decoder");
  const bool deltas = a.enc != encoding::indices;
  DS_CHECK(deltas ? (a.pos_width == 2 || a.pos_width == 4) : a.pos_width == 4, "decode_scatter: pos_width");
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  const uint32_t deb = element_bytes(a.dest_type);
  const uint32_t veb = element_bytes(a.values_type);
  if (deb == 0 || veb == 0 || deb > 8 || veb > 8 || (deb & (deb - 1)) != 0 || (veb & (veb - 1)) != 0)
    return error(errc::delta_dtype_mismatch, "scatter_apply: " + std::string(name(a.dest_type)) + " from " +
                                                 std::string(name(a.values_type)) + " is not supported on the GPU");
  int from = 0, to = 0;
  if (a.values_type != a.dest_type && (!float_kind(a.values_type, from) || !float_kind(a.dest_type, to)))
    return error(errc::delta_dtype_mismatch, "scatter_apply: no exact cast from " + std::string(name(a.values_type)) +
                                                 " to " + std::string(name(a.dest_type)));
  decode_status out;
  out.applied = true;
  if (a.count == 0) return out;
  DS_TRY_STATUS(grow(scratch.status, w_words * 8));
  DS_TRY_STATUS(grow(scratch.host, w_words * 8));
  auto* st = scratch.status.as<unsigned long long>();
  status_init_kernel<<<1, 1, 0, cs>>>(st);
  DS_CUDA_TRY(cudaGetLastError());
  DS_TRY_STATUS(queue_decode(deltas, a.pos_width, a.encoded, a.count, a.positions, st, scratch, cs));
  if (a.values_type != a.dest_type) {
    check_cast_kernel<<<grid_for(a.count), 256, 0, cs>>>(static_cast<const unsigned char*>(a.values), a.count, from,
                                                         to, static_cast<int>(veb), st + w_bad_value);
    DS_CUDA_TRY(cudaGetLastError());
  }
  verdict_kernel<<<1, 1, 0, cs>>>(st, deltas ? 1 : 0, a.numel);
  DS_CUDA_TRY(cudaGetLastError());
  scatter_kernel<<<grid_for(a.count), 256, 0, cs>>>(static_cast<unsigned char*>(a.dest), static_cast<int>(deb),
                                                    a.positions, a.count, static_cast<const unsigned char*>(a.values),
                                                    static_cast<int>(veb), from, to,
                                                    static_cast<unsigned char*>(a.old_values), st + w_gate);
  DS_CUDA_TRY(cudaGetLastError());
  DS_CUDA_TRY(cudaMemcpyAsync(scratch.host.data(), st, w_words * 8, cudaMemcpyDeviceToHost, cs));
  DS_TRY_STATUS(s.synchronize());
  const auto* h = scratch.host.as<uint64_t>();
  out.first_not_ascending = h[w_not_ascending];
  out.end = h[w_end];
  out.first_bad_value = h[w_bad_value];
  out.applied = h[w_gate] == ~0ull;
  return out;
}

status decode_positions_unchecked(encoding enc, uint32_t pos_width, const void* encoded, uint64_t count,
                                  uint32_t* positions, decode_scratch& scratch, stream& s) {
  DS_CHECK(enc != encoding::compact, "decode_positions_unchecked: compact streams have their own decoder");
  if (count == 0) return {};
  return queue_decode(enc != encoding::indices, pos_width, encoded, count, positions, nullptr, scratch,
                      static_cast<cudaStream_t>(s.native()));
}

result<uint64_t> xor_hash(const void* data, uint64_t bytes, dtype type, stream& s) {
  int mode;
  switch (type) {
    case dtype::BOOL: case dtype::U8: case dtype::U16: case dtype::U32: case dtype::U64: mode = 0; break;
    case dtype::I8: case dtype::I16: case dtype::I32: case dtype::I64: mode = 1; break;
    case dtype::BF16: mode = 2; break;
    case dtype::F16: mode = 3; break;
    case dtype::F32: mode = 4; break;
    case dtype::F64: mode = 5; break;
    default: return error(errc::unsupported, "xor_hash: " + std::string(name(type)) + " is not supported on the GPU");
  }
  const uint32_t eb = element_bytes(type);
  const uint64_t n = bytes / eb;
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  DS_ASSIGN_OR_RETURN(pinned_buffer out, pinned_buffer::allocate(8));
  DS_ASSIGN_OR_RETURN(device_buffer acc, device_buffer::allocate(8));
  DS_CUDA_TRY(cudaMemsetAsync(acc.data(), 0, 8, cs));
  if (n > 0) {
    xor_hash_kernel<<<grid_for(n), 256, 0, cs>>>(static_cast<const unsigned char*>(data), n, mode,
                                                 static_cast<int>(eb), acc.as<unsigned long long>());
    DS_CUDA_TRY(cudaGetLastError());
  }
  DS_CUDA_TRY(cudaMemcpyAsync(out.data(), acc.data(), 8, cudaMemcpyDeviceToHost, cs));
  DS_TRY_STATUS(s.synchronize());
  return *out.as<uint64_t>();
}

result<digest128> sum_digest(const void* data, uint64_t bytes, uint32_t elem_bytes, stream& s) {
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
    return error(errc::invalid_argument, "sum_digest: element size " + std::to_string(elem_bytes));
  const uint64_t n = bytes / elem_bytes;
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  DS_ASSIGN_OR_RETURN(pinned_buffer out, pinned_buffer::allocate(16));
  DS_ASSIGN_OR_RETURN(device_buffer acc, device_buffer::allocate(16));
  DS_CUDA_TRY(cudaMemsetAsync(acc.data(), 0, 16, cs));
  if (n > 0) {
    sum_digest_kernel<<<grid_for(n), 256, 0, cs>>>(static_cast<const unsigned char*>(data), n,
                                                   static_cast<int>(elem_bytes), acc.as<unsigned long long>());
    DS_CUDA_TRY(cudaGetLastError());
  }
  DS_CUDA_TRY(cudaMemcpyAsync(out.data(), acc.data(), 16, cudaMemcpyDeviceToHost, cs));
  DS_TRY_STATUS(s.synchronize());
  return digest128{out.as<uint64_t>()[0], out.as<uint64_t>()[1]};
}

}  // namespace deltasync::gpu
