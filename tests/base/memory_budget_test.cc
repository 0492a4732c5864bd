// The per-sync memory budget (base/memory_budget.h): limits, leases given back on destruction, peaks, and
// concurrent holders never passing the limit together.
#include "base/memory_budget.h"

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace deltasync {
namespace {

TEST(MemoryBudget, GrantsUpToTheLimitAndNamesTheKeyWhenItRefuses) {
  auto b = std::make_shared<memory_budget>(100, "max-sync-memory-bytes");
  memory_lease a(b), c(b);
  EXPECT_TRUE(a.grow(60));
  EXPECT_FALSE(c.grow(41));
  EXPECT_EQ(c.bytes(), 0u);
  EXPECT_TRUE(c.grow(40));
  EXPECT_EQ(b->held(), 100u);
  EXPECT_FALSE(c.grow(1));
  const error e = c.refusal("file x: its read buffer", 1);
  EXPECT_TRUE(e.is(errc::limit_exceeded));
  EXPECT_NE(e.message.find("max-sync-memory-bytes"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("file x"), std::string::npos) << e.message;
  a.shrink(10);
  EXPECT_EQ(b->held(), 90u);
  {
    memory_lease moved = std::move(a);  // the bytes move with the lease
    EXPECT_EQ(a.bytes(), 0u);
    EXPECT_EQ(moved.bytes(), 50u);
  }
  EXPECT_EQ(b->held(), 40u);  // given back on destruction
  c.reset();
  EXPECT_EQ(b->held(), 0u);
  EXPECT_EQ(b->peak(), 100u);
  EXPECT_FALSE(memory_lease(b).grow(~uint64_t{0}));  // no overflow past the limit
}

TEST(MemoryBudget, ALeaseWithoutABudgetCountsButNeverRefuses) {
  memory_lease l;
  EXPECT_TRUE(l.grow(uint64_t{1} << 40));
  EXPECT_EQ(l.bytes(), uint64_t{1} << 40);
  l.reset();
  EXPECT_EQ(l.bytes(), 0u);
}

TEST(MemoryBudget, ConcurrentHoldersNeverPassTheLimit) {
  auto b = std::make_shared<memory_budget>(1000);
  std::atomic<bool> over{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      memory_lease l(b);
      for (int i = 0; i < 20000; ++i) {
        if (l.grow(static_cast<uint64_t>(37 + t * 11))) {
          if (b->held() > 1000) over = true;
        } else {
          l.reset();
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_FALSE(over.load());
  EXPECT_LE(b->peak(), 1000u);
  EXPECT_EQ(b->held(), 0u);
}

}  // namespace
}  // namespace deltasync
