// The arithmetic of the compact/2 value coder (codec/compact.h), shared by the CPU codec (codec/compact.cc) and
// the device codec (gpu/compact_codec.cu) so both write the same bytes: the symbol alphabet of a value code, the
// normalisation of a histogram into a frequency table, and one rANS step each way. Header-only, no allocation, no
// library calls: every function here compiles for the host and, under nvcc, for the device.
//
// Why hand-written: the device encoder must reproduce every arithmetic step and table rule of the CPU encoder,
// byte for byte. Debian's rANS library (libhtscodecs, CRAM's codecs) codes whole buffers with its own table
// format and state framing and has no device build; a stream per 256-element lane would carry its ~30-byte
// table each time, several times the 5 bytes a lane costs here.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DS_COMPACT_HD __host__ __device__ __forceinline__
#else
#define DS_COMPACT_HD inline
#endif

namespace deltasync::compact::coder {

// Frequencies sum to 2^kProbBits. The rANS state lives in [kStateLow, kStateLow << 8) (24 bits, stored in 3
// bytes) and is renormalised a byte at a time; kStateLow / 2^kProbBits = 32 keeps the coding loss well under 1%.
inline constexpr uint32_t kProbBits = 11;
inline constexpr uint32_t kProbScale = 1u << kProbBits;
inline constexpr uint32_t kStateLow = 1u << 16;
inline constexpr uint32_t kStateBytes = 3;
// Value codes u < 16 are their own symbol; a larger u of bit width b (5..64) is symbol b + 11 followed by its
// b - 1 bits below the leading one, raw, in the lane's bit stream. 76 symbols cover 64-bit elements.
inline constexpr uint32_t kDirectSymbols = 16;
inline constexpr uint32_t kMaxSymbols = 76;

DS_COMPACT_HD uint32_t bit_width64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return x == 0 ? 0u : 64u - static_cast<uint32_t>(__clzll(static_cast<long long>(x)));
#else
  return x == 0 ? 0u : 64u - static_cast<uint32_t>(__builtin_clzll(x));
#endif
}

// The symbol of value code u.
DS_COMPACT_HD uint32_t symbol_of(uint64_t u) { return u < kDirectSymbols ? static_cast<uint32_t>(u) : bit_width64(u) + 11; }
// Raw bits that follow symbol s (0 for the direct symbols).
DS_COMPACT_HD uint32_t extra_bits_of(uint32_t s) { return s < kDirectSymbols ? 0u : s - 12; }
// The largest symbol an element of w bits can need (u <= 2^w - 2 has bit width <= w).
DS_COMPACT_HD uint32_t max_symbol_for(uint32_t w) { return w + 11; }

// A histogram of symbols (counts[s], s < nsym, counts[nsym - 1] > 0, total > 0) into frequencies summing to
// kProbScale: f = max(1, floor(count * scale / total)) for every symbol present, 0 for the others, and what the
// rounding left over (either sign) goes to the first of the most frequent. It never drives that one below 1:
// with at most 76 symbols the most frequent has at least (scale - k) / (76 - k) - 1 > k after k symbols were
// raised from 0 to 1 (checked for every k in tests/codec/compact_test.cc).
DS_COMPACT_HD void normalize(const uint32_t* counts, uint32_t nsym, uint64_t total, uint32_t* freqs) {
  uint32_t sum = 0, top = 0;
  for (uint32_t s = 0; s < nsym; ++s) {
    uint32_t f = static_cast<uint32_t>((uint64_t{counts[s]} * kProbScale) / total);
    if (counts[s] > 0 && f == 0) f = 1;
    freqs[s] = f;
    sum += f;
    if (f > freqs[top]) top = s;
  }
  freqs[top] = static_cast<uint32_t>(static_cast<int64_t>(freqs[top]) + kProbScale - sum);
}

// The encoder's view of one symbol: its frequency f, cumulative start c, the renormalisation bound x_max and a
// reciprocal that turns the step's x / f into a multiply and a shift. Exact for every state the step divides:
// after renormalisation x < x_max = 2^13 f <= 2^24, and with rcp = floor(2^40 / f) + 1 the product x rcp / 2^40
// exceeds x / f by less than x / 2^40 < 2^-16 < 1 / f, which never carries past the next integer (x / f's
// fraction is at most 1 - 1 / f). f >= 1.
struct enc_symbol {
  uint64_t rcp;
  uint32_t freq, cum, x_max;
};
DS_COMPACT_HD enc_symbol enc_symbol_of(uint32_t f, uint32_t c) {
  return {(uint64_t{1} << 40) / f + 1, f, c, ((kStateLow >> kProbBits) << 8) * f};
}
// How many bytes (0, 1 or 2) the renormalisation before symbol s emits from state x: one while x >= x_max, and
// x >> 8 >= x_max exactly when x >= 256 x_max; a third is impossible since x < 2^24 <= 2^16 x_max.
DS_COMPACT_HD uint32_t renorm_bytes(uint32_t x, const enc_symbol& s) {
  return static_cast<uint32_t>(x >= s.x_max) + static_cast<uint32_t>(uint64_t{x} >= (uint64_t{s.x_max} << 8));
}
// The symbol folded into the renormalised state: (x / f) 2^kProbBits + x mod f + c.
DS_COMPACT_HD uint32_t fold(uint32_t x, const enc_symbol& s) {
  const uint32_t q = static_cast<uint32_t>((uint64_t{x} * s.rcp) >> 40);
  return (q << kProbBits) + (x - q * s.freq) + s.cum;
}
// One encoder step: renormalise (bytes go out through `emit`, lowest first), then fold the symbol in. The state
// stays in [kStateLow, kStateLow << 8).
template <typename Emit>
DS_COMPACT_HD uint32_t encode_step(uint32_t x, const enc_symbol& s, Emit&& emit) {
  for (uint32_t k = renorm_bytes(x, s); k > 0; --k) {
    emit(static_cast<uint8_t>(x & 0xFF));
    x >>= 8;
  }
  return fold(x, s);
}

// The decoder's half, before renormalisation: the state after taking the symbol whose slot is x's low bits.
DS_COMPACT_HD uint32_t decode_step(uint32_t x, uint32_t f, uint32_t c) {
  return f * (x >> kProbBits) + (x & (kProbScale - 1)) - c;
}

}  // namespace deltasync::compact::coder
