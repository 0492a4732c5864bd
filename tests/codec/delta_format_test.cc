// Tests for the slime #1806 delta file: checksum vectors, position codecs, the params manifest, the bucket
// writer -> reader -> apply round trip over every encoding, density and dtype, and every rejection path.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/zstd_frame.h"

namespace deltasync {
namespace {

constexpr encoding kEncodings[] = {encoding::indices, encoding::deltas, encoding::deltas_zstd};

template <typename T>
byte_buffer bytes_of(std::initializer_list<T> xs) {
  byte_buffer b(xs.size() * sizeof(T));
  size_t i = 0;
  for (T x : xs) std::memcpy(b.data() + sizeof(T) * i++, &x, sizeof(T));
  return b;
}

template <typename T>
byte_buffer bytes_of(const std::vector<T>& xs) {
  byte_buffer b(xs.size() * sizeof(T));
  if (!xs.empty()) std::memcpy(b.data(), xs.data(), b.size());
  return b;
}

uint64_t dbits(double d) { return std::bit_cast<uint64_t>(d); }

std::string hex(checksum128 v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(v >> 64),
                static_cast<unsigned long long>(v));
  return buf;
}

// ---- checksum ----

TEST(ChecksumDecimal, RoundTripsAndRejects) {
  const checksum128 max = ~checksum128{0};
  EXPECT_EQ(checksum_to_decimal(0), "0");
  EXPECT_EQ(checksum_to_decimal(max), "340282366920938463463374607431768211455");
  EXPECT_EQ(checksum_from_decimal("340282366920938463463374607431768211455"), max);
  EXPECT_FALSE(checksum_from_decimal("340282366920938463463374607431768211456").has_value());
  EXPECT_FALSE(checksum_from_decimal("9999999999999999999999999999999999999999").has_value());
  EXPECT_FALSE(checksum_from_decimal("").has_value());
  EXPECT_FALSE(checksum_from_decimal("-1").has_value());
  EXPECT_FALSE(checksum_from_decimal("+1").has_value());
  EXPECT_FALSE(checksum_from_decimal(" 1").has_value());
  EXPECT_FALSE(checksum_from_decimal("12a").has_value());
  EXPECT_FALSE(checksum_from_decimal("1.0").has_value());
  EXPECT_EQ(checksum_from_decimal("007"), checksum128{7});

  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    const checksum128 v = (checksum128{rng()} << 64 | rng()) >> (rng() % 128);
    SCOPED_TRACE(hex(v));
    ASSERT_EQ(checksum_from_decimal(checksum_to_decimal(v)), v);
  }
}

TEST(ChecksumHash, HandComputedVectors) {
  // Positions bytes [1, 2, 3]: 1 ^ 2 ^ 3 = 0.
  const byte_buffer pos = bytes_of<uint8_t>({1, 2, 3});
  EXPECT_EQ(hash_tensor(dtype::U8, pos), 0u);
  // bf16 1.0 (0x3F80) widens to the double 1.0.
  const byte_buffer one = bytes_of<uint16_t>({0x3F80});
  EXPECT_EQ(hash_tensor(dtype::BF16, one), 0x3FF0000000000000ull);
  EXPECT_EQ(delta_checksum(pos, dtype::BF16, one), checksum128{0x3FF0000000000000ull} << 1);
  EXPECT_EQ(checksum_to_decimal(delta_checksum(pos, dtype::BF16, one)), "9214364837600034816");
  // A value hash with the top bit set makes the checksum 65 bits wide.
  const byte_buffer neg = bytes_of<uint16_t>({0xBF80});  // bf16 -1.0
  EXPECT_EQ(delta_checksum({}, dtype::BF16, neg), checksum128{0xBFF0000000000000ull} << 1);
  EXPECT_EQ(checksum_to_decimal(delta_checksum({}, dtype::BF16, neg)), "27661108911309586432");

  EXPECT_EQ(hash_tensor(dtype::U8, bytes_of<uint8_t>({0xFF, 0x0F, 7, 9, 1, 2, 3, 4, 5, 0x80})),
            uint64_t{0xFF ^ 0x0F ^ 7 ^ 9 ^ 1 ^ 2 ^ 3 ^ 4 ^ 5 ^ 0x80});
  EXPECT_EQ(hash_tensor(dtype::I8, bytes_of<int8_t>({-1})), 0xFFFFFFFFFFFFFFFFull);
  EXPECT_EQ(hash_tensor(dtype::I32, bytes_of<int32_t>({-1, 1})), 0xFFFFFFFFFFFFFFFEull);
  EXPECT_EQ(hash_tensor(dtype::U32, bytes_of<uint32_t>({0xFFFFFFFFu})), 0xFFFFFFFFull);
  EXPECT_EQ(hash_tensor(dtype::I16, bytes_of<int16_t>({-2})), 0xFFFFFFFFFFFFFFFEull);
  EXPECT_EQ(hash_tensor(dtype::U16, bytes_of<uint16_t>({0xFFFF})), 0xFFFFull);
  EXPECT_EQ(hash_tensor(dtype::BOOL, bytes_of<uint8_t>({1, 1, 1})), 1u);
  EXPECT_EQ(hash_tensor(dtype::I64, bytes_of<int64_t>({-5})), static_cast<uint64_t>(int64_t{-5}));
  EXPECT_EQ(hash_tensor(dtype::F64, bytes_of<double>({1.5, -0.0})), dbits(1.5) ^ dbits(-0.0));
  // Empty tensors hash to 0.
  for (const auto& d : all_dtypes()) EXPECT_EQ(hash_tensor(d.type, {}), 0u) << d.name;
}

TEST(ChecksumHash, FloatSpecialsWidenLikeHardware) {
  // f32: -0.0, inf, subnormal, and a signalling NaN that the float -> double conversion quiets.
  EXPECT_EQ(hash_tensor(dtype::F32, bytes_of<uint32_t>({0x80000000u})), 0x8000000000000000ull);
  EXPECT_EQ(hash_tensor(dtype::F32, bytes_of<uint32_t>({0xFF800000u})), 0xFFF0000000000000ull);
  EXPECT_EQ(hash_tensor(dtype::F32, bytes_of<uint32_t>({0x00000001u})), dbits(std::ldexp(1.0, -149)));
  EXPECT_EQ(hash_tensor(dtype::F32, bytes_of<uint32_t>({0x7F800001u})), 0x7FF8000020000000ull);
  EXPECT_EQ(hash_tensor(dtype::F32, bytes_of<uint32_t>({0xFFC00000u})), 0xFFF8000000000000ull);
  // bf16 sNaN 0x7F81 -> float 0x7F810000 -> quiet double.
  EXPECT_EQ(hash_tensor(dtype::BF16, bytes_of<uint16_t>({0x7F81})), 0x7FF8200000000000ull);
  EXPECT_EQ(hash_tensor(dtype::BF16, bytes_of<uint16_t>({0x0001})), dbits(std::ldexp(1.0, -133)));
  // f16: 1.0, smallest subnormal, -inf, NaN with payload.
  EXPECT_EQ(hash_tensor(dtype::F16, bytes_of<uint16_t>({0x3C00})), dbits(1.0));
  EXPECT_EQ(hash_tensor(dtype::F16, bytes_of<uint16_t>({0x0001})), dbits(std::ldexp(1.0, -24)));
  EXPECT_EQ(hash_tensor(dtype::F16, bytes_of<uint16_t>({0xFC00})), 0xFFF0000000000000ull);
  EXPECT_EQ(hash_tensor(dtype::F16, bytes_of<uint16_t>({0x7C01})), 0x7FF8040000000000ull);
}

