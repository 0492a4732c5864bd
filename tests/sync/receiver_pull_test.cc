// The receiver's pull path ("transport": "http") with an in-memory remote_file_opener: a pull commits like a
// disk sync; an opener error, or a source that fails after delivering a whole file, leaves the store
// bit-identical with the error's code; without an opener the transport is refused.
#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <random>

#include "codec/delta_format.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/worker_pool.h"
#include "sync/file_source.h"
#include "sync/receiver.h"

namespace deltasync {
namespace {

// Serves `files` from memory in pieces of the pool's buffer size; fails with `fail_with` once
// `fail_after_files` files were delivered whole (when set).
class memory_source final : public file_source {
 public:
  memory_source(io::event_loop& loop, io::buffer_pool& pool, std::vector<byte_buffer> files,
                std::optional<size_t> fail_after_files, error fail_with)
      : loop_(loop), pool_(pool), files_(std::move(files)), fail_after_(fail_after_files), fail_with_(std::move(fail_with)) {}
  void start(std::function<void(io::read_piece)> on_piece, std::function<void(status)> on_done) override {
    loop_.post([this, on_piece, on_done] {
      for (size_t f = 0; f < files_.size(); ++f) {
        if (fail_after_ && f == *fail_after_) return on_done(fail_with_);
        const byte_buffer& b = files_[f];
        for (size_t off = 0; off < b.size(); off += pool_.buffer_bytes()) {
          io::read_piece p;
          p.file_index = f;
          p.offset = off;
          p.buffer = pool_.try_acquire();
          ASSERT_TRUE(p.buffer) << "test pool too small";
          const size_t n = std::min(pool_.buffer_bytes(), b.size() - off);
          std::memcpy(p.buffer.data(), b.data() + off, n);
          p.bytes = byte_span(p.buffer.data(), n);
          p.last_in_file = off + n == b.size();
          on_piece(std::move(p));
        }
      }
      on_done({});
    });
  }
  void cancel() override {}

 private:
  io::event_loop& loop_;
  io::buffer_pool& pool_;
  std::vector<byte_buffer> files_;
  std::optional<size_t> fail_after_;
  error fail_with_;
};

class memory_opener final : public remote_file_opener {
 public:
  memory_opener(io::event_loop& loop) : loop_(loop) {}
  void open(const remote_fetch& what, io::buffer_pool& pool, std::function<void(result<remote_files>)> done) override {
    last_base_url = what.base_url;
    if (open_error) return loop_.post([done, e = *open_error] { done(e); });
    remote_files out;
    for (size_t i = 0; i < files.size(); ++i) {
      out.sizes.push_back(files[i].size());
      out.urls.push_back(what.base_url + "/" + what.dir + "/" + what.files[i]);
    }
    out.source = std::make_unique<memory_source>(loop_, pool, files, fail_after, error(errc::upstream_error, "injected"));
    loop_.post([done, out = std::make_shared<remote_files>(std::move(out))] { done(std::move(*out)); });
  }
  std::vector<byte_buffer> files;
  std::optional<error> open_error;
  std::optional<size_t> fail_after;
  std::string last_base_url;

 private:
  io::event_loop& loop_;
};

struct pull_fixture {
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<host_weight_store> store;
  std::unique_ptr<receiver> rx;
  memory_opener opener{loop};

  pull_fixture() {
    io::io_backend_options bo;
    bo.backend = "threads";
    backend = std::move(io::make_io_backend(loop, bo)).value();
    io::buffer_pool_options po;
    po.buffer_bytes = 4096;
    po.max_total_bytes = 4 << 20;
    po.lock_memory = false;
    pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
    workers = std::make_unique<io::worker_pool>(loop, 2, 64);
    std::vector<std::pair<store_tensor, byte_buffer>> t;
    std::mt19937_64 rng(9);
    for (int i = 0; i < 2; ++i) {
      byte_buffer b(2 * 5000);
      for (auto& x : b) x = std::byte(rng() & 0xFF);
      t.push_back({store_tensor{"w" + std::to_string(i), dtype::BF16, {50, 100}, 5000, 10000}, b});
    }
    store = host_weight_store::from_tensors(std::move(t));
    receiver_options ro;
    ro.delta_dir = "/nonexistent-delta-dir";  // a pull never touches it
    rx = std::make_unique<receiver>(loop, *backend, *pool, *workers, *store, ro, nullptr);
  }
  ~pull_fixture() {
    rx.reset();
    workers.reset();
    pool.reset();
    backend.reset();
  }

