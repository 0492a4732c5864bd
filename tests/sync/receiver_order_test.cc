// The receiver's apply order and its streaming inside a file:
// * two files of one sync changing the same element: the later-listed file's value wins, whatever order the
//   files' bytes arrive in (a source that delivers the last file first makes a completion-order apply fail);
// * a plain file read in many pieces is applied param by param while it arrives (stats.streamed_files), with
//   the same result as the whole-file path, and a bad streamed file is refused for the same reason as a whole
//   one, the store rolled back to its exact bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <random>

#include "codec/delta_format.h"
#include "codec/tensor_hash.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "io/worker_pool.h"
#include "sync/piece_source.h"
#include "sync/receiver.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kRows = 100, kCols = 200, kNumel = kRows * kCols;

// A pushed transport whose files are in memory and arrive in `order` (file indices), one piece per turn of
// the loop. Delivering a later file first is allowed by the pieces' per-file order, not by the cross-file
// issue order (piece_source.h); with the default assembly budget nothing is held, so this test may do it.
class memory_source final : public piece_source {
 public:
  memory_source(io::event_loop& loop, io::buffer_pool& pool, std::vector<byte_buffer> files, std::vector<size_t> order,
                size_t chunk)
      : loop_(loop), pool_(pool), files_(std::move(files)), order_(std::move(order)), chunk_(chunk) {}
  void start(std::function<void(io::read_piece)> on_piece, std::function<void(status)> on_done) override {
    on_piece_ = std::move(on_piece);
    on_done_ = std::move(on_done);
    loop_.post([this] { step(); });
  }
  void cancel() override { cancelled_ = true; }

 private:
  void step() {
    if (cancelled_ || at_ == order_.size()) {
      auto done = std::move(on_done_);
      return done(cancelled_ ? status(error(errc::cancelled, "cancelled")) : status{});
    }
    const size_t f = order_[at_];
    const byte_buffer& b = files_[f];
    io::read_piece p;
    p.file_index = f;
    p.offset = offset_;
    const size_t n = std::min<size_t>(chunk_, b.size() - offset_);
    p.buffer = pool_.try_acquire();
    EXPECT_TRUE(static_cast<bool>(p.buffer)) << "the receiver holds every pool buffer";
    std::memcpy(p.buffer.data(), b.data() + offset_, n);
    p.bytes = byte_span(p.buffer.data(), n);
    offset_ += n;
    p.last_in_file = offset_ == b.size();
    if (p.last_in_file) {
      ++at_;
      offset_ = 0;
    }
    on_piece_(std::move(p));
    loop_.post([this] { step(); });
  }

  io::event_loop& loop_;
  io::buffer_pool& pool_;
  std::vector<byte_buffer> files_;
  std::vector<size_t> order_;
  size_t chunk_;
  size_t at_ = 0;
  uint64_t offset_ = 0;
  bool cancelled_ = false;
  std::function<void(io::read_piece)> on_piece_;
  std::function<void(status)> on_done_;
};

struct fixture {
  fs::path dir = fs::temp_directory_path() / ("ds-rxorder-" + std::to_string(::getpid()) + "-" +
                                              std::to_string(std::random_device{}()));
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<host_weight_store> store;
  std::unique_ptr<receiver> rx;
  std::vector<byte_buffer> pushed;  // the memory transport's files
  std::vector<size_t> push_order;

