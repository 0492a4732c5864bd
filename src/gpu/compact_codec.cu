// The compact/2 stream (codec/compact.h) encoded and decoded on the device, byte for byte what the CPU codec
// writes and accepts; the value coder's arithmetic is codec/compact_coder.h, compiled for both. Encode: a histogram
// of the value symbols and one thread's normalisation give the stream's table; one CTA per block of 8192 changes
// stages the block's gaps and value codes in shared memory (coalesced), and one warp of it chooses kp exactly as
// compact.cc does (same estimate, same three candidates, same ties), then each lane codes its 256 changes from the
// stage: the bit count of its Rice codes and raw bits, and its rANS bytes into scratch; one CTA lays out the
// directory (a scan of the block sizes); one CTA per block stages it again and writes each lane's region at the
// offset a warp scan of the lane sizes gives. Decode: one warp per block, which first copies the block's bytes
// into shared memory, each lane then decoding its lane from there (its entry point from a warp scan of the lane
// table), its positions offset by the lanes before it with a second warp scan; every check the CPU decoder makes,
// the cross-block rule (each base is the previous block's last index + 1) by a second pass. The lanes' work is a
// serial chain per lane; staging puts shared-memory latency, not global, on that chain.
// compact/1 streams are decoded on the host and copied up.
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "codec/compact.h"
#include "codec/compact_coder.h"
#include "gpu/cuda_check.h"
#include "gpu/kernels.h"

namespace deltasync::gpu {
namespace {

namespace cd = compact::coder;
constexpr uint32_t B = compact::kBlockElems;
constexpr uint32_t LE = compact::kLaneElems;
constexpr uint32_t kEsc = compact::kEscapeQ;
constexpr uint32_t kSpecial = compact::kModeSpecial;
constexpr uint32_t kLaneRansBytes = 2 * LE;  // a lane's rANS bytes: at most 11 bits per symbol

template <typename T>
struct width_of {
  static constexpr uint32_t value = 8 * sizeof(T);
};

__device__ __forceinline__ uint64_t rice_bits_d(uint64_t x, uint32_t k, uint32_t esc_bits, uint32_t esc_q) {
  const uint64_t q = x >> k;
  return q < esc_q ? q + 1 + k : esc_q + esc_bits;
}

template <typename T>
__device__ __forceinline__ T zigzag_of(T o, T v) {  // of the raw-bit difference; a change's is >= 1
  using S = typename std::make_signed<T>::type;
  const S s = static_cast<S>(static_cast<T>(v - o));
  return static_cast<T>(static_cast<T>(static_cast<T>(s) << 1) ^ static_cast<T>(s >> (width_of<T>::value - 1)));
}

// A change's value code (compact.h): its zigzag minus one.
template <typename T>
__device__ __forceinline__ uint64_t code_of(T o, T v) {
  return static_cast<uint64_t>(zigzag_of<T>(o, v)) - 1;
}

__device__ __forceinline__ uint64_t warp_sum(uint64_t x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xFFFFFFFFu, x, o);
  return x;
}

// The gap of element i of the param (i >= 0): positions[i] - (positions[i-1] + 1), the first from 0.
__device__ __forceinline__ uint64_t gap_at(const uint32_t* positions, uint64_t i) {
  return i == 0 ? positions[0] : uint64_t{positions[i]} - positions[i - 1] - 1;
}

// compact.cc's best_k, over a block held by one warp (`hist` is this warp's 34 shared counters): the bit-width
// histogram's estimate picks k_est, the exact costs of k_est - 1 .. + 1 decide, ties to the smaller k.
template <typename F>
__device__ void best_k_warp(F sym, uint32_t m, uint32_t esc_bits, uint32_t esc_q, uint32_t* hist, uint32_t& k_out,
                            uint64_t& bits_out) {
  const uint32_t lane = threadIdx.x & 31;
  for (uint32_t b = lane; b < 34; b += 32) hist[b] = 0;
  __syncwarp();
  for (uint32_t i = lane; i < m; i += 32) {
    const uint64_t x = sym(i);
    const uint32_t w = x == 0 ? 0 : 64 - __clzll(static_cast<long long>(x));
    atomicAdd(hist + (w < 33 ? w : 33), 1u);
  }
  __syncwarp();
  // Lane k estimates k's cost (kMaxK + 1 == 32 lanes); the warp takes the smallest, ties to the smaller k.
  uint64_t est = 0;
  for (uint32_t b = 0; b < 34; ++b) {
    const uint32_t c = hist[b];
    if (c == 0) continue;
    const uint64_t rep = b == 0 ? 0 : b == 1 ? 1 : uint64_t{3} << (b - 2);
    est += c * rice_bits_d(rep, lane, esc_bits, esc_q);
  }
  uint32_t k_est = lane;
  for (int o = 16; o > 0; o >>= 1) {
    const uint64_t e2 = __shfl_xor_sync(0xFFFFFFFFu, est, o);
    const uint32_t k2 = __shfl_xor_sync(0xFFFFFFFFu, k_est, o);
    if (e2 < est || (e2 == est && k2 < k_est)) est = e2, k_est = k2;
  }
  __syncwarp();
  const uint32_t lo = k_est == 0 ? 0 : k_est - 1;
  const uint32_t hi = k_est + 1 < compact::kMaxK ? k_est + 1 : compact::kMaxK;
  uint32_t best_k = lo;
  uint64_t best = ~uint64_t{0};
  for (uint32_t k = lo; k <= hi; ++k) {
    uint64_t bits = 0;
    for (uint32_t i = lane; i < m; i += 32) bits += rice_bits_d(sym(i), k, esc_bits, esc_q);
    bits = warp_sum(bits);
    if (bits < best) best = bits, best_k = k;
  }
  k_out = best_k;
  bits_out = best;
}


// The value table on the device: frequencies and cumulative starts, as compact.cc's `table`.
struct dtable {
  uint32_t nsym;
  uint32_t freq[cd::kMaxSymbols];
  uint32_t cum[cd::kMaxSymbols + 1];
};

template <typename T>
__global__ void hist_kernel(const T* old_v, const T* new_v, uint64_t n, uint32_t* counts) {
  __shared__ uint32_t h[cd::kMaxSymbols];
  for (uint32_t s = threadIdx.x; s < cd::kMaxSymbols; s += blockDim.x) h[s] = 0;
  __syncthreads();
  for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < n; i += uint64_t{gridDim.x} * blockDim.x)
    atomicAdd(h + cd::symbol_of(code_of<T>(old_v[i], new_v[i])), 1u);
  __syncthreads();
  for (uint32_t s = threadIdx.x; s < cd::kMaxSymbols; s += blockDim.x)
    if (h[s] != 0) atomicAdd(counts + s, h[s]);
}

