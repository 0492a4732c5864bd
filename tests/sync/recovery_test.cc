// Crash recovery (sync/recovery.h) against version dirs written by the real Sender: the chain is replayed to
// the newest fully published version, and every dir that is not (no marker, a file that does not match its
// marker, a marker that is not JSON, a sync the receiver refuses) is skipped with its reason while the store
// stays exactly at the last good version. Also the publish marker itself (sync/publish_marker.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "codec/digest.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "io/worker_pool.h"
#include "sync/publish_marker.h"
#include "sync/receiver.h"
#include "sync/recovery.h"
#include "sync/sender.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

using weights = std::vector<byte_buffer>;  // per tensor, BF16 [40, 50]
constexpr size_t kTensors = 4;
constexpr uint64_t kNumel = 2000;

std::string tname(size_t i) { return "layers." + std::to_string(i) + ".w"; }

weights make_base(uint64_t seed) {
  std::mt19937_64 rng(seed);
  weights w(kTensors, byte_buffer(kNumel * 2));
  for (auto& t : w)
    for (auto& b : t) b = std::byte(rng() & 0xFF);
  return w;
}

weights step(const weights& w, uint64_t seed) {
  std::mt19937_64 rng(seed);
  weights out = w;
  for (auto& t : out)
    for (size_t i = 0; i < t.size(); i += 2)
      if (rng() % 50 == 0) t[i] ^= std::byte{0x5A};
  return out;
}

struct fixture {
  fs::path dir = fs::temp_directory_path() / ("ds-recovery-" + std::to_string(::getpid()) + "-" +
                                              std::to_string(std::random_device{}()));
  weights base = make_base(3);
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<host_weight_store> store;
  std::unique_ptr<receiver> rx;

  fixture() {
    fs::create_directories(dir);
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
    for (size_t i = 0; i < kTensors; ++i) t.push_back({store_tensor{tname(i), dtype::BF16, {40, 50}, kNumel, kNumel * 2}, base[i]});
    store = host_weight_store::from_tensors(std::move(t));
    receiver_options ro;
    ro.delta_dir = dir.string();
    ro.chunk_bytes = 64 << 10;
    rx = std::make_unique<receiver>(loop, *backend, *pool, *workers, *store, ro, nullptr);
  }
  ~fixture() {
    rx.reset();
    workers.reset();
    pool.reset();
    backend.reset();
    fs::remove_all(dir);
  }

  // Publishes `to` as `version` over a sender seeded with `from` at `base_version` (files only, kept).
  void publish(const weights& from, uint64_t base_version, const weights& to, uint64_t version,
               wire_format fmt = wire_format::native) {
    sender_options o;
    o.delta_dir = dir.string();
    o.format = fmt;
    o.buffer_bytes = 100;  // one file per tensor: several files per sync
    sender s(o, nullptr);
    for (size_t i = 0; i < kTensors; ++i) ASSERT_TRUE(s.seed(tname(i), {from[i].data(), dtype::BF16, {40, 50}}).ok());
    s.set_snapshot_version(base_version);
    ASSERT_TRUE(s.begin(version).ok());
    for (size_t i = 0; i < kTensors; ++i) ASSERT_TRUE(s.add(tname(i), {to[i].data(), dtype::BF16, {40, 50}}).ok());
    auto r = s.finish();
    ASSERT_TRUE(r.ok()) << r.err().describe();
    ASSERT_GE(r->files.size(), 2u);
  }

  fs::path vdir(uint64_t v) const {
    char buf[32];
    std::snprintf(buf, sizeof buf, "weight_v%06llu", static_cast<unsigned long long>(v));
    return dir / buf;
  }

  recovery_report recover_now() {
    recovery_options o;
    o.delta_dir = dir.string();
    return recover(*rx, loop, o);
  }

  weights held() const {
    weights out;
    for (size_t i = 0; i < store->size(); ++i) out.emplace_back(store->data(i).begin(), store->data(i).end());
    return out;
  }
};