// Every bf16 value hashes as the float with the same top half (the f32 path's exact scalar widening), alone
// and in blocks that mix specials (zeros, subnormals, inf, NaN) with normals: the bf16 path takes the
// hardware conversion for such blocks.
TEST(ChecksumHash, EveryBf16WidensLikeItsFloat) {
  std::vector<uint16_t> all(65536);
  std::vector<uint32_t> wide(65536);
  uint64_t want = 0;
  for (uint32_t v = 0; v < 65536; ++v) {
    all[v] = static_cast<uint16_t>(v);
    wide[v] = v << 16;
    const uint64_t one = hash_tensor(dtype::F32, bytes_of<uint32_t>({v << 16}));
    ASSERT_EQ(hash_tensor(dtype::BF16, bytes_of<uint16_t>({static_cast<uint16_t>(v)})), one) << "bf16 0x" << std::hex << v;
    want ^= one;
  }
  EXPECT_EQ(hash_tensor(dtype::BF16, bytes_of<uint16_t>(all)), want);
  EXPECT_EQ(hash_tensor(dtype::F32, bytes_of<uint32_t>(wide)), want);
}

// Reference decoder for the fp8 formats: the value by formula, with no bit tricks.
double fp8_value(dtype t, uint8_t x) {
  const double sign = (x & 0x80) ? -1.0 : 1.0;
  int ebits = 0, mbits = 0, bias = 0;
  switch (t) {
    case dtype::F8_E4M3: ebits = 4, mbits = 3, bias = 7; break;
    case dtype::F8_E5M2: ebits = 5, mbits = 2, bias = 15; break;
    case dtype::F8_E4M3FNUZ: ebits = 4, mbits = 3, bias = 8; break;
    case dtype::F8_E5M2FNUZ: ebits = 5, mbits = 2, bias = 16; break;
    default: ADD_FAILURE();
  }
  const int e = (x >> mbits) & ((1 << ebits) - 1);
  const int m = x & ((1 << mbits) - 1);
  if (e == 0) return sign * std::ldexp(m, 1 - bias - mbits);
  return sign * std::ldexp((1 << mbits) + m, e - bias - mbits);
}

TEST(ChecksumHash, Fp8DecodersMatchTheFormula) {
  for (uint32_t v = 0; v < 256; ++v) {
    SCOPED_TRACE(v);
    const auto x = static_cast<uint8_t>(v);
    const byte_buffer b = bytes_of<uint8_t>({x});
    // E4M3FN: S.1111.111 is NaN (c10 gives float 0x7FF00000 | sign); no infinities.
    if ((x & 0x7F) == 0x7F)
      EXPECT_EQ(hash_tensor(dtype::F8_E4M3, b), (x & 0x80 ? 0x8000000000000000ull : 0) | 0x7FFE000000000000ull);
    else
      EXPECT_EQ(hash_tensor(dtype::F8_E4M3, b), dbits(fp8_value(dtype::F8_E4M3, x)));
    // E5M2: IEEE-like.
    const int e5 = (x >> 2) & 0x1F, m5 = x & 3;
    if (e5 == 31 && m5 == 0)
      EXPECT_EQ(hash_tensor(dtype::F8_E5M2, b), dbits(x & 0x80 ? -INFINITY : INFINITY));
    else if (e5 == 31)
      EXPECT_EQ(hash_tensor(dtype::F8_E5M2, b),
                (x & 0x80 ? 0x8000000000000000ull : 0) | 0x7FF8000000000000ull | (uint64_t(m5) << 50));
    else
      EXPECT_EQ(hash_tensor(dtype::F8_E5M2, b), dbits(fp8_value(dtype::F8_E5M2, x)));
    // FNUZ: 0x80 is the only NaN; no -0.
    for (dtype t : {dtype::F8_E4M3FNUZ, dtype::F8_E5M2FNUZ}) {
      if (x == 0x80)
        EXPECT_EQ(hash_tensor(t, b), 0x7FF8000020000000ull);
      else
        EXPECT_EQ(hash_tensor(t, b), dbits(fp8_value(t, x)));
    }
    // E8M0: 2^(x - 127), 0xFF is NaN.
    if (x == 0xFF)
      EXPECT_EQ(hash_tensor(dtype::F8_E8M0, b), 0x7FF8000020000000ull);
    else
      EXPECT_EQ(hash_tensor(dtype::F8_E8M0, b), dbits(std::ldexp(1.0, int(x) - 127)));
  }
  EXPECT_EQ(hash_tensor(dtype::F8_E4M3, bytes_of<uint8_t>({0x38})), dbits(1.0));
  EXPECT_EQ(hash_tensor(dtype::F8_E4M3, bytes_of<uint8_t>({0x7E})), dbits(448.0));
  EXPECT_EQ(hash_tensor(dtype::F8_E4M3, bytes_of<uint8_t>({0x80})), dbits(-0.0));
  EXPECT_EQ(hash_tensor(dtype::F8_E4M3FNUZ, bytes_of<uint8_t>({0x40})), dbits(1.0));
  EXPECT_EQ(hash_tensor(dtype::F8_E5M2FNUZ, bytes_of<uint8_t>({0x40})), dbits(1.0));
}

// The vectorised float hashes against the hardware conversion, element by element, over random bits (which
// hit zeros, subnormals, infs and NaNs of every payload in the short formats).
TEST(ChecksumHash, FastPathsMatchPerElementHardwareConversion) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    for (size_t n : {0, 1, 511, 512, 513, 5000}) {
      byte_buffer b16(2 * n), b32(4 * n);
      uint64_t ref_bf16 = 0, ref_f32 = 0;
      for (size_t i = 0; i < n; ++i) {
        auto h = static_cast<uint16_t>(rng());
        // Mostly normal numbers, so that whole blocks take the fast path.
        if (rng() % 8 != 0) h = static_cast<uint16_t>((h & 0x807F) | ((64 + rng() % 64) << 7));
        store_le(b16.data() + 2 * i, h);
        const float fb = std::bit_cast<float>(uint32_t{h} << 16);
        volatile double db = fb;  // cvtss2sd
        ref_bf16 ^= dbits(db);
        auto w = static_cast<uint32_t>(rng());
        if (rng() % 8 != 0) w = (w & 0x807FFFFFu) | static_cast<uint32_t>((1 + rng() % 254) << 23);
        if (rng() % 64 == 0) w = (w & 0x80000000u) | 0x7F800000u | static_cast<uint32_t>(rng() % 2);
        store_le(b32.data() + 4 * i, w);
        volatile double dw = std::bit_cast<float>(w);
        ref_f32 ^= dbits(dw);
      }
      EXPECT_EQ(hash_tensor(dtype::BF16, b16), ref_bf16) << n;
      EXPECT_EQ(hash_tensor(dtype::F32, b32), ref_f32) << n;
    }
  }
}

