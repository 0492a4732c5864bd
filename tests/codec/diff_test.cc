// Tests for the CPU diff, scatter-apply and exact float casts: seeded property tests against a scalar
// reference, edge cases (empty, tails, first/last element, NaN/inf/-0.0), and exhaustive 16-bit round trips.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "codec/diff.h"

namespace deltasync {
namespace {

using diff_fn = uint64_t (*)(byte_span, byte_span, uint32_t, std::vector<uint32_t>&, byte_buffer&);

struct diff_impl {
  const char* name;
  diff_fn fn;
};

// Both dispatch targets: diff_tensor (AVX2 where the host has it) and the SSE2 fallback.
const diff_impl kImpls[] = {{"dispatch", &diff_tensor}, {"sse2", &detail::diff_tensor_sse2}};

struct diff_out {
  std::vector<uint32_t> positions;
  byte_buffer values;
};

diff_out reference_diff(byte_span before, byte_span now, uint32_t w) {
  diff_out r;
  for (size_t b = 0; b < now.size(); b += w) {
    if (std::memcmp(before.data() + b, now.data() + b, w) != 0) {
      r.positions.push_back(static_cast<uint32_t>(b / w));
      r.values.insert(r.values.end(), now.begin() + static_cast<ptrdiff_t>(b),
                      now.begin() + static_cast<ptrdiff_t>(b + w));
    }
  }
  return r;
}

dtype dtype_of_width(uint32_t w) {
  switch (w) {
    case 1: return dtype::U8;
    case 2: return dtype::BF16;
    case 4: return dtype::F32;
    default: return dtype::F64;
  }
}

byte_buffer random_bytes(std::mt19937_64& rng, size_t n) {
  byte_buffer b(n);
  for (auto& x : b) x = static_cast<std::byte>(rng() & 0xFF);
  return b;
}

// Changes each element with probability `density` to a different bit pattern (density 1: every element).
void mutate(std::mt19937_64& rng, byte_buffer& now, uint32_t w, double density) {
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  for (size_t b = 0; b < now.size(); b += w) {
    if (density < 1.0 && !(coin(rng) < density)) continue;
    // XOR with a non-zero mask guarantees a different pattern; flipping random bytes mimics value changes
    // that touch only the low bytes as well as the high ones.
    const size_t k = rng() % w;
    const auto flip = static_cast<std::byte>(1 + rng() % 255);
    now[b + k] ^= flip;
  }
}

void expect_diff_matches(const diff_impl& impl, byte_span before, byte_span now, uint32_t w) {
  SCOPED_TRACE(impl.name);
  const diff_out want = reference_diff(before, now, w);
  diff_out got;
  const uint64_t n = impl.fn(before, now, w, got.positions, got.values);
  ASSERT_EQ(n, want.positions.size());
  ASSERT_EQ(got.positions, want.positions);
  ASSERT_EQ(got.values, want.values);

  // Applying the diff to the old bytes reproduces the new bytes exactly.
  byte_buffer applied(before.begin(), before.end());
  const dtype t = dtype_of_width(w);
  const status s = scatter_apply(applied, t, got.positions, got.values, t);
  ASSERT_TRUE(s.ok()) << s.err().describe();
  ASSERT_TRUE(std::equal(applied.begin(), applied.end(), now.begin(), now.end()));
}

TEST(DiffTensor, RandomPropertyAllWidthsAndDensities) {
  const uint64_t base_seed = std::random_device{}();
  const uint32_t widths[] = {1, 2, 4, 8};
  const double densities[] = {0.0, 1e-4, 0.01, 0.5, 1.0};
  int round = 0;
  for (const uint32_t w : widths) {
    for (const double d : densities) {
      for (int rep = 0; rep < 4; ++rep) {
        const uint64_t seed = base_seed + static_cast<uint64_t>(round++);
        SCOPED_TRACE("seed=" + std::to_string(seed) + " width=" + std::to_string(w) +
                     " density=" + std::to_string(d));
        std::mt19937_64 rng(seed);
        // Sizes straddle block boundaries (not multiples of 64 bytes) and, for rep 3, exceed 65536 elements
        // so positions need more than 16 bits.
        const size_t numel = rep == 3 ? 65536 + 1 + rng() % 5000 : rng() % 3000;
        const byte_buffer before = random_bytes(rng, numel * w);
        byte_buffer now = before;
        mutate(rng, now, w, d);
        for (const auto& impl : kImpls) expect_diff_matches(impl, before, now, w);
      }
    }
  }
}

TEST(DiffTensor, EmptyTensor) {
  for (const auto& impl : kImpls) {
    for (const uint32_t w : {1u, 2u, 4u, 8u}) {
      std::vector<uint32_t> pos;
      byte_buffer val;
      EXPECT_EQ(impl.fn({}, {}, w, pos, val), 0u) << impl.name;
      EXPECT_TRUE(pos.empty());
      EXPECT_TRUE(val.empty());
    }
  }
}

TEST(DiffTensor, FirstAndLastElementAtEverySize) {
  // Every size from 0 to 3 blocks, so each tail length and block boundary is hit.
  for (const auto& impl : kImpls) {
    for (const uint32_t w : {1u, 2u, 4u, 8u}) {
      for (size_t numel = 1; numel <= 3 * 64 / w + 1; ++numel) {
        SCOPED_TRACE("width=" + std::to_string(w) + " numel=" + std::to_string(numel));
        const byte_buffer before(numel * w, std::byte{0x11});
        byte_buffer now = before;
        now[0] ^= std::byte{0x80};
        now[numel * w - 1] ^= std::byte{0x01};  // the last element's last byte
        expect_diff_matches(impl, before, now, w);
      }
    }
  }
}

TEST(DiffTensor, PositionsPastSixteenBits) {
  const size_t numel = 200000;
  const byte_buffer before(numel * 2, std::byte{0});
  byte_buffer now = before;
  for (const size_t i : {size_t{65535}, size_t{65536}, size_t{131071}, numel - 1}) now[2 * i + 1] = std::byte{1};
  std::vector<uint32_t> pos;
  byte_buffer val;
  ASSERT_EQ(diff_tensor(before, now, 2, pos, val), 4u);
  EXPECT_EQ(pos, (std::vector<uint32_t>{65535, 65536, 131071, 199999}));
}

TEST(DiffTensor, AppendsToExistingOutput) {
  const byte_buffer before(256, std::byte{0});
  byte_buffer now = before;
  now[4] = std::byte{7};
  std::vector<uint32_t> pos = {42};
  byte_buffer val = {std::byte{9}, std::byte{9}, std::byte{9}, std::byte{9}};
  ASSERT_EQ(diff_tensor(before, now, 4, pos, val), 1u);
  EXPECT_EQ(pos, (std::vector<uint32_t>{42, 1}));
  ASSERT_EQ(val.size(), 8u);
  EXPECT_EQ(val[4], std::byte{7});
  EXPECT_EQ(val[0], std::byte{9});
}

template <typename T>
byte_buffer as_buffer(const std::vector<T>& v) {
  byte_buffer b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(DiffTensor, FloatSpecialsAreComparedBitwise) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float snan = std::bit_cast<float>(uint32_t{0x7F800001});
  const float nan_other = std::bit_cast<float>(uint32_t{0x7FC00001});
  // 100 elements: not a multiple of 16, so some specials sit in the tail.
  std::vector<float> before(100, 1.0f), now(100, 1.0f);
  before[0] = 0.0f;   now[0] = -0.0f;     // +0 -> -0: a change even though they compare equal
  before[1] = nan;    now[1] = nan;       // same NaN bits: no change although NaN != NaN
  before[2] = nan;    now[2] = nan_other; // another payload: a change
  before[3] = 1.0f;   now[3] = inf;
  before[4] = inf;    now[4] = -inf;
  before[5] = snan;   now[5] = snan;      // identical signalling NaN: no change
  before[97] = -0.0f; now[97] = -0.0f;
  before[98] = -0.0f; now[98] = 0.0f;
  before[99] = snan;  now[99] = nan;
  const byte_buffer b = as_buffer(before), n = as_buffer(now);
  for (const auto& impl : kImpls) {
    std::vector<uint32_t> pos;
    byte_buffer val;
    impl.fn(b, n, 4, pos, val);
    EXPECT_EQ(pos, (std::vector<uint32_t>{0, 2, 3, 4, 98, 99})) << impl.name;
    expect_diff_matches(impl, b, n, 4);
  }
}

// ---- scatter_apply ----

TEST(ScatterApply, RejectsOutOfRangeLeavingDestUntouched) {
  byte_buffer dest(64, std::byte{0x5A});
  const byte_buffer original = dest;
  // The bad position comes last, so a writer that validated lazily would already have written the others.
  const std::vector<uint32_t> pos = {0, 1, 2, 32};
  const byte_buffer val(8, std::byte{0});
  const status s = scatter_apply(dest, dtype::BF16, pos, val, dtype::BF16);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::delta_position_out_of_range)) << s.err().describe();
  EXPECT_EQ(dest, original);

