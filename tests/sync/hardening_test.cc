// Issue 18's refusals below the HTTP layer: one file listed twice (400 before anything is opened), an absolute
// SGLang model_path compared in canonical form, running out of file descriptors (503 naming the limit), and
// the per-sync memory budget (zstd bombs and the undo log refused with 413, the store bit-identical).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <random>

#include "codec/delta_format.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "io/worker_pool.h"
#include "sync/receiver.h"
#include "sync/sync_request.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const char* tag) {
  fs::path p = fs::temp_directory_path() / (std::string(tag) + std::to_string(::getpid()) + "-" +
                                            std::to_string(std::random_device{}()));
  fs::create_directories(p);
  return p;
}

TEST(SyncRequestHardening, AFileListedTwiceIsRefusedBeforeAnythingIsRead) {
  auto r = parse_sync_request(R"({"version": 1, "dir": "weight_v000001", "files": ["a", "b", "a"]})");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::bad_request)) << r.err().describe();
  EXPECT_EQ(http_status_for(r.err()), 400u);
  EXPECT_NE(r.err().message.find("'a' twice"), std::string::npos) << r.err().message;
  auto s = parse_sglang_request(
      R"({"model_path": "weight_v000001", "load_format": "delta", "weight_version": "1", "files": ["x", "x"]})", "/d");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::bad_request)) << s.err().describe();
  EXPECT_TRUE(parse_sync_request(R"({"version": 1, "dir": "v", "files": ["a", "b", "c"]})").ok());
}

TEST(SyncRequestHardening, AnAbsoluteModelPathIsComparedWithTheCanonicalDeltaDir) {
  const fs::path root = temp_dir("ds-canon-");
  fs::create_directories(root / "real" / "deltas" / "weight_v000001");
  fs::create_directory_symlink(root / "real", root / "link");
  // serve resolves the delta dir once (here given through a symlinked parent); the trainer names the version
  // dir by another path to the same place.
  const std::string delta = fs::weakly_canonical(root / "link" / "deltas").string();
  for (const fs::path& model : {root / "link" / "deltas" / "weight_v000001", root / "real" / "deltas" / "weight_v000001",
                                root / "real" / "deltas" / "." / "weight_v000001" / ""}) {
    const std::string body = R"({"model_path": ")" + model.string() +
                             R"(", "load_format": "delta", "weight_version": "1", "files": ["a"]})";
    auto r = parse_sglang_request(body, delta);
    ASSERT_TRUE(r.ok()) << model << ": " << r.err().describe();
    EXPECT_EQ(r->dir, "weight_v000001") << model;
  }
  const std::string outside = R"({"model_path": ")" + (root / "real").string() +
                              R"(", "load_format": "delta", "weight_version": "1", "files": ["a"]})";
  auto bad = parse_sglang_request(outside, delta);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.err().is(errc::forbidden_path));
  fs::remove_all(root);
}

TEST(SyncRequestHardening, RunningOutOfFileDescriptorsIs503NamingTheLimitToRaise) {
  const fs::path root = temp_dir("ds-emfile-");
  fs::create_directories(root / "weight_v000001");
  sync_request req;
  req.version = 1;
  req.dir = "weight_v000001";
  for (int i = 0; i < 64; ++i) {
    req.files.push_back("f" + std::to_string(i));
    std::ofstream(root / "weight_v000001" / req.files.back()) << "x";
  }
  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  size_t open_fds = 0;
  for (auto it = fs::directory_iterator("/proc/self/fd"); it != fs::directory_iterator(); ++it) ++open_fds;
  struct rlimit low = saved;
  low.rlim_cur = open_fds + 8;  // room for a few of the 64 files only
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  auto r = open_sync_files(root.string(), req);
  ::setrlimit(RLIMIT_NOFILE, &saved);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::too_many_open_files)) << r.err().describe();
  EXPECT_EQ(http_status_for(r.err()), 503u);
  const std::string d = r.err().describe();
  EXPECT_NE(d.find("RLIMIT_NOFILE"), std::string::npos) << d;
  EXPECT_NE(d.find(std::to_string(open_fds + 8)), std::string::npos) << "names the current limit: " << d;
  EXPECT_EQ(d.find("Too many open files"), d.rfind("Too many open files")) << "said once: " << d;
  fs::remove_all(root);
}

// A real zstd bomb: RLE blocks of 128 KiB of zeros, `content` bytes, declared honestly.
byte_buffer zstd_bomb(uint64_t content) {
  byte_buffer f = {std::byte{0x28}, std::byte{0xB5}, std::byte{0x2F}, std::byte{0xFD}, std::byte{0xC0}, std::byte{7 << 3}};
  for (int k = 0; k < 8; ++k) f.push_back(std::byte{static_cast<unsigned char>(content >> (8 * k))});
  for (uint64_t left = content; left > 0;) {
    const uint64_t n = std::min<uint64_t>(left, 128 << 10);
    left -= n;
    const uint32_t h = (left == 0 ? 1u : 0u) | 2u | static_cast<uint32_t>(n << 3);
    for (int k = 0; k < 3; ++k) f.push_back(std::byte{static_cast<unsigned char>(h >> (8 * k))});
    f.push_back(std::byte{0});
  }
  return f;
}

