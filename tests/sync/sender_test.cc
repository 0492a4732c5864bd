// Tests for the Sender: files named and bucketed as DESIGN.md says and decoding back to the new weights, the
// snapshot advancing only after every receiver acked (slime #2104), the pre-push hook, keep-files, full mode,
// native digests, empty syncs and version rules. Receivers are a fake push_transport that reads the sync's
// files at push time, as a receiver would.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/sum_digest.h"
#include "codec/digest.h"
#include "sync/sender.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

using tensor_map = std::map<std::string, std::pair<tensor_view, byte_buffer>>;

byte_buffer read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  byte_buffer b(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// One push as a receiver saw it: the body and the files it names, read at push time.
struct seen_push {
  boost::json::object body;
  std::vector<std::pair<std::string, byte_buffer>> files;
};

class fake_transport final : public push_transport {
 public:
  explicit fake_transport(std::string delta_dir) : delta_dir_(std::move(delta_dir)) {}
  // status_for(call index, receiver index) -> HTTP status (0: unreachable).
  std::function<unsigned(size_t, size_t)> status_for = [](size_t, size_t) { return 200u; };
  std::vector<seen_push> pushes;

  std::vector<push_outcome> post_all(const std::vector<std::string>& urls, const std::string& path,
                                     const std::string& json_body, uint64_t sync_bytes) override {
    EXPECT_EQ(path, "/sync");
    seen_push p;
    p.body = boost::json::parse(json_body).as_object();
    const std::string dir = delta_dir_ + "/" + std::string(p.body.at("dir").as_string());
    for (const auto& f : p.body.at("files").as_array()) {
      const std::string name(f.as_string());
      EXPECT_TRUE(fs::exists(dir + "/" + name)) << name;
      p.files.emplace_back(name, read_bytes(dir + "/" + name));
    }
    // The push says how much the receivers read (the push client sizes its timeout by it).
    uint64_t listed = 0;
    for (const auto& [name, bytes] : p.files) listed += bytes.size();
    EXPECT_EQ(sync_bytes, std::max<uint64_t>(1, listed));
    std::vector<push_outcome> out;
    for (size_t i = 0; i < urls.size(); ++i) {
      push_outcome o;
      o.url = urls[i];
      o.http_status = status_for(pushes.size(), i);
      if (o.http_status == 0)
        o.transport_error = "connection refused";
      else
        o.body = o.http_status == 200 ? R"({"version": 1})" : R"({"error": "base_version mismatch"})";
      out.push_back(o);
    }
    pushes.push_back(std::move(p));
    return out;
  }

 private:
  std::string delta_dir_;
};

// A scratch delta dir, removed at the end of the test.
class Sender : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("deltasync_sender_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  sender_options options(std::vector<std::string> receivers = {"http://a:1", "http://b:2"}) const {
    sender_options o;
    o.delta_dir = dir_.string();
    o.receivers = std::move(receivers);
    return o;
  }
  fs::path dir_;
};

struct model {
  struct t {
    std::string name;
    dtype type;
    std::vector<uint64_t> shape;
    byte_buffer bytes;
  };
  std::vector<t> tensors;
};

model make_model(uint64_t seed) {
  std::mt19937_64 rng(seed);
  model m;
  m.tensors = {{"embed", dtype::BF16, {300, 64}, {}},
               {"layers.0.w", dtype::BF16, {128, 96}, {}},
               {"layers.0.norm", dtype::F32, {96}, {}},
               {"head", dtype::F16, {70000}, {}}};
  for (auto& t : m.tensors) {
    uint64_t n = 1;
    for (auto d : t.shape) n *= d;
    t.bytes.resize(n * element_bytes(t.type));
    for (auto& b : t.bytes) b = static_cast<std::byte>(rng());
  }
  return m;
}

// Flips the low byte of ~density of the elements (a new value, never a no-op).
model step(const model& m, uint64_t seed, double density) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution change(density);
  model out = m;
  for (auto& t : out.tensors) {
    const uint32_t eb = element_bytes(t.type);
    for (size_t i = 0; i < t.bytes.size(); i += eb)
      if (change(rng)) t.bytes[i] ^= std::byte{0x21};
  }
  return out;
}