  explicit fixture(size_t chunk) {
    fs::create_directories(dir);
    io::io_backend_options bo;
    bo.backend = "threads";
    backend = std::move(io::make_io_backend(loop, bo)).value();
    io::buffer_pool_options po;
    po.buffer_bytes = std::max<size_t>(4096, chunk);
    po.max_total_bytes = std::max<size_t>(256 << 10, 4 * chunk);
    po.lock_memory = false;
    pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
    workers = std::make_unique<io::worker_pool>(loop, 2, 64);
    std::vector<std::pair<store_tensor, byte_buffer>> t;
    std::mt19937_64 rng(11);
    for (int i = 0; i < 4; ++i) {
      byte_buffer b(2 * kNumel);
      for (auto& x : b) x = std::byte(rng() & 0xFF);
      t.push_back({store_tensor{"w" + std::to_string(i), dtype::BF16, {kRows, kCols}, kNumel, 2 * kNumel}, b});
    }
    store = host_weight_store::from_tensors(std::move(t));
    receiver_options ro;
    ro.delta_dir = dir.string();
    ro.chunk_bytes = chunk;
    ro.read_workers = 4;
    rx = std::make_unique<receiver>(loop, *backend, *pool, *workers, *store, ro, nullptr);
    rx->set_transport("memory", [this](const sync_request&, io::buffer_pool& p) -> result<std::unique_ptr<piece_source>> {
      return std::unique_ptr<piece_source>(std::make_unique<memory_source>(loop, p, pushed, push_order, 4096));
    });
  }
  ~fixture() {
    rx.reset();
    workers.reset();
    pool.reset();
    backend.reset();
    fs::remove_all(dir);
  }

  std::vector<byte_buffer> snapshot() {
    std::vector<byte_buffer> out;
    for (size_t i = 0; i < store->size(); ++i) out.emplace_back(store->data(i).begin(), store->data(i).end());
    return out;
  }
  void put(uint64_t version, const std::string& name, const byte_buffer& bytes) {
    const fs::path vd = dir / ("weight_v" + std::string(6 - std::to_string(version).size(), '0') + std::to_string(version));
    fs::create_directories(vd);
    ASSERT_TRUE(io::write_file_atomic((vd / name).string(), bytes).ok());
  }
  result<sync_stats> sync(const sync_request& req) {
    std::promise<result<sync_stats>> p;
    loop.post([&] { rx->start_sync(req, [&](result<sync_stats> r) { p.set_value(std::move(r)); }); });
    return p.get_future().get();
  }
};

sync_request disk_req(uint64_t v, uint64_t base, std::vector<std::string> files) {
  sync_request r;
  r.version = v;
  r.base_version = base;
  r.dir = "weight_v" + std::string(6 - std::to_string(v).size(), '0') + std::to_string(v);
  r.files = std::move(files);
  return r;
}

// One param per tensor index in `tensors`: every third element from `first`, `count` of them, set to `value`.
byte_buffer make_file(encoding enc, uint64_t version, std::vector<size_t> tensors, uint32_t first, uint32_t count,
                      uint16_t value, const native_fields* native = nullptr) {
  delta_bucket_builder b(enc);
  std::vector<std::vector<uint32_t>> pos(tensors.size());
  std::vector<byte_buffer> vals(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) {
    for (uint32_t k = 0; k < count; ++k) {
      pos[t].push_back(first + 3 * k);
      vals[t].push_back(std::byte(value & 0xFF));
      vals[t].push_back(std::byte(value >> 8));
    }
    b.add({"w" + std::to_string(tensors[t]), dtype::BF16, {kRows, kCols}, pos[t], vals[t]});
  }
  return std::move(b.finish(version, 8, native)).value();
}

uint16_t element(const host_weight_store& s, size_t t, size_t i) { return load_le<uint16_t>(s.data(t).data() + 2 * i); }

TEST(ReceiverOrder, TheLaterListedFileWinsWhateverOrderTheBytesArriveIn) {
  for (const bool later_first : {true, false}) {
    fixture f(4096);
    // Both files change elements 30, 33, ... of w0; `a` a large file (read first when listed first), `b` small.
    f.pushed = {make_file(encoding::deltas, 1, {0, 1, 2}, 30, 3000, 0x1111),
                make_file(encoding::deltas, 1, {0}, 30, 10, 0x2222)};
    f.push_order = later_first ? std::vector<size_t>{1, 0} : std::vector<size_t>{0, 1};
    sync_request req = disk_req(1, 0, {"a.safetensors", "b.safetensors"});
    req.transport = "memory";
    req.sizes = {f.pushed[0].size(), f.pushed[1].size()};
    auto r = f.sync(req);
    ASSERT_TRUE(r.ok()) << r.err().describe();
    EXPECT_EQ(element(*f.store, 0, 30), 0x2222) << "b is listed last: its value must win (arrival "
                                                << (later_first ? "b first" : "a first") << ")";
    EXPECT_EQ(element(*f.store, 0, 30 + 3 * 9), 0x2222);
    EXPECT_EQ(element(*f.store, 0, 30 + 3 * 10), 0x1111);  // only a changes it
  }
}