// One thread: the header, the normalised table (its bytes after the header) and the directory's offset.
__global__ void table_kernel(const uint32_t* counts, uint64_t n, uint32_t elem_bytes, dtable* t, unsigned char* out,
                             uint32_t* dir_offset) {
  out[0] = compact::kMagic;
  out[1] = compact::kLog2BlockElems;
  out[2] = static_cast<unsigned char>(elem_bytes);
  out[3] = compact::kLog2LaneElems;
  for (int i = 0; i < 4; ++i) out[4 + i] = static_cast<unsigned char>(n >> (8 * i));
  uint32_t nsym = 0;
  if (n > 0) {
    nsym = cd::kMaxSymbols;
    while (counts[nsym - 1] == 0) --nsym;
    cd::normalize(counts, nsym, n, t->freq);
  }
  t->nsym = nsym;
  t->cum[0] = 0;
  for (uint32_t s = 0; s < nsym; ++s) t->cum[s + 1] = t->cum[s] + t->freq[s];
  uint32_t at = compact::kHeaderBytes;
  out[at++] = static_cast<unsigned char>(nsym);
  for (uint32_t s = 0; s < nsym; ++s) {
    const uint32_t f = t->freq[s];
    if (f < 0x80) {
      out[at++] = static_cast<unsigned char>(f);
    } else {
      out[at++] = static_cast<unsigned char>((f & 0x7F) | 0x80);
      out[at++] = static_cast<unsigned char>(f >> 7);
    }
  }
  *dir_offset = at;
}

// The encoder's kernels take one block per CTA of kEncThreads: all of them stage the block's gaps and value codes
// (zigzag z, the code being z - 1) in shared memory with coalesced loads, then one warp does the block's serial
// work from there (each lane's changes are a serial chain; from global memory every step waited on a load).
constexpr uint32_t kEncThreads = 128;

template <typename T>
constexpr uint32_t enc_stage_bytes() {
  return B * (4 + static_cast<uint32_t>(sizeof(T)));
}

