// Internal to src/gpu: what the diff kernel leaves per tensor, and the kernels that turn it into a delta
// file's data section (diff_pack.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "base/result.h"

namespace deltasync::gpu::detail {

// Per-tensor results, written by the kernels, read back once.
struct tstate {
  uint64_t start;   // first rank (element offset into the compact values)
  uint64_t end;     // one past the last rank
  uint32_t wide;    // 1 when some gap exceeds 65535
  uint32_t width;   // position width chosen by `layout`
  uint64_t pos_offset;
};

struct bucket_totals {
  uint64_t count;
  uint64_t positions_bytes;
};

// Queues the kernels that finish a bucket after the diff: the total count (the end of the last tensor),
// for `deltas` the tensors whose gaps need uint32, the layout (each tensor's position width and byte
// offset), and the packed payload [__positions__ | __values__]. Nothing past an overflowed scratch
// (count > capacity) is written: the caller re-runs the bucket.
status finish_bucket(cudaStream_t cs, const uint32_t* positions, const unsigned char* values, tstate* states, int n,
                     bucket_totals* totals, uint64_t capacity, bool indices, uint32_t elem_bytes,
                     unsigned char* payload);

}  // namespace deltasync::gpu::detail