struct budget_fixture {
  fs::path dir = temp_dir("ds-budget-");
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<host_weight_store> store;
  std::unique_ptr<receiver> rx;

  explicit budget_fixture(uint64_t budget_bytes) {
    io::io_backend_options bo;
    bo.backend = "threads";
    backend = std::move(io::make_io_backend(loop, bo)).value();
    io::buffer_pool_options po;
    po.buffer_bytes = 64 << 10;
    po.max_total_bytes = 1 << 20;
    po.lock_memory = false;
    pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
    workers = std::make_unique<io::worker_pool>(loop, 2, 64);
    std::vector<std::pair<store_tensor, byte_buffer>> t;
    std::mt19937_64 rng(11);
    for (int i = 0; i < 2; ++i) {
      byte_buffer b(2 * 100000);
      for (auto& x : b) x = std::byte(rng() & 0xFF);
      t.push_back({store_tensor{"w" + std::to_string(i), dtype::BF16, {100, 1000}, 100000, 200000}, b});
    }
    store = host_weight_store::from_tensors(std::move(t));
    receiver_options ro;
    ro.delta_dir = dir.string();
    ro.chunk_bytes = 64 << 10;
    ro.max_sync_memory_bytes = budget_bytes;
    rx = std::make_unique<receiver>(loop, *backend, *pool, *workers, *store, ro, nullptr);
    fs::create_directories(dir / "weight_v000001");
  }
  ~budget_fixture() {
    rx.reset();
    workers.reset();
    pool.reset();
    backend.reset();
    fs::remove_all(dir);
  }
  void put(const std::string& name, const byte_buffer& bytes) {
    ASSERT_TRUE(io::write_file_atomic((dir / "weight_v000001" / name).string(), bytes).ok());
  }
  // A slime `deltas` file changing every other element of tensor t.
  byte_buffer delta(size_t t) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    for (uint32_t k = 0; k < 50000; ++k) {
      pos.push_back(2 * k);
      vals.push_back(std::byte(0x22));
      vals.push_back(std::byte(0x40));
    }
    delta_bucket_builder b(encoding::deltas);
    b.add({"w" + std::to_string(t), dtype::BF16, {100, 1000}, pos, vals});
    return std::move(b.finish(1)).value();
  }
  result<sync_stats> sync(std::vector<std::string> files) {
    sync_request req;
    req.version = 1;
    req.base_version = 0;
    req.dir = "weight_v000001";
    req.files = std::move(files);
    std::promise<result<sync_stats>> p;
    loop.post([&] { rx->start_sync(req, [&](result<sync_stats> r) { p.set_value(std::move(r)); }); });
    return p.get_future().get();
  }
  std::vector<byte_buffer> snapshot() {
    std::vector<byte_buffer> out;
    for (size_t i = 0; i < store->size(); ++i) out.emplace_back(store->data(i).begin(), store->data(i).end());
    return out;
  }
};

void expect_budget_refusal(const result<sync_stats>& r) {
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::limit_exceeded)) << r.err().describe();
  EXPECT_EQ(http_status_for(r.err()), 413u);
  EXPECT_NE(r.err().message.find("max-sync-memory-bytes"), std::string::npos) << r.err().message;
}

TEST(SyncMemoryBudget, ZstdBombsAreRefusedAtTheBudgetAndTheStoreIsUnchanged) {
  budget_fixture f(32ull << 20);
  f.put("bomb0.safetensors", zstd_bomb(1ull << 30));
  f.put("bomb1.safetensors", zstd_bomb(1ull << 30));
  const auto before = f.snapshot();
  expect_budget_refusal(f.sync({"bomb0.safetensors"}));
  expect_budget_refusal(f.sync({"bomb0.safetensors", "bomb1.safetensors"}));
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->version(), 0u);
}

TEST(SyncMemoryBudget, TheUndoLogCountsAndASyncThatFitsCommits) {
  const byte_buffer a = [] { budget_fixture tmp(1); return tmp.delta(0); }();
  {
    // Room for the read buffer but not for the read buffer plus its undo log (about as large again).
    budget_fixture f(a.size() + a.size() / 2);
    f.put("a.safetensors", a);
    const auto before = f.snapshot();
    expect_budget_refusal(f.sync({"a.safetensors"}));
    EXPECT_EQ(f.snapshot(), before);
  }
  {
    budget_fixture f(4 * a.size());
    f.put("a.safetensors", a);
    f.put("b.safetensors", f.delta(1));
    auto r = f.sync({"a.safetensors", "b.safetensors"});
    ASSERT_TRUE(r.ok()) << r.err().describe();
    EXPECT_EQ(f.store->version(), 1u);
  }
}

}  // namespace
}  // namespace deltasync