// Blocks of normal 2-byte floats take the word-parallel fold; every hash equals the XOR of the one-element
// hashes (which take the exact element-wise path), with and without a special value planted in one block,
// for bf16 and f16, exponents on both sides of the fold's bit 14.
TEST(ChecksumHash, TheNormalBlockFoldMatchesElementByElement) {
  for (dtype t : {dtype::BF16, dtype::F16}) {
    const int man = t == dtype::BF16 ? 7 : 10;
    const uint32_t emax = (1u << (15 - man)) - 1;
    for (uint64_t seed : {1, 2}) {
      std::mt19937_64 rng(seed);
      for (size_t n : {512, 1024, 1536 + 7, 8192}) {
        for (bool plant : {false, true}) {
          SCOPED_TRACE(testing::Message() << name(t) << " seed " << seed << " n " << n << " plant " << plant);
          byte_buffer b(2 * n);
          uint64_t want = 0;
          for (size_t i = 0; i < n; ++i) {
            const uint32_t e = 1 + static_cast<uint32_t>(rng() % (emax - 1));  // normal: 1 .. emax - 1
            auto h = static_cast<uint16_t>((rng() & 0x8000u) | (e << man) | (rng() & ((1u << man) - 1)));
            if (plant && i == n / 2) h = static_cast<uint16_t>(rng() % 2 ? 0x8000u : (emax << man));  // -0 or inf
            store_le(b.data() + 2 * i, h);
            want ^= hash_tensor(t, byte_span(b.data() + 2 * i, 2));
          }
          EXPECT_EQ(hash_tensor(t, b), want);
        }
      }
    }
  }
}

// ---- positions ----

std::vector<uint32_t> random_positions(std::mt19937_64& rng, uint64_t numel, double density) {
  std::vector<uint32_t> pos;
  if (density >= 1.0) {
    for (uint64_t i = 0; i < numel; ++i) pos.push_back(static_cast<uint32_t>(i));
    return pos;
  }
  std::bernoulli_distribution pick(density);
  for (uint64_t i = 0; i < numel; ++i)
    if (pick(rng)) pos.push_back(static_cast<uint32_t>(i));
  return pos;
}

TEST(PositionsCodec, RoundTripsEveryEncoding) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    const uint64_t numel = rng() % 300000;
    const double density = std::array{0.0, 1e-5, 1e-4, 0.01, 0.5, 1.0}[rng() % 6];
    SCOPED_TRACE("seed " + std::to_string(seed) + " numel " + std::to_string(numel) + " density " +
                 std::to_string(density));
    const auto pos = random_positions(rng, numel, density);
    for (encoding enc : kEncodings) {
      byte_buffer out = bytes_of<uint8_t>({0xAB});  // appends after existing bytes
      const uint32_t w = encode_positions(enc, pos, out);
      ASSERT_EQ(out.size(), 1 + w * pos.size());
      std::vector<uint32_t> back = {1, 2, 3};
      ASSERT_TRUE(decode_positions(enc, w, byte_span(out).subspan(1), numel, back).ok());
      ASSERT_EQ(back, pos);
    }
  }
}

TEST(PositionsCodec, DeltasWidthFollowsTheLargestGap) {
  byte_buffer out;
  // Largest gap exactly 65535: uint16.
  std::vector<uint32_t> a = {65535, 131071};
  EXPECT_EQ(encode_positions(encoding::deltas, a, out), 2u);
  EXPECT_EQ(out, bytes_of<uint16_t>({65535, 65535}));
  // The first index is itself a gap: 65536 needs uint32.
  out.clear();
  std::vector<uint32_t> b = {65536};
  EXPECT_EQ(encode_positions(encoding::deltas, b, out), 4u);
  // A gap past 65535 in the middle.
  out.clear();
  std::vector<uint32_t> c = {0, 1, 70002, 0xFFFFFFFFu};
  EXPECT_EQ(encode_positions(encoding::deltas_zstd, c, out), 4u);
  EXPECT_EQ(out, bytes_of<uint32_t>({0, 0, 70000, 0xFFFFFFFFu - 70003}));
  std::vector<uint32_t> back;
  ASSERT_TRUE(decode_positions(encoding::deltas, 4, out, uint64_t{1} << 32, back).ok());
  EXPECT_EQ(back, c);
  EXPECT_EQ(decode_positions(encoding::deltas, 4, out, 0xFFFFFFFFu, back).err().code,
            make_error_code(errc::delta_position_out_of_range));
  // indices always use width 4.
  out.clear();
  EXPECT_EQ(encode_positions(encoding::indices, a, out), 4u);
  EXPECT_EQ(out, bytes_of<uint32_t>({65535, 131071}));
}

TEST(PositionsCodec, DecodeRejectsBadInput) {
  std::vector<uint32_t> out = {9};
  auto code = [&](encoding e, uint32_t w, const byte_buffer& b, uint64_t numel) {
    auto st = decode_positions(e, w, b, numel, out);
    EXPECT_TRUE(st.ok() || out.empty());
    return st.ok() ? errc::ok : static_cast<errc>(st.err().code.value());
  };
  EXPECT_EQ(code(encoding::indices, 4, bytes_of<uint32_t>({1, 1}), 10), errc::delta_positions_not_ascending);
  EXPECT_EQ(code(encoding::indices, 4, bytes_of<uint32_t>({5, 3}), 10), errc::delta_positions_not_ascending);
  EXPECT_EQ(code(encoding::indices, 4, bytes_of<uint32_t>({1, 10}), 10), errc::delta_position_out_of_range);
  EXPECT_EQ(code(encoding::indices, 4, bytes_of<uint32_t>({0}), 0), errc::delta_position_out_of_range);
  EXPECT_EQ(code(encoding::indices, 2, bytes_of<uint16_t>({1}), 10), errc::delta_bad_pos_width);
  EXPECT_EQ(code(encoding::deltas, 3, bytes_of<uint8_t>({1, 2, 3}), 10), errc::delta_bad_pos_width);
  EXPECT_EQ(code(encoding::deltas, 8, bytes_of<uint64_t>({1}), 10), errc::delta_bad_pos_width);
  EXPECT_EQ(code(encoding::deltas, 2, bytes_of<uint8_t>({1, 2, 3}), 10), errc::delta_bad_manifest);
  // Gaps 4, 4 are indices 4 and 9.
  EXPECT_EQ(code(encoding::deltas, 2, bytes_of<uint16_t>({4, 4}), 9), errc::delta_position_out_of_range);
  EXPECT_EQ(code(encoding::deltas, 2, bytes_of<uint16_t>({4, 4}), 10), errc::ok);
  EXPECT_EQ(out, (std::vector<uint32_t>{4, 9}));
  // More entries than elements can never ascend strictly.
  EXPECT_EQ(code(encoding::deltas, 2, bytes_of<uint16_t>({0, 0, 0}), 2), errc::delta_position_out_of_range);
  // Gaps whose sum passes 2^32 must not wrap into range.
  EXPECT_EQ(code(encoding::deltas, 4, bytes_of<uint32_t>({0xFFFFFFFFu, 0xFFFFFFFFu, 5}), ~uint64_t{0}),
            errc::delta_position_out_of_range);
  EXPECT_EQ(code(encoding::deltas_zstd, 4, bytes_of<uint32_t>({0xFFFFFFFEu}), ~uint64_t{0}), errc::ok);
  EXPECT_EQ(code(encoding::deltas, 2, {}, 0), errc::ok);
}