std::string skip_reason(const recovery_report& r, const std::string& dir) {
  for (const auto& s : r.skipped)
    if (s.dir == dir) return s.reason;
  return "(not skipped)";
}

TEST(Recovery, ReplaysTheWholeChainToTheNewestVersion) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2), v3 = step(v2, 3);
  f.publish(f.base, 0, v1, 1);
  f.publish(v1, 1, v2, 2, wire_format::slime);  // a slime-format dir written by our sender has a marker too
  f.publish(v2, 2, v3, 3);
  {  // The marker lists exactly the files of the dir, with their sizes and whole-file XXH3-64.
    auto text = std::move(io::read_file_all((f.vdir(3) / "published.json").string(), 1 << 20)).value();
    auto m = parse_publish_marker(std::string(reinterpret_cast<const char*>(text.data()), text.size()));
    ASSERT_TRUE(m.ok()) << m.err().describe();
    EXPECT_EQ(m->version, 3u);
    EXPECT_EQ(m->base_version, 2u);
    EXPECT_EQ(m->wire_format, "native");
    size_t on_disk = 0;
    for (const auto& e : fs::directory_iterator(f.vdir(3))) on_disk += e.path().extension() == ".safetensors";
    EXPECT_EQ(m->files.size(), on_disk);
    for (const auto& file : m->files) {
      auto bytes = std::move(io::read_file_all((f.vdir(3) / file.name).string(), 1 << 20)).value();
      EXPECT_EQ(bytes.size(), file.bytes) << file.name;
      EXPECT_EQ(xxh3_64(bytes), file.xxh3_64) << file.name;
    }
  }
  auto r = f.recover_now();
  EXPECT_EQ(r.from_version, 0u);
  EXPECT_EQ(r.to_version, 3u);
  ASSERT_EQ(r.replayed.size(), 3u);
  EXPECT_EQ(r.replayed[1].base_version, 1u);
  EXPECT_EQ(r.replayed[1].version, 2u);
  EXPECT_TRUE(r.skipped.empty());
  EXPECT_EQ(f.store->version(), 3u);
  EXPECT_EQ(f.held(), v3);
  // Run again: nothing left to replay.
  auto again = f.recover_now();
  EXPECT_TRUE(again.replayed.empty());
  EXPECT_EQ(f.held(), v3);
}

// A full-model anchor (sender::write_anchor) serves a receiver at any version below it: recovery applies it
// when the chain from the store's version is gone, then the chain above it.
TEST(Recovery, AnAnchorClosesAPrunedChain) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2), v3 = step(v2, 3);
  f.publish(f.base, 0, v1, 1);
  f.publish(v1, 1, v2, 2);
  {  // the Sender that holds v2 writes its anchor
    sender_options o;
    o.delta_dir = f.dir.string();
    sender s(o, nullptr);
    for (size_t i = 0; i < kTensors; ++i) ASSERT_TRUE(s.seed(tname(i), {v2[i].data(), dtype::BF16, {40, 50}}).ok());
    s.set_snapshot_version(2);
    auto a = s.write_anchor();
    ASSERT_TRUE(a.ok()) << a.err().describe();
    EXPECT_EQ(*a, (f.dir / "anchor_v000002").string());
    auto text = std::move(io::read_file_all(*a + "/published.json", 1 << 20)).value();
    auto m = parse_publish_marker(std::string(reinterpret_cast<const char*>(text.data()), text.size()));
    ASSERT_TRUE(m.ok()) << m.err().describe();
    EXPECT_TRUE(m->anchor);
    EXPECT_EQ(m->version, 2u);
    EXPECT_TRUE(fs::exists(f.vdir(1)));  // no receivers: nothing is pruned
  }
  f.publish(v2, 2, v3, 3);
  fs::remove_all(f.vdir(1));  // the chain from 0 is gone
  auto r = f.recover_now();
  EXPECT_EQ(r.to_version, 3u);
  ASSERT_EQ(r.replayed.size(), 2u);
  EXPECT_TRUE(r.replayed[0].anchor);
  EXPECT_EQ(r.replayed[0].dir, "anchor_v000002");
  EXPECT_EQ(r.replayed[0].base_version, 0u);
  EXPECT_EQ(r.replayed[0].changed_elements, kTensors * kNumel);
  EXPECT_FALSE(r.replayed[1].anchor);
  EXPECT_EQ(f.held(), v3);
  EXPECT_TRUE(r.skipped.empty()) << skip_reason(r, "weight_v000002");
}

