// Internal to src/gpu: turns a cudaError_t into the project's error, in one place.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "base/result.h"
#include "gpu/gpu.h"

namespace deltasync::gpu::detail {

inline error cuda_error(cudaError_t e, const char* what) {
  const errc code = e == cudaErrorMemoryAllocation ? errc::no_space : errc::internal;
  return error(code, std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

inline status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return {};
  return cuda_error(e, what);
}

// Grows a scratch buffer to at least `bytes` (contents are not kept).
inline status ensure(device_buffer& b, uint64_t bytes) {
  if (b.size() >= bytes) return {};
  b = device_buffer();
  auto r = device_buffer::allocate(bytes < 256 ? 256 : bytes);
  if (!r) return std::move(r).err();
  b = std::move(r).value();
  return {};
}
inline status ensure_pinned(pinned_buffer& b, uint64_t bytes) {
  if (b.size() >= bytes) return {};
  b = pinned_buffer();
  auto r = pinned_buffer::allocate(bytes < 256 ? 256 : bytes);
  if (!r) return std::move(r).err();
  b = std::move(r).value();
  return {};
}

}  // namespace deltasync::gpu::detail

#define DS_CUDA_TRY(call)                                                              \
  do {                                                                                 \
    cudaError_t ds_cuda_e_ = (call);                                                   \
    if (ds_cuda_e_ != cudaSuccess) return ::deltasync::gpu::detail::cuda_error(ds_cuda_e_, #call); \
  } while (0)
