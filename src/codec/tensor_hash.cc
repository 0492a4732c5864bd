// torch.hash_tensor (mode xor_sum) and the delta file checksum built on it, with its decimal text form.
#include "codec/tensor_hash.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>

#include "base/check.h"

namespace deltasync {
namespace {

// ---- float widening for hash_tensor ----
//
// torch.hash_tensor converts each float element with static_cast<double>: bf16/f16/fp8 go through c10's
// bit-level conversion to float (which keeps NaN payloads), then the hardware float -> double conversion.
// x86 cvtss2sd (and CUDA's cvt.f64.f32) quiet a signalling NaN by setting the quiet bit and keep the rest
// of the payload, so we do the same: every float NaN maps to the double NaN with the payload shifted up and
// bit 51 set.

uint64_t f32_bits_to_f64_bits(uint32_t x) noexcept {
  const uint64_t sign = uint64_t{x >> 31} << 63;
  const uint32_t exp = (x >> 23) & 0xFFu;
  const uint64_t man = x & 0x7FFFFFu;
  if (exp == 0xFF) {
    if (man == 0) return sign | 0x7FF0000000000000ull;
    return sign | 0x7FF0000000000000ull | (man << 29) | (uint64_t{1} << 51);
  }
  if (exp == 0) {
    if (man == 0) return sign;
    // A float subnormal man * 2^-149 is a double normal: normalise around its highest set bit.
    const int p = 63 - __builtin_clzll(man);
    const uint64_t dexp = static_cast<uint64_t>(p - 149 + 1023);
    return sign | (dexp << 52) | ((man ^ (uint64_t{1} << p)) << (52 - p));
  }
  return sign | (uint64_t{exp + 896u} << 52) | (man << 29);
}

// A finite value of a small float format (sign, exponent field e, mantissa field m of man_bits, bias) as
// float bits. Every such value of the formats below is a float normal, so this is exact.
uint32_t minifloat_to_f32_bits(uint32_t sign, uint32_t e, uint32_t m, int man_bits, int bias) noexcept {
  const uint32_t s = sign << 31;
  if (e == 0) {
    if (m == 0) return s;
    const int p = 31 - __builtin_clz(m);
    const auto fexp = static_cast<uint32_t>(1 - bias - man_bits + p + 127);
    return s | (fexp << 23) | ((m ^ (1u << p)) << (23 - p));
  }
  const auto fexp = static_cast<uint32_t>(static_cast<int>(e) - bias + 127);
  return s | (fexp << 23) | (m << (23 - man_bits));
}

uint32_t f16_to_f32_bits(uint16_t h) noexcept {
  const uint32_t sign = h >> 15, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return (sign << 31) | 0x7F800000u | (m << 13);  // inf, or NaN with its payload
  return minifloat_to_f32_bits(sign, e, m, 10, 15);
}

// The fp8 formats as float bits, following c10's own decoders for the NaN encodings.
uint32_t fp8_to_f32_bits(dtype t, uint8_t x) noexcept {
  const uint32_t sign = x >> 7;
  switch (t) {
    case dtype::F8_E5M2:  // IEEE-like (bias 15, inf and NaN): the top byte of an f16.
      return f16_to_f32_bits(static_cast<uint16_t>(x << 8));
    case dtype::F8_E4M3: {  // bias 7, no inf; S.1111.111 is NaN, which c10 decodes to 0x7FF00000.
      if ((x & 0x7F) == 0x7F) return (sign << 31) | 0x7FF00000u;
      return minifloat_to_f32_bits(sign, (x >> 3) & 0xFu, x & 0x7u, 3, 7);
    }
    case dtype::F8_E4M3FNUZ:  // bias 8, no inf, no -0: 0x80 is the only NaN (c10: float bits 0x7F800001).
      if (x == 0x80) return 0x7F800001u;
      return minifloat_to_f32_bits(sign, (x >> 3) & 0xFu, x & 0x7u, 3, 8);
    case dtype::F8_E5M2FNUZ:
      if (x == 0x80) return 0x7F800001u;
      return minifloat_to_f32_bits(sign, (x >> 2) & 0x1Fu, x & 0x3u, 2, 16);
    case dtype::F8_E8M0:  // exponent only: 2^(x-127); 0xFF is NaN; 2^-127 is a float subnormal.
      if (x == 0xFF) return 0x7F800001u;
      if (x == 0) return 0x00400000u;
      return uint32_t{x} << 23;
    default:
      DS_CHECK(false, "fp8_to_f32_bits: not an fp8 dtype");
  }
  return 0;
}

// The 64-bit image of one 1- or 2-byte element, as torch.hash_tensor upcasts it.
uint64_t small_element_image(dtype t, uint32_t v) noexcept {
  switch (t) {
    case dtype::BOOL:
    case dtype::U8:
    case dtype::U16: return v;
    case dtype::I8: return static_cast<uint64_t>(int64_t{static_cast<int8_t>(v)});
    case dtype::I16: return static_cast<uint64_t>(int64_t{static_cast<int16_t>(v)});
    case dtype::F16: return f32_bits_to_f64_bits(f16_to_f32_bits(static_cast<uint16_t>(v)));
    case dtype::BF16: return f32_bits_to_f64_bits(v << 16);
    default: return f32_bits_to_f64_bits(fp8_to_f32_bits(t, static_cast<uint8_t>(v)));
  }
}

// 1-byte dtypes: every element's image comes from 256 values, so XOR the images of the byte values that
// occur an odd number of times.
uint64_t hash_bytes_by_parity(dtype t, const std::byte* p, size_t n) noexcept {
  std::array<uint8_t, 256> parity{};
  for (size_t i = 0; i < n; ++i) parity[static_cast<uint8_t>(p[i])] ^= 1;
  uint64_t h = 0;
  for (uint32_t v = 0; v < 256; ++v)
    if (parity[v]) h ^= small_element_image(t, v);
  return h;
}

// True when this thread's float -> double conversion is the exact IEEE one hash_tensor specifies (keeps
// subnormals, quiets a signalling NaN by setting bit 51): not so under denormals-are-zero, which a library
// may have set in this thread's MXCSR. Checked on every call (two conversions), since the mode is per thread.
bool hardware_widening_exact() noexcept {
  volatile uint32_t sub = 0x00010000u, snan = 0x7F810000u;  // a float subnormal, a signalling NaN
  const uint64_t a = std::bit_cast<uint64_t>(static_cast<double>(std::bit_cast<float>(sub)));
  const uint64_t b = std::bit_cast<uint64_t>(static_cast<double>(std::bit_cast<float>(snan)));
  return a == f32_bits_to_f64_bits(0x00010000u) && b == f32_bits_to_f64_bits(0x7F810000u);
}

// 2-byte floats: normal numbers widen by a fixed shift and exponent rebias, which vectorises; a block that
// holds a zero, subnormal, inf or NaN is redone element by element with the exact conversion.
//
// Whole blocks go four values per 64-bit word first. A normal value's image is
//   sign << 63 | (e + R) << 52 | m << (52 - kManBits),   R = 1023 - bias = 1024 - 2^(exponent bits - 1),
// and e + R carries nowhere: it is R | e when e's top bit (bit 14 of the value) is clear, else 0x400 | e
// without that bit. So a block's XOR of images is the XOR of its raw values (sign, mantissa and e's low bits,
// each in place up to a shift) plus the parities of how many values have bit 14 set and clear (the first is
// bit 14 of that XOR; a block's count is even, so the second equals it); a lane whose
// exponent is all zeros or all ones (zero, subnormal, inf, NaN) is caught in the same pass and sends the block
// to the element-wise path.
template <int kManBits, int kBias>
bool fold_normal_block(const std::byte* p, size_t words, uint64_t& out) noexcept {
  constexpr uint64_t kLanes = 0x0001000100010001ull;
  constexpr uint64_t kExp4 = kLanes * (((1u << (15 - kManBits)) - 1) << kManBits);
  constexpr uint64_t kHigh4 = kLanes * 0x8000u;
  uint64_t x = 0, special = 0;
  for (size_t w = 0; w < words; ++w) {
    const uint64_t v = load_le<uint64_t>(p + 8 * w);
    const uint64_t e = v & kExp4;  // every lane <= 0x7FFF: the subtractions below borrow inside their lane only
    special |= ((kHigh4 - e) | (kHigh4 - (e ^ kExp4))) & kHigh4;  // a lane's bit 15: exponent all 0s or all 1s
    x ^= v;
  }
  if (special != 0) return false;
  x ^= x >> 32;
  x ^= x >> 16;
  const uint64_t top = (x >> 14) & 1;  // odd count of bit 14 set, and (even block) of bit 14 clear
  out = ((x & 0x8000u) << 48) | ((x & 0x3FFFu) << (52 - kManBits)) | (top << 62) |
        (top * (static_cast<uint64_t>(1023 - kBias) << 52));
  return true;
}

template <int kManBits, int kBias>
uint64_t hash_half_floats(dtype t, const std::byte* p, size_t n) noexcept {
  constexpr uint32_t kExpMask = ((1u << (15 - kManBits)) - 1) << kManBits;
  constexpr uint64_t kRebias = static_cast<uint64_t>(1023 - kBias) << 52;
  constexpr size_t kBlock = 512;
  uint64_t h = 0;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t m = std::min(kBlock, n - b);
    if (m == kBlock) {
      uint64_t folded = 0;
      if (fold_normal_block<kManBits, kBias>(p + 2 * b, kBlock / 4, folded)) {
        h ^= folded;
        continue;
      }
    }
    uint64_t acc = 0;
    uint32_t special = 0;
    for (size_t i = 0; i < m; ++i) {
      const uint32_t v = load_le<uint16_t>(p + 2 * (b + i));
      const uint32_t e = v & kExpMask;
      special |= static_cast<uint32_t>(e == 0) | static_cast<uint32_t>(e == kExpMask);
      acc ^= (uint64_t{v & 0x8000u} << 48) | ((uint64_t{v & 0x7FFFu} << (52 - kManBits)) + kRebias);
    }
    if (special) {
      acc = 0;
      if (kManBits == 7 && hardware_widening_exact()) {
        // bf16 is the top half of a float: the hardware float -> double conversion is torch's own, and it
        // vectorises (the records of a native/2 file hash their position bytes as bf16: mostly zeros and
        // subnormals, which the exact scalar path below would take element by element).
        for (size_t i = 0; i < m; ++i)
          acc ^= std::bit_cast<uint64_t>(static_cast<double>(
              std::bit_cast<float>(uint32_t{load_le<uint16_t>(p + 2 * (b + i))} << 16)));
      } else {
        for (size_t i = 0; i < m; ++i) acc ^= small_element_image(t, load_le<uint16_t>(p + 2 * (b + i)));
      }
    }
    h ^= acc;
  }
  return h;
}

uint64_t hash_f32(const std::byte* p, size_t n) noexcept {
  constexpr size_t kBlock = 512;
  uint64_t h = 0;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t m = std::min(kBlock, n - b);
    uint64_t acc = 0;
    uint32_t special = 0;
    for (size_t i = 0; i < m; ++i) {
      const uint32_t v = load_le<uint32_t>(p + 4 * (b + i));
      const uint32_t e = v & 0x7F800000u;
      special |= static_cast<uint32_t>(e == 0) | static_cast<uint32_t>(e == 0x7F800000u);
      acc ^= (uint64_t{v & 0x80000000u} << 32) | ((uint64_t{v & 0x7FFFFFFFu} << 29) + (uint64_t{896} << 52));
    }
    if (special) {
      acc = 0;
      for (size_t i = 0; i < m; ++i) acc ^= f32_bits_to_f64_bits(load_le<uint32_t>(p + 4 * (b + i)));
    }
    h ^= acc;
  }
  return h;
}

