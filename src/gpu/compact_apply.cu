// The device half of the compact encoding's apply and send: add the decoded differences into a device tensor
// (saving the old elements first), and gather a snapshot's elements at the changed positions (the old values the
// host encoder codes against). The streams themselves are coded and decoded on the host (codec/compact.h).
#include <cuda_runtime.h>

#include "gpu/cuda_check.h"
#include "gpu/kernels.h"

namespace deltasync::gpu {
namespace {

unsigned grid_of(uint64_t n) {
  const uint64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65535ull * 16 ? blocks : 65535ull * 16);
}

template <typename T>
__global__ void add_apply_kernel(T* dest, const uint32_t* positions, uint64_t count, const T* diffs, T* old) {
  for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < count; i += uint64_t{gridDim.x} * blockDim.x) {
    const uint32_t p = positions[i];
    const T o = dest[p];
    if (old != nullptr) old[i] = o;
    dest[p] = static_cast<T>(o + diffs[i]);  // wraps mod 2^w: the raw-bit difference of compact.h
  }
}

template <typename T>
__global__ void gather_kernel(const T* src, const uint32_t* positions, uint64_t count, T* out) {
  for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < count; i += uint64_t{gridDim.x} * blockDim.x)
    out[i] = src[positions[i]];
}

template <typename T>
void launch_add(void* dest, const uint32_t* positions, uint64_t count, const void* diffs, void* old, cudaStream_t cs) {
  add_apply_kernel<T><<<grid_of(count), 256, 0, cs>>>(static_cast<T*>(dest), positions, count,
                                                      static_cast<const T*>(diffs), static_cast<T*>(old));
}

template <typename T>
void launch_gather(const void* src, const uint32_t* positions, uint64_t count, void* out, cudaStream_t cs) {
  gather_kernel<T><<<grid_of(count), 256, 0, cs>>>(static_cast<const T*>(src), positions, count, static_cast<T*>(out));
}

}  // namespace

status add_apply(void* dest, uint32_t elem_bytes, const uint32_t* positions, uint64_t count, const void* diffs,
                 void* old_values, stream& s) {
  if (count == 0) return {};
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  switch (elem_bytes) {
    case 1: launch_add<uint8_t>(dest, positions, count, diffs, old_values, cs); break;
    case 2: launch_add<uint16_t>(dest, positions, count, diffs, old_values, cs); break;
    case 4: launch_add<uint32_t>(dest, positions, count, diffs, old_values, cs); break;
    case 8: launch_add<unsigned long long>(dest, positions, count, diffs, old_values, cs); break;
    default: return error(errc::unsupported, "add_apply: element size " + std::to_string(elem_bytes));
  }
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

status gather(const void* src, uint32_t elem_bytes, const uint32_t* positions, uint64_t count, void* out, stream& s) {
  if (count == 0) return {};
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  switch (elem_bytes) {
    case 1: launch_gather<uint8_t>(src, positions, count, out, cs); break;
    case 2: launch_gather<uint16_t>(src, positions, count, out, cs); break;
    case 4: launch_gather<uint32_t>(src, positions, count, out, cs); break;
    case 8: launch_gather<unsigned long long>(src, positions, count, out, cs); break;
    default: return error(errc::unsupported, "gather: element size " + std::to_string(elem_bytes));
  }
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

}  // namespace deltasync::gpu
