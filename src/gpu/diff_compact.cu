// The tile-compact diff (diff_method::tile_compact, the default). One pass over the data: each block streams
// one tile of current and snapshot, ranks the tile's changes with a block scan, takes a place for them in an
// unordered scratch with one atomicAdd (no block ever waits for another), and writes them there with the
// tile's count and place. Then a scan (CUB) of the per-tile counts gives each tile its rank in the bucket,
// and a copy kernel moves every tile's changes to that rank: the compact positions and values come out in
// manifest order, and each tensor's bounds with them. What crosses HBM beyond the two inputs is the changes
// themselves, twice (written, then copied), and three words per tile: no mask, no gather from the inputs.
#include <cuda_runtime.h>

#include <cub/device/device_scan.cuh>

#include "gpu/cuda_check.h"
#include "gpu/diff_internal.h"
#include "gpu/diff_tile.cuh"

namespace deltasync::gpu::detail {
namespace {

constexpr int kThreads = 512;
constexpr int kPlaceWarps = 8;  // tiles per block of the copy kernel, one warp each

template <int EB, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    compact_tiles_kernel(const tdesc* descs, int ndesc, uint64_t tile_begin, compact_scratch sc, uint64_t capacity,
                         const unsigned char* staged, uint64_t staged_byte_begin) {
  __shared__ uint64_t s_warp[kThreads / 32];
  __shared__ uint64_t s_place;
  const uint64_t tile = tile_begin + blockIdx.x;
  const tile_ref r = locate<tile_bytes(kThreads)>(descs, ndesc, tile, staged, staged_byte_begin);
  uint4 a[kRounds];
  uint32_t m[kRounds];
  load_tile_global<EB, kThreads>(r, threadIdx.x, a, m);
  const tile_scan scan = block_scan_rounds<kThreads>(m, s_warp);
  if (threadIdx.x == 0) {
    const uint64_t place = scan.agg == 0 ? 0 : atomicAdd(reinterpret_cast<unsigned long long*>(sc.counter),
                                                         static_cast<unsigned long long>(scan.agg));
    sc.tile_count[tile] = scan.agg;
    sc.tile_place[tile] = place;
    s_place = place;
  }
  __syncthreads();
  if (scan.agg == 0) return;
  store_tile_changes<EB, kThreads>(r, a, m, scan, s_place, sc.positions, sc.values, capacity);
}

template <int EB>
__device__ __forceinline__ void copy_value(unsigned char* dst, const unsigned char* src, uint64_t to, uint64_t from) {
  if constexpr (EB == 1) dst[to] = src[from];
  else if constexpr (EB == 2) reinterpret_cast<uint16_t*>(dst)[to] = reinterpret_cast<const uint16_t*>(src)[from];
  else if constexpr (EB == 4) reinterpret_cast<uint32_t*>(dst)[to] = reinterpret_cast<const uint32_t*>(src)[from];
  else reinterpret_cast<uint2*>(dst)[to] = reinterpret_cast<const uint2*>(src)[from];
}

// One warp per tile: records the tensor bounds the tile holds, then (unless the scratch overflowed: the
// host re-runs the bucket) copies the tile's changes from their place to their rank.
template <int EB>
__global__ void __launch_bounds__(32 * kPlaceWarps)
    place_kernel(const tdesc* descs, int ndesc, uint64_t tiles, compact_scratch sc, uint32_t* positions,
                 unsigned char* values, uint64_t capacity, tstate* states) {
  const int lane = threadIdx.x & 31;
  const uint64_t tile = uint64_t{blockIdx.x} * kPlaceWarps + (threadIdx.x >> 5);
  if (tile >= tiles) return;
  const uint64_t count = sc.tile_count[tile], rank = sc.tile_rank[tile];
  if (lane == 0) {
    const int ti = find_tensor_by_tile(descs, ndesc, tile);
    const uint64_t local = tile - descs[ti].first_tile;
    if (local == 0) states[ti].start = rank;
    if (local + 1 == descs[ti].ntiles) states[ti].end = rank + count;
  }
  if (count == 0 || *sc.counter > capacity) return;
  const uint64_t place = sc.tile_place[tile];
  for (uint64_t i = lane; i < count; i += 32) {
    positions[rank + i] = sc.positions[place + i];
    copy_value<EB>(values, sc.values, rank + i, place + i);
  }
}

template <int EB>
status launch_tiles_t(cudaStream_t s, int blocks_per_sm, const tdesc* descs, int ndesc, uint64_t tile_begin,
                      uint64_t tiles, const compact_scratch& sc, uint64_t capacity, const unsigned char* staged,
                      uint64_t staged_byte_begin) {
  const unsigned grid = static_cast<unsigned>(tiles);
  if (blocks_per_sm == 3)
    compact_tiles_kernel<EB, 3><<<grid, kThreads, 0, s>>>(descs, ndesc, tile_begin, sc, capacity, staged, staged_byte_begin);
  else
    compact_tiles_kernel<EB, 4><<<grid, kThreads, 0, s>>>(descs, ndesc, tile_begin, sc, capacity, staged, staged_byte_begin);
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

template <int EB>
status launch_place_t(cudaStream_t s, const tdesc* descs, int ndesc, uint64_t tiles, const compact_scratch& sc,
                      uint32_t* positions, unsigned char* values, uint64_t capacity, tstate* states) {
  const unsigned grid = static_cast<unsigned>((tiles + kPlaceWarps - 1) / kPlaceWarps);
  place_kernel<EB><<<grid, 32 * kPlaceWarps, 0, s>>>(descs, ndesc, tiles, sc, positions, values, capacity, states);
  DS_CUDA_TRY(cudaGetLastError());
  return {};
}

}  // namespace

size_t compact_scan_temp_bytes(uint64_t tiles) {
  size_t bytes = 0;
  cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
                                static_cast<int64_t>(tiles));
  return bytes;
}

status launch_compact_tiles(cudaStream_t s, uint32_t eb, int blocks_per_sm, const tdesc* descs, int ndesc,
                            uint64_t tile_begin, uint64_t tiles, const compact_scratch& sc, uint64_t capacity,
                            const unsigned char* staged, uint64_t staged_byte_begin) {
  if (tiles == 0) return {};
  switch (eb) {
    case 1: return launch_tiles_t<1>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, sc, capacity, staged, staged_byte_begin);
    case 2: return launch_tiles_t<2>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, sc, capacity, staged, staged_byte_begin);
    case 4: return launch_tiles_t<4>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, sc, capacity, staged, staged_byte_begin);
    default: return launch_tiles_t<8>(s, blocks_per_sm, descs, ndesc, tile_begin, tiles, sc, capacity, staged, staged_byte_begin);
  }
}

status launch_compact_place(cudaStream_t s, uint32_t eb, const tdesc* descs, int ndesc, uint64_t tiles,
                            const compact_scratch& sc, uint32_t* positions, unsigned char* values, uint64_t capacity,
                            tstate* states) {
  if (tiles == 0) return {};
  size_t temp = sc.scan_temp_bytes;
  DS_CUDA_TRY(cub::DeviceScan::ExclusiveSum(sc.scan_temp, temp, sc.tile_count, sc.tile_rank,
                                            static_cast<int64_t>(tiles), s));
  switch (eb) {
    case 1: return launch_place_t<1>(s, descs, ndesc, tiles, sc, positions, values, capacity, states);
    case 2: return launch_place_t<2>(s, descs, ndesc, tiles, sc, positions, values, capacity, states);
    case 4: return launch_place_t<4>(s, descs, ndesc, tiles, sc, positions, values, capacity, states);
    default: return launch_place_t<8>(s, descs, ndesc, tiles, sc, positions, values, capacity, states);
  }
}

}  // namespace deltasync::gpu::detail