  // The same in the casting path.
  const byte_buffer val32(16, std::byte{0});
  const status c = scatter_apply(dest, dtype::BF16, pos, val32, dtype::F32);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(dest, original);
}

TEST(ScatterApply, RejectsCountMismatchAndBadTypes) {
  byte_buffer dest(64, std::byte{1});
  const byte_buffer original = dest;
  const std::vector<uint32_t> pos = {0, 1};
  const byte_buffer val(3, std::byte{0});
  status s = scatter_apply(dest, dtype::BF16, pos, val, dtype::BF16);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::delta_value_count_mismatch));
  const byte_buffer val8(8, std::byte{0});
  s = scatter_apply(dest, dtype::I32, pos, val8, dtype::F32);  // not a float-to-float pair
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::delta_dtype_mismatch));
  s = scatter_apply(dest, dtype::F4, pos, val8, dtype::F32);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(dest, original);
}

TEST(ScatterApply, EmptyAndEveryElement) {
  byte_buffer dest(16, std::byte{3});
  EXPECT_TRUE(scatter_apply(dest, dtype::F64, {}, {}, dtype::F64).ok());
  byte_buffer empty_dest;
  EXPECT_TRUE(scatter_apply(empty_dest, dtype::F64, {}, {}, dtype::F64).ok());
  const std::vector<uint32_t> zero = {0};
  const byte_buffer v8(8, std::byte{0});
  EXPECT_FALSE(scatter_apply(empty_dest, dtype::F64, zero, v8, dtype::F64).ok());
}