TEST(ReceiverOrder, OnDiskTheListedOrderDecidesTooAndAReplayGivesTheSameBytes) {
  // The same two files listed both ways: each sync ends with its last file's value.
  for (const bool b_last : {true, false}) {
    fixture f(4096);
    f.put(1, "a.safetensors", make_file(encoding::indices, 1, {0, 1, 2, 3}, 7, 2000, 0x1111));
    f.put(1, "b.safetensors", make_file(encoding::indices, 1, {0}, 7, 5, 0x2222));
    auto r = f.sync(disk_req(1, 0, b_last ? std::vector<std::string>{"a.safetensors", "b.safetensors"}
                                          : std::vector<std::string>{"b.safetensors", "a.safetensors"}));
    ASSERT_TRUE(r.ok()) << r.err().describe();
    EXPECT_EQ(element(*f.store, 0, 7), b_last ? 0x2222 : 0x1111);
  }
}

TEST(ReceiverStreaming, AppliesAPlainFileWhileItArrivesWithTheWholePathsResult) {
  for (const encoding enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd}) {
    for (const int layout : {0, 1, 2}) {  // slime, deltasync-native/1, deltasync-native/2 (records)
      const bool native = layout > 0;
      // The expected bytes: the same file applied whole (read in one piece) by a second receiver.
      fixture whole(1 << 20), streamed(4096);
      native_fields nf;
      const native_fields* nfp = nullptr;
      if (native) {
        // Digests of the new tensors: apply once without digests in a scratch receiver to learn them.
        fixture scratch(1 << 20);
        scratch.put(1, "x.safetensors", make_file(enc, 1, {0, 2, 3}, 1, 1500, 0x3C3C));
        ASSERT_TRUE(scratch.sync(disk_req(1, 0, {"x.safetensors"})).ok());
        for (size_t t : {0, 2, 3}) nf.tensor_digests["w" + std::to_string(t)] = scratch.store->digest(t);
        nf.records = layout == 2;
        nfp = &nf;
      }
      const byte_buffer file = make_file(enc, 1, {0, 2, 3}, 1, 1500, 0x3C3C, nfp);
      if (enc != encoding::deltas_zstd) {
        ASSERT_GE(file.size() / 4096, 3u) << "the file must come in several pieces";
      }
      whole.put(1, "x.safetensors", file);
      streamed.put(1, "x.safetensors", file);
      auto w = whole.sync(disk_req(1, 0, {"x.safetensors"}));
      auto s = streamed.sync(disk_req(1, 0, {"x.safetensors"}));
      ASSERT_TRUE(w.ok()) << w.err().describe();
      ASSERT_TRUE(s.ok()) << s.err().describe();
      EXPECT_EQ(w->streamed_files, 0u);
      EXPECT_EQ(s->streamed_files, enc == encoding::deltas_zstd ? 0u : 1u) << encoding_name(enc);
      EXPECT_EQ(s->changed_elements, 4500u);
      EXPECT_EQ(streamed.snapshot(), whole.snapshot()) << encoding_name(enc) << " layout " << layout;
    }
  }
}