tensor_view view_of(const model::t& t) { return tensor_view{t.bytes.data(), t.type, t.shape, "cpu"}; }

void seed_all(sender& s, const model& m) {
  for (const auto& t : m.tensors) ASSERT_TRUE(s.seed(t.name, view_of(t)).ok());
}

status sync_to(sender& s, uint64_t version, const model& m) {
  DS_TRY_STATUS(s.begin(version));
  for (const auto& t : m.tensors) DS_TRY_STATUS(s.add(t.name, view_of(t)));
  auto r = s.finish();
  if (!r.ok()) return std::move(r).err();
  return {};
}

// Applies every file of a push to `m` (verifying native digests after apply), as a receiver would.
void apply_push(const seen_push& p, model& m, bool expect_native) {
  for (const auto& [name, bytes] : p.files) {
    auto f = parse_delta_file(bytes);
    ASSERT_TRUE(f.ok()) << name << ": " << f.err().describe();
    EXPECT_EQ(f->manifest.current_version, p.body.at("version").as_int64());
    ASSERT_EQ(f->native.has_value(), expect_native);
    if (expect_native) {
      EXPECT_EQ(static_cast<int64_t>(f->native->base_version), p.body.at("base_version").as_int64());
    }
    for (const auto& param : f->manifest.params) {
      EXPECT_EQ(f->values_type, param.type) << name << ": the sender never promotes __values__";
      auto it = std::find_if(m.tensors.begin(), m.tensors.end(), [&](const auto& t) { return t.name == param.name; });
      ASSERT_NE(it, m.tensors.end()) << param.name;
      ASSERT_TRUE(apply_param(*f, param, it->bytes).ok()) << param.name;
      if (expect_native) {
        EXPECT_EQ(f->native->tensor_digests.at(param.name), xxh3_128(it->bytes)) << param.name;
        // The additive digest, which the sender updates from the snapshot's in O(changed): the new tensor's.
        if (auto sum = f->native->tensor_sums.find(param.name); sum != f->native->tensor_sums.end())
          EXPECT_EQ(sum->second, sum_digest(it->bytes, element_bytes(param.type))) << param.name;
      }
    }
  }
}

void expect_equal(const model& a, const model& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) EXPECT_EQ(a.tensors[i].bytes, b.tensors[i].bytes) << a.tensors[i].name;
}

TEST_F(Sender, FilesRoundTripEveryEncodingAndFormat) {
  const model base = make_model(1);
  const model next = step(base, 2, 0.02);
  for (encoding enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd}) {
    for (wire_format fmt : {wire_format::native, wire_format::slime}) {
      SCOPED_TRACE(std::string(encoding_name(enc)) + (fmt == wire_format::native ? " native" : " slime"));
      fake_transport net(dir_.string());
      sender_options o = options();
      o.enc = enc;
      o.format = fmt;
      o.rank = 3;
      o.buffer_bytes = 600;  // small: several flushes, and BF16/F32/F16 do not all share a bucket
      o.keep_files = true;
      sender s(o, &net);
      seed_all(s, base);
      s.set_snapshot_version(4);
      ASSERT_TRUE(s.begin(5).ok());
      for (const auto& t : next.tensors) ASSERT_TRUE(s.add(t.name, view_of(t)).ok());
      auto r = s.finish();
      ASSERT_TRUE(r.ok()) << r.err().describe();
      ASSERT_EQ(net.pushes.size(), 1u);
      const seen_push& p = net.pushes[0];
      EXPECT_EQ(p.body.at("version").as_int64(), 5);
      EXPECT_EQ(p.body.at("base_version").as_int64(), 4);
      EXPECT_EQ(p.body.at("transport").as_string(), "disk");
      EXPECT_EQ(p.body.at("dir").as_string(), "weight_v000005");
      ASSERT_GT(p.files.size(), 2u);
      for (size_t i = 0; i < p.files.size(); ++i) {
        char want[64];
        std::snprintf(want, sizeof want, "rank0003_flush%06zu.safetensors", i);
        EXPECT_EQ(p.files[i].first, want);
        EXPECT_EQ(r->files[i], want);
        EXPECT_TRUE(fs::exists(dir_ / "weight_v000005" / want));  // keep_files
      }
      model got = base;
      apply_push(p, got, fmt == wire_format::native);
      expect_equal(got, next);
      if (fmt == wire_format::native)
        for (const auto& [n, b] : p.files) {
          auto f = parse_delta_file(b);
          ASSERT_TRUE(f.ok());
          EXPECT_EQ(f->native->tensor_sums.size(), f->manifest.params.size()) << n << ": a host delta has every sum";
        }
      EXPECT_TRUE(r->snapshot_advanced);
      EXPECT_EQ(s.snapshot_version(), 5u);
      EXPECT_EQ(r->receivers.size(), 2u);
      uint64_t wire = 0;
      for (const auto& [n, b] : p.files) wire += b.size();
      EXPECT_EQ(r->wire_bytes, wire);
      EXPECT_GT(r->changed_elements, 0u);
      fs::remove_all(dir_ / "weight_v000005");
    }
  }
}