template <typename T>
__device__ void stage_enc(const uint32_t* positions, const T* old_v, const T* new_v, uint64_t first, uint32_t m,
                          uint32_t* gaps, T* zz) {
#pragma unroll 8
  for (uint32_t i = threadIdx.x; i < m; i += blockDim.x) {
    const uint64_t j = first + i;
    gaps[i] = static_cast<uint32_t>(gap_at(positions, j));
    zz[i] = zigzag_of<T>(old_v[j], new_v[j]);
  }
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ uint64_t staged_code(const T* zz, uint32_t i) {  // code_of, from the stage
  return static_cast<uint64_t>(zz[i]) - 1;
}

// kp, then each lane's bit count, rANS bytes (into its scratch slot) and final state; the block's byte size.
template <typename T>
__global__ void __launch_bounds__(kEncThreads) lanes_kernel(const uint32_t* positions, const T* old_v, const T* new_v,
                                                            uint64_t n, const dtable* table, uint8_t* kp_out,
                                                            uint32_t* block_bytes, uint32_t* lane_bits,
                                                            uint32_t* lane_rans, uint32_t* lane_state,
                                                            unsigned char* rans_scratch) {
  extern __shared__ __align__(16) unsigned char enc_stage[];
  __shared__ uint32_t hist[34];
  __shared__ cd::enc_symbol es[cd::kMaxSymbols];
  for (uint32_t s = threadIdx.x; s < cd::kMaxSymbols; s += blockDim.x)
    es[s] = s < table->nsym && table->freq[s] > 0 ? cd::enc_symbol_of(table->freq[s], table->cum[s]) : cd::enc_symbol{};
  const uint32_t b = blockIdx.x;
  const uint64_t first = uint64_t{b} * B;
  const uint32_t m = static_cast<uint32_t>(n - first < B ? n - first : B);
  auto* gaps = reinterpret_cast<uint32_t*>(enc_stage);
  auto* zz = reinterpret_cast<T*>(enc_stage + 4 * B);
  stage_enc<T>(positions, old_v, new_v, first, m, gaps, zz);
  if (threadIdx.x >= 32) return;
  const uint32_t lane = threadIdx.x;
  bool dense = true;
  for (uint32_t i = lane; i < m; i += 32) dense &= gaps[i] == 0;
  dense = __all_sync(0xFFFFFFFFu, dense);
  uint32_t kp = kSpecial;
  uint64_t pbits = 0;
  if (!dense) best_k_warp([&](uint32_t i) { return uint64_t{gaps[i]}; }, m, 32, kEsc, hist, kp, pbits);
  const uint32_t lanes = (m + LE - 1) / LE;
  uint32_t bytes = 0;
  if (lane < lanes) {
    const uint32_t i0 = lane * LE, i1 = i0 + LE < m ? i0 + LE : m;
    uint64_t bits = 0;
    for (uint32_t i = i0; i < i1; ++i) {
      if (kp != kSpecial) bits += rice_bits_d(gaps[i], kp, 32, kEsc);
      bits += cd::extra_bits_of(cd::symbol_of(staged_code(zz, i)));
    }
    unsigned char* r = rans_scratch + (uint64_t{b} * compact::kLanesPerBlock + lane) * kLaneRansBytes;
    uint32_t k = 0, x = cd::kStateLow;
    for (uint32_t i = i1; i-- > i0;) {
      const uint32_t s = cd::symbol_of(staged_code(zz, i));
      x = cd::encode_step(x, es[s], [&](uint8_t byte) { r[k++] = byte; });
    }
    const uint64_t id = uint64_t{b} * compact::kLanesPerBlock + lane;
    lane_bits[id] = static_cast<uint32_t>(bits);
    lane_rans[id] = k;
    lane_state[id] = x;
    bytes = cd::kStateBytes + static_cast<uint32_t>((bits + 7) / 8) + k;
  }
  const uint32_t sum = static_cast<uint32_t>(warp_sum(bytes));
  if (lane == 0) {
    kp_out[b] = static_cast<uint8_t>(kp);
    block_bytes[b] = 1 + 2 * lanes + sum;
  }
}

// One CTA of kLayoutThreads: the directory and each block's offset in the stream (a block-wide scan of the block
// sizes, each thread owning a contiguous run of blocks); total bytes to *total.
constexpr uint32_t kLayoutThreads = 1024;
__global__ void layout_kernel(const uint32_t* positions, uint32_t blocks, const uint32_t* bytes,
                              const uint32_t* dir_offset, uint64_t* offsets, unsigned char* out, uint64_t* total) {
  __shared__ uint64_t sums[kLayoutThreads];
  const uint32_t t = threadIdx.x;
  const uint64_t dir = *dir_offset;
  const uint32_t per = (blocks + kLayoutThreads - 1) / kLayoutThreads;
  const uint32_t lo = t * per < blocks ? t * per : blocks;
  const uint32_t hi = lo + per < blocks ? lo + per : blocks;
  uint64_t mine = 0;
  for (uint32_t b = lo; b < hi; ++b) mine += bytes[b];
  sums[t] = mine;
  __syncthreads();
  for (uint32_t o = 1; o < kLayoutThreads; o <<= 1) {  // inclusive Hillis-Steele scan
    const uint64_t add = t >= o ? sums[t - o] : 0;
    __syncthreads();
    sums[t] += add;
    __syncthreads();
  }
  const uint64_t data = dir + uint64_t{compact::kDirEntryBytes} * blocks;
  uint64_t at = data + sums[t] - mine;
  for (uint32_t b = lo; b < hi; ++b) {
    const uint32_t base = b == 0 ? 0u : positions[uint64_t{b} * B - 1] + 1;
    unsigned char* e = out + dir + uint64_t{compact::kDirEntryBytes} * b;
    for (int i = 0; i < 4; ++i) e[i] = static_cast<unsigned char>(base >> (8 * i));
    for (int i = 0; i < 4; ++i) e[4 + i] = static_cast<unsigned char>(bytes[b] >> (8 * i));
    offsets[b] = at;
    at += bytes[b];
  }
  if (t == kLayoutThreads - 1) *total = data + sums[t];
}

// LSB-first bits into global memory, a byte at a time once 8 are ready (each lane owns its region's bytes).
struct dwriter {
  unsigned char* p;
  uint64_t acc = 0;
  uint32_t n = 0;
  __device__ void put(uint64_t v, uint32_t bits) {  // bits <= 32
    acc |= v << n;
    n += bits;
    while (n >= 8) {
      *p++ = static_cast<unsigned char>(acc & 0xFF);
      acc >>= 8;
      n -= 8;
    }
  }
  __device__ void put_wide(uint64_t v, uint32_t bits) {
    if (bits <= 32) return put(v, bits);
    put(v & 0xFFFFFFFFu, 32);
    put(v >> 32, bits - 32);
  }
  __device__ void flush() {
    if (n > 0) *p++ = static_cast<unsigned char>(acc & 0xFF);
    acc = 0;
    n = 0;
  }
};

// kp, the lane table, and every lane's region (state, bit stream, rANS bytes).
template <typename T>
__global__ void __launch_bounds__(kEncThreads) write_kernel(const uint32_t* positions, const T* old_v, const T* new_v,
                                                            uint64_t n, const uint8_t* kp_in, const uint32_t* lane_bits,
                                                            const uint32_t* lane_rans, const uint32_t* lane_state,
                                                            const unsigned char* rans_scratch, const uint64_t* offsets,
                                                            unsigned char* out) {
  extern __shared__ __align__(16) unsigned char enc_stage[];
  const uint32_t b = blockIdx.x;
  const uint64_t first = uint64_t{b} * B;
  const uint32_t m = static_cast<uint32_t>(n - first < B ? n - first : B);
  auto* gaps = reinterpret_cast<uint32_t*>(enc_stage);
  auto* zz = reinterpret_cast<T*>(enc_stage + 4 * B);
  stage_enc<T>(positions, old_v, new_v, first, m, gaps, zz);
  if (threadIdx.x >= 32) return;
  const uint32_t lane = threadIdx.x;
  const uint32_t lanes = (m + LE - 1) / LE;
  const uint32_t kp = kp_in[b];
  const uint64_t id = uint64_t{b} * compact::kLanesPerBlock + lane;
  uint32_t bytes = 0;
  if (lane < lanes) bytes = cd::kStateBytes + (lane_bits[id] + 7) / 8 + lane_rans[id];
  uint32_t incl = bytes;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_up_sync(0xFFFFFFFFu, incl, o);
    if (lane >= static_cast<uint32_t>(o)) incl += y;
  }
  unsigned char* dst = out + offsets[b];
  if (lane == 0) dst[0] = static_cast<unsigned char>(kp);
  if (lane >= lanes) return;
  dst[1 + 2 * lane] = static_cast<unsigned char>(bytes & 0xFF);
  dst[2 + 2 * lane] = static_cast<unsigned char>(bytes >> 8);
  unsigned char* region = dst + 1 + 2 * lanes + (incl - bytes);
  const uint32_t x = lane_state[id];
  region[0] = static_cast<unsigned char>(x & 0xFF);
  region[1] = static_cast<unsigned char>((x >> 8) & 0xFF);
  region[2] = static_cast<unsigned char>(x >> 16);
  dwriter bw{region + cd::kStateBytes};
  const uint32_t i0 = lane * LE, i1 = i0 + LE < m ? i0 + LE : m;
  for (uint32_t i = i0; i < i1; ++i) {
    if (kp != kSpecial) {
      const uint64_t g = gaps[i];
      const uint64_t q = g >> kp;
      if (q < kEsc) {
        bw.put(uint64_t{1} << q, static_cast<uint32_t>(q) + 1);
        if (kp > 0) bw.put(g & ((uint64_t{1} << kp) - 1), kp);
      } else {
        bw.put(0, kEsc);
        bw.put_wide(g, 32);
      }
    }
    const uint64_t u = staged_code(zz, i);
    const uint32_t eb = cd::extra_bits_of(cd::symbol_of(u));
    if (eb > 0) bw.put_wide(u & ((uint64_t{1} << eb) - 1), eb);
  }
  bw.flush();
  const unsigned char* r = rans_scratch + id * kLaneRansBytes;
  const uint32_t k = lane_rans[id];
  for (uint32_t i = 0; i < k; ++i) bw.p[i] = r[i];
}

