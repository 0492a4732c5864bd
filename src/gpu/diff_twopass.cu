// The mask two-pass diff (diff_method::mask_two_pass). Pass 1 (mask_kernel) only streams: one
// tile per block, both inputs read once, each 16-byte vector's change bits written (in vector order) to a
// mask array, no scan and no waiting. Pass 2 (compact_kernel) reads the masks (1/16 of the input for bf16),
// ranks them per super-tile of kSuperTiles tiles with the same decoupled look-back, and gathers the changed
// elements' values from the current tensor.
#include <cuda_runtime.h>

#include <type_traits>

#include "gpu/cuda_check.h"
#include "gpu/diff_internal.h"
#include "gpu/diff_tile.cuh"

namespace deltasync::gpu::detail {
namespace {

template <int EB>
using mask_t = std::conditional_t<EB == 1, uint16_t, uint8_t>;

template <int EB, int kMinBlocks>
__global__ void __launch_bounds__(512, kMinBlocks) mask_kernel(const tdesc* descs, int ndesc, uint64_t tile_begin,
                                                       mask_t<EB>* masks, const unsigned char* staged,
                                                       uint64_t staged_byte_begin) {
  const uint64_t tile = tile_begin + blockIdx.x;
  const tile_ref r = locate<tile_bytes(512)>(descs, ndesc, tile, staged, staged_byte_begin);
  uint4 a[kRounds];
  uint32_t m[kRounds];
  load_tile_global<EB, 512>(r, threadIdx.x, a, m);
#pragma unroll
  for (int v = 0; v < kRounds; ++v)
    masks[tile * kVecsPerTile + uint64_t(v) * 512 + threadIdx.x] = static_cast<mask_t<EB>>(m[v]);
}

template <int EB>
__global__ void __launch_bounds__(kCompactThreads) compact_kernel(const tdesc* descs, int ndesc, uint64_t tiles,
                                                                  const mask_t<EB>* masks, uint64_t* status,
                                                                  uint32_t* positions, unsigned char* values,
                                                                  uint64_t capacity, tstate* states) {
  __shared__ uint32_t s_warp[kCompactThreads / 32];
  __shared__ uint64_t s_prefix;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  constexpr int kBits = 8 * sizeof(mask_t<EB>);
  constexpr int kWords = kRun * sizeof(mask_t<EB>) / 16;
  const uint64_t vec0 = uint64_t{blockIdx.x} * kSuperTiles * kVecsPerTile + uint64_t(t) * kRun;
  const uint64_t tile = vec0 / kVecsPerTile;
  const bool live = tile < tiles;
  uint4 w[kWords];
  uint32_t cnt = 0;
#pragma unroll
  for (int i = 0; i < kWords; ++i) {
    w[i] = live ? __ldcs(reinterpret_cast<const uint4*>(masks + vec0) + i) : make_uint4(0, 0, 0, 0);
    cnt += __popc(w[i].x) + __popc(w[i].y) + __popc(w[i].z) + __popc(w[i].w);
  }
  uint32_t x = cnt;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const uint32_t y = __shfl_up_sync(0xFFFFFFFFu, x, off);
    if (lane >= off) x += y;
  }
  if (lane == 31) s_warp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    uint32_t v = lane < kCompactThreads / 32 ? s_warp[lane] : 0;
#pragma unroll
    for (int off = 1; off < kCompactThreads / 32; off <<= 1) {
      const uint32_t y = __shfl_up_sync(0xFFFFFFFFu, v, off);
      if (lane >= off) v += y;
    }
    const uint64_t total = __shfl_sync(0xFFFFFFFFu, v, kCompactThreads / 32 - 1);
    if (lane < kCompactThreads / 32) s_warp[lane] = v;
    const uint64_t prefix = warp_lookback(status, blockIdx.x, total, lane);
    if (lane == 0) s_prefix = prefix;
  }
  __syncthreads();
  if (!live) return;
  uint64_t rank = s_prefix + (x - cnt) + (warp > 0 ? s_warp[warp - 1] : 0);
  const int ti = find_tensor_by_tile(descs, ndesc, tile);
  const tdesc d = descs[ti];
  const uint64_t local = tile - d.first_tile;
  const uint64_t vin = vec0 % kVecsPerTile;
  if (local == 0 && vin == 0) states[ti].start = rank;
  if (local + 1 == d.ntiles && vin + kRun == kVecsPerTile) states[ti].end = rank + cnt;
  const bool vec = (reinterpret_cast<uintptr_t>(d.cur) & 15) == 0;
  const uint64_t byte_base = (local * kVecsPerTile + vin) * 16;  // first byte of the run in the tensor
#pragma unroll
  for (int i = 0; i < kWords; ++i) {
    const uint32_t comp[4] = {w[i].x, w[i].y, w[i].z, w[i].w};
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      uint32_t bits = comp[c];
      while (bits != 0) {
        const int b = __ffs(bits) - 1;
        bits &= bits - 1;
        const int j = (i * 16 + c * 4) * 8 / kBits + b / kBits;  // vector in the run
        const int e = b % kBits;
        const uint64_t off = byte_base + uint64_t(j) * 16;
        if (rank < capacity) {
          const uint4 a = load16(d.cur, off, d.nbytes, vec);
          positions[rank] = static_cast<uint32_t>(off / EB + e);
          store_value<EB>(values, rank, a, e);
        }
        ++rank;
      }
    }
  }
}

