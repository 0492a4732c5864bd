// CPU bitwise diff (64-byte block compare with AVX2/SSE2 dispatch), validated scatter-apply, and the
// software float conversions that keep NaN payloads and signalling bits intact.
#include "codec/diff.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "base/check.h"

namespace deltasync {
namespace {

constexpr uint32_t kBlockBytes = 64;

// Appends the changed elements of one 64-byte block. `ne` has bit b set when byte b differs; an element
// differs when any of its bytes does. Block boundaries are element boundaries because 64 % W == 0.
template <uint32_t W>
inline void emit_block(uint64_t ne, uint32_t first_elem, const std::byte* now_block, uint32_t*& pos_out,
                       std::byte*& val_out) noexcept {
  while (ne != 0) {
    const uint32_t elem = static_cast<uint32_t>(std::countr_zero(ne)) / W;
    *pos_out++ = first_elem + elem;
    std::memcpy(val_out, now_block + elem * W, W);
    val_out += W;
    // Clear every remaining byte bit of this element so it is emitted once.
    const uint32_t end_bit = (elem + 1) * W;
    ne = end_bit >= 64 ? 0 : ne & (~uint64_t{0} << end_bit);
  }
}

// Output cursors over vectors that are grown ahead of writing, so the hot loop stores through raw pointers
// instead of paying push_back's capacity check per element. The vectors are trimmed in finish().
template <uint32_t W>
class diff_sink {
 public:
  diff_sink(std::vector<uint32_t>& positions, byte_buffer& values, uint64_t numel)
      : positions_(positions),
        values_(values),
        pos_base_(positions.size()),
        val_base_(values.size()),
        pos_(positions.data() + pos_base_) {
    // A guess of 1/64 of the elements covers the typical ~1% density without regrowth and costs at most
    // 1/16 of the dense bytes when nothing changed.
    grow(numel / 64 + kBlockBytes / W);
  }

  // Guarantees room for one more block's worth of elements.
  void reserve_block() {
    if (static_cast<size_t>(pos_end_ - pos_) < kBlockBytes / W) grow(written() + kBlockBytes / W);
  }

  uint32_t*& pos() noexcept { return pos_; }
  std::byte*& val() noexcept { return val_; }

  uint64_t finish() {
    const uint64_t n = written();
    positions_.resize(pos_base_ + n);
    values_.resize(val_base_ + n * W);
    return n;
  }

 private:
  uint64_t written() const noexcept { return static_cast<uint64_t>(pos_ - (positions_.data() + pos_base_)); }

  void grow(uint64_t min_elems) {
    const uint64_t n = written();
    // Doubling keeps the zero-filling of resize() amortised to O(output).
    const uint64_t cap = std::max(min_elems, 2 * capacity());
    positions_.resize(pos_base_ + cap);
    values_.resize(val_base_ + cap * W);
    pos_ = positions_.data() + pos_base_ + n;
    pos_end_ = positions_.data() + positions_.size();
    val_ = values_.data() + val_base_ + n * W;
  }
  uint64_t capacity() const noexcept { return positions_.size() - pos_base_; }

  std::vector<uint32_t>& positions_;
  byte_buffer& values_;
  size_t pos_base_, val_base_;
  uint32_t* pos_ = nullptr;
  uint32_t* pos_end_ = nullptr;
  std::byte* val_ = nullptr;
};

// The tail (< 64 bytes) is compared element by element.
template <uint32_t W>
void diff_tail(const std::byte* before, const std::byte* now, uint64_t from_byte, uint64_t n_bytes,
               diff_sink<W>& sink) {
  sink.reserve_block();
  for (uint64_t b = from_byte; b < n_bytes; b += W) {
    if (std::memcmp(before + b, now + b, W) != 0) {
      *sink.pos()++ = static_cast<uint32_t>(b / W);
      std::memcpy(sink.val(), now + b, W);
      sink.val() += W;
    }
  }
}

template <uint32_t W>
__attribute__((target("avx2"))) uint64_t diff_avx2(const std::byte* before, const std::byte* now,
                                                   uint64_t n_bytes, std::vector<uint32_t>& positions,
                                                   byte_buffer& values) {
  diff_sink<W> sink(positions, values, n_bytes / W);
  const uint64_t full = n_bytes - n_bytes % kBlockBytes;
  for (uint64_t off = 0; off < full; off += kBlockBytes) {
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(before + off));
    const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(before + off + 32));
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(now + off));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(now + off + 32));
    const __m256i x0 = _mm256_xor_si256(a0, b0);
    const __m256i x1 = _mm256_xor_si256(a1, b1);
    const __m256i any = _mm256_or_si256(x0, x1);
    // Most blocks are equal at RL densities: one test, no mask extraction.
    if (_mm256_testz_si256(any, any)) continue;
    const __m256i zero = _mm256_setzero_si256();
    const uint32_t eq0 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(x0, zero)));
    const uint32_t eq1 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(x1, zero)));
    const uint64_t ne = ~(uint64_t{eq0} | (uint64_t{eq1} << 32));
    sink.reserve_block();
    emit_block<W>(ne, static_cast<uint32_t>(off / W), now + off, sink.pos(), sink.val());
  }
  diff_tail<W>(before, now, full, n_bytes, sink);
  return sink.finish();
}

