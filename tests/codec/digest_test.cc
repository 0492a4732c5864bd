// Tests for the XXH3 digests: known answers from the reference `xxhsum` 0.8.1 CLI, streaming against
// one-shot over random splits, and the hex spellings.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>

#include "codec/digest.h"

namespace deltasync {
namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("DS_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

// bytes(range(256)) * 5: long enough (1280 bytes) for XXH3's long-input path.
byte_buffer counting_bytes() {
  byte_buffer b(1280);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>(i & 0xFF);
  return b;
}

// Expected values: `xxhsum -H3 FILE` (XXH3-64) and `xxhsum -H2 FILE` (XXH128, canonical form, which is what
// Python's xxhash.xxh3_128(b).hexdigest() prints).
TEST(Digest, Xxh3_64KnownAnswers) {
  EXPECT_EQ(to_hex64(xxh3_64({})), "2d06800538d394c2");
  EXPECT_EQ(to_hex64(xxh3_64(as_bytes("deltasync"))), "f825501a7a856828");
  EXPECT_EQ(to_hex64(xxh3_64(counting_bytes())), "4844b009e164352e");
  EXPECT_EQ(xxh3_64({}), 0x2d06800538d394c2ull);
}

TEST(Digest, Xxh3_128KnownAnswers) {
  EXPECT_EQ(to_hex(xxh3_128({})), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(to_hex(xxh3_128(as_bytes("deltasync"))), "d69edd92b3a2aede11601c10a5e0d34e");
  EXPECT_EQ(to_hex(xxh3_128(counting_bytes())), "d92ab3a1cb0542a74844b009e164352e");
  // The hex spelling is high64 first.
  digest128 d = xxh3_128({});
  EXPECT_EQ(d.high, 0x99aa06d3014798d8ull);
  EXPECT_EQ(d.low, 0x6001c324468d497full);
}

TEST(Digest, StreamingEqualsOneShotOverRandomSplits) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // Sizes around XXH3's internal boundaries (16, 128, 240 bytes, 1 KiB stripes/blocks) and beyond.
  for (size_t n : {size_t{0}, size_t{1}, size_t{16}, size_t{17}, size_t{128}, size_t{129}, size_t{240},
                   size_t{241}, size_t{1024}, size_t{4096}, size_t{100000}}) {
    byte_buffer data(n);
    for (auto& b : data) b = static_cast<std::byte>(rng());
    const digest128 expected = xxh3_128(data);
    for (int trial = 0; trial < 8; ++trial) {
      xxh3_128_stream s;
      size_t off = 0;
      while (off < n) {
        size_t piece = std::uniform_int_distribution<size_t>(0, n - off)(rng);
        s.update(byte_span(data).subspan(off, piece));  // empty pieces too
        off += piece;
      }
      EXPECT_EQ(s.finish(), expected) << "n=" << n << " trial=" << trial;
      EXPECT_EQ(s.finish(), expected) << "finish() must not consume the state";
    }
  }
}

TEST(Digest, StreamMatchesKnownAnswer) {
  xxh3_128_stream s;
  s.update(as_bytes("delta"));
  s.update(as_bytes("sync"));
  EXPECT_EQ(to_hex(s.finish()), "d69edd92b3a2aede11601c10a5e0d34e");
  xxh3_128_stream empty;
  EXPECT_EQ(to_hex(empty.finish()), "99aa06d3014798d86001c324468d497f");
}

TEST(Digest, HexRoundTrip) {
  std::mt19937_64 rng(test_seed());
  for (int i = 0; i < 1000; ++i) {
    digest128 d{rng(), rng()};
    if (i == 0) d = {0, 0};
    if (i == 1) d = {~0ull, ~0ull};
    const std::string hex = to_hex(d);
    ASSERT_EQ(hex.size(), 32u);
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << hex;
    auto back = digest128_from_hex(hex);
    ASSERT_TRUE(back.has_value()) << hex;
    EXPECT_EQ(*back, d);
    const std::string hex64 = to_hex64(d.low);
    ASSERT_EQ(hex64.size(), 16u);
    EXPECT_EQ(digest64_from_hex(hex64), d.low);
  }
  EXPECT_EQ(to_hex64(1), "0000000000000001");
  EXPECT_EQ(digest128_from_hex("99AA06D3014798D86001C324468D497F"), xxh3_128({}));  // either case
}

TEST(Digest, HexParsingRefusesMalformedInput) {
  EXPECT_FALSE(digest128_from_hex(""));
  EXPECT_FALSE(digest128_from_hex("99aa06d3014798d86001c324468d497"));    // 31 digits
  EXPECT_FALSE(digest128_from_hex("99aa06d3014798d86001c324468d497f0"));  // 33 digits
  EXPECT_FALSE(digest128_from_hex("99aa06d3014798d86001c324468d497g"));
  EXPECT_FALSE(digest128_from_hex(" 9aa06d3014798d86001c324468d497f"));
  EXPECT_FALSE(digest64_from_hex("0x06800538d394c2"));
  EXPECT_FALSE(digest64_from_hex("+d06800538d394c2"));
  EXPECT_FALSE(digest64_from_hex("2d06800538d394c"));
}

}  // namespace
}  // namespace deltasync