// ---- decode ----

template <typename T>
__device__ __forceinline__ T from_code_d(uint64_t u) {
  const T z = static_cast<T>(u + 1);
  return static_cast<T>((z >> 1) ^ static_cast<T>(-static_cast<T>(z & 1)));
}



// What the host hands the decoder besides the stream: each block's offset, the table and its slot -> symbol map.
struct dec_meta_layout {
  uint32_t freq[cd::kMaxSymbols];
  uint32_t cum[cd::kMaxSymbols];
  uint8_t lut[cd::kProbScale];
};

// LSB-first bits from a block staged in shared memory: a 64-bit window at any bit position, from three aligned
// words (the stage is padded, so the window may run past the region; every take checks the region's end).
struct sreader {
  const uint32_t* w;  // the stage, 4-byte aligned
  uint64_t pos;       // bit position from w
  uint64_t end;       // the region's end, in bits
  __device__ __forceinline__ uint64_t peek() const {
    const uint32_t i = static_cast<uint32_t>(pos >> 5), sh = static_cast<uint32_t>(pos & 31);
    const uint64_t lo = w[i] | (uint64_t{w[i + 1]} << 32);
    return sh == 0 ? lo : (lo >> sh) | (uint64_t{w[i + 2]} << (64 - sh));
  }
  __device__ __forceinline__ bool take(uint32_t bits, uint64_t& out) {  // bits <= 32
    if (pos + bits > end) return false;
    out = bits == 0 ? 0 : peek() & ((uint64_t{1} << bits) - 1);
    pos += bits;
    return true;
  }
  __device__ __forceinline__ bool take_wide(uint32_t bits, uint64_t& out) {
    if (bits <= 32) return take(bits, out);
    uint64_t lo = 0, hi = 0;
    if (!take(32, lo) || !take(bits - 32, hi)) return false;
    out = lo | (hi << 32);
    return true;
  }
  __device__ __forceinline__ bool rice(uint32_t k, uint32_t esc_bits, uint32_t esc_q, uint64_t& out) {
    const uint64_t v = peek();
    const uint32_t z = v == 0 ? 64u : static_cast<uint32_t>(__ffsll(static_cast<long long>(v)) - 1);
    if (z < esc_q) {  // z + 1 + k <= 56: one window holds the code
      if (pos + z + 1 + k > end) return false;
      out = (uint64_t{z} << k) | ((v >> (z + 1)) & ((uint64_t{1} << k) - 1));
      pos += z + 1 + k;
      return true;
    }
    if (pos + esc_q > end) return false;
    pos += esc_q;
    return take_wide(esc_bits, out);
  }
};

