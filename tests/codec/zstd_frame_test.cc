// Tests for the one-frame zstd wrapper: round trips and every rejection, with frames built by hand.
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <random>
#include <string>

#include "codec/zstd_frame.h"

namespace deltasync {
namespace {

byte_buffer random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  byte_buffer b(n);
  for (auto& x : b) x = std::byte{static_cast<unsigned char>(rng())};
  return b;
}

// Compressible: short runs drawn from a small alphabet.
byte_buffer text_like(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  byte_buffer b(n);
  for (size_t i = 0; i < n;) {
    const auto c = std::byte{static_cast<unsigned char>('a' + rng() % 6)};
    for (size_t run = 1 + rng() % 8; run > 0 && i < n; --run) b[i++] = c;
  }
  return b;
}

byte_buffer wrap(byte_span in) {
  auto r = zstd_wrap(in);
  EXPECT_TRUE(r.ok()) << r.err().describe();
  return r.ok() ? std::move(r).value() : byte_buffer{};
}

// A frame whose header leaves the content size out, as streaming compressors write it.
byte_buffer streamed_frame(byte_span in) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
  byte_buffer out(ZSTD_compressBound(in.size()));
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  size_t left;
  do {
    left = ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end);
  } while (!ZSTD_isError(left) && left != 0);
  ZSTD_freeCCtx(c);
  EXPECT_FALSE(ZSTD_isError(left));
  out.resize(ob.pos);
  return out;
}

// Rewrites the frame header's content-size field (whatever its width) to `declared`.
void patch_content_size(byte_buffer& frame, uint64_t declared) {
  const auto fhd = std::to_integer<unsigned>(frame[4]);
  const bool single_segment = (fhd >> 5) & 1u;
  const unsigned fcs_flag = fhd >> 6;
  const size_t dict_bytes[4] = {0, 1, 2, 4};
  const size_t pos = 5 + (single_segment ? 0 : 1) + dict_bytes[fhd & 3u];
  switch (fcs_flag) {
    case 0:
      ASSERT_TRUE(single_segment);
      ASSERT_LT(declared, 256u);
      frame[pos] = std::byte{static_cast<unsigned char>(declared)};
      break;
    case 1:  // two bytes, stored minus 256
      ASSERT_GE(declared, 256u);
      store_le<uint16_t>(&frame[pos], static_cast<uint16_t>(declared - 256));
      break;
    case 2: store_le<uint32_t>(&frame[pos], static_cast<uint32_t>(declared)); break;
    default: store_le<uint64_t>(&frame[pos], declared); break;
  }
  ASSERT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), declared);
}

void expect_unwrap_error(const byte_buffer& frame, errc code, uint64_t cap = uint64_t{1} << 30) {
  auto r = zstd_unwrap(frame, cap);
  ASSERT_FALSE(r.ok()) << "unwrapped a bad frame";
  EXPECT_TRUE(r.err().is(code)) << "expected " << errc_name(code) << ", got " << r.err().describe();
}

TEST(ZstdFrame, RoundTrip) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{255}, size_t{256}, size_t{1000}, size_t{70000}, size_t{300000},
                   size_t{3} << 20}) {
    for (bool compressible : {true, false}) {
      SCOPED_TRACE(std::to_string(n) + (compressible ? " compressible" : " random"));
      const byte_buffer in = compressible ? text_like(n, n) : random_bytes(n, n);
      const byte_buffer frame = wrap(in);
      EXPECT_TRUE(is_zstd_frame(frame));
      auto size = zstd_content_size(frame, n);
      ASSERT_TRUE(size.ok()) << size.err().describe();
      EXPECT_EQ(*size, n);
      auto out = zstd_unwrap(frame, n);
      ASSERT_TRUE(out.ok()) << out.err().describe();
      EXPECT_EQ(*out, in);
      byte_buffer into(n);
      auto st = zstd_unwrap_into(frame, into);
      ASSERT_TRUE(st.ok()) << st.err().describe();
      EXPECT_EQ(into, in);
      if (compressible && n > 1000) {
        EXPECT_LT(frame.size(), n / 2);
      }
    }
  }
}