// ---- manifest ----

std::vector<param_entry> sample_params() {
  param_entry a;
  a.name = "model.layers.0.mlp.up_proj.weight";
  a.type = dtype::BF16;
  a.shape = {4, 8};
  a.pos_start = 0, a.pos_end = 6, a.pos_width = 2, a.val_start = 0, a.val_end = 3;
  param_entry b;
  b.name = "lm_head \"quoted\" \xc3\xa9";
  b.type = dtype::F32;
  b.shape = {};
  b.pos_start = 6, b.pos_end = 10, b.pos_width = 4, b.val_start = 3, b.val_end = 4;
  return {a, b};
}

bool same(const param_entry& a, const param_entry& b) {
  return a.name == b.name && a.type == b.type && a.shape == b.shape && a.pos_start == b.pos_start &&
         a.pos_end == b.pos_end && a.pos_width == b.pos_width && a.val_start == b.val_start && a.val_end == b.val_end;
}

TEST(DeltaManifest, JsonRoundTrips) {
  const auto params = sample_params();
  const std::string text = params_to_json(params);
  EXPECT_NE(text.find("\"dtype\":\"bfloat16\""), std::string::npos) << text;
  auto back = parse_params_json(text);
  ASSERT_TRUE(back.ok()) << back.err().describe();
  ASSERT_EQ(back->size(), 2u);
  EXPECT_TRUE(same((*back)[0], params[0]));
  EXPECT_TRUE(same((*back)[1], params[1]));
  EXPECT_EQ((*back)[1].numel(), 1u);
  EXPECT_EQ(params_to_json({}), "[]");
  // What Python's json.dumps writes (spaces, "torch." prefix-free names, extra keys ignored).
  auto py = parse_params_json(
      R"([{"name": "w", "dtype": "float16", "shape": [3], "pos_start": 0, "pos_end": 4, "pos_width": 2,)"
      R"( "val_start": 0, "val_end": 2, "extra": null}])");
  ASSERT_TRUE(py.ok()) << py.err().describe();
  EXPECT_EQ((*py)[0].type, dtype::F16);
}

TEST(DeltaManifest, RejectsMalformedParamsNamingThem) {
  const std::string ok_rest = R"("shape": [3], "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)";
  auto one = [&](const std::string& fields) { return "[{\"name\": \"blk.w\", " + fields + "}]"; };
  struct bad_case {
    std::string json;
    errc code;
    bool names_param;
  };
  const std::vector<bad_case> cases = {
      {"", errc::delta_bad_manifest, false},
      {"[", errc::delta_bad_manifest, false},
      {"{}", errc::delta_bad_manifest, false},
      {"[1]", errc::delta_bad_manifest, false},
      {R"([{"dtype": "bfloat16"}])", errc::delta_bad_manifest, false},
      {R"([{"name": 5}])", errc::delta_bad_manifest, false},
      {R"([{"name": ""}])", errc::delta_bad_manifest, false},
      {one(R"("shape": [3], "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bf16", )" + ok_rest), errc::delta_bad_manifest, true},
      {one(R"("dtype": 15, )" + ok_rest), errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": 3, "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [-3], "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3.0], "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [4294967296, 4294967296], "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "float4_e2m1fn_x2", )" + ok_rest), errc::delta_dtype_mismatch, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": "0", "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": -1, "pos_end": 4, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": 0, "pos_end": 4.0, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 0)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": 0, "pos_end": 6, "pos_width": 3, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_pos_width, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": 4, "pos_end": 0, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": 0, "pos_end": 4, "pos_width": 2, "val_start": 3, "val_end": 2)"),
       errc::delta_bad_manifest, true},
      {one(R"("dtype": "bfloat16", "shape": [3], "pos_start": 0, "pos_end": 3, "pos_width": 2, "val_start": 0, "val_end": 2)"),
       errc::delta_bad_manifest, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.json);
    auto r = parse_params_json(c.json);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, make_error_code(c.code)) << r.err().describe();
    if (c.names_param) {
      EXPECT_NE(r.err().message.find("blk.w"), std::string::npos) << r.err().message;
    }
  }
}

// ---- builder -> parse -> apply ----

// Special bit patterns per float dtype: NaNs with payloads (quiet and signalling), infinities, -0.0.
std::vector<uint64_t> specials(dtype t) {
  switch (t) {
    case dtype::BF16: return {0x7FC0, 0xFFC1, 0x7F81, 0x7F80, 0xFF80, 0x8000, 0x0001};
    case dtype::F16: return {0x7E00, 0xFE01, 0x7C01, 0x7C00, 0xFC00, 0x8000, 0x0001};
    case dtype::F32: return {0x7FC00000, 0xFFC00001, 0x7F800001, 0x7F800000, 0xFF800000, 0x80000000, 1};
    case dtype::F64:
      return {0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001, 0x7FF0000000000000,
              0xFFF0000000000000, 0x8000000000000000};
    case dtype::F8_E4M3: return {0x7F, 0xFF, 0x80, 0x01};
    case dtype::F8_E5M2: return {0x7D, 0xFE, 0x7C, 0xFC, 0x80};
    default: return {};
  }
}

struct tensor_case {
  std::string name;
  dtype type = dtype::BF16;
  std::vector<uint64_t> shape;
  byte_buffer before, after;
  std::vector<uint32_t> positions;
  byte_buffer values;
};