// Decodes one lane, its positions relative to the lane's start (each + 1 summed into `total`), its differences;
// false when the lane is malformed. `region`..`region + size` are its bytes in the stage, `w`/`bit0` the same
// bytes as the reader sees them.
template <typename T>
__device__ bool decode_lane(const unsigned char* region, uint32_t size, const uint32_t* w, uint64_t bit0, uint32_t kp,
                            uint32_t n, const uint8_t* lut, const uint32_t* freq, const uint32_t* cum,
                            uint32_t* positions, T* diffs, uint64_t& total) {
  constexpr uint32_t width = width_of<T>::value;
  constexpr uint64_t max_code = (width == 64 ? ~uint64_t{0} : (uint64_t{1} << width) - 1) - 1;
  if (size < cd::kStateBytes) return false;
  uint32_t x = region[0] | (uint32_t{region[1]} << 8) | (uint32_t{region[2]} << 16);
  if (x < cd::kStateLow) return false;
  const unsigned char* bits = region + cd::kStateBytes;
  const unsigned char* q = region + size;
  sreader r{w, bit0 + 8 * cd::kStateBytes, bit0 + 8 * uint64_t{size}};
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t g = 0;
    if (kp != kSpecial && !r.rice(kp, 32, kEsc, g)) return false;
    if (g > 0xFFFFFFFFull) return false;
    total += g + 1;
    if (total > (uint64_t{1} << 32)) return false;  // no index of a valid lane is that far from its start
    positions[i] = static_cast<uint32_t>(total - 1);
    const uint32_t s = lut[x & (cd::kProbScale - 1)];
    x = cd::decode_step(x, freq[s], cum[s]);
    while (x < cd::kStateLow) {
      if (q == bits) return false;
      x = (x << 8) | *--q;
    }
    uint64_t u = s;
    if (s >= cd::kDirectSymbols) {
      const uint32_t eb = cd::extra_bits_of(s);
      uint64_t extra = 0;
      if (!r.take_wide(eb, extra)) return false;
      u = (uint64_t{1} << eb) | extra;
    }
    if (u > max_code) return false;
    diffs[i] = from_code_d<T>(u);
  }
  if (x != cd::kStateLow) return false;
  const uint64_t used = r.pos - (bit0 + 8 * cd::kStateBytes);
  if (bits + (used + 7) / 8 != q) return false;
  return used % 8 == 0 || (bits[used / 8] >> (used % 8)) == 0;
}

// Decode: one warp per block, kDecWarps blocks per CTA. Each warp first copies its block into its stage in
// shared memory (coalesced words), so the lanes' serial bit and rANS reads are shared-memory latency, not
// global; a block larger than the stage (a dense wide-dtype block) is decoded straight from global memory.
constexpr uint32_t kDecWarps = 2;
constexpr uint32_t kDecStageBytes = 20 * 1024;

// Copies global bytes [src, src + n) to the stage so that stage byte (src & 15) + j holds src[j]: the 16-byte
// vectors inside the range as vectors (eight in flight per lane: one warp stages a block, and a serial chain of
// loads would cost a round trip each), the partial first and last ones a byte at a time; then 16 zero bytes.
__device__ void stage_block(const unsigned char* src, uint32_t n, uint4* stage, uint32_t lane) {
  const uint32_t head = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(src) & 15);
  const unsigned char* base = src - head;
  const uint32_t vecs = (head + n + 15) / 16;
#pragma unroll 8
  for (uint32_t k = lane; k < vecs; k += 32) {
    const uint32_t lo = 16 * k;
    if (lo >= head && lo + 16 <= head + n) {
      stage[k] = *reinterpret_cast<const uint4*>(base + lo);
    } else {
      uint32_t v[4] = {0, 0, 0, 0};
#pragma unroll
      for (uint32_t t = 0; t < 16; ++t)  // constant indices into v: it stays in registers
        if (lo + t >= head && lo + t < head + n) v[t / 4] |= uint32_t{base[lo + t]} << (8 * (t % 4));
      stage[k] = make_uint4(v[0], v[1], v[2], v[3]);
    }
  }
  if (lane == 0) stage[vecs] = make_uint4(0, 0, 0, 0);  // the padding the reader's window may cover
}

