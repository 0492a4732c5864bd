// The I/O conformance suite: the same properties checked against every backend (threads, io_uring) and
// against the fault-injecting decorator over each (random EINTR and short transfers, which must be
// invisible to callers). Random schedules are seeded; the seed is printed and DS_TEST_SEED replays it.
#include <fcntl.h>

#include <future>

#include <gtest/gtest.h>

#include "io/test_util.h"

namespace deltasync::io::testing {
namespace {

constexpr size_t kib = 1024;
constexpr size_t mib = 1024 * 1024;

class io_conformance : public ::testing::TestWithParam<backend_kind> {
 protected:
  void SetUp() override {
    seed_ = test_seed();
    rng_.seed(seed_);
    fault_options faults;
    faults.seed = seed_;
    faults.eintr_probability = 0.1;
    faults.short_probability = 0.3;
    std::string reason;
    e_ = make_engine(GetParam(), faults, 256 * kib, 4 * mib, &reason);
    if (e_ == nullptr) GTEST_SKIP() << reason;
  }
  void TearDown() override { e_.reset(); }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  temp_dir dir_;
  std::unique_ptr<engine> e_;
};

#define DS_SEED_TRACE() SCOPED_TRACE("seed=" + std::to_string(seed_) + " (replay: DS_TEST_SEED=" + \
                                     std::to_string(seed_) + ")")

// Runs one raw io_op on the loop and returns its result.
int64_t run_op(engine& e, io_op& op) {
  std::promise<int64_t> done;
  e.loop->post([&] {
    op.on_complete = [&](io_op& o) { done.set_value(o.result()); };
    e.backend().submit(op);
  });
  return done.get_future().get();
}

TEST_P(io_conformance, raw_operations_round_trip) {
  DS_SEED_TRACE();
  std::string a = dir_.file("a"), b = dir_.file("b");
  io_op op;
  op.prep_open(a, O_RDWR | O_CREAT | O_TRUNC, 0644);
  int64_t fd = run_op(*e_, op);
  ASSERT_GE(fd, 0) << std::strerror(static_cast<int>(-fd));
  byte_buffer data = random_bytes(rng_, 100 * kib + 17);
  op.prep_write(static_cast<int>(fd), data.data(), data.size(), 0);
  EXPECT_EQ(run_op(*e_, op), static_cast<int64_t>(data.size()));
  op.prep_fsync(static_cast<int>(fd), true);
  EXPECT_EQ(run_op(*e_, op), 0);
  byte_buffer back(data.size() + 100);
  op.prep_read(static_cast<int>(fd), back.data(), back.size(), 0);
  EXPECT_EQ(run_op(*e_, op), static_cast<int64_t>(data.size())) << "a read past EOF returns what exists";
  back.resize(data.size());
  EXPECT_EQ(back, data);
  op.prep_ftruncate(static_cast<int>(fd), 10);
  EXPECT_EQ(run_op(*e_, op), 0);
  op.prep_close(static_cast<int>(fd));
  EXPECT_EQ(run_op(*e_, op), 0);
  op.prep_rename(a, b);
  EXPECT_EQ(run_op(*e_, op), 0);
  EXPECT_FALSE(file_exists(a));
  EXPECT_EQ(slurp(b)->size(), 10u);
  op.prep_unlink(b);
  EXPECT_EQ(run_op(*e_, op), 0);
  op.prep_open(dir_.file("missing"), O_RDONLY);
  EXPECT_EQ(run_op(*e_, op), -ENOENT);
  op.prep_read(-1, back.data(), 10, 0);
  EXPECT_EQ(run_op(*e_, op), -EBADF);
}

TEST_P(io_conformance, writer_round_trips_every_shape) {
  DS_SEED_TRACE();
  // Sizes around the alignment edges, and piece patterns that are aligned, unaligned at the end only,
  // and unaligned in the middle (forcing the buffered second fd).
  std::vector<size_t> sizes = {0, 1, 4095, 4096, 4097, 256 * kib, 3 * mib + 123, 1 * mib};
  std::vector<std::vector<size_t>> patterns = {{256 * kib}, {4096, 8192}, {1000}, {64 * kib + 1, 128 * kib}};
  for (size_t i = 0; i < 6; ++i) sizes.push_back(static_cast<size_t>(rng_() % (2 * mib)));
  int n = 0;
  for (size_t size : sizes) {
    for (const auto& pattern : patterns) {
      SCOPED_TRACE("size=" + std::to_string(size) + " piece=" + std::to_string(pattern[0]));
      std::string path = dir_.file("w" + std::to_string(n++));
      byte_buffer data = random_bytes(rng_, size);
      status st = write_pieces(*e_, path, data, pattern);
      ASSERT_TRUE(st.ok()) << st.err().describe();
      auto back = slurp(path);
      ASSERT_TRUE(back.has_value());
      EXPECT_EQ(back->size(), data.size());
      EXPECT_TRUE(*back == data);
      EXPECT_FALSE(file_exists(path + ".tmp"));
      EXPECT_EQ(e_->pool->available(), e_->pool->buffer_count()) << "every buffer returned";
    }
  }
}

TEST_P(io_conformance, reader_delivers_every_file_in_order) {
  DS_SEED_TRACE();
  for (int round = 0; round < 6; ++round) {
    size_t files = 1 + rng_() % 5;
    std::vector<read_file_spec> specs;
    std::vector<byte_buffer> expect;
    for (size_t i = 0; i < files; ++i) {
      size_t size = rng_() % 4 == 0 ? rng_() % 5000 : static_cast<size_t>(rng_() % (3 * mib));
      expect.push_back(random_bytes(rng_, size));
      std::string path = dir_.file("r" + std::to_string(round) + "_" + std::to_string(i));
      spit(path, expect.back());
      specs.push_back({path, rng_() % 2 ? std::optional<uint64_t>(size) : std::nullopt});
    }
    chunked_reader_options opts;
    size_t chunks[] = {4096, 64 * kib, 256 * kib, 100000};
    opts.chunk_bytes = chunks[rng_() % 4];
    opts.read_workers = 1 + rng_() % 12;
    opts.max_open_files = 1 + rng_() % 3;
    size_t hold = rng_() % 8;  // pool has 16 buffers
    SCOPED_TRACE("round=" + std::to_string(round) + " chunk=" + std::to_string(opts.chunk_bytes) +
                 " workers=" + std::to_string(opts.read_workers) + " hold=" + std::to_string(hold));
    read_outcome out = read_files(*e_, specs, opts, hold);
    ASSERT_TRUE(out.st.ok()) << out.st.err().describe();
    EXPECT_TRUE(out.in_order);
    EXPECT_EQ(out.pieces_after_done, 0u);
    for (size_t i = 0; i < files; ++i) EXPECT_TRUE(out.contents[i] == expect[i]) << "file " << i;
    EXPECT_EQ(e_->pool->available(), e_->pool->buffer_count());
  }
}

TEST_P(io_conformance, reader_reports_missing_and_wrong_size_files) {
  DS_SEED_TRACE();
  byte_buffer data = random_bytes(rng_, 300 * kib);
  spit(dir_.file("ok"), data);
  chunked_reader_options opts;
  opts.chunk_bytes = 64 * kib;
  read_outcome missing = read_files(*e_, {{dir_.file("ok"), std::nullopt}, {dir_.file("nope"), std::nullopt}}, opts);
  ASSERT_FALSE(missing.st.ok());
  EXPECT_TRUE(missing.st.err().is(errc::not_found)) << missing.st.err().describe();
  EXPECT_NE(missing.st.err().message.find(dir_.file("nope")), std::string::npos);
  EXPECT_EQ(missing.pieces_after_done, 0u);

  read_outcome wrong = read_files(*e_, {{dir_.file("ok"), uint64_t{400 * kib}}}, opts);
  ASSERT_FALSE(wrong.st.ok());
  EXPECT_TRUE(wrong.st.err().is(errc::io_error)) << wrong.st.err().describe();
  EXPECT_NE(wrong.st.err().message.find("expected 409600"), std::string::npos) << wrong.st.err().message;
  EXPECT_EQ(e_->pool->available(), e_->pool->buffer_count());
}

TEST_P(io_conformance, reader_cancel_stops_delivery) {
  DS_SEED_TRACE();
  byte_buffer data = random_bytes(rng_, 3 * mib);
  spit(dir_.file("big"), data);
  chunked_reader_options opts;
  opts.chunk_bytes = 64 * kib;
  opts.read_workers = 4;
  std::unique_ptr<chunked_reader> reader;
  std::promise<status> done;
  size_t pieces = 0, after = 0;
  bool finished = false;
  e_->loop->post([&] {
    reader = std::make_unique<chunked_reader>(e_->backend(), *e_->pool,
                                              std::vector<read_file_spec>{{dir_.file("big"), std::nullopt}}, opts);
    reader->start(
        [&](read_piece) {
          if (finished) ++after;
          if (++pieces == 3) reader->cancel();
        },
        [&](status st) {
          finished = true;
          done.set_value(std::move(st));
        });
  });
  status st = done.get_future().get();
  e_->loop->run_sync([&] { reader.reset(); });
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::cancelled));
  EXPECT_EQ(pieces, 3u);
  EXPECT_EQ(after, 0u);
  EXPECT_EQ(e_->pool->available(), e_->pool->buffer_count());
}

TEST_P(io_conformance, writer_abort_publishes_nothing) {
  DS_SEED_TRACE();
  std::string path = dir_.file("aborted");
  std::unique_ptr<atomic_file_writer> writer;
  std::promise<void> done;
  e_->loop->post([&] {
    writer = std::make_unique<atomic_file_writer>(e_->backend(), path);
    buffer_handle buf = e_->pool->try_acquire();
    std::memset(buf.data(), 7, buf.size());
    (void)writer->append(std::move(buf), 8192);
    writer->start_abort([&] { done.set_value(); });
  });
  done.get_future().wait();
  e_->loop->run_sync([&] { writer.reset(); });
  EXPECT_FALSE(file_exists(path));
  EXPECT_FALSE(file_exists(path + ".tmp"));
}

INSTANTIATE_TEST_SUITE_P(backends, io_conformance,
                         ::testing::Values(backend_kind::threads, backend_kind::uring, backend_kind::fault_threads,
                                           backend_kind::fault_uring),
                         [](const auto& p) { return std::string(backend_kind_name(p.param)); });

}  // namespace
}  // namespace deltasync::io::testing
