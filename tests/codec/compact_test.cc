// Tests for the compact stream (codec/compact.h): round trips over densities, element sizes and special float
// values, gaps past 2^16 and up to 2^32 - 2, the choice of k, size against the entropy, and every rejection of
// a malformed stream.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "codec/compact.h"

namespace deltasync {
namespace {

struct change_set {
  uint64_t numel = 0;
  std::vector<uint32_t> positions;
  byte_buffer old_values, new_values;
};

// Positions at `density` of `numel`; old values random; new values = old moved by a few ulps (the AdamW
// shape) or, with `random_values`, any other bit pattern.
change_set make_changes(std::mt19937_64& rng, uint64_t numel, double density, uint32_t eb, bool random_values) {
  change_set c;
  c.numel = numel;
  std::bernoulli_distribution pick(density);
  for (uint64_t i = 0; i < numel; ++i)
    if (density >= 1.0 || pick(rng)) c.positions.push_back(static_cast<uint32_t>(i));
  c.old_values.resize(c.positions.size() * eb);
  c.new_values.resize(c.positions.size() * eb);
  std::geometric_distribution<int> ulps(0.7);
  for (size_t i = 0; i < c.positions.size(); ++i) {
    uint64_t o = rng(), v = 0;
    const uint64_t mask = eb == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * eb)) - 1;
    o &= mask;
    do {
      v = random_values ? (rng() & mask) : ((o + ((rng() & 1) ? 1 : -1) * (1 + ulps(rng))) & mask);
    } while (v == o);
    std::memcpy(c.old_values.data() + i * eb, &o, eb);
    std::memcpy(c.new_values.data() + i * eb, &v, eb);
  }
  return c;
}

// Encodes, decodes and applies to a tensor holding the old values; the result must be the new values exactly.
void round_trip(const change_set& c, uint32_t eb, uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + ", eb " + std::to_string(eb) + ", n " +
               std::to_string(c.positions.size()));
  byte_buffer stream;
  compact::encode_stats stats;
  compact::encode(c.positions, c.old_values, c.new_values, eb, stream, &stats);
  EXPECT_EQ(8 * stream.size(), stats.overhead_bits + stats.position_bits + stats.value_bits)
      << "the stats account for every bit";
  std::vector<uint32_t> pos;
  byte_buffer diffs;
  ASSERT_TRUE(compact::decode(stream, c.positions.size(), c.numel, eb, pos, diffs).ok());
  ASSERT_EQ(pos, c.positions);
  // Apply to a tensor holding the old values, the other elements set to a pattern that must survive. Past
  // 2^24 elements the tensor is the changed elements alone (positions renumbered 0..n-1): the positions were
  // checked above, this checks the arithmetic.
  const uint64_t span = c.positions.empty() ? 1 : uint64_t{c.positions.back()} + 1;
  std::vector<uint32_t> at = pos;
  if (span > (uint64_t{1} << 24))
    for (size_t i = 0; i < at.size(); ++i) at[i] = static_cast<uint32_t>(i);
  byte_buffer tensor((at.empty() ? 1 : uint64_t{at.back()} + 1) * eb, std::byte{0x5A});
  const byte_buffer pattern = tensor;
  for (size_t i = 0; i < at.size(); ++i) std::memcpy(tensor.data() + uint64_t{at[i]} * eb, c.old_values.data() + i * eb, eb);
  byte_buffer old;
  compact::apply_diffs(at, diffs, eb, tensor, &old);
  EXPECT_EQ(old, c.old_values);
  for (size_t i = 0; i < at.size(); ++i) {
    ASSERT_EQ(0, std::memcmp(tensor.data() + uint64_t{at[i]} * eb, c.new_values.data() + i * eb, eb)) << "element " << i;
    std::memcpy(tensor.data() + uint64_t{at[i]} * eb, pattern.data(), eb);
  }
  EXPECT_EQ(tensor, pattern) << "an element outside the positions changed";
  // Deterministic: encoding again gives the same bytes.
  byte_buffer again;
  compact::encode(c.positions, c.old_values, c.new_values, eb, again);
  EXPECT_EQ(again, stream);
}