TEST(ScatterApply, CastsPromotedValuesBackExactly) {
  // BF16 params travelling as F32 values (a promoted bucket) land bit-exactly, NaN payloads included.
  const std::vector<uint16_t> bf = {0x3F80, 0x7FA1, 0xFFC3, 0x8000, 0x0001, 0x7F80};
  std::vector<uint32_t> f32;
  for (const uint16_t b : bf) f32.push_back(uint32_t{b} << 16);
  std::vector<uint16_t> dest(10, 0x1234);
  const std::vector<uint32_t> pos = {0, 2, 4, 6, 8, 9};
  const byte_buffer vals = as_buffer(f32);
  mutable_byte_span d(reinterpret_cast<std::byte*>(dest.data()), dest.size() * 2);
  const status s = scatter_apply(d, dtype::BF16, pos, vals, dtype::F32);
  ASSERT_TRUE(s.ok()) << s.err().describe();
  EXPECT_EQ(dest, (std::vector<uint16_t>{0x3F80, 0x1234, 0x7FA1, 0x1234, 0xFFC3, 0x1234, 0x8000, 0x1234, 0x0001,
                                         0x7F80}));
}

// ---- cast_element ----

template <typename To, typename From>
To cast_bits(dtype from, From x, dtype to) {
  std::byte in[sizeof(From)], out[sizeof(To)];
  std::memcpy(in, &x, sizeof x);
  EXPECT_TRUE(cast_element(from, in, to, out));
  To r;
  std::memcpy(&r, out, sizeof r);
  return r;
}

bool is_nan16(uint16_t b, dtype t) {
  return t == dtype::BF16 ? (b & 0x7F80) == 0x7F80 && (b & 0x7F) != 0 : (b & 0x7C00) == 0x7C00 && (b & 0x3FF) != 0;
}