TEST(ZstdFrame, LevelsRoundTrip) {
  const byte_buffer in = text_like(50000, 7);
  for (int level : {-5, 1, 3, 19}) {
    SCOPED_TRACE(level);
    auto frame = zstd_wrap(in, level);
    ASSERT_TRUE(frame.ok()) << frame.err().describe();
    auto out = zstd_unwrap(*frame, in.size());
    ASSERT_TRUE(out.ok()) << out.err().describe();
    EXPECT_EQ(*out, in);
  }
}

TEST(ZstdFrame, RandomRoundTripProperty) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 100; ++i) {
    const size_t n = rng() % (rng() % 2 ? 300 : 200000);
    const byte_buffer in = rng() % 2 ? text_like(n, rng()) : random_bytes(n, rng());
    const byte_buffer frame = wrap(in);
    auto out = zstd_unwrap(frame, n);
    ASSERT_TRUE(out.ok()) << "size " << n << ": " << out.err().describe();
    ASSERT_EQ(*out, in) << "size " << n;
  }
}

TEST(ZstdFrame, NotAFrame) {
  EXPECT_FALSE(is_zstd_frame({}));
  expect_unwrap_error({}, errc::zstd_not_a_frame);
  expect_unwrap_error({std::byte{0x28}, std::byte{0xB5}, std::byte{0x2F}}, errc::zstd_not_a_frame);
  const byte_buffer st = {std::byte{8}, std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0},
                          std::byte{0}, std::byte{0}, std::byte{0}, std::byte{'{'}, std::byte{'}'}};
  EXPECT_FALSE(is_zstd_frame(st));
  expect_unwrap_error(st, errc::zstd_not_a_frame);
  // A skippable frame (magic 0x184D2A50) holds no content: not what a reader expects either.
  byte_buffer skippable(8, std::byte{0});
  store_le<uint32_t>(skippable.data(), 0x184D2A50u);
  expect_unwrap_error(skippable, errc::zstd_not_a_frame);
  auto size = zstd_content_size(st, 100);
  ASSERT_FALSE(size.ok());
  EXPECT_TRUE(size.err().is(errc::zstd_not_a_frame));
}

TEST(ZstdFrame, UnknownSize) {
  const byte_buffer in = text_like(5000, 1);
  const byte_buffer frame = streamed_frame(in);
  ASSERT_TRUE(is_zstd_frame(frame));
  ASSERT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  expect_unwrap_error(frame, errc::zstd_unknown_size);
  byte_buffer out(in.size());
  auto st = zstd_unwrap_into(frame, out);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::zstd_unknown_size));
}

TEST(ZstdFrame, TooLarge) {
  const byte_buffer frame = wrap(text_like(4096, 2));
  expect_unwrap_error(frame, errc::zstd_too_large, 4095);
  auto size = zstd_content_size(frame, 0);
  ASSERT_FALSE(size.ok());
  EXPECT_TRUE(size.err().is(errc::zstd_too_large));
  EXPECT_NE(size.err().message.find("4096"), std::string::npos) << size.err().message;
  // A tiny frame that claims 2^60 bytes is refused before anything is allocated.
  // Header: magic, descriptor (8-byte content size, windowed), 1 KiB window, size 2^60; then one empty raw block.
  byte_buffer huge = {std::byte{0x28}, std::byte{0xB5}, std::byte{0x2F}, std::byte{0xFD}, std::byte{0xC0},
                      std::byte{0x00}};
  huge.resize(huge.size() + 8);
  store_le<uint64_t>(&huge[6], uint64_t{1} << 60);
  huge.insert(huge.end(), {std::byte{0x01}, std::byte{0x00}, std::byte{0x00}});
  ASSERT_EQ(ZSTD_getFrameContentSize(huge.data(), huge.size()), uint64_t{1} << 60);
  expect_unwrap_error(huge, errc::zstd_too_large);
}

TEST(ZstdFrame, SizeLie) {
  // Single-segment frames (small content, the size doubles as the window) and windowed ones (large content),
  // each declaring a little more and a little less than they hold.
  for (size_t n : {size_t{1000}, size_t{3} << 20}) {
    const byte_buffer in = text_like(n, n);
    for (int64_t delta : {int64_t{1}, int64_t{-1}, int64_t{500}, int64_t{-500}}) {
      SCOPED_TRACE(std::to_string(n) + " declared " + std::to_string(delta));
      byte_buffer frame = wrap(in);
      patch_content_size(frame, static_cast<uint64_t>(static_cast<int64_t>(n) + delta));
      expect_unwrap_error(frame, errc::zstd_size_lie);
    }
  }
}

