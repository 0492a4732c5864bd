// Scatter-apply (with the exact cast from a promoted values dtype), its undo, and torch.hash_tensor on the
// device. Casts follow codec's cast_element: a promoted value must round-trip to the param's dtype
// (narrow, widen back, same bits) or nothing is written; NaN payloads move bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "base/check.h"
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

}  // namespace deltasync::gpu