TEST(Compact, RoundTripsEveryDensityAndElementSize) {
  for (uint32_t eb : {1u, 2u, 4u, 8u})
    for (double density : {0.0, 0.0001, 0.01, 0.1, 0.5, 1.0})
      for (bool random_values : {false, true}) {
        const uint64_t seed = 1000 * eb + static_cast<uint64_t>(density * 1e4) + random_values;
        std::mt19937_64 rng(seed);
        const uint64_t numel = density < 0.001 ? 200000 : 30000;
        round_trip(make_changes(rng, numel, density, eb, random_values), eb, seed);
      }
}

// Found by fuzz_compact: the element size comes from the stream's (untrusted) header; one the codec has no codes
// for must be refused, also for an empty stream, before the width switch reads or writes anything.
TEST(Compact, AStreamHeaderWithAnElementSizeOtherThan1_2_4_8IsRefused) {
  std::vector<uint32_t> none;
  byte_buffer old, now, stream;
  compact::encode(none, old, now, 2, stream);
  ASSERT_GE(stream.size(), compact::kHeaderBytes);
  for (uint8_t eb : {uint8_t{0}, uint8_t{3}, uint8_t{5}, uint8_t{16}}) {
    byte_buffer bad = stream;
    bad[2] = std::byte{eb};
    std::vector<uint32_t> positions;
    byte_buffer diffs;
    EXPECT_FALSE(compact::decode(bad, 0, 100, eb, positions, diffs).ok()) << "element size " << int{eb};
    EXPECT_TRUE(positions.empty() && diffs.empty());
  }
}

TEST(Compact, SpecialFloatValuesArriveExactly) {
  // bf16 / f32 / f64 bit patterns of NaN (two payloads), +-inf, -0.0, +0.0, the smallest subnormal, max.
  std::vector<uint16_t> bf16 = {0x7FC0, 0x7F81, 0x7F80, 0xFF80, 0x8000, 0x0000, 0x0001, 0x7F7F};
  std::vector<uint32_t> positions;
  byte_buffer old_v, new_v;
  for (size_t i = 0; i < bf16.size(); ++i)
    for (size_t j = 0; j < bf16.size(); ++j) {
      if (i == j) continue;
      positions.push_back(static_cast<uint32_t>(positions.size() * 3));
      uint16_t o = bf16[i], v = bf16[j];
      old_v.insert(old_v.end(), reinterpret_cast<std::byte*>(&o), reinterpret_cast<std::byte*>(&o) + 2);
      new_v.insert(new_v.end(), reinterpret_cast<std::byte*>(&v), reinterpret_cast<std::byte*>(&v) + 2);
    }
  round_trip({positions.back() + 1ull, positions, old_v, new_v}, 2, 0);

  std::vector<double> f64 = {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(), -0.0, 0.0,
                             std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::max()};
  positions.clear();
  old_v.clear();
  new_v.clear();
  for (size_t i = 0; i < f64.size(); ++i)
    for (size_t j = 0; j < f64.size(); ++j) {
      if (i == j) continue;
      positions.push_back(static_cast<uint32_t>(positions.size()));
      old_v.insert(old_v.end(), reinterpret_cast<std::byte*>(&f64[i]), reinterpret_cast<std::byte*>(&f64[i]) + 8);
      new_v.insert(new_v.end(), reinterpret_cast<std::byte*>(&f64[j]), reinterpret_cast<std::byte*>(&f64[j]) + 8);
    }
  round_trip({positions.size(), positions, old_v, new_v}, 8, 0);
}

TEST(Compact, GapsPast16BitsAndUpTo32Bits) {
  // Indices 0, 70000, 2^32 - 2 (the largest index of a 2^32 - 1 element tensor), mixed with a dense run so
  // one block holds tiny and huge gaps (the escape path).
  std::vector<uint32_t> positions = {0, 1, 2, 70000, 70001, 4000000000u, 4294967294u};
  for (uint32_t eb : {1u, 2u, 4u, 8u}) {
    byte_buffer o(positions.size() * eb, std::byte{1}), v(positions.size() * eb, std::byte{2});
    round_trip({4294967295ull, positions, o, v}, eb, eb);
  }
  // The first gap alone is 2^32 - 2.
  byte_buffer o(2, std::byte{0}), v(2, std::byte{9});
  round_trip({4294967295ull, {4294967294u}, o, v}, 2, 7);
}