TEST(Recovery, WhenTheChainReachesTheDeltaIsPreferredToTheAnchor) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2);
  f.publish(f.base, 0, v1, 1);
  f.publish(v1, 1, v2, 2);
  sender_options o;
  o.delta_dir = f.dir.string();
  sender s(o, nullptr);
  for (size_t i = 0; i < kTensors; ++i) ASSERT_TRUE(s.seed(tname(i), {v2[i].data(), dtype::BF16, {40, 50}}).ok());
  s.set_snapshot_version(2);
  ASSERT_TRUE(s.write_anchor().ok());
  auto r = f.recover_now();
  ASSERT_EQ(r.replayed.size(), 2u);
  EXPECT_FALSE(r.replayed[0].anchor);
  EXPECT_FALSE(r.replayed[1].anchor);
  EXPECT_EQ(f.held(), v2);
}

TEST(Recovery, AnAnchorThatDoesNotSetEveryTensorIsRefusedAndRolledBack) {
  fixture f;
  const weights v1 = step(f.base, 1);
  {  // an "anchor" written from a Sender that holds only three of the four tensors
    sender_options o;
    o.delta_dir = f.dir.string();
    sender s(o, nullptr);
    for (size_t i = 0; i + 1 < kTensors; ++i) ASSERT_TRUE(s.seed(tname(i), {v1[i].data(), dtype::BF16, {40, 50}}).ok());
    s.set_snapshot_version(1);
    ASSERT_TRUE(s.write_anchor().ok());
  }
  auto r = f.recover_now();
  EXPECT_EQ(r.to_version, 0u);
  EXPECT_TRUE(r.replayed.empty());
  EXPECT_NE(skip_reason(r, "anchor_v000001").find("does not set tensor 'layers.3.w'"), std::string::npos)
      << skip_reason(r, "anchor_v000001");
  EXPECT_EQ(f.held(), f.base);
}

TEST(Recovery, ADirWithoutMarkerIsNeverApplied) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2), v3 = step(v2, 3);
  f.publish(f.base, 0, v1, 1);
  f.publish(v1, 1, v2, 2);
  f.publish(v2, 2, v3, 3);
  fs::remove(f.vdir(2) / "published.json");  // as if the writer died before the marker
  auto r = f.recover_now();
  EXPECT_EQ(r.to_version, 1u);
  EXPECT_EQ(f.held(), v1);
  EXPECT_NE(skip_reason(r, "weight_v000002").find("no publish marker"), std::string::npos) << skip_reason(r, "weight_v000002");
  EXPECT_NE(skip_reason(r, "weight_v000003").find("not on a chain"), std::string::npos) << skip_reason(r, "weight_v000003");
}

TEST(Recovery, AFileThatDoesNotMatchItsMarkerIsNeverApplied) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2);
  f.publish(f.base, 0, v1, 1);
  f.publish(v1, 1, v2, 2);
  // Same size, one byte changed (a file rewritten after publishing, or a torn copy).
  const fs::path victim = f.vdir(2) / "rank0000_flush000001.safetensors";
  auto bytes = std::move(io::read_file_all(victim.string(), 1 << 20)).value();
  bytes[bytes.size() / 2] ^= std::byte{1};
  ASSERT_TRUE(io::write_file_atomic(victim.string(), bytes).ok());
  // And a truncated file in a third version that branches off v1.
  const weights v3 = step(v1, 3);
  f.publish(v1, 1, v3, 3);
  const fs::path cut = f.vdir(3) / "rank0000_flush000000.safetensors";
  fs::resize_file(cut, fs::file_size(cut) - 10);
  auto r = f.recover_now();
  EXPECT_EQ(r.to_version, 1u);
  EXPECT_EQ(f.held(), v1);
  EXPECT_NE(skip_reason(r, "weight_v000002").find("XXH3-64"), std::string::npos) << skip_reason(r, "weight_v000002");
  EXPECT_NE(skip_reason(r, "weight_v000003").find("bytes, the marker says"), std::string::npos) << skip_reason(r, "weight_v000003");
}