// SSE2 is part of x86-64, so this path needs no dispatch check.
template <uint32_t W>
uint64_t diff_sse2(const std::byte* before, const std::byte* now, uint64_t n_bytes,
                   std::vector<uint32_t>& positions, byte_buffer& values) {
  diff_sink<W> sink(positions, values, n_bytes / W);
  const uint64_t full = n_bytes - n_bytes % kBlockBytes;
  for (uint64_t off = 0; off < full; off += kBlockBytes) {
    __m128i x[4];
    for (int i = 0; i < 4; ++i) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(before + off + 16 * i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(now + off + 16 * i));
      x[i] = _mm_xor_si128(a, b);
    }
    const __m128i any = _mm_or_si128(_mm_or_si128(x[0], x[1]), _mm_or_si128(x[2], x[3]));
    const __m128i zero = _mm_setzero_si128();
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(any, zero)) == 0xFFFF) continue;
    uint64_t eq = 0;
    for (int i = 0; i < 4; ++i) {
      eq |= uint64_t{static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(x[i], zero)))} << (16 * i);
    }
    sink.reserve_block();
    emit_block<W>(~eq, static_cast<uint32_t>(off / W), now + off, sink.pos(), sink.val());
  }
  diff_tail<W>(before, now, full, n_bytes, sink);
  return sink.finish();
}