TEST(Compact, SizeIsNearTheEntropyOfPositions) {
  // Independent positions at 1%: gaps are geometric, for which the best Rice code is within ~1% of the entropy.
  std::mt19937_64 rng(42);
  const uint64_t numel = 4'000'000;
  for (double density : {0.001, 0.01, 0.1, 0.5}) {
    change_set c = make_changes(rng, numel, density, 2, false);
    byte_buffer stream;
    compact::encode_stats st;
    compact::encode(c.positions, c.old_values, c.new_values, 2, stream, &st);
    const double h = compact::position_entropy_bits(numel, c.positions.size());
    EXPECT_LT(st.position_bits, 1.03 * h) << "density " << density;
    EXPECT_GT(st.position_bits, 0.97 * h) << "density " << density << ": below the entropy cannot be";
  }
}

TEST(Compact, ValuesCostNearTheirEntropy) {
  // Differences of +-(1 + a geometric number of ulps): the rANS coder comes within 2% of the order-0 entropy of
  // the codes plus the lanes' 24-bit states (a prefix code cannot: it spends a whole bit on the magnitude).
  std::mt19937_64 rng(11);
  for (double density : {0.01, 0.3}) {
    change_set c = make_changes(rng, 3'000'000, density, 2, false);
    byte_buffer stream;
    compact::encode_stats st;
    compact::encode(c.positions, c.old_values, c.new_values, 2, stream, &st);
    std::vector<uint32_t> pos;
    byte_buffer diffs;
    ASSERT_TRUE(compact::decode(stream, c.positions.size(), c.numel, 2, pos, diffs).ok());
    const double h = compact::value_entropy_bits(diffs, 2);
    const double lanes = static_cast<double>(c.positions.size() / compact::kLaneElems + 1);
    EXPECT_LT(static_cast<double>(st.value_bits), 1.02 * h + 24 * lanes) << "density " << density;
    EXPECT_GT(static_cast<double>(st.value_bits), 0.99 * h) << "density " << density << ": below the entropy cannot be";
  }
}

TEST(Compact, NormalizedTablesSumToTheScaleAndKeepEverySymbol) {
  // The adversarial shapes for coder::normalize: one dominant symbol and k rare ones, k equal ones, and random
  // histograms, for every alphabet size; every present symbol keeps a frequency >= 1 and the sum is 2^11.
  std::mt19937_64 rng(3);
  for (uint32_t nsym = 1; nsym <= compact::coder::kMaxSymbols; ++nsym)
    for (int shape = 0; shape < 6; ++shape) {
      uint32_t counts[compact::coder::kMaxSymbols] = {}, freqs[compact::coder::kMaxSymbols] = {};
      uint64_t total = 0;
      for (uint32_t s = 0; s < nsym; ++s) {
        uint32_t c = 0;
        switch (shape) {
          case 0: c = s == 0 ? 1000000 : 1; break;
          case 1: c = 7; break;
          case 2: c = s % 2 ? 1 : 2049; break;
          case 3: c = static_cast<uint32_t>(rng() % 3); break;
          case 4: c = static_cast<uint32_t>(1 + rng() % 100000); break;
          default: c = s < nsym / 2 ? 1 : 60; break;
        }
        if (s == nsym - 1 && c == 0) c = 1;
        counts[s] = c;
        total += c;
      }
      compact::coder::normalize(counts, nsym, total, freqs);
      uint32_t sum = 0;
      for (uint32_t s = 0; s < nsym; ++s) {
        sum += freqs[s];
        ASSERT_EQ(counts[s] > 0, freqs[s] > 0) << "nsym " << nsym << " shape " << shape << " symbol " << s;
        ASSERT_LE(freqs[s], compact::coder::kProbScale);
      }
      ASSERT_EQ(sum, compact::coder::kProbScale) << "nsym " << nsym << " shape " << shape;
    }
}