TEST(Recovery, AfterARefusedSyncTheRetryWithTheSameBaseIsTaken) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2);
  f.publish(f.base, 0, v1, 1);  // refused somewhere: the sender keeps its snapshot at 0 ...
  f.publish(f.base, 0, v2, 2);  // ... and the next sync carries both steps from base 0
  auto r = f.recover_now();
  ASSERT_EQ(r.replayed.size(), 1u);
  EXPECT_EQ(r.replayed[0].version, 2u);
  EXPECT_EQ(f.held(), v2);
}

TEST(Recovery, AMarkerThatLiesIsCaughtByThePipelineAndRolledBack) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2);
  f.publish(f.base, 0, v1, 1);
  f.publish(v1, 1, v2, 2);
  // v2's marker claims base 0: recovery tries 0 -> 2 first, the native files say base 1, so the receiver
  // refuses it (422, rolled back) and recovery continues over v1.
  auto text = std::move(io::read_file_all((f.vdir(2) / "published.json").string(), 1 << 20)).value();
  std::string s(reinterpret_cast<const char*>(text.data()), text.size());
  auto m = std::move(parse_publish_marker(s)).value();
  m.base_version = 0;
  std::ofstream((f.vdir(2) / "published.json").string()) << serialize_publish_marker(m);
  auto r = f.recover_now();
  EXPECT_EQ(r.to_version, 1u);
  EXPECT_EQ(f.held(), v1);
  EXPECT_NE(skip_reason(r, "weight_v000002").find("refused by the receiver"), std::string::npos) << skip_reason(r, "weight_v000002");
}

// replay_step hands the marker's sizes and XXH3-64 to the pipeline (sync_request::expect): a file that differs
// from its marker is refused there, on the bytes that were read for the apply, and nothing stays applied.
TEST(Recovery, ReplayStepRefusesFilesThatDifferFromTheirMarkerAndRollsBack) {
  fixture f;
  const weights v1 = step(f.base, 1);
  f.publish(f.base, 0, v1, 1);
  auto text = std::move(io::read_file_all((f.vdir(1) / "published.json").string(), 1 << 20)).value();
  const auto m = std::move(parse_publish_marker(std::string(reinterpret_cast<const char*>(text.data()), text.size()))).value();
  ASSERT_GE(m.files.size(), 2u);
  byte_buffer original;
  {  // A size the marker does not list: refused before anything is read.
    auto lying = m;
    lying.files[1].bytes += 1;
    auto r = replay_step(*f.rx, f.loop, lying, "weight_v000001");
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.err().is(errc::delta_checksum_mismatch)) << r.err().describe();
    EXPECT_NE(r.err().message.find("its publish marker says"), std::string::npos) << r.err().describe();
    EXPECT_EQ(f.held(), f.base);
  }
  {  // The first file changed after publishing (same size): the marker's check on the bytes read for the apply
     // refuses the sync, and nothing of it stays in the store.
    const fs::path victim = f.vdir(1) / m.files[0].name;
    original = std::move(io::read_file_all(victim.string(), 1 << 20)).value();
    auto bytes = original;
    bytes[bytes.size() - 1] ^= std::byte{1};
    ASSERT_TRUE(io::write_file_atomic(victim.string(), bytes).ok());
    auto r = replay_step(*f.rx, f.loop, m, "weight_v000001");
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.err().is(errc::delta_checksum_mismatch)) << r.err().describe();
    EXPECT_NE(r.err().message.find("XXH3-64 its publish marker lists"), std::string::npos) << r.err().describe();
    EXPECT_EQ(f.held(), f.base);
    EXPECT_EQ(f.store->version(), 0u);
  }
  {  // Put back, the same step applies.
    ASSERT_TRUE(io::write_file_atomic((f.vdir(1) / m.files[0].name).string(), original).ok());
    auto r = replay_step(*f.rx, f.loop, m, "weight_v000001");
    ASSERT_TRUE(r.ok()) << r.err().describe();
    EXPECT_EQ(f.held(), v1);
  }
}