tensor_case make_case(std::mt19937_64& rng, std::string name, dtype t, std::vector<uint64_t> shape,
                      double density) {
  tensor_case c;
  c.name = std::move(name);
  c.type = t;
  c.shape = std::move(shape);
  uint64_t numel = 1;
  for (uint64_t d : c.shape) numel *= d;
  const uint32_t eb = element_bytes(t);
  c.before.resize(numel * eb);
  for (auto& b : c.before) b = static_cast<std::byte>(rng());
  c.after = c.before;
  const auto sp = specials(t);
  c.positions = random_positions(rng, numel, density);
  for (uint32_t p : c.positions) {
    std::byte* dst = c.after.data() + uint64_t{p} * eb;
    uint64_t v = rng();
    if (!sp.empty() && rng() % 4 == 0) v = sp[rng() % sp.size()];
    std::memcpy(dst, &v, eb);
    if (std::memcmp(dst, c.before.data() + uint64_t{p} * eb, eb) == 0) dst[0] ^= std::byte{1};
    c.values.insert(c.values.end(), dst, dst + eb);
  }
  return c;
}

// Builds one bucket from `cases`, parses it and applies every param onto the old tensors.
void round_trip(encoding enc, std::vector<tensor_case>& cases, std::optional<dtype> expect_values_type = {}) {
  delta_bucket_builder b(enc);
  uint64_t changed = 0;
  size_t with_changes = 0;
  for (const auto& c : cases) {
    ASSERT_TRUE(b.can_add(c.type));
    b.add({c.name, c.type, c.shape, c.positions, c.values});
    changed += c.positions.size();
    with_changes += c.positions.empty() ? 0 : 1;
  }
  EXPECT_EQ(b.changed_elements(), changed);
  EXPECT_EQ(b.param_count(), with_changes);
  auto file = b.finish(42);
  ASSERT_TRUE(file.ok()) << file.err().describe();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(is_zstd_frame(*file), enc == encoding::deltas_zstd);

  auto parsed = parse_delta_file(*file);
  ASSERT_TRUE(parsed.ok()) << parsed.err().describe();
  const delta_file& f = *parsed;
  EXPECT_EQ(f.manifest.enc, enc);
  EXPECT_EQ(f.manifest.current_version, 42u);
  ASSERT_EQ(f.manifest.params.size(), with_changes);
  if (expect_values_type) {
    EXPECT_EQ(f.values_type, *expect_values_type);
  }
  EXPECT_EQ(f.values.size() / element_bytes(f.values_type), changed);

  std::map<std::string, tensor_case*> by_name;
  for (auto& c : cases) by_name[c.name] = &c;
  std::map<std::string, byte_buffer> current;
  for (auto& c : cases) current[c.name] = c.before;
  for (const auto& p : f.manifest.params) {
    ASSERT_TRUE(by_name.count(p.name)) << p.name;
    const tensor_case& c = *by_name[p.name];
    EXPECT_EQ(p.type, c.type);
    EXPECT_EQ(p.shape, c.shape);
    auto st = apply_param(f, p, current[p.name]);
    ASSERT_TRUE(st.ok()) << st.err().describe();
  }
  for (const auto& c : cases) EXPECT_TRUE(current[c.name] == c.after) << c.name << " differs after apply";
}

TEST(DeltaRoundTrip, EveryEncodingDensityAndDtype) {
  const dtype types[] = {dtype::BF16, dtype::F16,     dtype::F32, dtype::F64, dtype::F8_E4M3, dtype::F8_E5M2,
                         dtype::I32,  dtype::U8,      dtype::I8,  dtype::I64, dtype::U16,     dtype::BOOL,
                         dtype::U64,  dtype::F8_E8M0, dtype::I16, dtype::U32};
  const double densities[] = {0.0, 1e-4, 0.01, 0.5, 1.0};
  uint64_t seed = 1000;
  for (encoding enc : kEncodings)
    for (double density : densities)
      for (dtype t : types) {
        ++seed;
        SCOPED_TRACE("seed " + std::to_string(seed) + " " + std::string(encoding_name(enc)) + " density " +
                     std::to_string(density) + " " + std::string(name(t)));
        std::mt19937_64 rng(seed);
        std::vector<tensor_case> cases;
        cases.push_back(make_case(rng, "a.empty", t, {0, 16}, density));
        cases.push_back(make_case(rng, "b.matrix", t, {96, 1000}, density));
        cases.push_back(make_case(rng, "c.scalar", t, {}, density));
        cases.push_back(make_case(rng, "d.vector", t, {1 + rng() % 3000}, density));
        round_trip(enc, cases, density == 0.0 ? std::nullopt : std::optional<dtype>(t));
        if (HasFatalFailure()) return;
      }
}

TEST(DeltaRoundTrip, GapsPast65535UseUint32InDeltas) {
  for (encoding enc : kEncodings) {
    SCOPED_TRACE(encoding_name(enc));
    std::mt19937_64 rng(5);
    tensor_case c = make_case(rng, "sparse", dtype::BF16, {300000}, 0.0);
    c.positions = {3, 70000, 70001, 299999};
    for (uint32_t p : c.positions) {
      c.after[2 * p] ^= std::byte{0x40};
      c.values.insert(c.values.end(), c.after.begin() + 2 * p, c.after.begin() + 2 * p + 2);
    }
    tensor_case dense = make_case(rng, "dense", dtype::BF16, {5000}, 0.3);
    std::vector<tensor_case> cases = {c, dense};
    round_trip(enc, cases);
    delta_bucket_builder b(enc);
    b.add({c.name, c.type, c.shape, c.positions, c.values});
    b.add({dense.name, dense.type, dense.shape, dense.positions, dense.values});
    auto f = parse_delta_file(*b.finish(1));
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->manifest.params[0].pos_width, 4u);
    EXPECT_EQ(f->manifest.params[1].pos_width, enc == encoding::indices ? 4u : 2u);
  }
}

TEST(DeltaRoundTrip, MixedBf16AndF32PromoteToF32AndCastBackExactly) {
  for (encoding enc : kEncodings) {
    for (uint64_t seed : {11, 12}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " " + std::string(encoding_name(enc)));
      std::mt19937_64 rng(seed);
      std::vector<tensor_case> cases;
      cases.push_back(make_case(rng, "w.bf16", dtype::BF16, {40, 50}, 0.3));
      cases.push_back(make_case(rng, "w.f32", dtype::F32, {1000}, 0.2));
      cases.push_back(make_case(rng, "w.bf16.full", dtype::BF16, {700}, 1.0));
      round_trip(enc, cases, dtype::F32);
      std::vector<tensor_case> halves;
      halves.push_back(make_case(rng, "h.f16", dtype::F16, {900}, 0.5));
      halves.push_back(make_case(rng, "h.bf16", dtype::BF16, {900}, 0.5));
      round_trip(enc, halves, dtype::F32);
      std::vector<tensor_case> wide;
      wide.push_back(make_case(rng, "x.bf16", dtype::BF16, {900}, 0.5));
      wide.push_back(make_case(rng, "x.f64", dtype::F64, {300}, 0.5));
      round_trip(enc, wide, dtype::F64);
    }
  }
  delta_bucket_builder b(encoding::deltas);
  EXPECT_TRUE(b.can_add(dtype::BF16));
  const std::vector<uint32_t> pos = {0};
  const byte_buffer v = bytes_of<uint16_t>({0x3F80});
  b.add({"w", dtype::BF16, {1}, pos, v});
  EXPECT_TRUE(b.can_add(dtype::F32));
  EXPECT_FALSE(b.can_add(dtype::I32));
  EXPECT_FALSE(b.can_add(dtype::F8_E4M3));
  EXPECT_FALSE(b.can_add(dtype::F4));
  EXPECT_EQ(b.payload_bytes(), 2u + 2u);
}