// bad[b] != 0 when block b is malformed; last[b] its last index (for the cross check).
template <typename T>
__global__ void __launch_bounds__(32 * kDecWarps) decode_kernel(const unsigned char* stream, const uint64_t* offsets,
                                                                const dec_meta_layout* meta, uint32_t blocks,
                                                                uint64_t dir_offset, uint64_t count, uint64_t numel,
                                                                uint32_t* positions, T* diffs, uint32_t* last, int* bad) {
  __shared__ uint8_t lut[cd::kProbScale];
  __shared__ uint32_t freq[cd::kMaxSymbols], cum[cd::kMaxSymbols];
  __shared__ uint4 stages[kDecWarps][kDecStageBytes / 16 + 1];  // + 16 bytes: the reader's window past the end
  for (uint32_t i = threadIdx.x; i < cd::kProbScale / 4; i += blockDim.x)
    reinterpret_cast<uint32_t*>(lut)[i] = reinterpret_cast<const uint32_t*>(meta->lut)[i];
  for (uint32_t s = threadIdx.x; s < cd::kMaxSymbols; s += blockDim.x) freq[s] = meta->freq[s], cum[s] = meta->cum[s];
  const uint32_t b = blockIdx.x * kDecWarps + threadIdx.x / 32;
  const uint32_t lane = threadIdx.x & 31;
  uint4* stage = stages[threadIdx.x / 32];
  const unsigned char* dir = stream + dir_offset + uint64_t{compact::kDirEntryBytes} * b;
  uint64_t base = 0;
  uint32_t bytes = 0;
  const unsigned char* data = nullptr;
  bool staged = false;
  if (b < blocks) {
    base = dir[0] | (uint32_t{dir[1]} << 8) | (uint32_t{dir[2]} << 16) | (uint32_t{dir[3]} << 24);
    bytes = dir[4] | (uint32_t{dir[5]} << 8) | (uint32_t{dir[6]} << 16) | (uint32_t{dir[7]} << 24);
    data = stream + offsets[b];
    staged = (reinterpret_cast<uintptr_t>(data) & 15) + bytes <= kDecStageBytes;
    if (staged) stage_block(data, bytes, stage, lane);
  }
  __syncthreads();
  if (b >= blocks) return;
  // The block as the lanes read it: its bytes (staged or global) and the word view of them.
  const uint32_t head = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(data) & 15);
  const unsigned char* blk = staged ? reinterpret_cast<const unsigned char*>(stage) + head : data;
  const uint64_t first = uint64_t{b} * B;
  const uint32_t m = static_cast<uint32_t>(count - first < B ? count - first : B);
  const uint32_t lanes = (m + LE - 1) / LE;
  const uint32_t kp = blk[0];
  bool ok = kp <= compact::kMaxK || kp == kSpecial;
  uint32_t size = 0;
  if (lane < lanes) size = blk[1 + 2 * lane] | (uint32_t{blk[2 + 2 * lane]} << 8);
  uint32_t incl = size;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_up_sync(0xFFFFFFFFu, incl, o);
    if (lane >= static_cast<uint32_t>(o)) incl += y;
  }
  const uint32_t all = __shfl_sync(0xFFFFFFFFu, incl, 31);
  if (all != bytes - 1 - 2 * lanes) ok = false;  // the lanes must cover the block exactly
  uint64_t total = 0;  // sum of (gap + 1) over the lane
  const uint32_t i0 = lane * LE, i1 = i0 + LE < m ? i0 + LE : m;
  if (ok && lane < lanes) {
    const uint32_t at = 1 + 2 * lanes + (incl - size);  // the lane's region, from the block's start
    const unsigned char* region = blk + at;
    if (staged) {
      ok = decode_lane<T>(region, size, reinterpret_cast<const uint32_t*>(stage), 8 * uint64_t{head + at}, kp, i1 - i0, lut, freq, cum,
                          positions + first + i0, diffs + first + i0, total);
    } else {
      // Unstaged: the reader's words are global, aligned down; the window may read up to 12 bytes past the
      // region, which the caller's stream buffer holds (compact_decode's contract).
      const uint64_t abs = reinterpret_cast<uintptr_t>(region);
      ok = decode_lane<T>(region, size, reinterpret_cast<const uint32_t*>(abs & ~uint64_t{3}), 8 * (abs & 3), kp,
                          i1 - i0, lut, freq, cum, positions + first + i0, diffs + first + i0, total);
    }
  }
  ok = __all_sync(0xFFFFFFFFu, ok);
  if (!ok) {
    if (lane == 0) bad[b] = 1;
    return;
  }
  // Each lane's positions start after the lanes before it.
  uint64_t pre = total;
  for (int o = 1; o < 32; o <<= 1) {
    const uint64_t y = __shfl_up_sync(0xFFFFFFFFu, pre, o);
    if (lane >= static_cast<uint32_t>(o)) pre += y;
  }
  const uint64_t lane_base = base + pre - total;
  bool in_range = true;
  if (lane < lanes) {
    for (uint32_t i = i0; i < i1; ++i) {
      const uint64_t idx = lane_base + positions[first + i];
      if (idx >= numel) in_range = false;
      positions[first + i] = static_cast<uint32_t>(idx);
    }
  }
  in_range = __all_sync(0xFFFFFFFFu, in_range);
  if (lane == 31) {
    if (!in_range) bad[b] = 2;
    else last[b] = static_cast<uint32_t>(base + pre - 1);
  }
}

__global__ void cross_kernel(const unsigned char* stream, uint64_t dir_offset, uint32_t blocks, const uint32_t* last,
                             const int* bad, int* any_bad) {
  const uint32_t b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  int e = bad[b];
  const unsigned char* dir = stream + dir_offset + uint64_t{compact::kDirEntryBytes} * b;
  const uint64_t base = dir[0] | (uint32_t{dir[1]} << 8) | (uint32_t{dir[2]} << 16) | (uint32_t{dir[3]} << 24);
  if (e == 0 && b == 0 && base != 0) e = 1;
  if (e == 0 && b > 0 && bad[b - 1] == 0 && base != uint64_t{last[b - 1]} + 1) e = 1;
  if (e != 0) atomicMax(any_bad, 1);
}

// Carves `bytes` (8-aligned) off a scratch cursor.
template <typename P>
P* carve(unsigned char*& at, uint64_t bytes) {
  P* p = reinterpret_cast<P*>(at);
  at += (bytes + 7) / 8 * 8;
  return p;
}