TEST(Compact, TheEncoderStepEqualsItsDefinitionForEveryFrequency) {
  // The encoder divides by a reciprocal and renormalises without a loop (coder::fold, coder::renorm_bytes); the
  // format is defined by the division and the byte-at-a-time loop. Every frequency, states across the whole
  // range the step sees (dense near the bounds and near multiples of f, strided in between).
  namespace cd = compact::coder;
  for (uint32_t f = 1; f <= cd::kProbScale; ++f) {
    const uint32_t c = (f * 7u) % (cd::kProbScale - f + 1);
    const cd::enc_symbol s = cd::enc_symbol_of(f, c);
    ASSERT_EQ(s.x_max, ((cd::kStateLow >> cd::kProbBits) << 8) * f);
    const auto check = [&](uint32_t x) {
      uint32_t looped = 0, y = x;
      while (y >= s.x_max) y >>= 8, ++looped;
      ASSERT_EQ(cd::renorm_bytes(x, s), looped) << "f " << f << " x " << x;
      ASSERT_EQ(cd::fold(y, s), ((y / f) << cd::kProbBits) + y % f + c) << "f " << f << " x " << x;
    };
    const uint32_t stride = std::max<uint32_t>(1, (cd::kStateLow << 8) / 4096 + f % 13);
    for (uint32_t x = cd::kStateLow; x < (cd::kStateLow << 8); x += stride) check(x);
    for (uint32_t d = 1; d <= 64; ++d) check(s.x_max - d), check((cd::kStateLow << 8) - d), check(cd::kStateLow + d);
    for (uint32_t q = 1; q < 64; ++q) {
      const uint64_t x = uint64_t{q} * (s.x_max / 64 / f + 1) * f;
      if (x < (cd::kStateLow << 8) && x > 0) check(static_cast<uint32_t>(x)), check(static_cast<uint32_t>(x - 1));
    }
  }
}

TEST(Compact, DenseAndRawModes) {
  // Every element changed with random values: positions cost nothing (dense blocks) and values at most w bits.
  std::mt19937_64 rng(5);
  change_set c = make_changes(rng, 10000, 1.0, 2, true);
  byte_buffer stream;
  compact::encode_stats st;
  compact::encode(c.positions, c.old_values, c.new_values, 2, stream, &st);
  EXPECT_EQ(st.position_bits, 0u);
  // Random 16-bit differences: ~14 raw bits below the leading one plus ~2 bits of bit-width symbol, and the
  // lanes' 24-bit states.
  EXPECT_LE(st.value_bits, 16.25 * 10000 + 24 * (10000 / compact::kLaneElems + 1));
  round_trip(c, 2, 5);
}

TEST(Compact, ChooseKPicksTheCheapest) {
  std::vector<uint64_t> ones(100, 1), big(10, 1000);
  EXPECT_EQ(compact::choose_k(ones, 32), 0u);  // 2 bits each at k=0 and k=1; ties go to the smaller k
  const uint32_t k = compact::choose_k(big, 32);
  for (uint32_t other = 0; other <= compact::kMaxK; ++other) {
    uint64_t a = 0, b = 0;
    for (auto x : big) a += compact::rice_bits(x, k, 32), b += compact::rice_bits(x, other, 32);
    EXPECT_LE(a, b) << "k " << k << " vs " << other;
  }
}

class CompactRejects : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(9);
    c_ = make_changes(rng, 50000, 0.1, 2, false);
    compact::encode(c_.positions, c_.old_values, c_.new_values, 2, stream_);
  }
  errc decode_error(const byte_buffer& s, uint64_t count, uint64_t numel = 50000, uint32_t eb = 2) {
    std::vector<uint32_t> pos;
    byte_buffer diffs;
    auto st = compact::decode(s, count, numel, eb, pos, diffs);
    if (st.ok()) return errc{};
    EXPECT_TRUE(pos.empty() && diffs.empty()) << "outputs are emptied on error";
    return static_cast<errc>(st.err().code.value());
  }
  change_set c_;
  byte_buffer stream_;
};

TEST_F(CompactRejects, HeaderCountAndSize) {
  const uint64_t n = c_.positions.size();
  EXPECT_EQ(decode_error(stream_, n), errc{});
  EXPECT_EQ(decode_error(stream_, n + 1), errc::delta_value_count_mismatch);
  EXPECT_EQ(decode_error(stream_, n, 50000, 4), errc::delta_bad_manifest);
  byte_buffer s = stream_;
  s[0] = std::byte{0};
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  s = stream_;
  s.pop_back();
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  s = stream_;
  s.push_back(std::byte{0});
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  EXPECT_EQ(decode_error(byte_buffer(3), n), errc::delta_bad_manifest);
  EXPECT_EQ(decode_error(stream_, n, c_.positions.back()), errc::delta_position_out_of_range);
}