  byte_buffer delta(size_t tensor, uint32_t count) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    for (uint32_t k = 0; k < count; ++k) {
      pos.push_back(k);
      vals.push_back(std::byte(0x22));
      vals.push_back(std::byte(0x40));
    }
    delta_bucket_builder b(encoding::deltas);
    b.add({"w" + std::to_string(tensor), dtype::BF16, {50, 100}, pos, vals});
    return std::move(b.finish(1)).value();
  }

  result<sync_stats> pull() {
    sync_request r;
    r.version = 1;
    r.base_version = 0;
    r.transport = "http";
    r.base_url = "http://sender:8080";
    r.dir = "weight_v000001";
    r.files = {"a.safetensors", "b.safetensors"};
    std::promise<result<sync_stats>> p;
    loop.post([&] { rx->start_sync(r, [&](result<sync_stats> s) { p.set_value(std::move(s)); }); });
    return p.get_future().get();
  }

  std::vector<byte_buffer> snapshot() {
    std::vector<byte_buffer> out;
    for (size_t i = 0; i < store->size(); ++i) out.emplace_back(store->data(i).begin(), store->data(i).end());
    return out;
  }
  bool busy() {
    bool b = true;
    loop.run_sync([&] { b = rx->busy(); });
    return b;
  }
};

TEST(ReceiverPull, CommitsFromTheRemoteSource) {
  pull_fixture f;
  f.rx->set_remote_opener(&f.opener);
  f.opener.files = {f.delta(0, 3000), f.delta(1, 10)};  // the first spans several 4 KiB pieces
  auto r = f.pull();
  ASSERT_TRUE(r.ok()) << r.err().describe();
  EXPECT_EQ(r->changed_elements, 3010u);
  EXPECT_EQ(r->bytes_read, f.opener.files[0].size() + f.opener.files[1].size());
  EXPECT_EQ(f.opener.last_base_url, "http://sender:8080");
  EXPECT_EQ(f.store->version(), 1u);
  EXPECT_EQ(load_le<uint16_t>(f.store->data(0).data() + 2 * 2), 0x4022);
}

TEST(ReceiverPull, AFailureAfterTheFirstFileLeavesTheStoreUnchanged) {
  pull_fixture f;
  f.rx->set_remote_opener(&f.opener);
  f.opener.files = {f.delta(0, 3000), f.delta(1, 10)};
  f.opener.fail_after = 1;
  auto before = f.snapshot();
  auto r = f.pull();
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::upstream_error)) << r.err().describe();
  EXPECT_EQ(http_status_for(r.err()), 502u);
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->version(), 0u);
  EXPECT_FALSE(f.busy());
}

TEST(ReceiverPull, OpenErrorsAndMissingTransportAreRefused) {
  pull_fixture f;
  auto before = f.snapshot();
  auto no_opener = f.pull();
  ASSERT_FALSE(no_opener.ok());
  EXPECT_EQ(http_status_for(no_opener.err()), 400u);
  f.rx->set_remote_opener(&f.opener);
  f.opener.open_error = error(errc::not_found, "http://sender:8080/weight_v000001/a.safetensors: 404");
  auto missing = f.pull();
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(http_status_for(missing.err()), 404u);
  EXPECT_FALSE(f.busy());
  EXPECT_EQ(f.snapshot(), before);
  // The receiver is usable again: the same sync now succeeds.
  f.opener.open_error.reset();
  f.opener.files = {f.delta(0, 5), f.delta(1, 5)};
  auto ok = f.pull();
  ASSERT_TRUE(ok.ok()) << ok.err().describe();
}

}  // namespace
}  // namespace deltasync