TEST(CastElement, SixteenBitFormatsRoundTripThroughF32AndF64ForAllPatterns) {
  for (const dtype t : {dtype::BF16, dtype::F16}) {
    for (uint32_t i = 0; i < 65536; ++i) {
      const auto b = static_cast<uint16_t>(i);
      const auto f = cast_bits<uint32_t>(t, b, dtype::F32);
      ASSERT_EQ(cast_bits<uint16_t>(dtype::F32, f, t), b) << name(t) << " bits " << i;
      const auto d = cast_bits<uint64_t>(t, b, dtype::F64);
      ASSERT_EQ(cast_bits<uint16_t>(dtype::F64, d, t), b) << name(t) << " bits " << i;
      // Widening goes through F32 or directly to F64 with the same result.
      ASSERT_EQ(cast_bits<uint64_t>(dtype::F32, f, dtype::F64), d);
      if (is_nan16(b, t)) continue;
      // The widened value is the right number (NaNs excluded: the comparison would be meaningless).
      const double want = t == dtype::BF16 ? double{std::bit_cast<float>(uint32_t{b} << 16)}
                                           : double{static_cast<float>(std::bit_cast<_Float16>(b))};
      ASSERT_EQ(std::bit_cast<uint64_t>(std::bit_cast<double>(d)), std::bit_cast<uint64_t>(want))
          << name(t) << " bits " << i;
    }
  }
}

TEST(CastElement, WideningKeepsSignallingNaNPayloads) {
  EXPECT_EQ(cast_bits<uint32_t>(dtype::BF16, uint16_t{0x7F81}, dtype::F32), 0x7F810000u);  // sNaN stays sNaN
  EXPECT_EQ(cast_bits<uint32_t>(dtype::F16, uint16_t{0x7C01}, dtype::F32), 0x7F802000u);
  EXPECT_EQ(cast_bits<uint32_t>(dtype::F16, uint16_t{0xFE00}, dtype::F32), 0xFFC00000u);
  EXPECT_EQ(cast_bits<uint64_t>(dtype::F32, uint32_t{0x7F800001}, dtype::F64), 0x7FF0000020000000ull);
  EXPECT_EQ(cast_bits<uint32_t>(dtype::F16, uint16_t{0x0001}, dtype::F32), 0x33800000u);  // smallest subnormal
}

TEST(CastElement, F32ThroughF64RoundTripsRandomPatterns) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 2'000'000; ++i) {
    uint32_t x = static_cast<uint32_t>(rng());
    // Every fourth sample is forced to a NaN or inf (random payload, either quiet bit) so they are common.
    if (i % 4 == 0) x |= 0x7F800000u;
    const auto d = cast_bits<uint64_t>(dtype::F32, x, dtype::F64);
    ASSERT_EQ(cast_bits<uint32_t>(dtype::F64, d, dtype::F32), x) << std::hex << x;
    const float f = std::bit_cast<float>(x);
    if (!std::isnan(f)) {
      ASSERT_EQ(std::bit_cast<double>(d), double{f}) << std::hex << x;
    }
  }
}

TEST(CastElement, NarrowingRoundsToNearestEvenLikeHardware) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 1'000'000; ++i) {
    uint64_t dbits = rng();
    // Concentrate a third of the samples around float's exponent range (normals, subnormals, overflow).
    if (i % 3 == 0) dbits = (dbits & 0x800FFFFFFFFFFFFFull) | (uint64_t{0x300 + rng() % 0x200} << 52);
    const double d = std::bit_cast<double>(dbits);
    if (std::isnan(d)) continue;
    const auto f = cast_bits<uint32_t>(dtype::F64, dbits, dtype::F32);
    ASSERT_EQ(f, std::bit_cast<uint32_t>(static_cast<float>(d))) << std::hex << dbits;
    const auto h = cast_bits<uint16_t>(dtype::F64, dbits, dtype::F16);
    ASSERT_EQ(h, std::bit_cast<uint16_t>(static_cast<_Float16>(d))) << std::hex << dbits;

    const auto x = static_cast<uint32_t>(rng());
    const float xf = std::bit_cast<float>(x);
    if (std::isnan(xf)) continue;
    const auto hf = cast_bits<uint16_t>(dtype::F32, x, dtype::F16);
    ASSERT_EQ(hf, std::bit_cast<uint16_t>(static_cast<_Float16>(xf))) << std::hex << x;
    // bf16 reference: torch's round_to_nearest_even on the f32 bits.
    const auto want_bf = static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
    ASSERT_EQ(cast_bits<uint16_t>(dtype::F32, x, dtype::BF16), want_bf) << std::hex << x;
  }
}