TEST_F(Sender, OneBucketPerDtypeUnderTheBufferSize) {
  const model base = make_model(25);
  const model next = step(base, 26, 0.05);
  fake_transport net(dir_.string());
  sender_options o = options();
  sender s(o, &net);  // 512 MiB buckets: everything fits, one file per dtype (BF16, F16, F32)
  seed_all(s, base);
  ASSERT_TRUE(sync_to(s, 1, next).ok());
  ASSERT_EQ(net.pushes[0].files.size(), 3u);
  model got = base;
  apply_push(net.pushes[0], got, true);
  expect_equal(got, next);

  // A small buffer: files are flushed as the open buckets fill, each well under buffer + one tensor.
  const model v2 = step(next, 27, 0.05);
  o.buffer_bytes = 2000;
  sender small(o, &net);
  seed_all(small, next);
  ASSERT_TRUE(sync_to(small, 2, v2).ok());  // version 1 is published: a new attempt gets a new number
  EXPECT_GT(net.pushes[1].files.size(), 3u);
  model got2 = next;
  apply_push(net.pushes[1], got2, true);
  expect_equal(got2, v2);
}

TEST_F(Sender, PublishIsTheCommitPointAndTheChainIsKeptForTheLaggard) {
  const model base = make_model(3);
  const model v1 = step(base, 4, 0.01);
  const model v2 = step(v1, 5, 0.01);
  const model v3 = step(v2, 6, 0.01);
  fake_transport net(dir_.string());
  // Receiver b refuses the first sync (409), then everything succeeds.
  net.status_for = [](size_t call, size_t receiver) { return call == 0 && receiver == 1 ? 409u : 200u; };
  sender s(options(), &net);
  seed_all(s, base);

  auto st = sync_to(s, 1, v1);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::receiver_failed));
  EXPECT_NE(st.err().message.find("http://b:2 answered 409"), std::string::npos) << st.err().message;
  EXPECT_NE(st.err().message.find("published"), std::string::npos) << st.err().message;
  EXPECT_EQ(st.err().message.find("http://a:1"), std::string::npos) << st.err().message;
  // Published: the snapshot advances whatever b answered.
  EXPECT_EQ(s.snapshot_version(), 1u);
  EXPECT_FALSE(s.in_sync());
  EXPECT_TRUE(s.last_report().snapshot_advanced);
  ASSERT_EQ(s.last_report().receivers.size(), 2u);
  EXPECT_EQ(s.last_report().receivers[1].http_status, 409u);
  EXPECT_EQ(s.last_report().acked.at("http://a:1"), 1u);
  EXPECT_EQ(s.last_report().acked.at("http://b:2"), 0u);
  // Kept (even without keep_files): b has not acknowledged it.
  EXPECT_TRUE(fs::exists(dir_ / "weight_v000001" / "published.json"));
  EXPECT_TRUE(fs::exists(dir_ / "fleet.json"));

  // The next sync is diffed against v1 (what was published), not against what b holds.
  ASSERT_TRUE(sync_to(s, 2, v2).ok());
  EXPECT_EQ(s.snapshot_version(), 2u);
  ASSERT_EQ(net.pushes.size(), 2u);
  EXPECT_EQ(net.pushes[1].body.at("base_version").as_int64(), 1);
  model got = v1;
  apply_push(net.pushes[1], got, true);
  expect_equal(got, v2);
  EXPECT_EQ(s.last_report().acked.at("http://b:2"), 2u);
  // Everyone acknowledged 2: v1 is pruned, the newest (v2) stays.
  EXPECT_EQ(s.last_report().pruned, std::vector<uint64_t>{1});
  EXPECT_FALSE(fs::exists(dir_ / "weight_v000001"));
  EXPECT_TRUE(fs::exists(dir_ / "weight_v000002" / "published.json"));

  ASSERT_TRUE(sync_to(s, 3, v3).ok());
  model got3 = v2;
  apply_push(net.pushes[2], got3, true);
  expect_equal(got3, v3);
  EXPECT_EQ(net.pushes[2].body.at("base_version").as_int64(), 2);
}

