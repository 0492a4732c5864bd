// Backend selection (forced by option and env, the io_uring path skipped visibly when no ring can be
// created), fixed-buffer registration, the event loop, and the synchronous helpers.
#include <stdlib.h>

#include <atomic>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "io/sync_io.h"
#include "io/test_util.h"

namespace deltasync::io::testing {
namespace {

struct env_guard {
  explicit env_guard(const char* value) {
    if (const char* old = std::getenv("DELTASYNC_IO_BACKEND"); old != nullptr) old_ = old;
    if (value != nullptr) ::setenv("DELTASYNC_IO_BACKEND", value, 1); else ::unsetenv("DELTASYNC_IO_BACKEND");
  }
  ~env_guard() {
    if (old_.empty()) ::unsetenv("DELTASYNC_IO_BACKEND"); else ::setenv("DELTASYNC_IO_BACKEND", old_.c_str(), 1);
  }
  std::string old_;
};

TEST(io_backend_selection, option_forces_the_thread_backend) {
  env_guard env(nullptr);
  event_loop loop;
  io_backend_options opts;
  opts.backend = "threads";
  auto b = make_io_backend(loop, opts);
  ASSERT_TRUE(b.ok()) << b.err().describe();
  EXPECT_STREQ((*b)->name(), "threads");
}

TEST(io_backend_selection, env_forces_the_thread_backend_under_auto) {
  env_guard env("threads");
  event_loop loop;
  auto b = make_io_backend(loop, {});
  ASSERT_TRUE(b.ok()) << b.err().describe();
  EXPECT_STREQ((*b)->name(), "threads");
  // The thread backend really does I/O.
  temp_dir dir;
  std::mt19937_64 rng(1);
  byte_buffer data = random_bytes(rng, 300000);
  buffer_pool_options popts;
  popts.buffer_bytes = 64 * 1024;
  popts.max_total_bytes = 1 << 20;
  auto pool = buffer_pool::create(loop, b->get(), popts);
  ASSERT_TRUE(pool.ok());
  ASSERT_TRUE(write_file_atomic(**b, **pool, dir.file("x"), data).ok());
  auto back = read_file_all(**b, **pool, dir.file("x"), 1 << 20);
  ASSERT_TRUE(back.ok()) << back.err().describe();
  EXPECT_TRUE(*back == data);
}

TEST(io_backend_selection, unknown_name_is_rejected) {
  env_guard env(nullptr);
  event_loop loop;
  io_backend_options opts;
  opts.backend = "carrier-pigeon";
  auto b = make_io_backend(loop, opts);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.err().is(errc::invalid_argument));
}

TEST(io_backend_selection, uring_with_fixed_buffers) {
  event_loop loop;
  auto b = make_uring_backend(loop, 32);
  if (!b.ok()) GTEST_SKIP() << "io_uring unavailable here: " << b.err().describe();
  EXPECT_STREQ((*b)->name(), "uring");
  buffer_pool_options popts;
  popts.buffer_bytes = 128 * 1024;
  popts.max_total_bytes = 1 << 20;
  auto pool = buffer_pool::create(loop, b->get(), popts);
  ASSERT_TRUE(pool.ok());
  if (!(*pool)->registered()) GTEST_SKIP() << "fixed-buffer registration refused (RLIMIT_MEMLOCK?)";
  // A second pool cannot register too: it falls back to unregistered buffers and still works.
  auto pool2 = buffer_pool::create(loop, b->get(), popts);
  ASSERT_TRUE(pool2.ok());
  EXPECT_FALSE((*pool2)->registered());
  temp_dir dir;
  std::mt19937_64 rng(2);
  byte_buffer data = random_bytes(rng, 700000);
  ASSERT_TRUE(write_file_atomic(**b, **pool, dir.file("f"), data).ok());
  auto back = read_file_all(**b, **pool, dir.file("f"), 1 << 20);
  ASSERT_TRUE(back.ok()) << back.err().describe();
  EXPECT_TRUE(*back == data);
  auto back2 = read_file_all(**b, **pool2, dir.file("f"), 1 << 20);
  ASSERT_TRUE(back2.ok());
  EXPECT_TRUE(*back2 == data);
}

TEST(io_backend_selection, forced_uring_reports_or_works) {
  env_guard env(nullptr);
  event_loop loop;
  io_backend_options opts;
  opts.backend = "uring";
  auto b = make_io_backend(loop, opts);
  if (!b.ok()) {
    EXPECT_TRUE(b.err().is(errc::unsupported)) << b.err().describe();
    GTEST_SKIP() << "io_uring unavailable: " << b.err().describe();
  }
  EXPECT_STREQ((*b)->name(), "uring");
}

TEST(event_loop, post_runs_in_order_on_the_loop_thread) {
  event_loop loop;
  std::vector<int> seen;
  std::atomic<bool> on_loop{true};
  for (int i = 0; i < 100; ++i) {
    loop.post([&, i] {
      if (!loop.in_loop_thread()) on_loop = false;
      seen.push_back(i);
    });
  }
  loop.run_sync([] {});
  EXPECT_TRUE(on_loop);
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], i);
  EXPECT_FALSE(loop.in_loop_thread());
}

TEST(event_loop, a_throwing_handler_does_not_stop_the_loop) {
  event_loop loop;
  loop.post([] { throw std::runtime_error("boom"); });
  bool ran = false;
  loop.run_sync([&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(sync_io, round_trip_limits_and_errors) {
  temp_dir dir;
  std::mt19937_64 rng(3);
  byte_buffer data = random_bytes(rng, 3 * 1024 * 1024 + 11);
  ASSERT_TRUE(write_file_atomic(dir.file("s"), data).ok());
  auto back = read_file_all(dir.file("s"), 8 << 20);
  ASSERT_TRUE(back.ok()) << back.err().describe();
  EXPECT_TRUE(*back == data);
  auto big = read_file_all(dir.file("s"), 1000);
  ASSERT_FALSE(big.ok());
  EXPECT_TRUE(big.err().is(errc::limit_exceeded));
  auto missing = read_file_all(dir.file("none"), 1000);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.err().is(errc::not_found));
  EXPECT_NE(missing.err().message.find(dir.file("none")), std::string::npos);
  auto bad_dir = write_file_atomic(dir.file("no/such/dir/f"), data);
  ASSERT_FALSE(bad_dir.ok());
  EXPECT_TRUE(bad_dir.err().is(errc::not_found)) << bad_dir.err().describe();
  ASSERT_TRUE(write_file_atomic(dir.file("empty"), {}).ok());
  auto empty = read_file_all(dir.file("empty"), 10);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace deltasync::io::testing