TEST(DeltaRoundTrip, EmptyBucketMakesAValidFile) {
  for (encoding enc : kEncodings) {
    delta_bucket_builder b(enc);
    auto file = b.finish(7);
    ASSERT_TRUE(file.ok()) << file.err().describe();
    auto f = parse_delta_file(*file);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    EXPECT_TRUE(f->manifest.params.empty());
    EXPECT_EQ(f->manifest.checksum, 0u);
    EXPECT_EQ(f->manifest.current_version, 7u);
    EXPECT_EQ(f->manifest.enc, enc);
    EXPECT_TRUE(f->values.empty());
  }
}

TEST(DeltaRoundTrip, MetadataIsWhatSlimeWrites) {
  delta_bucket_builder b(encoding::deltas_zstd);
  const std::vector<uint32_t> pos = {1, 2, 3};
  const byte_buffer v = bytes_of<uint16_t>({0x3F80, 0x4000, 0x4040});
  b.add({"layer.w", dtype::BF16, {2, 2}, pos, v});
  auto file = b.finish(12, 4096);
  ASSERT_TRUE(file.ok());
  auto inner = zstd_unwrap(*file, 1 << 20);
  ASSERT_TRUE(inner.ok());
  auto f = parse_delta_file(*inner);  // the inner file alone says deltas_zstd: refused outside a frame
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.err().code, make_error_code(errc::delta_bad_metadata));
  f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  std::map<std::string, std::string> meta(f->metadata.begin(), f->metadata.end());
  EXPECT_EQ(meta["encoding"], "deltas_zstd");
  EXPECT_EQ(meta["current_version"], "12");
  // positions: gaps 1, 0, 0 as uint16 -> bytes 1 0 0 0 0 0 -> H = 1.
  const checksum128 expect = checksum128{1} ^ (checksum128{dbits(1.0) ^ dbits(2.0) ^ dbits(3.0)} << 1);
  EXPECT_EQ(meta["checksum"], checksum_to_decimal(expect));
  EXPECT_EQ(f->manifest.checksum, expect);
  auto params = parse_params_json(meta["params"]);
  ASSERT_TRUE(params.ok());
  EXPECT_EQ((*params)[0].pos_width, 2u);
}

// ---- rejection paths ----

struct crafted {
  byte_buffer positions;
  dtype values_type = dtype::BF16;
  byte_buffer values;
  std::vector<std::pair<std::string, std::string>> meta;
  std::vector<tensor_data> extra_tensors;
  std::vector<uint64_t> positions_shape, values_shape;  // default 1-D
  dtype positions_type = dtype::U8;
  bool drop_values = false;
};

crafted valid_crafted() {
  crafted c;
  c.positions = bytes_of<uint32_t>({1, 3});  // indices 1 and 3
  c.values = bytes_of<uint16_t>({0x3F80, 0xC000});
  param_entry p;
  p.name = "w";
  p.type = dtype::BF16;
  p.shape = {2, 2};
  p.pos_start = 0, p.pos_end = 8, p.pos_width = 4, p.val_start = 0, p.val_end = 2;
  c.meta = {{"encoding", "indices"},
            {"current_version", "3"},
            {"checksum", checksum_to_decimal(delta_checksum(c.positions, c.values_type, c.values))},
            {"params", params_to_json({p})}};
  return c;
}

void set_meta(crafted& c, const std::string& key, const std::string& value) {
  for (auto& [k, v] : c.meta)
    if (k == key) {
      v = value;
      return;
    }
  c.meta.emplace_back(key, value);
}
void drop_meta(crafted& c, const std::string& key) {
  std::erase_if(c.meta, [&](const auto& kv) { return kv.first == key; });
}
void reseal(crafted& c) {
  set_meta(c, "checksum", checksum_to_decimal(delta_checksum(c.positions, c.values_type, c.values)));
}

byte_buffer build(const crafted& c) {
  std::vector<tensor_data> ts;
  const uint64_t vb = element_bytes(c.values_type);
  ts.push_back({{"__positions__", c.positions_type,
                 c.positions_shape.empty() ? std::vector<uint64_t>{c.positions.size() / element_bytes(c.positions_type)}
                                           : c.positions_shape,
                 c.positions.size()},
                c.positions});
  if (!c.drop_values)
    ts.push_back({{"__values__", c.values_type,
                   c.values_shape.empty() ? std::vector<uint64_t>{c.values.size() / vb} : c.values_shape,
                   c.values.size()},
                  c.values});
  for (const auto& t : c.extra_tensors) ts.push_back(t);
  auto r = write_safetensors(ts, c.meta);
  EXPECT_TRUE(r.ok()) << r.err().describe();
  return r.ok() ? std::move(r).value() : byte_buffer{};
}

errc parse_code(const byte_buffer& file, const delta_read_limits& limits = {}) {
  auto r = parse_delta_file(file, limits);
  if (r.ok()) return errc::ok;
  EXPECT_FALSE(r.err().message.empty());
  return static_cast<errc>(r.err().code.value());
}

param_entry entry(std::string name, dtype t, std::vector<uint64_t> shape, uint64_t ps, uint64_t pe, uint32_t w,
                  uint64_t vs, uint64_t ve) {
  param_entry p;
  p.name = std::move(name);
  p.type = t;
  p.shape = std::move(shape);
  p.pos_start = ps, p.pos_end = pe, p.pos_width = w, p.val_start = vs, p.val_end = ve;
  return p;
}

TEST(DeltaParse, CraftedFileIsValid) { EXPECT_EQ(parse_code(build(valid_crafted())), errc::ok); }