TEST_F(Sender, APublishedVersionIsNeverRewritten) {
  const model base = make_model(13);
  fake_transport net(dir_.string());
  sender s(options(), &net);
  seed_all(s, base);
  ASSERT_TRUE(sync_to(s, 1, step(base, 14, 0.01)).ok());
  const auto before = fs::last_write_time(dir_ / "weight_v000001" / "published.json");
  sender again(options(), &net);  // a restarted trainer reusing version 1
  seed_all(again, base);
  auto st = again.begin(1);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::version_conflict)) << st.err().describe();
  EXPECT_NE(st.err().message.find("already published"), std::string::npos) << st.err().message;
  EXPECT_EQ(fs::last_write_time(dir_ / "weight_v000001" / "published.json"), before);
  EXPECT_TRUE(again.begin(2).ok());
  again.abort();
}

TEST_F(Sender, ARestartedSenderResumesFromTheNewestPublishedVersion) {
  const model base = make_model(15);
  const model v1 = step(base, 16, 0.01);
  const model v2 = step(v1, 17, 0.01);
  fake_transport net(dir_.string());
  {
    sender s(options(), &net);
    seed_all(s, base);
    ASSERT_TRUE(sync_to(s, 1, v1).ok());
    ASSERT_TRUE(sync_to(s, 2, v2).ok());
  }
  // A crashed attempt at 3 (no marker) does not count.
  fs::create_directories(dir_ / "weight_v000003");
  {
    sender again(options(), &net);  // restarted, seeded with what it published last
    seed_all(again, v2);
    auto v = again.resume();
    ASSERT_TRUE(v.ok()) << v.err().describe();
    EXPECT_EQ(*v, 2u);
    EXPECT_EQ(again.snapshot_version(), 2u);
    ASSERT_TRUE(sync_to(again, 3, step(v2, 18, 0.01)).ok());
    EXPECT_EQ(net.pushes.back().body.at("base_version").as_int64(), 2);
  }
  {
    sender wrong(options(), &net);  // seeded with an older checkpoint than the newest published version
    seed_all(wrong, v2);
    auto v = wrong.resume();
    ASSERT_FALSE(v.ok());
    EXPECT_TRUE(v.err().is(errc::version_conflict)) << v.err().describe();
    EXPECT_NE(v.err().message.find("is not its state at version 3"), std::string::npos) << v.err().message;
    EXPECT_EQ(wrong.snapshot_version(), 0u);
    // An explicit version is taken as given when its dir is gone (v2 was pruned once everyone held v3).
    EXPECT_FALSE(fs::exists(dir_ / "weight_v000002"));
    auto explicit_v2 = wrong.resume(2);
    ASSERT_TRUE(explicit_v2.ok()) << explicit_v2.err().describe();
    EXPECT_EQ(*explicit_v2, 2u);
  }
  {  // an empty delta dir: 0
    sender_options o = options();
    o.delta_dir = (dir_ / "empty").string();
    sender s(o, &net);
    seed_all(s, base);
    auto v = s.resume();
    ASSERT_TRUE(v.ok()) << v.err().describe();
    EXPECT_EQ(*v, 0u);
  }
}

