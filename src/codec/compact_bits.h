// Internals shared by the compact/2 codec (codec/compact.cc) and the compact/1 decoder (codec/compact_v1.cc):
// the LSB-first bit writer and reader, the Rice code, the encoder's choice of k and the zigzag value code.
// Not a public header: only those two files include it.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <type_traits>

#include "base/bytes.h"
#include "codec/compact.h"

namespace deltasync::compact::detail {

template <typename T>
constexpr uint32_t bits_of = 8 * sizeof(T);

// LSB-first bit writer over a buffer sized exactly for the block (the encoder knows each block's bit count
// before writing it, so nothing is written past the block and nothing is zero-filled twice).
struct bit_writer {
  std::byte* p;
  uint64_t acc = 0;
  uint32_t n = 0;
  // v < 2^bits, bits <= 32.
  inline void put(uint64_t v, uint32_t bits) noexcept {
    acc |= v << n;
    n += bits;
    if (n >= 32) {
      store_le<uint32_t>(p, static_cast<uint32_t>(acc));
      p += 4;
      acc >>= 32;
      n -= 32;
    }
  }
  inline void put_wide(uint64_t v, uint32_t bits) noexcept {  // bits <= 64
    if (bits <= 32) return put(v, bits);
    put(v & 0xFFFFFFFFu, 32);
    put(v >> 32, bits - 32);
  }
  void flush() noexcept {
    while (n > 0) {
      *p++ = static_cast<std::byte>(acc & 0xFF);
      acc >>= 8;
      n = n >= 8 ? n - 8 : 0;
    }
  }
};

inline void put_rice(bit_writer& w, uint64_t x, uint32_t k, uint32_t escape_bits, uint32_t escape_q) noexcept {
  const uint64_t q = x >> k;
  if (q < escape_q) {
    w.put(uint64_t{1} << q, static_cast<uint32_t>(q) + 1);
    if (k > 0) w.put(x & ((uint64_t{1} << k) - 1), k);
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

inline k_choice best_k(const uint64_t* x, size_t n, uint32_t escape_bits, uint32_t escape_q) noexcept {
  // A histogram of bit widths (widths past 33 counted as 33) gives an estimate of every k's cost, each value
  // taken as 3/4 of its width's top (integers only, so every encoder computes the same); the three k around the
  // estimate's best are then costed exactly. A mean would do for geometric data, but a few escaped outliers (a
  // weight crossing zero) pull the mean far above the bulk's best k.
  uint32_t hist[34] = {};
  for (size_t i = 0; i < n; ++i) ++hist[std::min<uint32_t>(static_cast<uint32_t>(std::bit_width(x[i])), 33)];
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
  // The (up to) three candidates costed in one pass.
  const uint32_t k1 = std::min(lo + 1, hi), k2 = hi;
  uint64_t b0 = 0, b1 = 0, b2 = 0;
  for (size_t i = 0; i < n; ++i) {
    b0 += rice_bits(x[i], lo, escape_bits, escape_q);
    b1 += rice_bits(x[i], k1, escape_bits, escape_q);
    b2 += rice_bits(x[i], k2, escape_bits, escape_q);
  }
  k_choice best{lo, b0};
  if (b1 < best.bits) best = {k1, b1};
  if (b2 < best.bits) best = {k2, b2};
  return best;
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

}  // namespace deltasync::compact::detail