TEST(ZstdFrame, Truncated) {
  const byte_buffer frame = wrap(text_like(20000, 4));
  for (size_t keep : {size_t{4}, size_t{5}, size_t{7}, frame.size() / 2, frame.size() - 1}) {
    SCOPED_TRACE(keep);
    expect_unwrap_error(byte_buffer(frame.begin(), frame.begin() + static_cast<ptrdiff_t>(keep)),
                        errc::zstd_corrupt);
  }
}

TEST(ZstdFrame, TrailingData) {
  const byte_buffer frame = wrap(text_like(2000, 5));
  byte_buffer garbage = frame;
  garbage.push_back(std::byte{0});
  expect_unwrap_error(garbage, errc::zstd_corrupt);
  byte_buffer two = frame;
  two.insert(two.end(), frame.begin(), frame.end());
  expect_unwrap_error(two, errc::zstd_corrupt);
  byte_buffer with_skippable = frame;
  with_skippable.resize(frame.size() + 8, std::byte{0});
  store_le<uint32_t>(&with_skippable[frame.size()], 0x184D2A50u);
  expect_unwrap_error(with_skippable, errc::zstd_corrupt);
}

TEST(ZstdFrame, Corrupt) {
  // A reserved block type (3) right after a valid header declaring 5 bytes.
  const byte_buffer reserved = {std::byte{0x28}, std::byte{0xB5}, std::byte{0x2F}, std::byte{0xFD}, std::byte{0x20},
                                std::byte{0x05}, std::byte{0x07}, std::byte{0x00}, std::byte{0x00}};
  expect_unwrap_error(reserved, errc::zstd_corrupt);

  // A frame with a content checksum whose last byte is flipped.
  const byte_buffer in = text_like(10000, 6);
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  byte_buffer frame(ZSTD_compressBound(in.size()));
  const size_t n = ZSTD_compress2(c, frame.data(), frame.size(), in.data(), in.size());
  ZSTD_freeCCtx(c);
  ASSERT_FALSE(ZSTD_isError(n));
  frame.resize(n);
  auto ok = zstd_unwrap(frame, in.size());
  ASSERT_TRUE(ok.ok()) << ok.err().describe();
  frame.back() ^= std::byte{1};
  expect_unwrap_error(frame, errc::zstd_corrupt);

  // Garbage in the compressed body: every outcome is a clean value or error, and most are "corrupt".
  const byte_buffer good = wrap(in);
  int corrupt = 0;
  for (size_t at = 12; at < good.size(); at += 7) {
    byte_buffer bad = good;
    bad[at] ^= std::byte{0xA5};
    auto r = zstd_unwrap(bad, in.size());
    if (r.ok()) {
      EXPECT_EQ(r->size(), in.size());
    } else {
      EXPECT_TRUE(r.err().is(errc::zstd_corrupt) || r.err().is(errc::zstd_size_lie)) << r.err().describe();
      corrupt += r.err().is(errc::zstd_corrupt);
    }
  }
  EXPECT_GT(corrupt, 0);
}

TEST(ZstdFrame, OutputSizeMustMatch) {
  const byte_buffer in = text_like(3000, 8);
  const byte_buffer frame = wrap(in);
  byte_buffer small(in.size() - 1), big(in.size() + 1);
  auto a = zstd_unwrap_into(frame, small);
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(a.err().is(errc::invalid_argument));
  auto b = zstd_unwrap_into(frame, big);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.err().is(errc::invalid_argument));
}

}  // namespace
}  // namespace deltasync