TEST_F(Sender, AnchorsEveryKVersionsBoundTheKeptChain) {
  model m = make_model(19);
  fake_transport net(dir_.string());
  net.status_for = [](size_t, size_t receiver) { return receiver == 0 ? 0u : 200u; };  // a: down throughout
  sender_options o = options();
  o.anchor_every = 2;
  sender s(o, &net);
  seed_all(s, m);
  auto listing = [&] {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.is_directory()) names.insert(e.path().filename().string());
    return names;
  };
  for (uint64_t v = 1; v <= 4; ++v) {
    m = step(m, 20 + v, 0.01);
    auto st = sync_to(s, v, m);
    ASSERT_FALSE(st.ok());  // a is down
    EXPECT_EQ(s.last_report().anchor_version, v % 2 == 0 ? v : 0u) << v;
    if (v == 1) EXPECT_EQ(listing(), (std::set<std::string>{"weight_v000001"}));
    if (v == 2) EXPECT_EQ(listing(), (std::set<std::string>{"anchor_v000002", "weight_v000002"}));
    if (v == 3) EXPECT_EQ(listing(), (std::set<std::string>{"anchor_v000002", "weight_v000002", "weight_v000003"}));
    if (v == 4) EXPECT_EQ(listing(), (std::set<std::string>{"anchor_v000004", "weight_v000004"}));
  }
  // The anchor holds every element of every tensor, with each tensor's digest.
  size_t params = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "anchor_v000004")) {
    if (e.path().extension() != ".safetensors") continue;
    auto f = parse_delta_file(read_bytes(e.path()));
    ASSERT_TRUE(f.ok()) << f.err().describe();
    for (const auto& p : f->manifest.params) {
      EXPECT_EQ(p.changed(), p.numel()) << p.name;
      ++params;
    }
  }
  EXPECT_EQ(params, m.tensors.size());
}

TEST_F(Sender, UnreachableReceiverIsReported) {
  const model base = make_model(7);
  fake_transport net(dir_.string());
  net.status_for = [](size_t, size_t receiver) { return receiver == 0 ? 0u : 200u; };
  sender s(options(), &net);
  seed_all(s, base);
  auto st = sync_to(s, 1, step(base, 8, 0.01));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::receiver_failed));
  EXPECT_NE(st.err().message.find("http://a:1 unreachable: connection refused"), std::string::npos)
      << st.err().message;
  EXPECT_EQ(s.snapshot_version(), 1u);  // published all the same
}

TEST_F(Sender, KeptAfterOneReceiverRefusedEvenWithoutKeepFiles) {
  const model base = make_model(9);
  fake_transport net(dir_.string());
  net.status_for = [](size_t, size_t receiver) { return receiver == 0 ? 422u : 200u; };
  sender s(options(), &net);
  seed_all(s, base);
  EXPECT_FALSE(sync_to(s, 1, step(base, 10, 0.01)).ok());
  EXPECT_EQ(s.snapshot_version(), 1u);
  EXPECT_TRUE(fs::exists(dir_ / "weight_v000001" / "rank0000_flush000000.safetensors"));
}

TEST_F(Sender, AVersionEveryReceiverRefusedAsInvalidIsWithdrawn) {
  const model base = make_model(9);
  const model v1 = step(base, 10, 0.01);
  fake_transport net(dir_.string());
  net.status_for = [](size_t call, size_t) { return call == 0 ? 422u : 200u; };
  sender_options o = options();
  o.keep_files = true;
  sender s(o, &net);
  seed_all(s, base);
  auto st = sync_to(s, 1, v1);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.err().message.find("withdrawn"), std::string::npos) << st.err().message;
  EXPECT_EQ(s.snapshot_version(), 0u);
  EXPECT_FALSE(s.last_report().snapshot_advanced);
  EXPECT_FALSE(fs::exists(dir_ / "weight_v000001"));  // nobody holds it, nobody may replay it
  ASSERT_TRUE(sync_to(s, 2, step(v1, 11, 0.01)).ok());
  EXPECT_EQ(net.pushes[1].body.at("base_version").as_int64(), 0);  // carries v1's changes again
}