TEST(CastElement, RoundingCases) {
  // 1 + 2^-8 is halfway between bf16 1.0 (0x3F80) and the next value: ties go to the even mantissa.
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x3F808000}, dtype::BF16), 0x3F80);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x3F818000}, dtype::BF16), 0x3F82);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x3F808001}, dtype::BF16), 0x3F81);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x3F807FFF}, dtype::BF16), 0x3F80);
  // Overflow to inf, keeping the sign.
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x7F7FFFFF}, dtype::BF16), 0x7F80);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0xC7800000}, dtype::F16), 0xFC00);  // -65536
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x477FF000}, dtype::F16), 0x7C00);  // 65520 ties up to inf
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x477FE000}, dtype::F16), 0x7BFF);  // 65504 = max
  // Underflow: below half the smallest f16 subnormal goes to signed zero; exactly half ties to even (zero).
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x33000000}, dtype::F16), 0x0000);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x33000001}, dtype::F16), 0x0001);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0xB2000000}, dtype::F16), 0x8000);
  // Subnormal rounding up into the smallest normal.
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x387FF000}, dtype::F16), 0x0400);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F64, uint64_t{0x8000000000000000ull}, dtype::BF16), 0x8000);
}

TEST(CastElement, NarrowingNaNs) {
  // Representable NaNs (dropped payload bits zero) are exact, signalling bit included.
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x7FA00000}, dtype::BF16), 0x7FA0);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0xFF810000}, dtype::BF16), 0xFF81);
  EXPECT_EQ(cast_bits<uint32_t>(dtype::F64, uint64_t{0x7FF4000000000000ull}, dtype::F32), 0x7FA00000u);
  // Dropped payload bits: keep the top bits, set the quiet bit so the result cannot become inf.
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x7F800001}, dtype::BF16), 0x7FC0);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F32, uint32_t{0x7FA00001}, dtype::BF16), 0x7FE0);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F64, uint64_t{0xFFF0000000000001ull}, dtype::F16), 0xFE00);
  // inf stays inf.
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F64, uint64_t{0xFFF0000000000000ull}, dtype::F16), 0xFC00);
}

TEST(CastElement, BetweenSixteenBitFormats) {
  // bf16 -> f16 rounds (f16 has more mantissa, less range); f16 -> bf16 likewise. 1.0 is exact both ways.
  EXPECT_EQ(cast_bits<uint16_t>(dtype::BF16, uint16_t{0x3F80}, dtype::F16), 0x3C00);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F16, uint16_t{0x3C00}, dtype::BF16), 0x3F80);
  EXPECT_EQ(cast_bits<uint16_t>(dtype::BF16, uint16_t{0x4780}, dtype::F16), 0x7C00);  // 65536 overflows
  EXPECT_EQ(cast_bits<uint16_t>(dtype::F16, uint16_t{0x3C01}, dtype::BF16), 0x3F80);  // 1+2^-10 rounds down
}

TEST(CastElement, UnsupportedPairs) {
  std::byte in[8] = {}, out[8] = {};
  EXPECT_FALSE(cast_element(dtype::I32, in, dtype::F32, out));
  EXPECT_FALSE(cast_element(dtype::F32, in, dtype::I64, out));
  EXPECT_FALSE(cast_element(dtype::F8_E4M3, in, dtype::F32, out));
  EXPECT_FALSE(cast_element(dtype::U8, in, dtype::U8, out));
  EXPECT_TRUE(cast_element(dtype::F16, in, dtype::F16, out));
}

}  // namespace
}  // namespace deltasync
