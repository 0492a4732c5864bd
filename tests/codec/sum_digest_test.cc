// The additive per-tensor digest (codec/sum_digest.h): a hand-computed value, the vector pass against the
// definition, the split-into-parts law, and
// the O(changed) update that apply_param accumulates equal to a full recomputation of the new tensor, for
// every element size, every encoding (compact included), a promoted __values__ and NaN / -0.0 bits; and a
// single changed element always moves both lanes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <set>

#include "codec/delta_format.h"
#include "codec/sum_digest.h"

namespace deltasync {
namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("DS_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

uint64_t fmix(uint64_t k) {  // MurmurHash3's fmix64, written out again
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

TEST(SumDigest, MatchesTheDefinition) {
  const uint16_t v[3] = {0x3F80, 0x0000, 0xFFFF};
  uint64_t high = 0, low = 0;
  for (uint64_t k = 0; k < 3; ++k) {
    const uint64_t x = v[k] + k * 0x9E3779B97F4A7C15ull;
    high += fmix(x ^ 0x243F6A8885A308D3ull);
    low += fmix(x ^ 0x13198A2E03707344ull);
  }
  const digest128 d = sum_digest(byte_span(reinterpret_cast<const std::byte*>(v), 6), 2);
  EXPECT_EQ(d.high, high);
  EXPECT_EQ(d.low, low);
  EXPECT_EQ(sum_digest({}, 2), (digest128{0, 0}));
}

// The whole-tensor pass (four elements at a time where the CPU has AVX2) equals the definition, element by
// element, for every element size, every length mod 4 and an odd starting index, with the top bits set.
TEST(SumDigest, TheVectorPassMatchesTheDefinitionForEveryWidthAndTail) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (uint32_t eb : {1u, 2u, 4u, 8u})
    for (uint64_t n : {0u, 1u, 3u, 4u, 5u, 6u, 7u, 64u, 1027u}) {
      byte_buffer b(eb * n);
      for (auto& x : b) x = std::byte(rng() & 0xFF);
      if (n > 0) std::memset(b.data(), 0xFF, eb);  // an all-ones element
      const uint64_t first = 12345;
      uint64_t high = 0, low = 0;
      for (uint64_t k = 0; k < n; ++k) {
        uint64_t v = 0;
        std::memcpy(&v, b.data() + k * eb, eb);
        const uint64_t x = v + (first + k) * 0x9E3779B97F4A7C15ull;
        high += fmix(x ^ 0x243F6A8885A308D3ull);
        low += fmix(x ^ 0x13198A2E03707344ull);
      }
      EXPECT_EQ(sum_digest_part(b, eb, first), (digest128{high, low})) << "element size " << eb << ", " << n << " elements";
    }
}

TEST(SumDigest, PartsAddUpToTheWhole) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (uint32_t eb : {1u, 2u, 4u, 8u}) {
    byte_buffer b(eb * 1001);
    for (auto& x : b) x = std::byte(rng() & 0xFF);
    const uint64_t cut = rng() % 1002;
    const digest128 parts = sum_add(sum_digest_part(byte_span(b).first(cut * eb), eb, 0),
                                    sum_digest_part(byte_span(b).subspan(cut * eb), eb, cut));
    EXPECT_EQ(parts, sum_digest(b, eb)) << "element size " << eb;
  }
}

TEST(SumDigest, OneChangedElementMovesBothLanes) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 10000; ++trial) {
    sum_delta d;
    const uint64_t a = rng() & 0xFFFF;
    uint64_t b = rng() & 0xFFFF;
    if (b == a) b ^= 1;
    d.change(rng() % (1u << 30), a, b);
    ASSERT_NE(d.high, 0u);
    ASSERT_NE(d.low, 0u);
  }
}

struct dtype_case {
  dtype type;
  uint32_t eb;
};

// A random tensor, random changed positions (ascending, gaps past 65535 in the long case) and new values;
// returns the new tensor as the sender sees it.
byte_buffer change_some(std::mt19937_64& rng, const byte_buffer& old, uint32_t eb, double density,
                        std::vector<uint32_t>& pos, byte_buffer& vals) {
  const uint64_t n = old.size() / eb;
  byte_buffer now = old;
  pos.clear();
  vals.clear();
  for (uint64_t k = 0; k < n; ++k) {
    if (std::uniform_real_distribution<double>(0, 1)(rng) >= density) continue;
    byte_buffer v(eb);
    do {
      for (auto& x : v) x = std::byte(rng() & 0xFF);
    } while (std::memcmp(v.data(), old.data() + k * eb, eb) == 0);
    pos.push_back(static_cast<uint32_t>(k));
    vals.insert(vals.end(), v.begin(), v.end());
    std::memcpy(now.data() + k * eb, v.data(), eb);
  }
  return now;
}