TEST_F(Sender, NoReceiversWritesFilesAndKeepsThem) {
  const model base = make_model(11);
  sender s(options({}), nullptr);
  seed_all(s, base);
  ASSERT_TRUE(sync_to(s, 1, step(base, 12, 0.01)).ok());
  EXPECT_EQ(s.snapshot_version(), 1u);
  EXPECT_TRUE(fs::exists(dir_ / "weight_v000001" / "rank0000_flush000000.safetensors"));
  EXPECT_TRUE(s.last_report().receivers.empty());
}

TEST_F(Sender, PrePushHookSeesTheFilesAndItsExitStatusGates) {
  const model base = make_model(13);
  const model v1 = step(base, 14, 0.01);
  fake_transport net(dir_.string());
  const fs::path out = dir_ / "hook.out";
  sender_options o = options();
  o.pre_push_hook = "echo \"$DELTASYNC_VERSION $DELTASYNC_DIR\" > '" + out.string() + "' && ls \"$DELTASYNC_DIR\" >> '" +
                    out.string() + "'";
  {
    sender s(o, &net);
    seed_all(s, base);
    ASSERT_TRUE(sync_to(s, 1, v1).ok());
    std::ifstream in(out);
    std::string version, hook_dir, file;
    in >> version >> hook_dir;
    std::set<std::string> listed;
    while (in >> file) listed.insert(file);
    EXPECT_EQ(version, "1");
    EXPECT_EQ(hook_dir, (dir_ / "weight_v000001").string());
    // The hook sees the files and the publish marker (written before the hook, after the last file).
    EXPECT_TRUE(listed.count("rank0000_flush000000.safetensors"));
    EXPECT_TRUE(listed.count("published.json"));
    EXPECT_EQ(net.pushes.size(), 1u);
  }
  {
    o.pre_push_hook = "exit 3";
    o.keep_files = true;
    sender s(o, &net);
    seed_all(s, base);
    auto st = sync_to(s, 2, v1);  // version 1 is published: never rewritten
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(st.err().is(errc::io_error));
    EXPECT_NE(st.err().message.find("pre-push hook exited 3"), std::string::npos) << st.err().message;
    EXPECT_EQ(net.pushes.size(), 1u);  // nothing pushed
    EXPECT_EQ(s.snapshot_version(), 0u);
    // Never published: the dir goes even with keep_files (recovery must not replay it).
    EXPECT_FALSE(fs::exists(dir_ / "weight_v000002"));
  }
}

TEST_F(Sender, FullModeShipsEveryElement) {
  const model base = make_model(15);
  const model v1 = step(base, 16, 0.01);
  fake_transport net(dir_.string());
  sender_options o = options();
  o.mode = update_mode::full;
  o.buffer_bytes = 1 << 16;
  sender s(o, &net);
  seed_all(s, base);
  ASSERT_TRUE(sync_to(s, 1, v1).ok());
  uint64_t total = 0;
  for (const auto& t : v1.tensors) total += t.bytes.size() / element_bytes(t.type);
  EXPECT_EQ(s.last_report().changed_elements, total);
  // Applied to anything of the right shape (zeros here), the files give the new weights.
  model got = base;
  for (auto& t : got.tensors) std::fill(t.bytes.begin(), t.bytes.end(), std::byte{0});
  apply_push(net.pushes[0], got, true);
  expect_equal(got, v1);

  // Full mode accepts a tensor the snapshot does not have yet.
  ASSERT_TRUE(s.begin(2).ok());
  std::vector<uint16_t> extra(10, 0x3F80);
  EXPECT_TRUE(s.add("new.tensor", {extra.data(), dtype::BF16, {10}, "cpu"}).ok());
  EXPECT_TRUE(s.finish().ok());
}

