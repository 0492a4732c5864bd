// Internals shared by the compact/2 encoder (codec/compact.cc), its decoder (codec/compact_decode.cc) and the
// compact/1 decoder (codec/compact_v1.cc): the LSB-first bit writer and reader, the Rice code, the encoder's
// choice of k, the zigzag value code and the value table. Not a public header: only those files include it.
#pragma once

#include <algorithm>
#include <bit>
#include <cstring>
#include <cstdint>
#include <string>
#include <type_traits>

#include "base/bytes.h"
#include "codec/compact.h"

namespace deltasync::compact::detail {

template <typename T>
constexpr uint32_t bits_of = 8 * sizeof(T);

// LSB-first bit writer over a buffer sized for the block, with 8 bytes of slack past the last bit: every put
// stores the whole accumulator and advances by the whole bytes it holds, so there is no branch on a full word.
// Bytes past the cursor are scratch until written again (the encoder lays out what follows a lane afterwards).
struct bit_writer {
  std::byte* p;
  uint64_t acc = 0;
  uint32_t n = 0;  // bits in acc, < 8 between puts
  // v < 2^bits, bits <= 56.
  inline void put(uint64_t v, uint32_t bits) noexcept {
    acc |= v << n;
    n += bits;
    store_le<uint64_t>(p, acc);
    p += n >> 3;
    acc >>= n & ~7u;  // n <= 63
    n &= 7;
  }
  inline void put_wide(uint64_t v, uint32_t bits) noexcept {  // bits <= 64
    if (bits <= 32) return put(v, bits);
    put(v & 0xFFFFFFFFu, 32);
    put(v >> 32, bits - 32);
  }
  void flush() noexcept {
    if (n > 0) *p++ = static_cast<std::byte>(acc & 0xFF);
    acc = 0;
    n = 0;
  }
};

inline void put_rice(bit_writer& w, uint64_t x, uint32_t k, uint32_t escape_bits, uint32_t escape_q) noexcept {
  const uint64_t q = x >> k;
  if (q < escape_q) {
    // q zero bits, a one, the low k bits: one put of q + 1 + k <= 24 + 31 bits.
    w.put(((x & ((uint64_t{1} << k) - 1)) << (q + 1)) | (uint64_t{1} << q), static_cast<uint32_t>(q) + 1 + k);
  } else {
    w.put(0, escape_q);
    w.put_wide(x, escape_bits);
  }
}

// LSB-first bit reader over one block. Bits of `buf` above `avail` are either the block's upcoming bits (the
// 8-byte refill loads ahead) or zero past the block's end, so shifting them down is always consistent.
struct bit_reader {
  const std::byte* p;
  const std::byte* end;
  uint64_t buf = 0;
  uint32_t avail = 0;
  inline void refill() noexcept {
    if (end - p >= 8) {
      buf |= load_le<uint64_t>(p) << avail;
      const uint32_t take = (63 - avail) >> 3;
      p += take;
      avail += take << 3;
    } else {
      while (avail <= 56 && p < end) {
        buf |= uint64_t{static_cast<uint8_t>(*p++)} << avail;
        avail += 8;
      }
    }
  }
  inline bool take(uint32_t bits, uint64_t& out) noexcept {  // bits <= 32, after a refill
    if (bits > avail) return false;
    out = bits == 0 ? 0 : (buf & ((uint64_t{1} << bits) - 1));
    buf = bits == 64 ? 0 : buf >> bits;
    avail -= bits;
    return true;
  }
  inline bool take_wide(uint32_t bits, uint64_t& out) noexcept {
    if (bits <= 32) {
      refill();
      return take(bits, out);
    }
    uint64_t lo = 0, hi = 0;
    refill();
    if (!take(32, lo)) return false;
    refill();
    if (!take(bits - 32, hi)) return false;
    out = lo | (hi << 32);
    return true;
  }
  inline bool rice(uint32_t k, uint32_t escape_bits, uint32_t escape_q, uint64_t& out) noexcept {
    refill();
    const uint32_t z = buf == 0 ? 64u : static_cast<uint32_t>(std::countr_zero(buf));
    if (z < escape_q) {
      if (z + 1 + k > avail) return false;
      buf >>= z + 1;
      avail -= z + 1;
      uint64_t r = 0;
      take(k, r);
      out = (uint64_t{z} << k) | r;
      return true;
    }
    if (avail < escape_q) return false;
    buf >>= escape_q;
    avail -= escape_q;
    return take_wide(escape_bits, out);
  }
  // The block ended exactly: every byte used and only zero padding (< 8 bits) left.
  bool at_end() const noexcept { return p == end && avail < 8 && buf == 0; }
};

struct k_choice {
  uint32_t k;
  uint64_t bits;
};

// Bit widths of values, counted per width (past 33 counted as 33) in four sets that the caller sums: repeated
// widths would otherwise serialise on one counter.
using width_counts = uint32_t[4][34];
template <typename X>
inline void count_widths(const X* x, size_t n, width_counts& sub) noexcept {
  const auto width = [](X v) { return std::min<uint32_t>(static_cast<uint32_t>(std::bit_width(v)), 33); };
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    ++sub[0][width(x[i])], ++sub[1][width(x[i + 1])], ++sub[2][width(x[i + 2])], ++sub[3][width(x[i + 3])];
  for (; i < n; ++i) ++sub[0][width(x[i])];
}

// The Rice parameter for values x[0, n), given their width counts. X is uint64_t (choose_k) or uint32_t (the
// encoder's gaps, n <= 2^25 so the 32-bit cost sums cannot wrap: a code is at most 24 + 64 bits); both give the
// same choice for the same values.
template <typename X>
inline k_choice best_k(const X* x, size_t n, uint32_t escape_bits, uint32_t escape_q, const width_counts& sub) noexcept {
  // The width histogram gives an estimate of every k's cost, each value taken as 3/4 of its width's top
  // (integers only, so every encoder computes the same); the three k around the estimate's best are then costed
  // exactly. A mean would do for geometric data, but a few escaped outliers (a weight crossing zero) pull the
  // mean far above the bulk's best k.
  uint64_t hist[34];
  for (uint32_t b = 0; b < 34; ++b) hist[b] = uint64_t{sub[0][b]} + sub[1][b] + sub[2][b] + sub[3][b];
  uint32_t k_est = 0;
  uint64_t est_best = UINT64_MAX;
  for (uint32_t k = 0; k <= kMaxK; ++k) {
    uint64_t bits = 0;
    for (uint32_t b = 0; b < 34; ++b) {
      if (hist[b] == 0) continue;
      const uint64_t rep = b == 0 ? 0 : b == 1 ? 1 : uint64_t{3} << (b - 2);
      bits += hist[b] * rice_bits(rep, k, escape_bits, escape_q);
    }
    if (bits < est_best) est_best = bits, k_est = k;
  }
  const uint32_t lo = k_est == 0 ? 0 : k_est - 1;
  const uint32_t hi = std::min(k_est + 1, kMaxK);
  // The (up to) three candidates costed in one pass, in X-wide arithmetic so the loop vectorises.
  const uint32_t k1 = std::min(lo + 1, hi), k2 = hi;
  const X esc = static_cast<X>(escape_q + escape_bits);
  const auto cost = [escape_q, esc](X v, uint32_t k) noexcept -> X {
    const X q = v >> k;
    return q < escape_q ? static_cast<X>(q + 1 + k) : esc;
  };
  X b0 = 0, b1 = 0, b2 = 0;
  size_t j = 0;
  if constexpr (sizeof(X) == 4) {
    // Four lanes at a time in GCC/Clang vector types (SSE2 on x86-64): the same costs, summed in a different
    // order, which integers do not mind.
    using v4 = uint32_t __attribute__((vector_size(16)));
    const v4 eq = {escape_q, escape_q, escape_q, escape_q}, ev = {esc, esc, esc, esc};
    v4 a0 = {}, a1 = {}, a2 = {};
    for (; j + 4 <= n; j += 4) {
      v4 v;
      std::memcpy(&v, x + j, sizeof v);
      const v4 q0 = v >> lo, q1 = v >> k1, q2 = v >> k2;
      a0 += q0 < eq ? q0 + (1 + lo) : ev;
      a1 += q1 < eq ? q1 + (1 + k1) : ev;
      a2 += q2 < eq ? q2 + (1 + k2) : ev;
    }
    b0 = a0[0] + a0[1] + a0[2] + a0[3];
    b1 = a1[0] + a1[1] + a1[2] + a1[3];
    b2 = a2[0] + a2[1] + a2[2] + a2[3];
  }
  for (; j < n; ++j) {
    b0 += cost(x[j], lo);
    b1 += cost(x[j], k1);
    b2 += cost(x[j], k2);
  }
  k_choice best{lo, b0};
  if (b1 < best.bits) best = {k1, b1};
  if (b2 < best.bits) best = {k2, b2};
  return best;
}

template <typename X>
inline k_choice best_k(const X* x, size_t n, uint32_t escape_bits, uint32_t escape_q) noexcept {
  width_counts sub = {};
  count_widths(x, n, sub);
  return best_k(x, n, escape_bits, escape_q, sub);
}

template <typename T>
inline uint64_t zigzag_minus_one(T d) noexcept {
  using S = std::make_signed_t<T>;
  const S s = static_cast<S>(d);
  const T z = static_cast<T>(static_cast<T>(static_cast<T>(s) << 1) ^ static_cast<T>(s >> (bits_of<T> - 1)));
  return uint64_t{z} - 1;  // z >= 1: a changed element differs
}

template <typename T>
inline T from_code(uint64_t u) noexcept {
  const T z = static_cast<T>(u + 1);
  return static_cast<T>((z >> 1) ^ static_cast<T>(-static_cast<T>(z & 1)));
}

inline constexpr uint32_t kBlockElemsV1 = 1u << kLog2BlockElemsV1;

inline error bad_block(uint32_t b, const char* what) {
  return error(errc::delta_bad_manifest, "compact stream: block " + std::to_string(b) + " " + what);
}

// compact/1's codes (compact_v1.cc), after read_header accepted `info` (version 1).
status decode_v1(byte_span stream, const stream_info& info, uint64_t numel, uint32_t* positions, std::byte* diffs);

// The value table with its cumulative starts (cum[s] = sum of freq below s).
struct table {
  uint32_t nsym = 0;
  uint32_t freq[coder::kMaxSymbols] = {};
  uint32_t cum[coder::kMaxSymbols + 1] = {};
  void finish() noexcept {
    cum[0] = 0;
    for (uint32_t s = 0; s < nsym; ++s) cum[s + 1] = cum[s] + freq[s];
  }
};

inline uint32_t load24(const std::byte* p) noexcept {
  return uint32_t{static_cast<uint8_t>(p[0])} | uint32_t{static_cast<uint8_t>(p[1])} << 8 |
         uint32_t{static_cast<uint8_t>(p[2])} << 16;
}

}  // namespace deltasync::compact::detail