template <typename T, typename Wide>
uint64_t hash_ints(const std::byte* p, size_t n) noexcept {
  uint64_t h = 0;
  for (size_t i = 0; i < n; ++i)
    h ^= static_cast<uint64_t>(static_cast<Wide>(load_le<T>(p + sizeof(T) * i)));
  return h;
}

}  // namespace

std::string checksum_to_decimal(checksum128 v) {
  if (v == 0) return "0";
  std::string s;
  while (v != 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  }
  std::reverse(s.begin(), s.end());
  return s;
}

std::optional<checksum128> checksum_from_decimal(std::string_view text) noexcept {
  if (text.empty()) return std::nullopt;
  constexpr checksum128 kMax = ~checksum128{0};
  checksum128 v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<unsigned>(c - '0');
    if (v > (kMax - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

uint64_t hash_tensor(dtype type, byte_span bytes) noexcept {
  const std::byte* p = bytes.data();
  const uint32_t eb = element_bytes(type);
  if (eb == 0 || type == dtype::C64) return 0;  // not supported by torch.hash_tensor; refused by the reader
  const size_t n = bytes.size() / eb;
  switch (type) {
    case dtype::U8: {
      // Zero-extended bytes XOR to the XOR of the bytes: fold 8 at a time.
      uint64_t acc = 0;
      size_t i = 0;
      for (; i + 8 <= n; i += 8) acc ^= load_le<uint64_t>(p + i);
      for (; i < n; ++i) acc ^= static_cast<uint64_t>(p[i]);
      acc ^= acc >> 32;
      acc ^= acc >> 16;
      acc ^= acc >> 8;
      return acc & 0xFF;
    }
    case dtype::BOOL:
    case dtype::I8:
    case dtype::F8_E5M2:
    case dtype::F8_E4M3:
    case dtype::F8_E8M0:
    case dtype::F8_E4M3FNUZ:
    case dtype::F8_E5M2FNUZ: return hash_bytes_by_parity(type, p, n);
    case dtype::BF16: return hash_half_floats<7, 127>(type, p, n);
    case dtype::F16: return hash_half_floats<10, 15>(type, p, n);
    case dtype::I16: return hash_ints<int16_t, int64_t>(p, n);
    case dtype::U16: return hash_ints<uint16_t, uint64_t>(p, n);
    case dtype::I32: return hash_ints<int32_t, int64_t>(p, n);
    case dtype::U32: return hash_ints<uint32_t, uint64_t>(p, n);
    case dtype::F32: return hash_f32(p, n);
    case dtype::F64:
    case dtype::I64:
    case dtype::U64: return hash_ints<uint64_t, uint64_t>(p, n);
    default: return 0;
  }
}

checksum128 delta_checksum(byte_span positions_u8, dtype values_type, byte_span values) noexcept {
  return checksum128{hash_tensor(dtype::U8, positions_u8)} ^ (checksum128{hash_tensor(values_type, values)} << 1);
}


}  // namespace deltasync