bool have_avx2() noexcept {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

template <uint32_t W>
uint64_t diff_width(byte_span before, byte_span now, bool allow_avx2, std::vector<uint32_t>& positions,
                    byte_buffer& values) {
  if (allow_avx2 && have_avx2()) return diff_avx2<W>(before.data(), now.data(), now.size(), positions, values);
  return diff_sse2<W>(before.data(), now.data(), now.size(), positions, values);
}

uint64_t diff_dispatch(byte_span before, byte_span now, uint32_t elem_bytes, bool allow_avx2,
                       std::vector<uint32_t>& positions, byte_buffer& values) {
  DS_CHECK(before.size() == now.size(), "diff_tensor: sides differ in size");
  DS_CHECK(elem_bytes == 1 || elem_bytes == 2 || elem_bytes == 4 || elem_bytes == 8,
           "diff_tensor: element width must be 1, 2, 4 or 8");
  DS_CHECK(now.size() % elem_bytes == 0, "diff_tensor: size is not a whole number of elements");
  DS_CHECK(now.size() / elem_bytes <= uint64_t{UINT32_MAX} + 1, "diff_tensor: more than 2^32 elements");
  switch (elem_bytes) {
    case 1: return diff_width<1>(before, now, allow_avx2, positions, values);
    case 2: return diff_width<2>(before, now, allow_avx2, positions, values);
    case 4: return diff_width<4>(before, now, allow_avx2, positions, values);
    default: return diff_width<8>(before, now, allow_avx2, positions, values);
  }
}

// ---- software float conversion ----

struct float_format {
  uint32_t exp_bits;
  uint32_t mant_bits;
  uint32_t bytes;

  uint32_t total_bits() const noexcept { return 1 + exp_bits + mant_bits; }
  uint64_t exp_all_ones() const noexcept { return (uint64_t{1} << exp_bits) - 1; }
  uint64_t mant_mask() const noexcept { return (uint64_t{1} << mant_bits) - 1; }
  int32_t bias() const noexcept { return static_cast<int32_t>((1u << (exp_bits - 1)) - 1); }
};

bool format_of(dtype t, float_format& f) noexcept {
  switch (t) {
    case dtype::BF16: f = {8, 7, 2}; return true;
    case dtype::F16: f = {5, 10, 2}; return true;
    case dtype::F32: f = {8, 23, 4}; return true;
    case dtype::F64: f = {11, 52, 8}; return true;
    default: return false;
  }
}

uint64_t load_bits(const std::byte* p, uint32_t bytes) noexcept {
  switch (bytes) {
    case 2: return load_le<uint16_t>(p);
    case 4: return load_le<uint32_t>(p);
    default: return load_le<uint64_t>(p);
  }
}

void store_bits(std::byte* p, uint32_t bytes, uint64_t v) noexcept {
  switch (bytes) {
    case 2: store_le(p, static_cast<uint16_t>(v)); break;
    case 4: store_le(p, static_cast<uint32_t>(v)); break;
    default: store_le(p, v); break;
  }
}

// Converts bit pattern `x` of format `in` to format `out`. Integer-only, so the host FPU (which would quiet
// signalling NaNs and depends on the rounding mode) never sees the value.
uint64_t convert_bits(uint64_t x, const float_format& in, const float_format& out) noexcept {
  const uint64_t sign = (x >> (in.total_bits() - 1)) & 1;
  const uint64_t exp = (x >> in.mant_bits) & in.exp_all_ones();
  const uint64_t mant = x & in.mant_mask();
  const uint64_t sign_out = sign << (out.total_bits() - 1);
  const uint64_t inf_out = out.exp_all_ones() << out.mant_bits;

  if (exp == in.exp_all_ones()) {
    if (mant == 0) return sign_out | inf_out;
    // NaN: the payload is left-aligned in the mantissa (the quiet bit is its top bit), so widening shifts it
    // up and narrowing keeps its top bits; dropped non-zero bits force the quiet bit so the result stays NaN
    // even when the kept bits are all zero.
    if (out.mant_bits >= in.mant_bits) return sign_out | inf_out | (mant << (out.mant_bits - in.mant_bits));
    const uint32_t drop = in.mant_bits - out.mant_bits;
    uint64_t m = mant >> drop;
    if ((mant & ((uint64_t{1} << drop) - 1)) != 0) m |= uint64_t{1} << (out.mant_bits - 1);
    return sign_out | inf_out | m;
  }
  if (exp == 0 && mant == 0) return sign_out;

  // value = sig * 2^e, sig < 2^53.
  uint64_t sig;
  int32_t e;
  if (exp == 0) {
    sig = mant;
    e = 1 - in.bias() - static_cast<int32_t>(in.mant_bits);
  } else {
    sig = mant | (uint64_t{1} << in.mant_bits);
    e = static_cast<int32_t>(exp) - in.bias() - static_cast<int32_t>(in.mant_bits);
  }
  const int32_t top = static_cast<int32_t>(std::bit_width(sig)) - 1;
  const int32_t big_e = top + e;  // unbiased exponent of the value
  const int32_t emin = 1 - out.bias();
  if (big_e > out.bias()) return sign_out | inf_out;

  const bool subnormal = big_e < emin;
  // The target's unit in the last place, as a power of two, and how many low bits of sig fall below it.
  const int32_t q = (subnormal ? emin : big_e) - static_cast<int32_t>(out.mant_bits);
  const int32_t shift = q - e;
  uint64_t s;
  if (shift <= 0) {
    s = sig << -shift;  // exact: the value fits in the target's precision
  } else if (shift >= 60) {
    s = 0;  // below half the smallest subnormal (sig < 2^53 <= 2^(shift-1)): rounds to zero
  } else {
    s = sig >> shift;
    const uint64_t rem = sig & ((uint64_t{1} << shift) - 1);
    const uint64_t half = uint64_t{1} << (shift - 1);
    if (rem > half || (rem == half && (s & 1) != 0)) ++s;  // round to nearest, ties to even
  }
  // For normals s includes the hidden bit, so adding it to (biased exponent - 1) lets a rounding carry step
  // into the next exponent; for subnormals a carry to 2^mant_bits becomes the smallest normal the same way.
  const uint64_t bits =
      subnormal ? s : (static_cast<uint64_t>(big_e + out.bias() - 1) << out.mant_bits) + s;
  if (bits >= inf_out) return sign_out | inf_out;
  return sign_out | bits;
}

}  // namespace

