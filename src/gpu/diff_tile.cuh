// Internal to src/gpu: the pieces of a diff tile's work shared by the single-pass kernel (diff.cu), the mask
// two-pass kernels (diff_twopass.cu) and the tile-compact ones (diff_compact.cu): tensor descriptors, 16-byte
// loads and change bits, the block scan of a tile's changes, the decoupled look-back over tile statuses; and
// the launches of the two other variants.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "base/result.h"
#include "gpu/diff_internal.h"

namespace deltasync::gpu::detail {

constexpr int kRounds = 4;
constexpr uint64_t tile_bytes(int threads) { return uint64_t(threads) * kRounds * 16; }
constexpr uint64_t kFlagAggregate = 1ull << 62;
constexpr uint64_t kFlagInclusive = 2ull << 62;
constexpr uint64_t kValueMask = (1ull << 62) - 1;

struct tdesc {
  const unsigned char* cur;
  const unsigned char* snap;  // null for a tensor staged from the host (the launch gives its chunk)
  uint64_t nbytes;
  uint64_t first_tile;
  uint64_t ntiles;
};

__device__ __forceinline__ int find_tensor_by_tile(const tdesc* d, int n, uint64_t tile) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (d[mid].first_tile <= tile) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ uint64_t load_status(const uint64_t* p) {
  return *reinterpret_cast<const volatile uint64_t*>(p);
}
__device__ __forceinline__ void store_status(uint64_t* p, uint64_t v) {
  __threadfence();
  *reinterpret_cast<volatile uint64_t*>(p) = v;
}

// Warp-wide (all 32 lanes of one warp): publishes `agg` as `tile`'s aggregate, looks back over the
// predecessors 32 at a time until the nearest inclusive prefix, publishes the tile's inclusive prefix and
// returns its exclusive prefix (on every lane).
__device__ __forceinline__ uint64_t warp_lookback(uint64_t* status, uint64_t tile, uint64_t agg, int lane) {
  uint64_t prefix = 0;
  if (tile == 0) {
    if (lane == 0) store_status(status + tile, kFlagInclusive | agg);
    return 0;
  }
  if (lane == 0) store_status(status + tile, kFlagAggregate | agg);
  int64_t j = static_cast<int64_t>(tile) - 1 - lane;
  while (true) {
    uint64_t st = kFlagInclusive;
    if (j >= 0) {
      do {
        st = load_status(status + j);
      } while ((st >> 62) == 0);
    }
    const unsigned incl = __ballot_sync(0xFFFFFFFFu, (st >> 62) == 2);
    uint64_t val = st & kValueMask;
    if (incl != 0 && lane > __ffs(incl) - 1) val = 0;
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) val += __shfl_xor_sync(0xFFFFFFFFu, val, off);
    prefix += val;
    if (incl != 0) break;
    j -= 32;
  }
  if (lane == 0) store_status(status + tile, kFlagInclusive | (prefix + agg));
  return prefix;
}

template <int EB>
__device__ __forceinline__ uint32_t change_mask(uint4 a, uint4 b) {
  const uint32_t w[4] = {a.x ^ b.x, a.y ^ b.y, a.z ^ b.z, a.w ^ b.w};
  uint32_t m = 0;
#pragma unroll
  for (int e = 0; e < 16 / EB; ++e) {
    bool c;
    if constexpr (EB == 1) c = ((w[e / 4] >> (8 * (e % 4))) & 0xFFu) != 0;
    else if constexpr (EB == 2) c = ((w[e / 2] >> (16 * (e % 2))) & 0xFFFFu) != 0;
    else if constexpr (EB == 4) c = w[e] != 0;
    else c = (w[2 * e] | w[2 * e + 1]) != 0;
    m |= uint32_t{c} << e;
  }
  return m;
}

template <int EB>
__device__ __forceinline__ void store_value(unsigned char* values, uint64_t rank, uint4 a, int e) {
  const uint32_t w[4] = {a.x, a.y, a.z, a.w};
  if constexpr (EB == 1) values[rank] = static_cast<unsigned char>(w[e / 4] >> (8 * (e % 4)));
  else if constexpr (EB == 2) reinterpret_cast<uint16_t*>(values)[rank] = static_cast<uint16_t>(w[e / 2] >> (16 * (e % 2)));
  else if constexpr (EB == 4) reinterpret_cast<uint32_t*>(values)[rank] = w[e];
  else reinterpret_cast<uint2*>(values)[rank] = make_uint2(w[2 * e], w[2 * e + 1]);
}

