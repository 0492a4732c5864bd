// whole_file_reader on every backend (and under the fault decorator: short reads, EINTR, a failed Nth
// operation): files of awkward sizes land byte-exact in caller memory, O_DIRECT or buffered; a size that
// changed since the caller sized its buffer, a missing file and cancel() are reported once, with the path.
// page_cache_share follows eviction and reading.
#include "io/whole_file_reader.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <future>

#include "base/page_block.h"
#include "io/test_util.h"

namespace deltasync::io::testing {
namespace {

constexpr size_t kib = 1024;

struct read_result {
  status st;
  std::vector<size_t> files_done;  // in completion order
  size_t calls_after_done = 0;
};

read_result read_into(engine& e, std::vector<whole_file_spec> specs, const whole_file_reader_options& options,
                      bool cancel_after_first = false) {
  read_result out;
  std::promise<void> done;
  std::unique_ptr<whole_file_reader> reader;
  bool finished = false;
  e.loop->post([&] {
    reader = std::make_unique<whole_file_reader>(e.backend(), std::move(specs), options);
    reader->start(
        [&](size_t i) {
          if (finished) ++out.calls_after_done;
          out.files_done.push_back(i);
          if (cancel_after_first) reader->cancel();
        },
        [&](status st) {
          finished = true;
          out.st = std::move(st);
          done.set_value();
        });
  });
  done.get_future().get();
  e.loop->run_sync([&] { reader.reset(); });
  return out;
}

class whole_file_reader_test : public ::testing::TestWithParam<backend_kind> {
 protected:
  void SetUp() override {
    seed_ = test_seed();
    rng_.seed(seed_);
  }
  std::unique_ptr<engine> make(fault_options faults = {}) {
    faults.seed = seed_;
    std::string reason;
    auto e = make_engine(GetParam(), faults, 64 * kib, 256 * kib, &reason);
    if (e == nullptr) skip_reason_ = reason;
    return e;
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  temp_dir dir_;
  std::string skip_reason_;
};

#define DS_SEED_TRACE() SCOPED_TRACE("seed=" + std::to_string(seed_) + " (replay: DS_TEST_SEED=" + \
                                     std::to_string(seed_) + ")")

TEST_P(whole_file_reader_test, files_of_every_awkward_size_arrive_exact_direct_and_buffered) {
  DS_SEED_TRACE();
  fault_options faults;
  if (GetParam() == backend_kind::fault_threads || GetParam() == backend_kind::fault_uring) {
    faults.short_probability = 0.3;
    faults.eintr_probability = 0.1;
  }
  auto e = make(faults);
  if (e == nullptr) GTEST_SKIP() << skip_reason_;
  const std::vector<size_t> sizes = {0, 1, 4095, 4096, 4097, 64 * kib, 64 * kib + 1, 300 * kib + 123};
  for (bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct" : "buffered");
    std::vector<byte_buffer> want;
    std::vector<page_block> blocks;
    std::vector<whole_file_spec> specs;
    for (size_t k = 0; k < sizes.size(); ++k) {
      want.push_back(random_bytes(rng_, sizes[k]));
      const std::string path = dir_.file("f" + std::to_string(k));
      spit(path, want.back());
      auto b = page_block::allocate(sizes[k], "test");
      ASSERT_TRUE(b.ok());
      // Poison the block: every byte must come from the file.
      for (size_t i = 0; i < b->capacity(); ++i) b->data()[i] = std::byte{0xa5};
      specs.push_back({path, sizes[k], b->capacity_span(), direct});
      blocks.push_back(std::move(b).value());
    }
    whole_file_reader_options options;
    options.chunk_bytes = 64 * kib;  // several chunks per file, several files in flight at once
    options.reads_in_flight = 5;
    options.max_open_files = 2;
    read_result r = read_into(*e, std::move(specs), options);
    ASSERT_TRUE(r.st.ok()) << r.st.err().describe();
    EXPECT_EQ(r.files_done.size(), sizes.size());
    EXPECT_EQ(r.calls_after_done, 0u);
    for (size_t k = 0; k < sizes.size(); ++k) {
      EXPECT_TRUE(std::equal(want[k].begin(), want[k].end(), blocks[k].data())) << "file " << k;
    }
  }
}

TEST_P(whole_file_reader_test, unaligned_destination_falls_back_to_buffered_reads) {
  DS_SEED_TRACE();
  auto e = make();
  if (e == nullptr) GTEST_SKIP() << skip_reason_;
  const byte_buffer want = random_bytes(rng_, 100 * kib + 3);
  spit(dir_.file("f"), want);
  // Off by one byte and exactly the file's size: O_DIRECT cannot be used; the reader must not try.
  byte_buffer dest(want.size() + 1);
  read_result r = read_into(*e, {{dir_.file("f"), want.size(), mutable_byte_span(dest).subspan(1), true}}, {});
  ASSERT_TRUE(r.st.ok()) << r.st.err().describe();
  EXPECT_TRUE(std::equal(want.begin(), want.end(), dest.begin() + 1));
}

TEST_P(whole_file_reader_test, size_change_missing_file_and_cancel_are_reported_with_the_path) {
  DS_SEED_TRACE();
  auto e = make();
  if (e == nullptr) GTEST_SKIP() << skip_reason_;
  const byte_buffer data = random_bytes(rng_, 10 * kib);
  spit(dir_.file("a"), data);
  byte_buffer dest(64 * kib);

  // The caller sized its buffer for 9 KiB; the file now holds 10.
  read_result changed = read_into(*e, {{dir_.file("a"), 9 * kib, dest, false}}, {});
  ASSERT_FALSE(changed.st.ok());
  EXPECT_TRUE(changed.st.err().is(errc::io_error)) << changed.st.err().describe();
  EXPECT_NE(changed.st.err().message.find(dir_.file("a")), std::string::npos);
  EXPECT_TRUE(changed.files_done.empty());

  read_result missing = read_into(*e, {{dir_.file("a"), data.size(), dest, false}, {dir_.file("nope"), 1, dest, false}}, {});
  ASSERT_FALSE(missing.st.ok());
  EXPECT_TRUE(missing.st.err().is(errc::not_found)) << missing.st.err().describe();
  EXPECT_NE(missing.st.err().message.find("nope"), std::string::npos);

  // Two files; cancel once the first is in: the second is never reported.
  spit(dir_.file("b"), data);
  byte_buffer dest2(64 * kib);
  read_result cancelled = read_into(*e, {{dir_.file("a"), data.size(), dest, false}, {dir_.file("b"), data.size(), dest2, false}},
                                    {}, /*cancel_after_first=*/true);
  ASSERT_FALSE(cancelled.st.ok());
  EXPECT_TRUE(cancelled.st.err().is(errc::cancelled)) << cancelled.st.err().describe();
  EXPECT_EQ(cancelled.files_done.size(), 1u);
}

// Under the fault decorator (both real backends): the Nth read, of either file, fails.
TEST(whole_file_reader_faults, a_failed_read_anywhere_is_surfaced) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (replay: DS_TEST_SEED=" + std::to_string(seed) + ")");
  std::mt19937_64 rng(seed);
  temp_dir dir;
  const byte_buffer data = random_bytes(rng, 200 * kib + 5);
  spit(dir.file("a"), data);
  spit(dir.file("b"), data);
  whole_file_reader_options options;
  options.chunk_bytes = 64 * kib;
  options.reads_in_flight = 3;
  for (backend_kind kind : {backend_kind::fault_threads, backend_kind::fault_uring}) {
    SCOPED_TRACE(backend_kind_name(kind));
    for (int64_t n = 0; n < 8; ++n) {  // 4 reads per file: the Nth read of either file fails
      SCOPED_TRACE("fail_nth read " + std::to_string(n));
      fault_options faults;
      faults.seed = seed;
      faults.fail_nth = n;
      faults.fail_only = op_code::read;
      std::string reason;
      auto e = make_engine(kind, faults, 64 * kib, 256 * kib, &reason);
      if (e == nullptr) {
        ASSERT_EQ(kind, backend_kind::fault_uring) << reason;
        std::printf("[ NOTE     ] fault_uring not run: %s\n", reason.c_str());
        break;
      }
      byte_buffer d1(256 * kib), d2(256 * kib);
      read_result r = read_into(*e, {{dir.file("a"), data.size(), d1, false}, {dir.file("b"), data.size(), d2, false}},
                                options);
      ASSERT_FALSE(r.st.ok());
      EXPECT_TRUE(r.st.err().is(errc::io_error)) << r.st.err().describe();
      EXPECT_NE(r.st.err().message.find("offset"), std::string::npos) << r.st.err().describe();
      EXPECT_LT(r.files_done.size(), 2u);
      EXPECT_EQ(r.calls_after_done, 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(backends, whole_file_reader_test,
                         ::testing::Values(backend_kind::threads, backend_kind::uring, backend_kind::fault_threads,
                                           backend_kind::fault_uring),
                         [](const auto& p) { return std::string(backend_kind_name(p.param)); });

TEST(page_cache_share, follows_eviction_and_reading) {
  temp_dir dir;
  std::mt19937_64 rng(test_seed());
  const std::string path = dir.file("f");
  spit(path, random_bytes(rng, 8 << 20));
  EXPECT_EQ(page_cache_share(dir.file("missing")), 0.0);
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::fsync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  const double evicted = page_cache_share(path);
  if (evicted > 0.1) {
    ::close(fd);
    GTEST_SKIP() << "this filesystem keeps the file cached after POSIX_FADV_DONTNEED (tmpfs?): share " << evicted;
  }
  byte_buffer sink(1 << 20);
  while (::read(fd, sink.data(), sink.size()) > 0) {
  }
  ::close(fd);
  EXPECT_GT(page_cache_share(path), 0.9);
}

}  // namespace
}  // namespace deltasync::io::testing
