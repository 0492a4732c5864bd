// Fault sweeps over the writer and the reader, on both real backends under the fault decorator: fail
// the Nth operation for every N, ENOSPC, crash before fsync. Properties: every error is surfaced (with
// the path), no partial file is ever visible under the final name, temp files are cleaned up, no piece
// is delivered after an error, and every buffer returns to the pool.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <map>

#include "io/whole_file_reader.h"
#include "io/test_util.h"

namespace deltasync::io::testing {
namespace {

constexpr size_t kib = 1024;

class io_faults : public ::testing::TestWithParam<backend_kind> {
 protected:
  void SetUp() override {
    seed_ = test_seed();
    rng_.seed(seed_);
    if (GetParam() == backend_kind::fault_uring) {
      std::string reason;
      if (make_engine(backend_kind::uring, {}, 64 * kib, 256 * kib, &reason) == nullptr) GTEST_SKIP() << reason;
    }
  }
  std::unique_ptr<engine> engine_with(fault_options faults) {
    faults.seed = seed_;
    std::string reason;
    auto e = make_engine(GetParam(), faults, 64 * kib, 1024 * kib, &reason);
    EXPECT_NE(e, nullptr) << reason;
    return e;
  }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  temp_dir dir_;
};

#define DS_SEED_TRACE() SCOPED_TRACE("seed=" + std::to_string(seed_) + " (replay: DS_TEST_SEED=" + \
                                     std::to_string(seed_) + ")")

TEST_P(io_faults, writer_fail_nth_operation_sweep) {
  DS_SEED_TRACE();
  // An unaligned middle piece and an unaligned tail: the sweep covers both fds and every commit step.
  byte_buffer data = random_bytes(rng_, 200 * kib + 77);
  std::vector<size_t> pattern = {64 * kib, 30000, 64 * kib};
  std::string path = dir_.file("swept");
  uint64_t total_ops = 0;
  {
    auto e = engine_with({});
    ASSERT_TRUE(write_pieces(*e, path, data, pattern).ok());
    total_ops = e->fault->raw_ops();
    ::unlink(path.c_str());
  }
  ASSERT_GT(total_ops, 8u);
  for (uint64_t n = 0; n <= total_ops; ++n) {
    SCOPED_TRACE("fail_nth=" + std::to_string(n));
    bool partial_seen = false;
    fault_options faults;
    faults.fail_nth = static_cast<int64_t>(n);
    faults.fail_errno = n % 2 ? EIO : ENOSPC;
    faults.observe = [&](const io_op&) {
      // Under the final name there is either nothing or the whole file, at every step.
      if (auto now = slurp(path); now.has_value() && *now != data) partial_seen = true;
    };
    auto e = engine_with(faults);
    status st = write_pieces(*e, path, data, pattern);
    EXPECT_FALSE(partial_seen);
    if (n < total_ops) {
      ASSERT_FALSE(st.ok()) << "injected failure not surfaced";
      EXPECT_NE(st.err().message.find(path), std::string::npos) << st.err().message;
      EXPECT_TRUE(st.err().is(n % 2 ? errc::io_error : errc::no_space)) << st.err().describe();
      EXPECT_FALSE(file_exists(path));
      EXPECT_FALSE(file_exists(path + ".tmp"));
    } else {
      ASSERT_TRUE(st.ok()) << st.err().describe();
      EXPECT_TRUE(*slurp(path) == data);
      ::unlink(path.c_str());
    }
    EXPECT_EQ(e->pool->available(), e->pool->buffer_count());
  }
}

TEST_P(io_faults, writer_enospc_names_the_path_and_cleans_up) {
  DS_SEED_TRACE();
  for (uint64_t limit : {uint64_t{0}, uint64_t{4096}, uint64_t{100 * kib}, uint64_t{190 * kib}}) {
    SCOPED_TRACE("enospc_after=" + std::to_string(limit));
    fault_options faults;
    faults.enospc_after_bytes = limit;
    auto e = engine_with(faults);
    std::string path = dir_.file("full");
    byte_buffer data = random_bytes(rng_, 200 * kib + 5);
    status st = write_pieces(*e, path, data, {64 * kib});
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(st.err().is(errc::no_space)) << st.err().describe();
    EXPECT_NE(st.err().message.find(path + ".tmp"), std::string::npos) << st.err().message;
    EXPECT_FALSE(file_exists(path));
    EXPECT_FALSE(file_exists(path + ".tmp"));
  }
}

TEST_P(io_faults, crash_before_fsync_leaves_no_final_file) {
  DS_SEED_TRACE();
  fault_options faults;
  faults.crash_before_fsync = true;
  auto e = engine_with(faults);
  std::string path = dir_.file("crashed");
  byte_buffer data = random_bytes(rng_, 150 * kib);
  status st = write_pieces(*e, path, data, {64 * kib});
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(e->fault->crashed());
  EXPECT_FALSE(file_exists(path)) << "a crash before fsync must not publish the file";
  EXPECT_TRUE(file_exists(path + ".tmp")) << "a crash does not clean up (the temp is what a restart finds)";
}

TEST_P(io_faults, eintr_and_short_transfers_are_invisible) {
  DS_SEED_TRACE();
  fault_options faults;
  faults.eintr_probability = 0.3;
  faults.short_probability = 0.5;
  auto e = engine_with(faults);
  std::string path = dir_.file("bumpy");
  byte_buffer data = random_bytes(rng_, 500 * kib + 3);
  status st = write_pieces(*e, path, data, {64 * kib, 10000});
  ASSERT_TRUE(st.ok()) << st.err().describe();
  chunked_reader_options opts;
  opts.chunk_bytes = 32 * kib;
  read_outcome out = read_files(*e, {{path, data.size()}}, opts, 3);
  ASSERT_TRUE(out.st.ok()) << out.st.err().describe();
  EXPECT_TRUE(out.contents[0] == data);
  EXPECT_GT(e->fault->faults_injected(), 0u);
}

TEST_P(io_faults, reader_fail_nth_operation_sweep) {
  DS_SEED_TRACE();
  std::vector<read_file_spec> specs;
  std::vector<byte_buffer> expect;
  for (int i = 0; i < 3; ++i) {
    expect.push_back(random_bytes(rng_, 100 * kib + static_cast<size_t>(i) * 7000));
    specs.push_back({dir_.file("in" + std::to_string(i)), expect.back().size()});
    spit(specs.back().path, expect.back());
  }
  chunked_reader_options opts;
  opts.chunk_bytes = 32 * kib;
  opts.read_workers = 4;
  uint64_t total_ops = 0;
  {
    auto e = engine_with({});
    ASSERT_TRUE(read_files(*e, specs, opts).st.ok());
    total_ops = e->fault->raw_ops();
  }
  for (uint64_t n = 0; n <= total_ops; ++n) {
    SCOPED_TRACE("fail_nth=" + std::to_string(n));
    fault_options faults;
    faults.fail_nth = static_cast<int64_t>(n);
    auto e = engine_with(faults);
    read_outcome out = read_files(*e, specs, opts, 2);
    EXPECT_EQ(out.pieces_after_done, 0u);
    EXPECT_TRUE(out.in_order);
    // A failed close is logged, not fatal: the data was already delivered whole.
    bool failed_close = n < total_ops && out.st.ok();
    if (n < total_ops && !failed_close) {
      ASSERT_FALSE(out.st.ok());
      EXPECT_TRUE(out.st.err().is(errc::io_error)) << out.st.err().describe();
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      // Whatever was delivered is a correct prefix.
      ASSERT_LE(out.contents[i].size(), expect[i].size());
      EXPECT_TRUE(std::equal(out.contents[i].begin(), out.contents[i].end(), expect[i].begin()));
      if (out.st.ok()) {
        EXPECT_EQ(out.contents[i].size(), expect[i].size());
      }
    }
    EXPECT_EQ(e->pool->available(), e->pool->buffer_count());
  }
}

// The reader picks buffered or O_DIRECT per file from its page-cache share: a file in the cache is read
// buffered (from memory), one evicted from it with O_DIRECT.
TEST_P(io_faults, reader_reads_a_cached_file_buffered_and_an_evicted_one_direct) {
  DS_SEED_TRACE();
  const std::string hot = dir_.file("hot"), cold = dir_.file("cold");
  const byte_buffer data = random_bytes(rng_, 512 * kib);
  spit(hot, data);
  spit(cold, data);
  {
    const int fd = ::open(cold.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  std::map<std::string, int> first_open_flags;
  fault_options faults;
  faults.observe = [&](const io_op& op) {
    if (op.code == op_code::open && !first_open_flags.count(op.path)) first_open_flags[op.path] = op.flags;
  };
  auto e = engine_with(faults);
  chunked_reader_options opts;
  opts.chunk_bytes = 64 * kib;
  read_outcome out = read_files(*e, {{hot, data.size()}, {cold, data.size()}}, opts);
  ASSERT_TRUE(out.st.ok()) << out.st.err().describe();
  EXPECT_TRUE(out.contents[0] == data && out.contents[1] == data);
  ASSERT_EQ(first_open_flags.size(), 2u);
  EXPECT_EQ(first_open_flags[hot] & O_DIRECT, 0) << "a file in the page cache is read buffered";
  if (page_cache_share(cold) >= 0.5) GTEST_SKIP() << "this filesystem keeps the evicted file cached (tmpfs?)";
  EXPECT_NE(first_open_flags[cold] & O_DIRECT, 0) << "a file not in the page cache is read with O_DIRECT";
}

INSTANTIATE_TEST_SUITE_P(backends, io_faults, ::testing::Values(backend_kind::fault_threads, backend_kind::fault_uring),
                         [](const auto& p) { return std::string(backend_kind_name(p.param)); });

}  // namespace
}  // namespace deltasync::io::testing