TEST(ReceiverStreaming, ABadStreamedFileIsRefusedForTheSameReasonAndRolledBack) {
  struct bad_case {
    const char* what;
    bool native;
    std::function<void(byte_buffer&)> corrupt;
    errc want;
  };
  auto value_byte = [](byte_buffer& b) { b[b.size() - 5] ^= std::byte{0x40}; };
  // A position byte near the start of __positions__ (after the header): the first param's position.
  auto position_byte = [](byte_buffer& b) {
    uint64_t hlen = 0;
    std::memcpy(&hlen, b.data(), 8);
    b[8 + hlen + 1] ^= std::byte{0x7F};
  };
  const std::vector<bad_case> cases = {
      {"slime value flipped", false, value_byte, errc::delta_checksum_mismatch},
      {"slime position flipped", false, position_byte, errc::delta_checksum_mismatch},
      {"native value flipped", true, value_byte, errc::delta_payload_hash_mismatch},
      {"native position flipped", true, position_byte, errc::delta_payload_hash_mismatch},
  };
  for (const bool records : {false, true})
  for (const auto& c : cases) {
    if (records && !c.native) continue;
    fixture f(4096);
    native_fields nf;
    nf.records = records;
    for (size_t t : {0, 1, 2}) nf.tensor_digests["w" + std::to_string(t)] = f.store->digest(t);  // not checked: refused first
    // A good first file (streamed and applied), then the bad one: both must be rolled back.
    f.put(1, "a.safetensors", make_file(encoding::indices, 1, {3}, 0, 3000, 0x5555));
    byte_buffer bad = make_file(encoding::indices, 1, {0, 1, 2}, 2, 2000, 0x7777, c.native ? &nf : nullptr);
    c.corrupt(bad);
    f.put(1, "b.safetensors", bad);
    const auto before = f.snapshot();
    auto r = f.sync(disk_req(1, 0, {"a.safetensors", "b.safetensors"}));
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_TRUE(r.err().is(c.want)) << c.what << ": " << r.err().describe();
    EXPECT_NE(r.err().message.find("b.safetensors"), std::string::npos) << r.err().describe();
    EXPECT_EQ(http_status_for(r.err()), 422u);
    EXPECT_EQ(f.snapshot(), before) << c.what;
    EXPECT_EQ(f.store->version(), 0u);
  }
}

TEST(ReceiverStreaming, AFileThatChangesAnElementOutOfRangeIsRefusedWithTheWholePathsError) {
  // A slime file with a valid checksum whose second param has a position past its tensor's end: the first
  // param is applied while the file streams in, the second fails, everything is rolled back.
  fixture f(4096);
  std::vector<uint32_t> p0, p1;
  byte_buffer v0, v1;
  for (uint32_t k = 0; k < 2000; ++k) {
    p0.push_back(k * 2);
    p1.push_back(k * 2);
    for (auto* v : {&v0, &v1}) {
      v->push_back(std::byte{0x01});
      v->push_back(std::byte{0x40});
    }
  }
  p1.back() = kNumel + 5;  // out of range
  byte_buffer positions;
  encoded_bucket eb;
  eb.enc = encoding::indices;
  eb.current_version = 1;
  for (size_t t = 0; t < 2; ++t) {
    const auto& p = t == 0 ? p0 : p1;
    param_entry e;
    e.name = "w" + std::to_string(t);
    e.shape = {kRows, kCols};
    e.pos_start = positions.size();
    for (uint32_t x : p)
      for (int s = 0; s < 4; ++s) positions.push_back(std::byte((x >> (8 * s)) & 0xFF));
    e.pos_end = positions.size();
    e.pos_width = 4;
    e.val_start = t * 2000;
    e.val_end = e.val_start + 2000;
    eb.params.push_back(e);
  }
  byte_buffer values = v0;
  values.insert(values.end(), v1.begin(), v1.end());
  eb.positions_bytes = positions.size();
  eb.value_count = 4000;
  eb.checksum = delta_checksum(positions, dtype::BF16, values);
  auto layout = build_delta_header(eb);
  ASSERT_TRUE(layout.ok()) << layout.err().describe();
  byte_buffer file = layout->header;
  const size_t data_start = file.size();
  file.insert(file.end(), positions.begin(), positions.end());
  file.resize(data_start + layout->data_offsets[1]);
  file.insert(file.end(), values.begin(), values.end());
  f.put(1, "x.safetensors", file);
  const auto before = f.snapshot();
  auto r = f.sync(disk_req(1, 0, {"x.safetensors"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::delta_position_out_of_range)) << r.err().describe();
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->version(), 0u);
}

}  // namespace
}  // namespace deltasync