TEST_F(CompactRejects, EveryFlippedBitIsCaughtOrDecodesToSomethingValid) {
  // A flipped bit must never crash or read outside the stream; when it decodes, positions still ascend and
  // stay in range (the payload hash and tensor digests catch the rest in a real file).
  const uint64_t n = c_.positions.size();
  for (size_t bit = 0; bit < stream_.size() * 8; bit += 7) {
    byte_buffer s = stream_;
    s[bit / 8] ^= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
    std::vector<uint32_t> pos;
    byte_buffer diffs;
    if (compact::decode(s, n, 50000, 2, pos, diffs).ok()) {
      ASSERT_EQ(pos.size(), n);
      for (size_t i = 1; i < pos.size(); ++i) ASSERT_LT(pos[i - 1], pos[i]);
      ASSERT_LT(pos.back(), 50000u);
    }
  }
}

TEST_F(CompactRejects, LaneAndTableDamage) {
  // Targeted damage to compact/2's own structures: table, lane sizes, rANS state.
  const uint64_t n = c_.positions.size();
  auto info = compact::read_header(stream_, n, 2);
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->version, 2u);
  byte_buffer s = stream_;
  s[compact::kHeaderBytes] = std::byte{0};  // nsym 0 for a non-empty stream
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  s = stream_;
  s[compact::kHeaderBytes] = std::byte{29};  // past bf16's 28 symbols
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  s = stream_;
  s[compact::kHeaderBytes + 1] ^= std::byte{1};  // frequencies no longer sum to 2048
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  const size_t block = info->dir_offset + compact::kDirEntryBytes * info->blocks;
  s = stream_;
  s[block + 1] = static_cast<std::byte>(static_cast<uint8_t>(s[block + 1]) + 1);  // first lane one byte longer
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  const size_t lanes = std::min<size_t>(n, compact::kBlockElems) / compact::kLaneElems + 1;
  s = stream_;
  s[block + 1 + 2 * lanes + 2] = std::byte{0};  // the first lane's state below 2^16
  EXPECT_EQ(decode_error(s, n), errc::delta_bad_manifest);
  s = stream_;
  s[block + 1 + 2 * lanes] ^= std::byte{1};  // another state: the decoder ends elsewhere
  EXPECT_NE(decode_error(s, n), errc{});
  // A fault in a lane past the first few is named exactly, block, lane and reason.
  size_t at = block + 1 + 2 * lanes;
  for (size_t l = 0; l < 5; ++l) at += load_le<uint16_t>(stream_.data() + block + 1 + 2 * l);
  s = stream_;
  s[at + 2] = std::byte{0};  // lane 5's state below 2^16
  std::vector<uint32_t> pos;
  byte_buffer diffs;
  auto st = compact::decode(s, n, 50000, 2, pos, diffs);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.err().message, "compact stream: block 0 lane 5 starts in a rANS state below 2^16");
}

// Runs of blocks (a large param's apply split across workers) decode to their slice of the whole stream, and
// together refuse exactly what the whole decode refuses, with its message.
class CompactRuns : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(31);
    c_ = make_changes(rng, 400000, 0.1, 2, false);
    compact::encode(c_.positions, c_.old_values, c_.new_values, 2, stream_);
    auto info = compact::read_header(stream_, compact::kAnyCount, 2);
    ASSERT_TRUE(info.ok());
    info_ = *info;
    ASSERT_GE(info_.blocks, 4u);
  }
  // The message of decoding the run [first, end), or "" when it decodes.
  std::string run_error(const byte_buffer& s, uint32_t first, uint32_t end) {
    auto info = compact::read_header(s, compact::kAnyCount, 2);
    if (!info.ok()) return info.err().message;
    std::vector<uint32_t> pos;
    byte_buffer diffs;
    auto st = compact::decode_blocks(s, *info, 400000, first, end, pos, diffs);
    if (st.ok()) return "";
    EXPECT_TRUE(pos.empty() && diffs.empty()) << "outputs are emptied on error";
    return st.err().message;
  }
  change_set c_;
  byte_buffer stream_;
  compact::stream_info info_;
};