template <typename T>
status encode_t(const uint32_t* positions, const void* old_values, const void* new_values, uint64_t n,
                device_buffer& out, uint64_t& out_bytes, compact_scratch& sc, stream& s) {
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  const uint32_t blocks = static_cast<uint32_t>((n + B - 1) / B);
  const uint64_t lanes = uint64_t{blocks} * compact::kLanesPerBlock;
  const uint64_t meta_bytes = 4 * cd::kMaxSymbols + sizeof(dtable) + 64 + uint64_t{blocks} * (1 + 4 + 8) + 64 +
                              lanes * (3 * 4 + kLaneRansBytes) + 64;
  DS_TRY_STATUS(grow(sc.meta, meta_bytes));
  unsigned char* at = sc.meta.as<unsigned char>();
  auto* counts = carve<uint32_t>(at, 4 * cd::kMaxSymbols);
  auto* table = carve<dtable>(at, sizeof(dtable));
  auto* dir_offset = carve<uint32_t>(at, 8);
  auto* total = carve<uint64_t>(at, 8);
  auto* kp = carve<uint8_t>(at, blocks);
  auto* bytes = carve<uint32_t>(at, uint64_t{blocks} * 4);
  auto* offsets = carve<uint64_t>(at, uint64_t{blocks} * 8);
  auto* lane_bits = carve<uint32_t>(at, lanes * 4);
  auto* lane_rans = carve<uint32_t>(at, lanes * 4);
  auto* lane_state = carve<uint32_t>(at, lanes * 4);
  auto* rans = carve<unsigned char>(at, lanes * kLaneRansBytes);
  // At most: header, table, directory, per block kp and per lane its size, state and padding byte, per element a
  // 56-bit gap code, 63 raw value bits and 2 rANS bytes.
  const uint64_t max_bytes = compact::kHeaderBytes + 1 + 2 * cd::kMaxSymbols + uint64_t{blocks} * (compact::kDirEntryBytes + 1) +
                             lanes * 6 + n * (56 + 63 + 16) / 8 + 16;
  DS_TRY_STATUS(grow(out, max_bytes));
  const T* o = static_cast<const T*>(old_values);
  const T* v = static_cast<const T*>(new_values);
  unsigned char* dst = out.as<unsigned char>();
  DS_CUDA_TRY(cudaMemsetAsync(counts, 0, 4 * cd::kMaxSymbols, cs));
  if (n > 0) {
    const uint64_t grid = (n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024;
    hist_kernel<T><<<static_cast<unsigned>(grid), 256, 0, cs>>>(o, v, n, counts);
    DS_CUDA_TRY(cudaGetLastError());
  }
  table_kernel<<<1, 1, 0, cs>>>(counts, n, sizeof(T), table, dst, dir_offset);
  DS_CUDA_TRY(cudaGetLastError());
  if (blocks > 0) {
    // The stage (with the kernels' static shared memory) passes the 48 KiB a launch gets without asking.
    DS_CUDA_TRY(cudaFuncSetAttribute(lanes_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, enc_stage_bytes<T>()));
    DS_CUDA_TRY(cudaFuncSetAttribute(write_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, enc_stage_bytes<T>()));
    lanes_kernel<T><<<blocks, kEncThreads, enc_stage_bytes<T>(), cs>>>(positions, o, v, n, table, kp, bytes,
                                                                        lane_bits, lane_rans, lane_state, rans);
    DS_CUDA_TRY(cudaGetLastError());
  }
  layout_kernel<<<1, kLayoutThreads, 0, cs>>>(positions, blocks, bytes, dir_offset, offsets, dst, total);
  DS_CUDA_TRY(cudaGetLastError());
  if (blocks > 0) {
    write_kernel<T><<<blocks, kEncThreads, enc_stage_bytes<T>(), cs>>>(positions, o, v, n, kp, lane_bits, lane_rans,
                                                                        lane_state, rans, offsets, dst);
    DS_CUDA_TRY(cudaGetLastError());
  }
  DS_TRY_STATUS(grow(sc.host, 8));
  DS_TRY_STATUS(copy_d2h(sc.host.data(), total, 8, s));
  DS_TRY_STATUS(s.synchronize());
  out_bytes = *sc.host.as<uint64_t>();
  return {};
}

template <typename T>
status decode_t(const void* stream_dev, const compact::stream_info& info, const std::vector<uint64_t>& offsets,
                uint64_t numel, uint32_t* positions, void* diffs, compact_scratch& sc, stream& s, bool& ok) {
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  const uint32_t blocks = info.blocks;
  ok = true;
  if (blocks == 0) return {};
  const uint64_t host_bytes = uint64_t{blocks} * 8 + sizeof(dec_meta_layout) + 16;
  DS_TRY_STATUS(grow(sc.meta, host_bytes + uint64_t{blocks} * 8 + 64));
  DS_TRY_STATUS(grow(sc.host, host_bytes));
  // Offsets, then the table and its slot -> symbol map, in one H2D.
  unsigned char* h = sc.host.as<unsigned char>();
  std::memcpy(h, offsets.data(), uint64_t{blocks} * 8);
  auto* hm = reinterpret_cast<dec_meta_layout*>(h + uint64_t{blocks} * 8);
  std::memset(hm, 0, sizeof(dec_meta_layout));
  uint32_t c = 0;
  for (uint32_t sym = 0; sym < info.nsym; ++sym) {
    hm->freq[sym] = info.freqs[sym];
    hm->cum[sym] = c;
    std::memset(hm->lut + c, static_cast<int>(sym), info.freqs[sym]);
    c += info.freqs[sym];
  }
  unsigned char* d = sc.meta.as<unsigned char>();
  const auto* off = reinterpret_cast<const uint64_t*>(d);
  const auto* meta = reinterpret_cast<const dec_meta_layout*>(d + uint64_t{blocks} * 8);
  unsigned char* rest = d + (host_bytes + 7) / 8 * 8;
  auto* last = carve<uint32_t>(rest, uint64_t{blocks} * 4);
  auto* bad = carve<int>(rest, (uint64_t{blocks} + 1) * 4);
  int* any = bad + blocks;
  DS_TRY_STATUS(copy_h2d(d, h, host_bytes, s));
  DS_CUDA_TRY(cudaMemsetAsync(bad, 0, (uint64_t{blocks} + 1) * sizeof(int), cs));
  const auto* st = static_cast<const unsigned char*>(stream_dev);
  decode_kernel<T><<<(blocks + kDecWarps - 1) / kDecWarps, 32 * kDecWarps, 0, cs>>>(st, off, meta, blocks, info.dir_offset, info.count, numel,
                                                     positions, static_cast<T*>(diffs), last, bad);
  DS_CUDA_TRY(cudaGetLastError());
  cross_kernel<<<(blocks + 255) / 256, 256, 0, cs>>>(st, info.dir_offset, blocks, last, bad, any);
  DS_CUDA_TRY(cudaGetLastError());
  DS_TRY_STATUS(copy_d2h(sc.host.data(), any, sizeof(int), s));
  DS_TRY_STATUS(s.synchronize());
  ok = *sc.host.as<int>() == 0;
  return {};
}

}  // namespace