TEST(SumDigest, ApplyParamUpdatesItLikeAFullRecomputation) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const dtype_case cases[] = {{dtype::U8, 1}, {dtype::BF16, 2}, {dtype::F32, 4}, {dtype::F64, 8}};
  for (const auto& c : cases) {
    for (encoding enc : {encoding::indices, encoding::deltas, encoding::compact}) {
      for (double density : {0.0, 0.01, 0.3, 1.0}) {
        const uint64_t n = density == 0.01 ? 200000 : 3000;  // the long one has gaps past 65535 at times
        byte_buffer old(n * c.eb);
        for (auto& x : old) x = std::byte(rng() & 0xFF);
        std::vector<uint32_t> pos;
        byte_buffer vals;
        const byte_buffer now = change_some(rng, old, c.eb, density, pos, vals);
        if (pos.empty()) {
          pos.push_back(0);  // the builder skips an unchanged param: change one element
          vals.assign(c.eb, std::byte(0));
          if (std::memcmp(vals.data(), old.data(), c.eb) == 0) vals[0] = std::byte(1);
        }
        byte_buffer want = old;
        for (size_t k = 0; k < pos.size(); ++k) std::memcpy(want.data() + uint64_t{pos[k]} * c.eb, vals.data() + k * c.eb, c.eb);
        delta_bucket_builder b(enc);
        const param_delta p{"t", c.type, {n}, pos, vals};
        native_fields nf;
        nf.base_version = 0;
        nf.tensor_digests["t"] = digest128{};
        if (enc == encoding::compact) {
          byte_buffer olds;
          for (uint32_t k : pos) olds.insert(olds.end(), old.begin() + uint64_t{k} * c.eb, old.begin() + (uint64_t{k} + 1) * c.eb);
          b.add_compact(p, olds);
        } else {
          b.add(p);
        }
        auto file = b.finish(1, 8, &nf);
        ASSERT_TRUE(file.ok()) << file.err().describe();
        auto f = parse_delta_file(*file);
        ASSERT_TRUE(f.ok()) << f.err().describe();
        byte_buffer dest = old;
        digest128 d = sum_digest(old, c.eb);
        sum_delta change;
        byte_buffer saved;
        ASSERT_TRUE(apply_param(*f, f->manifest.params[0], dest, &saved, &change).ok());
        change.apply(d);
        ASSERT_EQ(dest, want);
        EXPECT_EQ(d, sum_digest(want, c.eb)) << name(c.type) << " " << encoding_name(enc) << " density " << density;
        // Without an undo record the digest moves inside the scatter instead of in a second pass: the same.
        byte_buffer dest2 = old;
        digest128 d2 = sum_digest(old, c.eb);
        sum_delta change2;
        ASSERT_TRUE(apply_param(*f, f->manifest.params[0], dest2, nullptr, &change2).ok());
        change2.apply(d2);
        ASSERT_EQ(dest2, want);
        EXPECT_EQ(d2, d) << name(c.type) << " " << encoding_name(enc) << " density " << density << ", no undo";
      }
    }
  }
}

TEST(SumDigest, PromotedValuesAndSpecialBitsUpdateIt) {
  // A bucket mixing BF16 and F32 promotes __values__ to F32; the BF16 param's bits land after the cast back.
  byte_buffer old(2 * 8, std::byte(0));
  const uint16_t bits[4] = {0x7FC0 /* NaN */, 0x8000 /* -0.0 */, 0x7F80 /* inf */, 0x3F80};
  std::vector<uint32_t> pos{0, 2, 5, 7};
  byte_buffer vals(8);
  std::memcpy(vals.data(), bits, 8);
  delta_bucket_builder b(encoding::indices);
  b.add({"a", dtype::BF16, {8}, pos, vals});
  std::vector<uint32_t> fpos{1};
  const float one = 1.0f;
  byte_buffer fvals(4);
  std::memcpy(fvals.data(), &one, 4);
  ASSERT_TRUE(b.can_add(dtype::F32));
  b.add({"b", dtype::F32, {4}, fpos, fvals});
  auto file = b.finish(1);
  ASSERT_TRUE(file.ok()) << file.err().describe();
  auto f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  ASSERT_EQ(f->values_type, dtype::F32);
  byte_buffer dest = old;
  digest128 d = sum_digest(old, 2);
  sum_delta change;
  ASSERT_TRUE(apply_param(*f, f->manifest.params[0], dest, nullptr, &change).ok());
  change.apply(d);
  EXPECT_EQ(d, sum_digest(dest, 2));
  EXPECT_EQ(load_le<uint16_t>(dest.data() + 2 * 2), 0x8000);
}

}  // namespace
}  // namespace deltasync