uint64_t diff_tensor(byte_span before, byte_span now, uint32_t elem_bytes, std::vector<uint32_t>& positions,
                     byte_buffer& values) {
  return diff_dispatch(before, now, elem_bytes, /*allow_avx2=*/true, positions, values);
}

uint64_t detail::diff_tensor_sse2(byte_span before, byte_span now, uint32_t elem_bytes,
                                  std::vector<uint32_t>& positions, byte_buffer& values) {
  return diff_dispatch(before, now, elem_bytes, /*allow_avx2=*/false, positions, values);
}

namespace {

template <typename T>
void scatter_typed(std::byte* dest, std::span<const uint32_t> positions, const std::byte* values) noexcept {
  for (size_t i = 0; i < positions.size(); ++i) {
    std::memcpy(dest + uint64_t{positions[i]} * sizeof(T), values + i * sizeof(T), sizeof(T));
  }
}

}  // namespace

status scatter_apply(mutable_byte_span dest, dtype dest_type, std::span<const uint32_t> positions,
                     byte_span values, dtype values_type) {
  const uint32_t dest_w = element_bytes(dest_type);
  const uint32_t val_w = element_bytes(values_type);
  if (dest_w == 0 || val_w == 0) {
    return error(errc::unsupported, "scatter_apply: sub-byte dtype " +
                                        std::string(name(dest_w == 0 ? dest_type : values_type)));
  }
  if (dest.size() % dest_w != 0) {
    return error(errc::invalid_argument, "scatter_apply: destination of " + std::to_string(dest.size()) +
                                             " bytes is not a whole number of " + std::string(name(dest_type)) +
                                             " elements");
  }
  uint64_t want_bytes = 0;
  if (!checked_mul(positions.size(), val_w, want_bytes) || want_bytes != values.size()) {
    return error(errc::delta_value_count_mismatch,
                 "scatter_apply: " + std::to_string(positions.size()) + " positions but " +
                     std::to_string(values.size()) + " bytes of " + std::string(name(values_type)) + " values");
  }
  const uint64_t numel = dest.size() / dest_w;
  // One branch-free pass for the maximum keeps validation cheap next to the scatter itself.
  uint32_t max_pos = 0;
  for (const uint32_t p : positions) max_pos = p > max_pos ? p : max_pos;
  if (!positions.empty() && max_pos >= numel) {
    return error(errc::delta_position_out_of_range, "scatter_apply: position " + std::to_string(max_pos) +
                                                        " >= element count " + std::to_string(numel));
  }

  if (dest_type == values_type) {
    switch (dest_w) {
      case 1: scatter_typed<uint8_t>(dest.data(), positions, values.data()); return {};
      case 2: scatter_typed<uint16_t>(dest.data(), positions, values.data()); return {};
      case 4: scatter_typed<uint32_t>(dest.data(), positions, values.data()); return {};
      case 8: scatter_typed<uint64_t>(dest.data(), positions, values.data()); return {};
      default: {
        // Wider element types (C64 is 8 bytes; anything else) fall back to a byte copy per element.
        for (size_t i = 0; i < positions.size(); ++i) {
          std::memcpy(dest.data() + uint64_t{positions[i]} * dest_w, values.data() + i * val_w, dest_w);
        }
        return {};
      }
    }
  }

  // The pair's support does not depend on the value, so one trial conversion decides before any write.
  std::byte probe_in[8] = {};
  std::byte probe_out[8];
  if (!cast_element(values_type, probe_in, dest_type, probe_out)) {
    return error(errc::delta_dtype_mismatch, "scatter_apply: cannot cast " + std::string(name(values_type)) +
                                                 " values to " + std::string(name(dest_type)));
  }
  for (size_t i = 0; i < positions.size(); ++i) {
    cast_element(values_type, values.data() + i * val_w, dest_type, dest.data() + uint64_t{positions[i]} * dest_w);
  }
  return {};
}

bool cast_element(dtype from, const std::byte* src, dtype to, std::byte* dst) noexcept {
  float_format in, out;
  if (!format_of(from, in) || !format_of(to, out)) return false;
  const uint64_t x = load_bits(src, in.bytes);
  // The common promoted pair (a BF16 param in an F32 bucket) is a plain 16-bit shift.
  if (from == dtype::BF16 && to == dtype::F32) {
    store_le(dst, static_cast<uint32_t>(x << 16));
    return true;
  }
  store_bits(dst, out.bytes, from == to ? x : convert_bits(x, in, out));
  return true;
}

}  // namespace deltasync