TEST(DeltaParse, RejectsEveryMalformedFile) {
  struct rejection {
    std::string what;
    std::function<void(crafted&)> mutate;
    errc code;
  };
  const byte_buffer extra_bytes(4);
  const std::vector<rejection> cases = {
      {"extra tensor", [&](crafted& c) { c.extra_tensors.push_back({{"x", dtype::U8, {4}, 4}, extra_bytes}); },
       errc::delta_missing_tensor},
      {"no values", [](crafted& c) { c.drop_values = true; }, errc::delta_missing_tensor},
      {"positions not U8",
       [](crafted& c) {
         c.positions_type = dtype::I32;
         c.positions_shape = {2};
       },
       errc::delta_missing_tensor},
      {"positions 2-D", [](crafted& c) { c.positions_shape = {2, 4}; }, errc::delta_missing_tensor},
      {"values 2-D", [](crafted& c) { c.values_shape = {1, 2}; }, errc::delta_missing_tensor},
      {"no encoding", [](crafted& c) { drop_meta(c, "encoding"); }, errc::delta_bad_metadata},
      {"no current_version", [](crafted& c) { drop_meta(c, "current_version"); }, errc::delta_bad_metadata},
      {"no checksum", [](crafted& c) { drop_meta(c, "checksum"); }, errc::delta_bad_metadata},
      {"no params", [](crafted& c) { drop_meta(c, "params"); }, errc::delta_bad_metadata},
      {"bad version", [](crafted& c) { set_meta(c, "current_version", "v3"); }, errc::delta_bad_metadata},
      {"version overflow", [](crafted& c) { set_meta(c, "current_version", "18446744073709551616"); },
       errc::delta_bad_metadata},
      {"bad checksum", [](crafted& c) { set_meta(c, "checksum", "0x12"); }, errc::delta_bad_metadata},
      {"empty checksum", [](crafted& c) { set_meta(c, "checksum", ""); }, errc::delta_bad_metadata},
      {"unknown encoding", [](crafted& c) { set_meta(c, "encoding", "xor"); }, errc::delta_unknown_encoding},
      {"deltas_zstd outside a frame", [](crafted& c) { set_meta(c, "encoding", "deltas_zstd"); },
       errc::delta_bad_metadata},
      {"params not JSON", [](crafted& c) { set_meta(c, "params", "[{"); }, errc::delta_bad_manifest},
      {"indices with width 2",
       [](crafted& c) {
         c.positions = bytes_of<uint16_t>({1, 3});
         set_meta(c, "params", params_to_json({entry("w", dtype::BF16, {2, 2}, 0, 4, 2, 0, 2)}));
         reseal(c);
       },
       errc::delta_bad_pos_width},
      {"pos_end past __positions__",
       [](crafted& c) { set_meta(c, "params", params_to_json({entry("w", dtype::BF16, {2, 2}, 0, 12, 4, 0, 3)})); },
       errc::delta_manifest_bounds},
      {"val_end past __values__",
       [](crafted& c) { set_meta(c, "params", params_to_json({entry("w", dtype::BF16, {2, 2}, 4, 8, 4, 1, 3)})); },
       errc::delta_manifest_bounds},
      {"overlapping values",
       [](crafted& c) {
         set_meta(c, "params", params_to_json({entry("a", dtype::BF16, {2, 2}, 0, 4, 4, 0, 1),
                                               entry("b", dtype::BF16, {2, 2}, 4, 8, 4, 0, 1)}));
       },
       errc::delta_manifest_bounds},
      {"overlapping positions",
       [](crafted& c) {
         set_meta(c, "params", params_to_json({entry("a", dtype::BF16, {2, 2}, 0, 4, 4, 0, 1),
                                               entry("b", dtype::BF16, {2, 2}, 0, 4, 4, 1, 2)}));
       },
       errc::delta_manifest_bounds},
      {"duplicate names",
       [](crafted& c) {
         set_meta(c, "params", params_to_json({entry("a", dtype::BF16, {2, 2}, 0, 4, 4, 0, 1),
                                               entry("a", dtype::BF16, {2, 2}, 4, 8, 4, 1, 2)}));
       },
       errc::delta_bad_manifest},
      {"count mismatch",
       [](crafted& c) { set_meta(c, "params", params_to_json({entry("w", dtype::BF16, {2, 2}, 0, 8, 4, 0, 1)})); },
       errc::delta_value_count_mismatch},
      {"more changes than elements",
       [](crafted& c) { set_meta(c, "params", params_to_json({entry("w", dtype::BF16, {1}, 0, 8, 4, 0, 2)})); },
       errc::delta_value_count_mismatch},
      {"tensor too large for 32-bit positions",
       [](crafted& c) {
         set_meta(c, "params", params_to_json({entry("w", dtype::BF16, {65536, 65536}, 0, 8, 4, 0, 2)}));
       },
       errc::delta_bad_manifest},
      {"values dtype not castable",
       [](crafted& c) { set_meta(c, "params", params_to_json({entry("w", dtype::I16, {2, 2}, 0, 8, 4, 0, 2)})); },
       errc::delta_dtype_mismatch},
      {"values fp8 for a bf16 param",
       [](crafted& c) {
         c.values_type = dtype::F8_E4M3;
         c.values = bytes_of<uint8_t>({1, 2});
         reseal(c);
       },
       errc::delta_dtype_mismatch},
      {"values C64",
       [](crafted& c) {
         c.values_type = dtype::C64;
         c.values = byte_buffer(16);
         reseal(c);
       },
       errc::delta_dtype_mismatch},
      {"checksum mismatch", [](crafted& c) { set_meta(c, "checksum", "12345"); }, errc::delta_checksum_mismatch},
      {"values changed after sealing", [](crafted& c) { c.values[0] ^= std::byte{1}; },
       errc::delta_checksum_mismatch},
  };
  for (const auto& r : cases) {
    SCOPED_TRACE(r.what);
    crafted c = valid_crafted();
    r.mutate(c);
    EXPECT_EQ(parse_code(build(c)), r.code);
  }
}

TEST(DeltaParse, ContainerZstdAndLimits) {
  EXPECT_EQ(parse_code({}), errc::st_too_small);
  // A frame header without a content size cannot be bounded before decompressing: refused.
  EXPECT_EQ(parse_code(bytes_of<uint8_t>({0x28, 0xB5, 0x2F, 0xFD, 0, 0})), errc::zstd_unknown_size);
  EXPECT_EQ(parse_code(bytes_of<uint8_t>({0x28, 0xB5, 0x2F, 0xFD})), errc::zstd_corrupt);

  const byte_buffer plain = build(valid_crafted());
  // An indices file inside a zstd frame is not something slime writes.
  EXPECT_EQ(parse_code(*zstd_wrap(plain)), errc::delta_bad_metadata);
  // A "deltas" file wrapped later is accepted as deltas_zstd.
  crafted d = valid_crafted();
  d.positions = bytes_of<uint16_t>({1, 1});
  set_meta(d, "encoding", "deltas");
  set_meta(d, "params", params_to_json({entry("w", dtype::BF16, {2, 2}, 0, 4, 2, 0, 2)}));
  reseal(d);
  const byte_buffer zipped = *zstd_wrap(build(d));
  auto f = parse_delta_file(zipped);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  EXPECT_EQ(f->manifest.enc, encoding::deltas_zstd);
  delta_read_limits small;
  small.max_decompressed_bytes = 64;
  EXPECT_EQ(parse_code(zipped, small), errc::zstd_too_large);

  delta_read_limits one_param;
  one_param.max_params = 0;
  EXPECT_EQ(parse_code(plain, one_param), errc::limit_exceeded);

  crafted bad = valid_crafted();
  set_meta(bad, "checksum", "1");
  delta_read_limits no_verify;
  no_verify.verify_checksum = false;
  EXPECT_EQ(parse_code(build(bad), no_verify), errc::ok);
  EXPECT_EQ(parse_code(build(bad)), errc::delta_checksum_mismatch);

  // A delta_file moved elsewhere keeps viewing its own storage.
  auto moved = std::move(f).value();
  delta_file other = std::move(moved);
  byte_buffer dest(8);
  ASSERT_TRUE(apply_param(other, other.manifest.params[0], dest).ok());
  EXPECT_EQ(dest, bytes_of<uint16_t>({0, 0x3F80, 0, 0xC000}));
}