TEST_F(Sender, EmptySyncWritesOneEmptyFile) {
  const model base = make_model(17);
  fake_transport net(dir_.string());
  sender s(options(), &net);
  seed_all(s, base);
  ASSERT_TRUE(sync_to(s, 1, base).ok());
  EXPECT_EQ(s.snapshot_version(), 1u);
  ASSERT_EQ(net.pushes.size(), 1u);
  ASSERT_EQ(net.pushes[0].files.size(), 1u);
  EXPECT_EQ(net.pushes[0].files[0].first, "rank0000_flush000000.safetensors");
  auto f = parse_delta_file(net.pushes[0].files[0].second);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  EXPECT_TRUE(f->manifest.params.empty());
  EXPECT_EQ(f->manifest.current_version, 1u);
  EXPECT_EQ(s.last_report().changed_elements, 0u);
}

TEST_F(Sender, TensorsNotAddedAreUnchanged) {
  const model base = make_model(19);
  const model v1 = step(base, 20, 0.05);
  fake_transport net(dir_.string());
  sender s(options(), &net);
  seed_all(s, base);
  ASSERT_TRUE(s.begin(1).ok());
  ASSERT_TRUE(s.add(v1.tensors[1].name, view_of(v1.tensors[1])).ok());
  ASSERT_TRUE(s.finish().ok());
  model got = base;
  apply_push(net.pushes[0], got, true);
  EXPECT_EQ(got.tensors[1].bytes, v1.tensors[1].bytes);
  EXPECT_EQ(got.tensors[0].bytes, base.tensors[0].bytes);
  EXPECT_EQ(s.last_report().dense_bytes, v1.tensors[1].bytes.size());
}

TEST_F(Sender, VersionMustIncreaseAndOtherRefusals) {
  const model base = make_model(21);
  fake_transport net(dir_.string());
  sender s(options(), &net);
  seed_all(s, base);
  s.set_snapshot_version(7);
  EXPECT_TRUE(s.begin(7).err().is(errc::invalid_argument));
  EXPECT_TRUE(s.begin(3).err().is(errc::invalid_argument));
  EXPECT_TRUE(s.add("embed", view_of(base.tensors[0])).err().is(errc::invalid_argument));  // no sync begun
  EXPECT_TRUE(s.finish().err().is(errc::invalid_argument));

  // A stale directory of the same version is replaced.
  fs::create_directories(dir_ / "weight_v000008");
  std::ofstream(dir_ / "weight_v000008" / "rank0000_flush000099.safetensors") << "junk";
  ASSERT_TRUE(s.begin(8).ok());
  EXPECT_FALSE(fs::exists(dir_ / "weight_v000008" / "rank0000_flush000099.safetensors"));
  EXPECT_TRUE(s.begin(9).err().is(errc::invalid_argument));  // already in a sync
  EXPECT_TRUE(s.add("nope", view_of(base.tensors[0])).err().is(errc::invalid_argument));
  model::t wrong = base.tensors[0];
  wrong.shape = {64, 300};
  EXPECT_TRUE(s.add("embed", view_of(wrong)).err().is(errc::invalid_argument));
  ASSERT_TRUE(s.add("embed", view_of(base.tensors[0])).ok());
  EXPECT_TRUE(s.add("embed", view_of(base.tensors[0])).err().is(errc::invalid_argument));  // twice
  ASSERT_TRUE(s.finish().ok());
  EXPECT_EQ(s.snapshot_version(), 8u);
  EXPECT_TRUE(s.begin(8).err().is(errc::invalid_argument));

  sender_options o = options();
  o.transport = "nccl";
  o.receivers.clear();
  sender n(o, &net);
  auto st = n.begin(1);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::invalid_argument));  // nccl writes no files: receivers are required
  EXPECT_NE(st.err().message.find("needs receivers"), std::string::npos) << st.err().message;
  o.transport = "pigeon";
  sender p(o, &net);
  auto unknown = p.begin(1);
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(unknown.err().is(errc::unsupported));
  EXPECT_NE(unknown.err().message.find("unknown transport 'pigeon'"), std::string::npos);
}

