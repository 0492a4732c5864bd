// The receiver against files that change under it, driven through the fault-injecting I/O decorator so that
// the change lands between two reads of the same file deterministically (a shell test cannot time that).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <random>

#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/fault_backend.h"
#include "io/io_backend.h"
#include "io/worker_pool.h"
#include "sync/receiver.h"
#include "sync/sender.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kNumel = 200'000;

TEST(ReceiverFaults, AFileChangedWhileBeingReadIsRefusedAndTheStoreIsUnchanged) {
  const fs::path dir = fs::temp_directory_path() / ("ds-rxfault-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::mt19937_64 rng(5);
  byte_buffer base(kNumel * 2), next;
  for (auto& b : base) b = std::byte(rng() & 0xFF);
  next = base;
  for (size_t i = 0; i < next.size(); i += 2)
    if (rng() % 20 == 0) next[i] ^= std::byte{0x33};

  // One native file of about 40 KiB: ten 4 KiB reads.
  sender_options so;
  so.delta_dir = dir.string();
  sender s(so, nullptr);
  ASSERT_TRUE(s.seed("w", {base.data(), dtype::BF16, {kNumel}}).ok());
  ASSERT_TRUE(s.begin(1).ok());
  ASSERT_TRUE(s.add("w", {next.data(), dtype::BF16, {kNumel}}).ok());
  auto rep = s.finish();
  ASSERT_TRUE(rep.ok()) << rep.err().describe();
  ASSERT_EQ(rep->files.size(), 1u);
  const fs::path file = dir / "weight_v000001" / rep->files[0];
  const uint64_t size = fs::file_size(file);
  ASSERT_GT(size, 5u * 4096);

  io::event_loop loop;
  io::io_backend_options bo;
  bo.backend = "threads";
  auto inner = std::move(io::make_io_backend(loop, bo)).value();
  io::fault_options fo;
  int reads = 0;
  // On the second read of the file, rewrite one byte near its end: the reader has delivered the first piece
  // already and will read the changed one later.
  fo.observe = [&](const io::io_op& op) {
    if (op.code != io::op_code::read || ++reads != 2) return;
    const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::byte b{0};
    ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(size - 3)), 1);
    b ^= std::byte{0x5A};
    ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(size - 3)), 1);
    ::close(fd);
  };
  auto backend = std::make_unique<io::fault_backend>(*inner, fo);
  io::buffer_pool_options po;
  po.buffer_bytes = 4096;
  po.max_total_bytes = 64 << 10;
  po.lock_memory = false;
  auto pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
  auto workers = std::make_unique<io::worker_pool>(loop, 2, 64);
  auto store = host_weight_store::from_tensors({{store_tensor{"w", dtype::BF16, {kNumel}, kNumel, kNumel * 2}, base}});
  receiver_options ro;
  ro.delta_dir = dir.string();
  ro.chunk_bytes = 4096;
  ro.read_workers = 1;
  auto rx = std::make_unique<receiver>(loop, *backend, *pool, *workers, *store, ro, nullptr);

  sync_request req;
  req.version = 1;
  req.base_version = 0;
  req.dir = "weight_v000001";
  req.files = rep->files;
  std::promise<result<sync_stats>> p;
  loop.post([&] { rx->start_sync(req, [&](result<sync_stats> r) { p.set_value(std::move(r)); }); });
  auto r = p.get_future().get();
  EXPECT_GE(reads, 5) << "the file should have been read in several pieces";
  ASSERT_FALSE(r.ok()) << "a file changed mid-read must not apply";
  EXPECT_TRUE(r.err().is(errc::delta_payload_hash_mismatch)) << r.err().describe();
  EXPECT_EQ(http_status_for(r.err()), 422u);
  EXPECT_EQ(store->version(), 0u);
  EXPECT_TRUE(std::equal(store->data(0).begin(), store->data(0).end(), base.begin()));

  rx.reset();
  workers.reset();
  pool.reset();
  backend.reset();
  inner.reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace deltasync