TEST(Recovery, GarbageMarkerAndForeignDirsAreSkipped) {
  fixture f;
  const weights v1 = step(f.base, 1);
  f.publish(f.base, 0, v1, 1);
  fs::create_directories(f.vdir(2));
  std::ofstream((f.vdir(2) / "published.json").string()) << "{not json";
  fs::create_directories(f.dir / "not_a_version");
  auto r = f.recover_now();
  EXPECT_EQ(r.to_version, 1u);
  EXPECT_EQ(f.held(), v1);
  EXPECT_NE(skip_reason(r, "weight_v000002").find("not valid JSON"), std::string::npos) << skip_reason(r, "weight_v000002");
  EXPECT_EQ(skip_reason(r, "not_a_version"), "(not skipped)");
}

TEST(Recovery, ASymlinkedVersionDirIsNeverAppliedAndIsListedAsSkipped) {
  fixture f;
  const weights v1 = step(f.base, 1), v2 = step(v1, 2);
  f.publish(f.base, 0, v1, 1);
  f.publish(v1, 1, v2, 2);
  // weight_v000002 moved out of the delta dir and linked back in: complete and valid, but reached through a
  // symlink, which a live sync refuses too.
  const fs::path outside = f.dir.string() + "-outside";
  fs::rename(f.vdir(2), outside);
  fs::create_directory_symlink(outside, f.vdir(2));
  // A weight_v* entry that is a plain file is reported too.
  std::ofstream((f.vdir(3)).string()) << "not a dir";
  auto r = f.recover_now();
  fs::remove_all(outside);
  EXPECT_EQ(r.to_version, 1u);
  EXPECT_EQ(f.held(), v1);
  EXPECT_NE(skip_reason(r, "weight_v000002").find("symlink"), std::string::npos) << skip_reason(r, "weight_v000002");
  EXPECT_NE(skip_reason(r, "weight_v000003").find("not a directory"), std::string::npos) << skip_reason(r, "weight_v000003");
}

TEST(PublishMarker, RoundTripsAndRefusesWhatIsWrong) {
  publish_marker m;
  m.version = 7;
  m.base_version = 6;
  m.wire_format = "native";
  m.encoding = "deltas";
  m.files = {{"a.safetensors", 10, 0x0123456789abcdefull}, {"b.safetensors", 0, 0}};
  auto back = parse_publish_marker(serialize_publish_marker(m));
  ASSERT_TRUE(back.ok()) << back.err().describe();
  EXPECT_EQ(back->version, 7u);
  EXPECT_EQ(back->base_version, 6u);
  ASSERT_EQ(back->files.size(), 2u);
  EXPECT_EQ(back->files[0].xxh3_64, 0x0123456789abcdefull);
  EXPECT_EQ(back->files[1].name, "b.safetensors");

  auto refused = [&](publish_marker x, const char* why) {
    auto r = parse_publish_marker(serialize_publish_marker(x));
    EXPECT_FALSE(r.ok()) << why;
  };
  auto x = m;
  x.base_version = 7;
  refused(x, "base not below version");
  x = m;
  x.files.clear();
  refused(x, "no files");
  x = m;
  x.files[1].name = "../etc/passwd";
  refused(x, "a path");
  x = m;
  x.files[1].name = "a.safetensors";
  refused(x, "a name twice");
  EXPECT_FALSE(parse_publish_marker(R"({"format": "other/1"})").ok());
}

}  // namespace
}  // namespace deltasync