TEST_F(CompactRuns, EveryRunDecodesToItsSliceOfTheWholeStream) {
  std::vector<uint32_t> all_pos;
  byte_buffer all_diffs;
  ASSERT_TRUE(compact::decode(stream_, c_.positions.size(), 400000, 2, all_pos, all_diffs).ok());
  for (uint32_t first = 0; first < info_.blocks; ++first)
    for (uint32_t end = first + 1; end <= info_.blocks; ++end) {
      std::vector<uint32_t> pos;
      byte_buffer diffs;
      ASSERT_TRUE(compact::decode_blocks(stream_, info_, 400000, first, end, pos, diffs).ok()) << first << ".." << end;
      const size_t from = size_t{first} * compact::kBlockElems;
      const size_t to = std::min(all_pos.size(), size_t{end} * compact::kBlockElems);
      ASSERT_EQ(pos.size(), to - from);
      EXPECT_TRUE(std::equal(pos.begin(), pos.end(), all_pos.begin() + from)) << first << ".." << end;
      EXPECT_EQ(0, std::memcmp(diffs.data(), all_diffs.data() + 2 * from, diffs.size())) << first << ".." << end;
    }
}

TEST_F(CompactRuns, TheRunsThatCoverAStreamRefuseWhatTheWholeDecodeRefuses) {
  const uint64_t n = c_.positions.size();
  auto whole_error = [&](const byte_buffer& s) {
    std::vector<uint32_t> pos;
    byte_buffer diffs;
    auto st = compact::decode(s, n, 400000, 2, pos, diffs);
    return st.ok() ? std::string() : st.err().message;
  };
  const size_t dir = info_.dir_offset;
  // Block 3's base moved one on: only the run starting at block 3 sees it (its check needs block 2's end).
  byte_buffer s = stream_;
  store_le<uint32_t>(s.data() + dir + compact::kDirEntryBytes * 3, load_le<uint32_t>(s.data() + dir + compact::kDirEntryBytes * 3) + 1);
  const std::string want = whole_error(s);
  EXPECT_EQ(want, "compact stream: block 3 does not start right after the previous block's last position");
  EXPECT_EQ(run_error(s, 0, 3), "");
  EXPECT_EQ(run_error(s, 3, info_.blocks), want);
  // Block 2 damaged (a lane's state): the run holding it and the run after it (which decodes block 2 to find
  // where block 3 starts) both refuse with the whole decode's message; a run before it does not.
  s = stream_;
  size_t at = dir + compact::kDirEntryBytes * info_.blocks;
  for (uint32_t b = 0; b < 2; ++b) at += load_le<uint32_t>(stream_.data() + dir + compact::kDirEntryBytes * b + 4);
  const size_t lanes = compact::kLanesPerBlock;
  s[at + 1 + 2 * lanes + 2] = std::byte{0};  // block 2 lane 0's state below 2^16
  EXPECT_EQ(whole_error(s), "compact stream: block 2 lane 0 starts in a rANS state below 2^16");
  EXPECT_EQ(run_error(s, 0, 2), "");
  EXPECT_EQ(run_error(s, 2, 3), whole_error(s));
  EXPECT_EQ(run_error(s, 3, info_.blocks), whole_error(s));
  EXPECT_EQ(run_error(s, 4, info_.blocks), "");
}

TEST(CompactEntropy, Figures) {
  EXPECT_EQ(compact::position_entropy_bits(100, 0), 0.0);
  EXPECT_EQ(compact::position_entropy_bits(100, 100), 0.0);
  EXPECT_NEAR(compact::position_entropy_bits(4, 2), std::log2(6.0), 1e-9);
  const uint16_t d[4] = {1, 1, 0xFFFF, 0xFFFF};
  EXPECT_NEAR(compact::value_entropy_bits(byte_span(reinterpret_cast<const std::byte*>(d), 8), 2), 4.0, 1e-9);
}

}  // namespace
}  // namespace deltasync