// ---- apply ----

void expect_apply_refused(const delta_file& f, const param_entry& p, size_t dest_bytes, errc code) {
  byte_buffer dest(dest_bytes);
  for (size_t i = 0; i < dest.size(); ++i) dest[i] = static_cast<std::byte>(i * 7 + 1);
  const byte_buffer before = dest;
  auto st = apply_param(f, p, dest);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.err().code, make_error_code(code)) << st.err().describe();
  EXPECT_EQ(dest, before) << "dest was written";
}

TEST(DeltaApply, RefusalsLeaveDestUntouched) {
  auto f = parse_delta_file(build(valid_crafted()));
  ASSERT_TRUE(f.ok()) << f.err().describe();
  const param_entry& p = f->manifest.params[0];
  expect_apply_refused(*f, p, 6, errc::delta_shape_mismatch);
  expect_apply_refused(*f, p, 10, errc::delta_shape_mismatch);
  expect_apply_refused(*f, p, 0, errc::delta_shape_mismatch);

  // Positions are decoded by apply: unordered or out-of-range ones fail before any write.
  for (auto [positions, code] : {std::pair{bytes_of<uint32_t>({3, 1}), errc::delta_positions_not_ascending},
                                 std::pair{bytes_of<uint32_t>({2, 2}), errc::delta_positions_not_ascending},
                                 std::pair{bytes_of<uint32_t>({1, 4}), errc::delta_position_out_of_range}}) {
    crafted c = valid_crafted();
    c.positions = positions;
    reseal(c);
    const byte_buffer file = build(c);
    auto g = parse_delta_file(file);
    ASSERT_TRUE(g.ok()) << g.err().describe();
    expect_apply_refused(*g, g->manifest.params[0], 8, code);
  }
  // A deltas file whose gaps run past the tensor.
  crafted d = valid_crafted();
  d.positions = bytes_of<uint16_t>({1, 2});
  set_meta(d, "encoding", "deltas");
  set_meta(d, "params", params_to_json({entry("w", dtype::BF16, {2, 2}, 0, 4, 2, 0, 2)}));
  reseal(d);
  const byte_buffer dfile = build(d);
  auto g = parse_delta_file(dfile);
  ASSERT_TRUE(g.ok()) << g.err().describe();
  expect_apply_refused(*g, g->manifest.params[0], 8, errc::delta_position_out_of_range);

  // An entry that does not belong to the file is range-checked again.
  param_entry stray = p;
  stray.pos_end = 64;
  expect_apply_refused(*f, stray, 8, errc::delta_manifest_bounds);
  stray = p;
  stray.val_end = 3;
  stray.pos_end = 12;
  expect_apply_refused(*f, stray, 8, errc::delta_manifest_bounds);
}

TEST(DeltaApply, PromotedValueThatDoesNotFitIsRefused) {
  // F32 values for a bf16 param: 1.0f fits, 1.0f + 2^-20 does not.
  crafted c = valid_crafted();
  c.values_type = dtype::F32;
  c.values = bytes_of<uint32_t>({0x3F800000u, 0x3F800008u});
  reseal(c);
  const byte_buffer file = build(c);
  auto f = parse_delta_file(file);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  expect_apply_refused(*f, f->manifest.params[0], 8, errc::delta_value_not_representable);
  c.values = bytes_of<uint32_t>({0x3F800000u, 0xFFC10000u});  // a bf16 NaN payload survives
  reseal(c);
  const byte_buffer ok_file = build(c);
  f = parse_delta_file(ok_file);
  ASSERT_TRUE(f.ok());
  byte_buffer dest(8);
  ASSERT_TRUE(apply_param(*f, f->manifest.params[0], dest).ok());
  EXPECT_EQ(dest, bytes_of<uint16_t>({0, 0x3F80, 0, 0xFFC1}));
}

// Decode + apply speed on one core for the common case (bf16, 1% changed, deltas), against memcpy of the
// same wire bytes. Prints the figures; asserts only correctness (timings on shared machines are noise).
TEST(DeltaApply, ThroughputOfDecodeAndScatter) {
  std::mt19937_64 rng(77);
  std::vector<tensor_case> cases;
  cases.push_back(make_case(rng, "big", dtype::BF16, {8192, 4096}, 0.01));
  cases.push_back(make_case(rng, "dense", dtype::BF16, {4096, 1024}, 0.5));
  for (encoding enc : {encoding::indices, encoding::deltas}) {
    for (auto& c : cases) {
      delta_bucket_builder b(enc);
      b.add({c.name, c.type, c.shape, c.positions, c.values});
      auto file = b.finish(1);
      ASSERT_TRUE(file.ok());
      auto f = parse_delta_file(*file);
      ASSERT_TRUE(f.ok());
      byte_buffer dest = c.before;
      const auto t0 = std::chrono::steady_clock::now();
      constexpr int kReps = 5;
      for (int r = 0; r < kReps; ++r) ASSERT_TRUE(apply_param(*f, f->manifest.params[0], dest).ok());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kReps;
      const double wire = static_cast<double>(f->positions.size() + f->values.size());
      byte_buffer copy(static_cast<size_t>(wire));
      const auto m0 = std::chrono::steady_clock::now();
      for (int r = 0; r < kReps; ++r) {
        std::memcpy(copy.data(), f->values.data(), f->values.size());
        std::memcpy(copy.data() + f->values.size(), f->positions.data(), f->positions.size());
      }
      const double ms = std::chrono::duration<double>(std::chrono::steady_clock::now() - m0).count() / kReps;
      EXPECT_TRUE(dest == c.after);
      std::printf("[ perf ] %s %s: %zu changed, %.0f wire bytes, apply %.2f GB/s, memcpy %.2f GB/s\n",
                  std::string(encoding_name(enc)).c_str(), c.name.c_str(), c.positions.size(), wire,
                  wire / s / 1e9, wire / ms / 1e9);
    }
  }
}

}  // namespace
}  // namespace deltasync