__device__ __forceinline__ uint4 load16(const unsigned char* p, uint64_t off, uint64_t nbytes, bool vec) {
  if (vec && off + 16 <= nbytes) return __ldcs(reinterpret_cast<const uint4*>(p + off));
  uint32_t w[4] = {0, 0, 0, 0};
  for (int i = 0; i < 16; ++i)
    if (off + i < nbytes) w[i / 4] |= uint32_t{p[off + i]} << (8 * (i % 4));
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// ---- the pieces of a tile's work, shared by both kernels ----

// A tile's place: its tensor, where its bytes start, and where its snapshot bytes are.
struct tile_ref {
  int ti;
  tdesc d;
  uint64_t local, byte0;
  const unsigned char* snap;
  bool fast;  // whole tile, 16-byte aligned: vector loads only
};

template <uint64_t kTileBytes>
__device__ __forceinline__ tile_ref locate(const tdesc* descs, int ndesc, uint64_t tile, const unsigned char* staged,
                                           uint64_t staged_byte_begin) {
  tile_ref r;
  r.ti = find_tensor_by_tile(descs, ndesc, tile);
  r.d = descs[r.ti];
  r.local = tile - r.d.first_tile;
  r.byte0 = r.local * kTileBytes;
  // A staged chunk's bytes sit at staged[byte - staged_byte_begin].
  r.snap = r.d.snap != nullptr ? r.d.snap : staged - staged_byte_begin;
  const bool vec = ((reinterpret_cast<uintptr_t>(r.d.cur) | reinterpret_cast<uintptr_t>(r.snap + r.byte0)) & 15) == 0;
  r.fast = vec && r.byte0 + kTileBytes <= r.d.nbytes;
  return r;
}

// Loads a tile's vectors straight from device memory (every load issued before the first use when fast).
template <int EB, int kThreads>
__device__ __forceinline__ void load_tile_global(const tile_ref& r, int t, uint4* a, uint32_t* m) {
  if (r.fast) {
    uint4 b[kRounds];
#pragma unroll
    for (int v = 0; v < kRounds; ++v) {
      const uint64_t off = r.byte0 + (uint64_t(v) * kThreads + t) * 16;
      a[v] = __ldcs(reinterpret_cast<const uint4*>(r.d.cur + off));
      b[v] = __ldcs(reinterpret_cast<const uint4*>(r.snap + off));
    }
#pragma unroll
    for (int v = 0; v < kRounds; ++v) m[v] = change_mask<EB>(a[v], b[v]);
    return;
  }
  const bool vec = ((reinterpret_cast<uintptr_t>(r.d.cur) | reinterpret_cast<uintptr_t>(r.snap + r.byte0)) & 15) == 0;
#pragma unroll
  for (int v = 0; v < kRounds; ++v) {
    const uint64_t off = r.byte0 + (uint64_t(v) * kThreads + t) * 16;
    uint4 b;
    if (off < r.d.nbytes) {
      a[v] = load16(r.d.cur, off, r.d.nbytes, vec);
      b = load16(r.snap, off, r.d.nbytes, vec);
    } else {
      a[v] = b = make_uint4(0, 0, 0, 0);
    }
    m[v] = change_mask<EB>(a[v], b);
  }
}

// A tile's change counts ranked across the block (contains __syncthreads; every thread of the block calls it).
// The kRounds per-thread counts travel packed in 16-bit fields of one 64-bit scan (a field never carries: at
// most 512 threads x 16 elements). excl: this thread's exclusive prefix, field by field; total: the block's
// totals, field by field; agg: all of the tile's changed elements.
struct tile_scan {
  uint64_t excl, total, agg;
};
template <int kThreads>
__device__ __forceinline__ tile_scan block_scan_rounds(const uint32_t* m, uint64_t* s_warp) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  uint64_t packed = 0;
#pragma unroll
  for (int v = 0; v < kRounds; ++v) packed += uint64_t(__popc(m[v])) << (16 * v);
  uint64_t x = packed;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const uint64_t y = __shfl_up_sync(0xFFFFFFFFu, x, off);
    if (lane >= off) x += y;
  }
  if (lane == 31) s_warp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    uint64_t w = lane < kThreads / 32 ? s_warp[lane] : 0;
#pragma unroll
    for (int off = 1; off < kThreads / 32; off <<= 1) {
      const uint64_t y = __shfl_up_sync(0xFFFFFFFFu, w, off);
      if (lane >= off) w += y;
    }
    if (lane < kThreads / 32) s_warp[lane] = w;
  }
  __syncthreads();
  tile_scan r;
  r.excl = x - packed + (warp > 0 ? s_warp[warp - 1] : 0);
  r.total = s_warp[kThreads / 32 - 1];
  r.agg = 0;
#pragma unroll
  for (int v = 0; v < kRounds; ++v) r.agg += (r.total >> (16 * v)) & 0xFFFF;
  return r;
}

