// page_block: sizes, alignment, capacity, moves that keep the memory in place, and prefault() leaving every
// byte as it was.
#include "base/page_block.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

namespace deltasync {
namespace {

TEST(page_block, sizes_alignment_and_capacity) {
  auto empty = page_block::allocate(0, "test");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_EQ(empty->capacity(), 0u);
  EXPECT_TRUE(empty->span().empty());

  for (size_t n : {size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, (size_t{2} << 20) - 1, (size_t{3} << 20) + 1}) {
    SCOPED_TRACE(n);
    auto b = page_block::allocate(n, "test");
    ASSERT_TRUE(b.ok()) << b.err().describe();
    EXPECT_EQ(b->size(), n);
    EXPECT_EQ(b->capacity() % 4096, 0u);
    EXPECT_GE(b->capacity(), n);
    EXPECT_LT(b->capacity() - n, 4096u);
    const auto addr = reinterpret_cast<uintptr_t>(b->data());
    EXPECT_EQ(addr % 4096, 0u);
    if (b->capacity() >= (size_t{2} << 20)) {
      EXPECT_EQ(addr % (size_t{2} << 20), 0u);  // huge-page ready
    }
    // Every byte up to capacity is ours to write.
    std::memset(b->data(), 0x5a, b->capacity());
    EXPECT_EQ(b->data()[b->capacity() - 1], std::byte{0x5a});
  }
}

TEST(page_block, moves_keep_the_memory_and_reset_frees_it) {
  auto b = page_block::allocate(10000, "test");
  ASSERT_TRUE(b.ok());
  std::byte* p = b->data();
  p[9999] = std::byte{7};
  page_block moved = std::move(b).value();
  EXPECT_EQ(moved.data(), p);
  EXPECT_EQ(moved.data()[9999], std::byte{7});
  page_block other;
  other = std::move(moved);
  EXPECT_EQ(other.data(), p);
  EXPECT_EQ(moved.data(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  other.reset();
  EXPECT_EQ(other.size(), 0u);
  EXPECT_EQ(other.data(), nullptr);
}

TEST(page_block, prefault_changes_no_byte) {
  auto b = page_block::allocate((size_t{5} << 20) + 123, "test");
  ASSERT_TRUE(b.ok());
  // The first half written, the second never touched: both must read the same after the prefault.
  for (size_t i = 0; i < b->size() / 2; ++i) b->data()[i] = static_cast<std::byte>(i * 31 + 7);
  if (!page_block::prefault(b->capacity_span())) GTEST_SKIP() << "MADV_POPULATE_WRITE unsupported (Linux < 5.14)";
  for (size_t i = 0; i < b->size() / 2; ++i) ASSERT_EQ(b->data()[i], static_cast<std::byte>(i * 31 + 7)) << i;
  for (size_t i = b->size() / 2; i < b->capacity(); ++i) ASSERT_EQ(b->data()[i], std::byte{0}) << i;
  EXPECT_TRUE(page_block::prefault({}));
}

}  // namespace
}  // namespace deltasync