TEST_F(Sender, AbortRemovesTheSync) {
  const model base = make_model(23);
  fake_transport net(dir_.string());
  sender s(options(), &net);
  seed_all(s, base);
  ASSERT_TRUE(s.begin(1).ok());
  ASSERT_TRUE(s.add("embed", view_of(step(base, 24, 0.5).tensors[0])).ok());
  s.abort();
  EXPECT_FALSE(s.in_sync());
  EXPECT_FALSE(fs::exists(dir_ / "weight_v000001"));
  EXPECT_EQ(s.snapshot_version(), 0u);
  EXPECT_TRUE(net.pushes.empty());
}

// Two senders publishing into one delta dir (two trainers, or two `publish` runs of the same version) used to
// replace each other's version dir and marker. The second is refused while the first's sync runs, and the
// first's files come out whole.
TEST_F(Sender, SecondSenderIntoTheSameDeltaDirIsRefusedWhileASyncRuns) {
  const model base = make_model(31);
  const model next = step(base, 32, 0.05);
  sender a(options({}), nullptr), b(options({}), nullptr);
  seed_all(a, base);
  seed_all(b, base);
  ASSERT_TRUE(a.begin(1).ok());
  for (const auto& t : next.tensors) ASSERT_TRUE(a.add(t.name, view_of(t)).ok());
  auto refused = b.begin(1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.err().code, errc::busy);
  EXPECT_NE(refused.err().message.find("another sender is publishing"), std::string::npos) << refused.err().message;
  EXPECT_NE(refused.err().message.find("pid " + std::to_string(::getpid())), std::string::npos)
      << refused.err().message;
  EXPECT_FALSE(b.in_sync());
  EXPECT_FALSE(b.begin(2).ok()) << "any version: the lock is the delta dir's";
  auto done = a.finish();
  ASSERT_TRUE(done.ok()) << done.err().message;
  // a's files are intact and decode to `next`.
  model got = base;
  seen_push p;
  p.body["version"] = 1;
  p.body["base_version"] = 0;
  for (const auto& f : done->files) p.files.emplace_back(f, read_bytes(dir_ / "weight_v000001" / f));
  ASSERT_FALSE(p.files.empty());
  apply_push(p, got, true);  // native by default: the tensor digests are checked too
  expect_equal(got, next);
  EXPECT_TRUE(fs::exists(dir_ / "weight_v000001" / "published.json"));
  // Once a's sync ended, b may publish (a later version).
  EXPECT_TRUE(sync_to(b, 2, step(next, 33, 0.01)).ok());
}

// A tensor large enough to be diffed in parallel chunks: the files must still carry exactly the changed
// elements, in order, with the chunk offsets applied (changes sit at chunk boundaries too).
TEST_F(Sender, LargeTensorsDiffedInParallelChunksRoundTrip) {
  model base;
  base.tensors = {{"big", dtype::BF16, {40ull << 20}, {}}};  // 80 MiB: several 8 MiB chunks
  base.tensors[0].bytes.resize((40ull << 20) * 2);
  std::mt19937_64 rng(31);
  for (size_t i = 0; i < base.tensors[0].bytes.size(); i += 8) store_le<uint64_t>(base.tensors[0].bytes.data() + i, rng());
  model next = step(base, 32, 0.001);
  const size_t n = next.tensors[0].bytes.size();
  for (size_t at : {size_t{0}, n / 2, n / 3 & ~size_t{1}, n - 2, (size_t{8} << 20), (size_t{8} << 20) - 2})
    next.tensors[0].bytes[at] ^= std::byte{0x5A};
  fake_transport net(dir_.string());
  sender s(options(), &net);
  seed_all(s, base);
  ASSERT_TRUE(sync_to(s, 1, next).ok());
  model got = base;
  apply_push(net.pushes.at(0), got, true);
  expect_equal(got, next);
  uint64_t changed = 0;
  for (size_t i = 0; i < n; i += 2)
    changed += std::memcmp(base.tensors[0].bytes.data() + i, next.tensors[0].bytes.data() + i, 2) != 0;
  EXPECT_EQ(s.last_report().changed_elements, changed);
}

}  // namespace
}  // namespace deltasync