status compact_encode(const uint32_t* positions, const void* old_values, const void* new_values, uint64_t count,
                      uint32_t elem_bytes, device_buffer& out, uint64_t& out_bytes, compact_scratch& scratch,
                      stream& s) {
  if (count > 0xFFFFFFFFull) return error(errc::invalid_argument, "compact_encode: more than 2^32 - 1 changes");
  switch (elem_bytes) {
    case 1: return encode_t<uint8_t>(positions, old_values, new_values, count, out, out_bytes, scratch, s);
    case 2: return encode_t<uint16_t>(positions, old_values, new_values, count, out, out_bytes, scratch, s);
    case 4: return encode_t<uint32_t>(positions, old_values, new_values, count, out, out_bytes, scratch, s);
    case 8: return encode_t<unsigned long long>(positions, old_values, new_values, count, out, out_bytes, scratch, s);
    default: return error(errc::unsupported, "compact_encode: element size " + std::to_string(elem_bytes));
  }
}

status compact_decode(byte_span host_stream, const void* device_stream, uint64_t count, uint64_t numel,
                      uint32_t elem_bytes, uint32_t* positions, void* diffs, compact_scratch& scratch, stream& s) {
  // The header, table and directory are read on the host (the caller has the bytes); the codes on the device.
  DS_ASSIGN_OR_RETURN(compact::stream_info info, compact::read_header(host_stream, count, elem_bytes));
  if (numel > (uint64_t{1} << 32)) numel = uint64_t{1} << 32;
  if (info.count > numel)
    return error(errc::delta_position_out_of_range, "compact stream: " + std::to_string(info.count) +
                                                        " changes for a tensor of " + std::to_string(numel) + " elements");
  if (info.version == 1) {
    // compact/1 (the first release's streams): decoded on the host, the result copied up.
    std::vector<uint32_t> p;
    byte_buffer d;
    DS_TRY_STATUS(compact::decode(host_stream, count, numel, elem_bytes, p, d));
    DS_TRY_STATUS(grow(scratch.host, p.size() * 4 + d.size() + 8));
    std::memcpy(scratch.host.data(), p.data(), p.size() * 4);
    std::memcpy(scratch.host.as<unsigned char>() + p.size() * 4, d.data(), d.size());
    if (!p.empty()) {
      DS_TRY_STATUS(copy_h2d(positions, scratch.host.data(), p.size() * 4, s));
      DS_TRY_STATUS(copy_h2d(diffs, scratch.host.as<unsigned char>() + p.size() * 4, d.size(), s));
    }
    return s.synchronize();
  }
  std::vector<uint64_t> offsets(info.blocks);
  uint64_t at = info.dir_offset + uint64_t{compact::kDirEntryBytes} * info.blocks;
  for (uint32_t b = 0; b < info.blocks; ++b) {
    offsets[b] = at;
    at += load_le<uint32_t>(host_stream.data() + info.dir_offset + uint64_t{compact::kDirEntryBytes} * b + 4);
  }
  bool ok = true;
  switch (elem_bytes) {
    case 1: DS_TRY_STATUS(decode_t<uint8_t>(device_stream, info, offsets, numel, positions, diffs, scratch, s, ok)); break;
    case 2: DS_TRY_STATUS(decode_t<uint16_t>(device_stream, info, offsets, numel, positions, diffs, scratch, s, ok)); break;
    case 4: DS_TRY_STATUS(decode_t<uint32_t>(device_stream, info, offsets, numel, positions, diffs, scratch, s, ok)); break;
    case 8: DS_TRY_STATUS(decode_t<unsigned long long>(device_stream, info, offsets, numel, positions, diffs, scratch, s, ok)); break;
    default: return error(errc::unsupported, "compact_decode: element size " + std::to_string(elem_bytes));
  }
  if (ok) return {};
  // A malformed stream (rare): the CPU decoder names what is wrong, with the same verdict.
  std::vector<uint32_t> p;
  byte_buffer d;
  auto st = compact::decode(host_stream, count, numel, elem_bytes, p, d);
  if (!st.ok()) return st;
  return error(errc::internal, "compact stream: the device decoder refused a stream the host decoder accepts");
}

}  // namespace deltasync::gpu
