// buffer_pool (cap, non-blocking acquire, async acquire for back-pressure, cross-thread release) and
// worker_pool (results posted to the loop, bounded queue).
#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/worker_pool.h"

namespace deltasync::io {
namespace {

TEST(buffer_pool, cap_alignment_and_async_acquire) {
  event_loop loop;
  buffer_pool_options opts;
  opts.buffer_bytes = 10000;  // rounded up to 12288
  opts.max_total_bytes = 4 * 12288 + 100;
  auto pool = buffer_pool::create(loop, nullptr, opts);
  ASSERT_TRUE(pool.ok());
  buffer_pool& p = **pool;
  EXPECT_EQ(p.buffer_bytes(), 12288u);
  EXPECT_EQ(p.buffer_count(), 4u);
  std::vector<buffer_handle> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(p.try_acquire());
    ASSERT_TRUE(held.back());
    EXPECT_TRUE(is_aligned(reinterpret_cast<uintptr_t>(held.back().data())));
  }
  EXPECT_FALSE(p.try_acquire()) << "exhausted pool must not hand out more";
  std::promise<int> got;
  uint64_t cancelled_ticket = 0;
  loop.run_sync([&] {
    p.start_acquire([&](buffer_handle h) { got.set_value(h.fixed_index()); });
    cancelled_ticket = p.start_acquire([&](buffer_handle) { ADD_FAILURE() << "cancelled waiter ran"; });
    EXPECT_TRUE(p.cancel_acquire(cancelled_ticket));
  });
  int released_index = held[2].fixed_index();
  std::thread([&] { held[2].reset(); }).join();  // release from another thread
  EXPECT_EQ(got.get_future().get(), released_index);
  loop.run_sync([] {});
  EXPECT_EQ(p.available(), 1u) << "the waiter's buffer was dropped by its callback";
  held.clear();
  EXPECT_EQ(p.available(), 4u);
}

TEST(buffer_pool, rejects_bad_geometry) {
  event_loop loop;
  buffer_pool_options opts;
  opts.buffer_bytes = 1 << 20;
  opts.max_total_bytes = 1000;
  auto pool = buffer_pool::create(loop, nullptr, opts);
  ASSERT_FALSE(pool.ok());
  EXPECT_TRUE(pool.err().is(errc::invalid_argument));
  opts.buffer_bytes = 4096;
  opts.max_total_bytes = size_t{4096} * 20000;
  pool = buffer_pool::create(loop, nullptr, opts);
  ASSERT_FALSE(pool.ok());
  EXPECT_TRUE(pool.err().is(errc::limit_exceeded));
}

TEST(worker_pool, results_come_back_on_the_loop_and_the_queue_is_bounded) {
  event_loop loop;
  worker_pool workers(loop, 2, 4);
  std::promise<void> gate;
  std::shared_future<void> gate_f = gate.get_future().share();
  std::atomic<int> done_on_loop{0};
  std::atomic<int> ran{0};
  int accepted = 0;
  for (int i = 0; i < 10; ++i) {
    bool ok = workers.try_submit(
        [&, gate_f] {
          gate_f.wait();
          ++ran;
        },
        [&] {
          if (loop.in_loop_thread()) ++done_on_loop;
        });
    if (ok) ++accepted;
  }
  EXPECT_EQ(accepted, 4) << "try_submit must refuse past max_queued";
  gate.set_value();
  // A blocking submit from a producer thread waits for room instead of failing.
  std::promise<int> value;
  std::thread producer([&] {
    workers.submit([&] { ++ran; }, [&] { value.set_value(42); });
  });
  producer.join();
  EXPECT_EQ(value.get_future().get(), 42);
  std::promise<int> typed;
  while (!workers.try_submit_value<int>([] { return 7; }, [&](int v) { typed.set_value(v); })) std::this_thread::yield();
  EXPECT_EQ(typed.get_future().get(), 7);
  // A worker counts `ran` before it posts the job's completion: wait (bounded) for the four completions to
  // reach the loop rather than assuming one round trip saw them all.
  for (int i = 0; i < 2000 && done_on_loop.load() < 4; ++i) {
    loop.run_sync([] {});
    if (done_on_loop.load() < 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(ran.load(), 5);
  EXPECT_EQ(done_on_loop.load(), 4);
}

}  // namespace
}  // namespace deltasync::io