// Writes a tile's changed elements (positions local to the tensor, values) at base + their rank in the tile;
// ranks at or past `capacity` are not stored (the caller re-runs with a larger scratch).
template <int EB, int kThreads>
__device__ __forceinline__ void store_tile_changes(const tile_ref& r, const uint4* a, const uint32_t* m,
                                                   const tile_scan& sc, uint64_t base, uint32_t* positions,
                                                   unsigned char* values, uint64_t capacity) {
  const int t = threadIdx.x;
  const uint64_t elem_base = r.byte0 / EB;
#pragma unroll
  for (int v = 0; v < kRounds; ++v) {
    uint64_t rank = base + ((sc.excl >> (16 * v)) & 0xFFFF);
    const uint32_t mask = m[v];
    if (mask != 0) {
      const uint32_t e0 = static_cast<uint32_t>(elem_base + (uint64_t(v) * kThreads + t) * (16 / EB));
#pragma unroll
      for (int e = 0; e < 16 / EB; ++e) {
        if ((mask >> e) & 1u) {
          if (rank < capacity) {
            positions[rank] = e0 + e;
            store_value<EB>(values, rank, a[v], e);
          }
          ++rank;
        }
      }
    }
    base += (sc.total >> (16 * v)) & 0xFFFF;
  }
}

// ---- tile-compact variant (diff_method::tile_compact, the default), diff_compact.cu ----
// Scratch the encoder keeps per bucket of `tiles` tiles: each tile's change count, its place in the unordered
// scratch and its rank in the bucket; and one counter handing out scratch places.
struct compact_scratch {
  uint64_t* counter;      // 1 word, zeroed before pass 1
  uint64_t* tile_count;   // tiles words
  uint64_t* tile_place;   // tiles words
  uint64_t* tile_rank;    // tiles words (written by the scan)
  uint32_t* positions;    // capacity: the tiles' changes in the order their tiles took places
  unsigned char* values;  // capacity x element width
  void* scan_temp;        // CUB's scan scratch
  size_t scan_temp_bytes;
};
// Bytes of CUB's scan scratch for `tiles` tiles.
size_t compact_scan_temp_bytes(uint64_t tiles);
// Pass 1 over tiles [tile_begin, tile_begin + tiles), as launch_mask_pass.
status launch_compact_tiles(cudaStream_t s, uint32_t eb, int blocks_per_sm, const tdesc* descs, int ndesc,
                            uint64_t tile_begin, uint64_t tiles, const compact_scratch& cs_, uint64_t capacity,
                            const unsigned char* staged, uint64_t staged_byte_begin);
// The scan of the tile counts and the ordered copy into positions/values, with each tensor's bounds.
status launch_compact_place(cudaStream_t s, uint32_t eb, const tdesc* descs, int ndesc, uint64_t tiles,
                            const compact_scratch& cs_, uint32_t* positions, unsigned char* values,
                            uint64_t capacity, tstate* states);

// ---- mask two-pass variant (diff_method::mask_two_pass), diff_twopass.cu ----
constexpr int kVecsPerTile = 512 * kRounds;  // the 32 KiB tile of the 512-thread kernels
constexpr int kSuperTiles = 8;
constexpr int kCompactThreads = 256;
constexpr int kRun = kSuperTiles * kVecsPerTile / kCompactThreads;  // vectors per thread, inside one tile
static_assert(kVecsPerTile % kRun == 0, "a thread's run of vectors stays in one tile");

// Scratch bytes of the change bits for `tiles` tiles of element width `eb` (whole super-tiles).
inline uint64_t mask_scratch_bytes(uint64_t tiles, uint32_t eb) {
  return (tiles + kSuperTiles - 1) / kSuperTiles * kSuperTiles * kVecsPerTile * (eb == 1 ? 2 : 1);
}
// Pass 1 over tiles [tile_begin, tile_begin + tiles) (a staged chunk's snapshot at `staged`, as for the
// single-pass kernel); pass 2 over all `tiles` of the bucket, ranking into positions/values and states.
status launch_mask_pass(cudaStream_t s, uint32_t eb, int blocks_per_sm, const tdesc* descs, int ndesc,
                        uint64_t tile_begin, uint64_t tiles, void* masks, const unsigned char* staged,
                        uint64_t staged_byte_begin);
status launch_compact_pass(cudaStream_t s, uint32_t eb, const tdesc* descs, int ndesc, uint64_t tiles,
                           const void* masks, uint64_t* status_words, uint32_t* positions, unsigned char* values,
                           uint64_t capacity, tstate* states);

}  // namespace deltasync::gpu::detail