namespace deltasync {
namespace {

// A real zstd bomb, built by hand: RLE blocks of 128 KiB of one byte (4 bytes each on the wire), `content`
// bytes in all, in a frame whose header declares `declared` bytes and a window of 2^window_log.
byte_buffer rle_frame(uint64_t declared, uint64_t content, unsigned window_log = 17) {
  byte_buffer f = {std::byte{0x28}, std::byte{0xB5}, std::byte{0x2F}, std::byte{0xFD}, std::byte{0xC0},
                   std::byte{static_cast<unsigned char>((window_log - 10) << 3)}};
  for (int k = 0; k < 8; ++k) f.push_back(std::byte{static_cast<unsigned char>(declared >> (8 * k))});
  constexpr uint64_t kBlock = 128 << 10;
  uint64_t left = content;
  do {
    const uint64_t n = std::min(left, kBlock);
    left -= n;
    const uint32_t h = (left == 0 ? 1u : 0u) | (1u << 1) | static_cast<uint32_t>(n << 3);
    f.push_back(std::byte{static_cast<unsigned char>(h)});
    f.push_back(std::byte{static_cast<unsigned char>(h >> 8)});
    f.push_back(std::byte{static_cast<unsigned char>(h >> 16)});
    f.push_back(std::byte{0x00});
  } while (left > 0);
  return f;
}

TEST(ZstdBounded, AHeaderThatLiesCostsWhatTheFrameDecodesToNotWhatItDeclares) {
  auto budget = std::make_shared<memory_budget>(uint64_t{4} << 30);
  memory_lease lease(budget);
  const byte_buffer frame = rle_frame(uint64_t{1} << 30, 3000);  // declares 1 GiB, holds 3000 bytes
  auto r = zstd_unwrap(frame, uint64_t{8} << 30, &lease);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::zstd_size_lie)) << r.err().describe();
  EXPECT_LE(budget->peak(), (1u << 20) + (128u << 10)) << "the first piece and the window, not the declared GiB";
  EXPECT_EQ(lease.bytes(), 0u);
  EXPECT_EQ(budget->held(), 0u);
}

TEST(ZstdBounded, ARealBombStopsAtItsBudgetNamingTheKey) {
  auto budget = std::make_shared<memory_budget>(uint64_t{64} << 20, "max-sync-memory-bytes");
  memory_lease lease(budget);
  const byte_buffer frame = rle_frame(uint64_t{1} << 30, uint64_t{1} << 30);  // 1 GiB of zeros in 32 KiB
  ASSERT_LT(frame.size(), 40u << 10);
  auto r = zstd_unwrap(frame, uint64_t{8} << 30, &lease);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::limit_exceeded)) << r.err().describe();
  EXPECT_NE(r.err().message.find("max-sync-memory-bytes"), std::string::npos) << r.err().message;
  EXPECT_LE(budget->peak(), uint64_t{64} << 20);
  EXPECT_EQ(budget->held(), 0u);
  // Without a budget the declared size still caps it.
  expect_unwrap_error(frame, errc::zstd_too_large, uint64_t{512} << 20);
}

TEST(ZstdBounded, WithinItsBudgetAFrameDecodesWholeAndTheLeaseHoldsItsSize) {
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 20, (uint64_t{40} << 20) + 12345}) {
    auto budget = std::make_shared<memory_budget>(uint64_t{128} << 20);
    memory_lease lease(budget);
    auto r = zstd_unwrap(rle_frame(size, size), size, &lease);
    ASSERT_TRUE(r.ok()) << size << ": " << r.err().describe();
    EXPECT_EQ(r->size(), size);
    EXPECT_EQ(lease.bytes(), size);
    EXPECT_EQ(budget->held(), size);
    EXPECT_TRUE(std::all_of(r->begin(), r->end(), [](std::byte b) { return b == std::byte{0}; }));
  }
  // Real compressed data in every size class, through the bounded path.
  for (size_t n : {size_t{100}, size_t{1} << 20, (size_t{3} << 20) + 7}) {
    const byte_buffer in = text_like(n, n);
    memory_lease lease(std::make_shared<memory_budget>(uint64_t{64} << 20));
    auto r = zstd_unwrap(wrap(in), n, &lease);
    ASSERT_TRUE(r.ok()) << n << ": " << r.err().describe();
    EXPECT_TRUE(*r == in);
  }
}

TEST(ZstdBounded, AFrameAskingForAHugeWindowIsRefusedBeforeDecoding) {
  auto budget = std::make_shared<memory_budget>(uint64_t{8} << 30);
  memory_lease lease(budget);
  auto r = zstd_unwrap(rle_frame(uint64_t{4} << 30, 1000, 31), uint64_t{8} << 30, &lease);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::zstd_corrupt)) << r.err().describe();
  EXPECT_NE(r.err().message.find("window"), std::string::npos) << r.err().message;
  EXPECT_EQ(budget->peak(), 0u);
}

}  // namespace
}  // namespace deltasync