template <int EB>
status launch_mask_t(cudaStream_t s, int blocks_per_sm, const tdesc* descs, int ndesc, uint64_t tile_begin, uint64_t tiles, void* masks,
                   const unsigned char* staged, uint64_t staged_byte_begin) {
  if (tiles == 0) return {};
  if (blocks_per_sm != 3)
    mask_kernel<EB, 4><<<static_cast<unsigned>(tiles), 512, 0, s>>>(descs, ndesc, tile_begin,
                                                                    static_cast<mask_t<EB>*>(masks), staged, staged_byte_begin);
  else
    mask_kernel<EB, 3><<<static_cast<unsigned>(tiles), 512, 0, s>>>(descs, ndesc, tile_begin,
                                                                    static_cast<mask_t<EB>*>(masks), staged, staged_byte_begin);
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

template <int EB>
status launch_compact_t(cudaStream_t s, const tdesc* descs, int ndesc, uint64_t tiles, const void* masks,
                      uint64_t* status_words, uint32_t* positions, unsigned char* values, uint64_t capacity,
                      tstate* states) {
  const unsigned grid = static_cast<unsigned>((tiles + kSuperTiles - 1) / kSuperTiles);
  compact_kernel<EB><<<grid, kCompactThreads, 0, s>>>(descs, ndesc, tiles, static_cast<const mask_t<EB>*>(masks),
                                                      status_words, positions, values, capacity, states);
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

}  // namespace

status launch_mask_pass(cudaStream_t s, uint32_t eb, int blocks_per_sm, const tdesc* descs, int ndesc,
                        uint64_t tile_begin, uint64_t tiles, void* masks, const unsigned char* staged,
                        uint64_t staged_byte_begin) {
  switch (eb) {
    case 1: return launch_mask_t<1>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, masks, staged, staged_byte_begin);
    case 2: return launch_mask_t<2>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, masks, staged, staged_byte_begin);
    case 4: return launch_mask_t<4>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, masks, staged, staged_byte_begin);
    default: return launch_mask_t<8>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, masks, staged, staged_byte_begin);
  }
}

status launch_compact_pass(cudaStream_t s, uint32_t eb, const tdesc* descs, int ndesc, uint64_t tiles,
                           const void* masks, uint64_t* status_words, uint32_t* positions, unsigned char* values,
                           uint64_t capacity, tstate* states) {
  switch (eb) {
    case 1: return launch_compact_t<1>(s, descs, ndesc, tiles, masks, status_words, positions, values, capacity, states);
    case 2: return launch_compact_t<2>(s, descs, ndesc, tiles, masks, status_words, positions, values, capacity, states);
    case 4: return launch_compact_t<4>(s, descs, ndesc, tiles, masks, status_words, positions, values, capacity, states);
    default: return launch_compact_t<8>(s, descs, ndesc, tiles, masks, status_words, positions, values, capacity, states);
  }
}

}  // namespace deltasync::gpu::detail
