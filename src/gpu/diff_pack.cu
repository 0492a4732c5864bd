// The kernels that finish a diffed bucket on the device: `gaps` marks each tensor whose largest gap needs
// uint32 deltas, `layout` assigns each tensor its position width and byte offset, `pack` writes the data
// section [__positions__ | __values__] in the bytes the CPU encoder writes.
#include <cuda_runtime.h>

#include "gpu/cuda_check.h"
#include "gpu/diff_internal.h"

namespace deltasync::gpu::detail {
namespace {

__device__ __forceinline__ int find_tensor_by_rank(const tstate* st, int n, uint64_t k) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (st[mid].start <= k) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Marks tensors whose deltas need uint32 gaps. Ranks past the capacity were not stored: skipped (the host
// re-runs the bucket with a larger capacity).
__global__ void gaps_kernel(const uint32_t* positions, tstate* states, int n, uint64_t capacity) {
  const uint64_t count = states[n - 1].end;  // the bucket's total
  if (count > capacity) return;  // overflowed: the host re-runs the bucket
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < count; k += uint64_t{gridDim.x} * blockDim.x) {
    const int ti = find_tensor_by_rank(states, n, k);
    const uint64_t prev = k == states[ti].start ? 0 : uint64_t{positions[k - 1]} + 1;
    if (uint64_t{positions[k]} - prev > 65535) states[ti].wide = 1;
  }
}

// Also records the bucket's total count (the end of the last tensor).
__global__ void layout_kernel(tstate* states, int n, bucket_totals* totals, int indices) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  totals->count = states[n - 1].end;
  uint64_t off = 0;
  for (int i = 0; i < n; ++i) {
    const uint64_t c = states[i].end - states[i].start;
    const uint32_t w = (indices || states[i].wide || c == 0) ? 4 : 2;
    states[i].width = w;
    states[i].pos_offset = off;
    off += c * w;
  }
  totals->positions_bytes = off;
}

template <int EB>
__global__ void pack_kernel(const uint32_t* positions, const unsigned char* values, const tstate* states, int n,
                            const bucket_totals* totals, uint64_t capacity, int indices, unsigned char* out) {
  if (totals->count > capacity) return;  // overflowed: the layout does not fit the payload; re-run
  const uint64_t count = totals->count;
  const uint64_t pos_bytes = totals->positions_bytes;
  const bool aligned_values = pos_bytes % EB == 0;
  for (uint64_t k = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < count; k += uint64_t{gridDim.x} * blockDim.x) {
    const int ti = find_tensor_by_rank(states, n, k);
    const tstate s = states[ti];
    const uint64_t local = k - s.start;
    const uint32_t idx = positions[k];
    const uint32_t enc = indices ? idx : idx - (k == s.start ? 0u : positions[k - 1] + 1u);
    if (s.width == 4) {
      unsigned char* p = out + s.pos_offset + 4 * local;
      if ((reinterpret_cast<uintptr_t>(p) & 3) == 0) *reinterpret_cast<uint32_t*>(p) = enc;
      else for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(enc >> (8 * i));
    } else {
      unsigned char* p = out + s.pos_offset + 2 * local;
      *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(enc);  // offsets of 2-byte entries stay even
    }
    unsigned char* dst = out + pos_bytes + k * EB;
    const unsigned char* src = values + k * EB;
    if constexpr (EB == 1) *dst = *src;
    else if constexpr (EB == 2) *reinterpret_cast<uint16_t*>(dst) = *reinterpret_cast<const uint16_t*>(src);
    else if (aligned_values) {
      if constexpr (EB == 4) *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(src);
      else *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(src);
    } else {
      for (int i = 0; i < EB; ++i) dst[i] = src[i];
    }
  }
}

}  // namespace

status finish_bucket(cudaStream_t cs, const uint32_t* positions, const unsigned char* values, tstate* st, int n,
                     bucket_totals* tot, uint64_t capacity, bool indices_enc, uint32_t eb, unsigned char* payload) {
  const int indices = indices_enc ? 1 : 0;
  const unsigned grid = 132 * 8;
  if (!indices) gaps_kernel<<<grid, 256, 0, cs>>>(positions, st, n, capacity);
  layout_kernel<<<1, 32, 0, cs>>>(st, n, tot, indices);
  switch (eb) {
    case 1: pack_kernel<1><<<grid, 256, 0, cs>>>(positions, values, st, n, tot, capacity, indices, payload); break;
    case 2: pack_kernel<2><<<grid, 256, 0, cs>>>(positions, values, st, n, tot, capacity, indices, payload); break;
    case 4: pack_kernel<4><<<grid, 256, 0, cs>>>(positions, values, st, n, tot, capacity, indices, payload); break;
    default: pack_kernel<8><<<grid, 256, 0, cs>>>(positions, values, st, n, tot, capacity, indices, payload); break;
  }
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

}  // namespace deltasync::gpu::detail
