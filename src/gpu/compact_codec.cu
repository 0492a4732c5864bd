// The compact stream (codec/compact.h) encoded and decoded on the device, byte for byte what the CPU codec
// writes and accepts. Encode: one warp per block of 2048 changes chooses kp / kv exactly as compact.cc does
// (same clamped sums, same three candidates, same ties), one CTA lays out the header and directory (a scan of
// the block sizes),
// and one warp per block writes its bits into shared memory (each lane places its element's codes at the
// offset a warp scan of the code lengths gives) and copies them out. Decode: one warp per block stages the
// block's bytes in shared memory and one lane decodes them (a Rice code's length is known only once it is read),
// validating exactly what the CPU decoder validates; the cross-block
// rule (each base is the previous block's last index + 1) is checked by a second pass.
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "codec/compact.h"
#include "gpu/cuda_check.h"
#include "gpu/kernels.h"

namespace deltasync::gpu {
namespace {

constexpr uint32_t B = compact::kBlockElems;
constexpr uint32_t kEsc = compact::kEscapeQ;
constexpr uint32_t kSpecial = compact::kModeSpecial;
// A block's largest bit stream: 2048 x (56 gap bits + 88 value bits), in 32-bit words.
constexpr uint32_t kMaxBlockWords = (B * 144) / 32;

template <typename T>
struct width_of {
  static constexpr uint32_t value = 8 * sizeof(T);
};

__device__ __forceinline__ uint64_t rice_bits_d(uint64_t x, uint32_t k, uint32_t esc_bits, uint32_t esc_q) {
  const uint64_t q = x >> k;
  return q < esc_q ? q + 1 + k : esc_q + esc_bits;
}

template <typename T>
__device__ __forceinline__ uint64_t code_of(T o, T v) {
  using S = typename std::make_signed<T>::type;
  const T d = static_cast<T>(v - o);
  const S s = static_cast<S>(d);
  const T z = static_cast<T>(static_cast<T>(static_cast<T>(s) << 1) ^ static_cast<T>(s >> (width_of<T>::value - 1)));
  return static_cast<uint64_t>(z) - 1;
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

// Per block: kp, kv and the block's byte size (2 + whole bytes of its bits).
template <typename T>
__global__ void choose_kernel(const uint32_t* positions, const T* old_v, const T* new_v, uint64_t n, uint32_t blocks,
                              uint8_t* kp_out, uint8_t* kv_out, uint32_t* bytes_out) {
  constexpr uint32_t w = width_of<T>::value;
  const uint32_t b = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (b >= blocks) return;
  const uint64_t first = uint64_t{b} * B;
  const uint32_t m = static_cast<uint32_t>(n - first < B ? n - first : B);
  const uint32_t lane = threadIdx.x & 31;
  __shared__ uint32_t hists[4][34];  // one per warp (4 warps per CTA)
  uint32_t* hist = hists[(threadIdx.x / 32) & 3];
  bool dense = true;
  for (uint32_t i = lane; i < m; i += 32) dense &= gap_at(positions, first + i) == 0;
  dense = __all_sync(0xFFFFFFFFu, dense);
  uint32_t kp = kSpecial, kv = 0;
  uint64_t pbits = 0, vbits = 0;
  if (!dense) best_k_warp([&](uint32_t i) { return gap_at(positions, first + i); }, m, 32, kEsc, hist, kp, pbits);
  best_k_warp([&](uint32_t i) { return code_of<T>(old_v[first + i], new_v[first + i]); }, m, w, compact::kValueEscapeQ, hist, kv, vbits);
  if (uint64_t{w} * m <= vbits) kv = kSpecial, vbits = uint64_t{w} * m;
  if (lane == 0) {
    kp_out[b] = static_cast<uint8_t>(kp);
    kv_out[b] = static_cast<uint8_t>(kv);
    bytes_out[b] = static_cast<uint32_t>(2 + (pbits + vbits + 7) / 8);
  }
}

// One CTA of kLayoutThreads: header, directory and each block's offset in the stream (a block-wide scan of the
// block sizes, each thread owning a contiguous run of blocks); total bytes to *total.
constexpr uint32_t kLayoutThreads = 1024;
__global__ void layout_kernel(const uint32_t* positions, uint64_t n, uint32_t elem_bytes, uint32_t blocks,
                              const uint32_t* bytes, uint64_t* offsets, unsigned char* out, uint64_t* total) {
  __shared__ uint64_t sums[kLayoutThreads];
  const uint32_t t = threadIdx.x;
  if (t == 0) {
    out[0] = compact::kMagic;
    out[1] = compact::kLog2BlockElems;
    out[2] = static_cast<unsigned char>(elem_bytes);
    out[3] = 0;
    for (int i = 0; i < 4; ++i) out[4 + i] = static_cast<unsigned char>(n >> (8 * i));
  }
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
  uint64_t at = compact::kHeaderBytes + uint64_t{compact::kDirEntryBytes} * blocks + sums[t] - mine;
  for (uint32_t b = lo; b < hi; ++b) {
    const uint32_t base = b == 0 ? 0u : positions[uint64_t{b} * B - 1] + 1;
    unsigned char* e = out + compact::kHeaderBytes + uint64_t{compact::kDirEntryBytes} * b;
    for (int i = 0; i < 4; ++i) e[i] = static_cast<unsigned char>(base >> (8 * i));
    for (int i = 0; i < 4; ++i) e[4 + i] = static_cast<unsigned char>(bytes[b] >> (8 * i));
    offsets[b] = at;
    at += bytes[b];
  }
  if (t == kLayoutThreads - 1) *total = compact::kHeaderBytes + uint64_t{compact::kDirEntryBytes} * blocks + sums[t];
}

// ORs `len` (<= 64) bits of v into the shared bit buffer at bit `pos`.
__device__ __forceinline__ void or_bits(uint32_t* buf, uint64_t pos, uint64_t v, uint32_t len) {
  while (len > 0) {
    const uint32_t word = static_cast<uint32_t>(pos >> 5), shift = static_cast<uint32_t>(pos & 31);
    const uint32_t take = 32 - shift < len ? 32 - shift : len;
    const uint32_t piece = static_cast<uint32_t>(v & (take == 32 ? 0xFFFFFFFFu : ((1u << take) - 1)));
    if (piece != 0) atomicOr(buf + word, piece << shift);
    v = take == 64 ? 0 : v >> take;
    pos += take;
    len -= take;
  }
}

// Places one Rice code (or escape) of x at bit `pos`.
__device__ __forceinline__ void put_rice_d(uint32_t* buf, uint64_t pos, uint64_t x, uint32_t k, uint32_t esc_bits,
                                           uint32_t esc_q) {
  const uint64_t q = x >> k;
  if (q < esc_q) {
    or_bits(buf, pos + q, 1, 1);
    if (k > 0) or_bits(buf, pos + q + 1, x & ((uint64_t{1} << k) - 1), k);
  } else {
    or_bits(buf, pos + esc_q, x, esc_bits);  // esc_q zero bits, then x raw
  }
}

template <typename T>
__global__ void write_kernel(const uint32_t* positions, const T* old_v, const T* new_v, uint64_t n,
                             const uint8_t* kp_in, const uint8_t* kv_in, const uint32_t* bytes_in,
                             const uint64_t* offsets, unsigned char* out) {
  constexpr uint32_t w = width_of<T>::value;
  __shared__ uint32_t buf[kMaxBlockWords + 2];
  const uint32_t b = blockIdx.x;
  const uint64_t first = uint64_t{b} * B;
  const uint32_t m = static_cast<uint32_t>(n - first < B ? n - first : B);
  const uint32_t kp = kp_in[b], kv = kv_in[b];
  const uint32_t data_bytes = bytes_in[b] - 2;
  const uint32_t words = (data_bytes + 3) / 4;
  for (uint32_t i = threadIdx.x; i < words; i += blockDim.x) buf[i] = 0;
  __syncthreads();
  const uint32_t lane = threadIdx.x & 31;
  // One warp walks the block in chunks of 32 elements; the other warps of the CTA only zero and copy.
  if (threadIdx.x < 32) {
    uint64_t base_bit = 0;
    for (uint32_t c = 0; c < m; c += 32) {
      const uint32_t i = c + lane;
      uint64_t g = 0, u = 0, len = 0;
      T d = 0;
      if (i < m) {
        if (kp != kSpecial) {
          g = gap_at(positions, first + i);
          len += rice_bits_d(g, kp, 32, kEsc);
        }
        const T o = old_v[first + i], v = new_v[first + i];
        d = static_cast<T>(v - o);
        if (kv != kSpecial) {
          u = code_of<T>(o, v);
          len += rice_bits_d(u, kv, w, compact::kValueEscapeQ);
        } else {
          len += w;
        }
      }
      uint64_t incl = len;
      for (int o = 1; o < 32; o <<= 1) {
        const uint64_t y = __shfl_up_sync(0xFFFFFFFFu, incl, o);
        if (lane >= static_cast<uint32_t>(o)) incl += y;
      }
      const uint64_t pos = base_bit + incl - len;
      if (i < m) {
        uint64_t at = pos;
        if (kp != kSpecial) {
          put_rice_d(buf, at, g, kp, 32, kEsc);
          at += rice_bits_d(g, kp, 32, kEsc);
        }
        if (kv != kSpecial) put_rice_d(buf, at, u, kv, w, compact::kValueEscapeQ);
        else or_bits(buf, at, static_cast<uint64_t>(d), w);
      }
      base_bit += __shfl_sync(0xFFFFFFFFu, incl, 31);
    }
  }
  __syncthreads();
  unsigned char* dst = out + offsets[b];
  if (threadIdx.x == 0) {
    dst[0] = static_cast<unsigned char>(kp);
    dst[1] = static_cast<unsigned char>(kv);
  }
  const unsigned char* src = reinterpret_cast<const unsigned char*>(buf);
  for (uint32_t i = threadIdx.x; i < data_bytes; i += blockDim.x) dst[2 + i] = src[i];
}

// ---- decode ----

struct dreader {
  const unsigned char* p;
  const unsigned char* end;
  uint64_t buf;
  uint32_t avail;
  __device__ void refill() {
    while (avail <= 56 && p < end) {
      buf |= uint64_t{*p++} << avail;
      avail += 8;
    }
  }
  __device__ bool take(uint32_t bits, uint64_t& out) {
    if (bits > avail) return false;
    out = bits == 0 ? 0 : (buf & ((uint64_t{1} << bits) - 1));
    buf = bits == 64 ? 0 : buf >> bits;
    avail -= bits;
    return true;
  }
  __device__ bool take_wide(uint32_t bits, uint64_t& out) {
    refill();
    if (bits <= 32) return take(bits, out);
    uint64_t lo = 0, hi = 0;
    if (!take(32, lo)) return false;
    refill();
    if (!take(bits - 32, hi)) return false;
    out = lo | (hi << 32);
    return true;
  }
  __device__ bool rice(uint32_t k, uint32_t esc_bits, uint32_t esc_q, uint64_t& out) {
    refill();
    const uint32_t z = buf == 0 ? 64u : static_cast<uint32_t>(__ffsll(static_cast<long long>(buf)) - 1);
    if (z < esc_q) {
      if (z + 1 + k > avail) return false;
      buf >>= z + 1;
      avail -= z + 1;
      uint64_t r = 0;
      take(k, r);
      out = (uint64_t{z} << k) | r;
      return true;
    }
    if (avail < esc_q) return false;
    buf >>= esc_q;
    avail -= esc_q;
    return take_wide(esc_bits, out);
  }
  __device__ bool at_end() const { return p == end && avail < 8 && buf == 0; }
};

template <typename T>
__device__ __forceinline__ T from_code_d(uint64_t u) {
  const T z = static_cast<T>(u + 1);
  return static_cast<T>((z >> 1) ^ static_cast<T>(-static_cast<T>(z & 1)));
}

// One warp per block: the warp stages the block's bytes in shared memory (blocks larger than the staging area
// are read from global memory), then lane 0 decodes them (a Rice code's length is known only once it is read).
// bad[b] != 0 when the block is malformed; last[b] its last index (for the cross check).
constexpr uint32_t kDecodeStage = 12u << 10;
template <typename T>
__global__ void decode_kernel(const unsigned char* stream, const uint64_t* offsets, uint32_t blocks, uint64_t count,
                              uint64_t numel, uint32_t* positions, T* diffs, uint32_t* last, int* bad) {
  constexpr uint32_t w = width_of<T>::value;
  constexpr uint64_t max_code = (w == 64 ? ~uint64_t{0} : (uint64_t{1} << w) - 1) - 1;
  __shared__ unsigned char stage[kDecodeStage];
  const uint32_t b = blockIdx.x;
  if (b >= blocks) return;
  const unsigned char* dir = stream + compact::kHeaderBytes + uint64_t{compact::kDirEntryBytes} * b;
  const uint32_t base = dir[0] | (uint32_t{dir[1]} << 8) | (uint32_t{dir[2]} << 16) | (uint32_t{dir[3]} << 24);
  const uint32_t bytes = dir[4] | (uint32_t{dir[5]} << 8) | (uint32_t{dir[6]} << 16) | (uint32_t{dir[7]} << 24);
  const unsigned char* data = stream + offsets[b];
  if (bytes <= kDecodeStage) {
    for (uint32_t i = threadIdx.x; i < bytes; i += blockDim.x) stage[i] = data[i];
    __syncthreads();
    data = stage;
  }
  if (threadIdx.x != 0) return;
  const uint64_t first = uint64_t{b} * B;
  const uint32_t m = static_cast<uint32_t>(count - first < B ? count - first : B);
  const uint32_t kp = data[0], kv = data[1];
  if ((kp > compact::kMaxK && kp != kSpecial) || (kv > compact::kMaxK && kv != kSpecial)) {
    bad[b] = 1;
    return;
  }
  dreader r{data + 2, data + bytes, 0, 0};
  uint64_t next = base;
  for (uint32_t i = 0; i < m; ++i) {
    uint64_t g = 0;
    if (kp != kSpecial && !r.rice(kp, 32, kEsc, g)) return void(bad[b] = 1);
    if (g > 0xFFFFFFFFull) return void(bad[b] = 1);
    const uint64_t idx = next + g;
    if (idx >= numel) return void(bad[b] = 2);
    positions[first + i] = static_cast<uint32_t>(idx);
    next = idx + 1;
    uint64_t u = 0;
    T d;
    if (kv != kSpecial) {
      if (!r.rice(kv, w, compact::kValueEscapeQ, u) || u > max_code) return void(bad[b] = 1);
      d = from_code_d<T>(u);
    } else {
      if (!r.take_wide(w, u)) return void(bad[b] = 1);
      d = static_cast<T>(u);
      if (d == 0) return void(bad[b] = 1);
    }
    diffs[first + i] = d;
  }
  if (!r.at_end()) return void(bad[b] = 1);
  last[b] = static_cast<uint32_t>(next - 1);
}

__global__ void cross_kernel(const unsigned char* stream, uint32_t blocks, const uint32_t* last, const int* bad,
                             int* any_bad) {
  const uint32_t b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  int e = bad[b];
  const unsigned char* dir = stream + compact::kHeaderBytes + uint64_t{compact::kDirEntryBytes} * b;
  const uint64_t base = dir[0] | (uint32_t{dir[1]} << 8) | (uint32_t{dir[2]} << 16) | (uint32_t{dir[3]} << 24);
  if (e == 0 && b == 0 && base != 0) e = 1;
  if (e == 0 && b > 0 && bad[b - 1] == 0 && base != uint64_t{last[b - 1]} + 1) e = 1;
  if (e != 0) atomicMax(any_bad, 1);
}

template <typename T>
status encode_t(const uint32_t* positions, const void* old_values, const void* new_values, uint64_t n,
                device_buffer& out, uint64_t& out_bytes, compact_scratch& sc, stream& s) {
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  const uint32_t blocks = static_cast<uint32_t>((n + B - 1) / B);
  DS_TRY_STATUS(grow(sc.meta, uint64_t{blocks} * 16 + 64));
  auto* kp = sc.meta.as<uint8_t>();
  auto* kv = kp + blocks;
  auto* bytes = reinterpret_cast<uint32_t*>(sc.meta.as<unsigned char>() + (2 * uint64_t{blocks} + 7) / 8 * 8);
  auto* offsets = reinterpret_cast<uint64_t*>(reinterpret_cast<unsigned char*>(bytes) + (uint64_t{blocks} * 4 + 7) / 8 * 8);
  auto* total = offsets + blocks;
  // The stream is at most header + directory + per block 2 bytes + 1 padding byte + per element a 56-bit gap
  // code and w value bits (a Rice code is chosen only when it is cheaper than w raw bits for the block).
  const uint64_t max_bytes = compact::kHeaderBytes + uint64_t{blocks} * (compact::kDirEntryBytes + 3) +
                             n * (56 + 8 * sizeof(T)) / 8 + 8;
  DS_TRY_STATUS(grow(out, max_bytes));
  const T* o = static_cast<const T*>(old_values);
  const T* v = static_cast<const T*>(new_values);
  if (blocks > 0) {
    choose_kernel<T><<<(blocks + 3) / 4, 128, 0, cs>>>(positions, o, v, n, blocks, kp, kv, bytes);
    DS_CUDA_TRY(cudaGetLastError());
  }
  layout_kernel<<<1, kLayoutThreads, 0, cs>>>(positions, n, sizeof(T), blocks, bytes, offsets, out.as<unsigned char>(),
                                              total);
  DS_CUDA_TRY(cudaGetLastError());
  if (blocks > 0) {
    write_kernel<T><<<blocks, 128, 0, cs>>>(positions, o, v, n, kp, kv, bytes, offsets, out.as<unsigned char>());
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
  DS_TRY_STATUS(grow(sc.meta, uint64_t{blocks} * 16 + 64));
  auto* off = sc.meta.as<uint64_t>();
  auto* last = reinterpret_cast<uint32_t*>(off + blocks);
  auto* bad = reinterpret_cast<int*>(last + blocks);
  auto* any = bad + blocks;
  DS_TRY_STATUS(grow(sc.host, uint64_t{blocks} * 8 + 8));
  std::memcpy(sc.host.data(), offsets.data(), uint64_t{blocks} * 8);
  DS_TRY_STATUS(copy_h2d(off, sc.host.data(), uint64_t{blocks} * 8, s));
  DS_CUDA_TRY(cudaMemsetAsync(bad, 0, (uint64_t{blocks} + 1) * sizeof(int), cs));
  decode_kernel<T><<<blocks, 32, 0, cs>>>(static_cast<const unsigned char*>(stream_dev), off, blocks,
                                                      info.count, numel, positions, static_cast<T*>(diffs), last, bad);
  DS_CUDA_TRY(cudaGetLastError());
  cross_kernel<<<(blocks + 255) / 256, 256, 0, cs>>>(static_cast<const unsigned char*>(stream_dev), blocks, last, bad, any);
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
  // The header and directory are read on the host (the caller has the bytes); the codes on the device.
  DS_ASSIGN_OR_RETURN(compact::stream_info info, compact::read_header(host_stream, count, elem_bytes));
  if (numel > (uint64_t{1} << 32)) numel = uint64_t{1} << 32;
  if (info.count > numel)
    return error(errc::delta_position_out_of_range, "compact stream: " + std::to_string(info.count) +
                                                        " changes for a tensor of " + std::to_string(numel) + " elements");
  std::vector<uint64_t> offsets(info.blocks);
  uint64_t at = compact::kHeaderBytes + uint64_t{compact::kDirEntryBytes} * info.blocks;
  for (uint32_t b = 0; b < info.blocks; ++b) {
    offsets[b] = at;
    at += load_le<uint32_t>(host_stream.data() + compact::kHeaderBytes + uint64_t{compact::kDirEntryBytes} * b + 4);
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
