// The Sender with tensors on the GPU writes the same files as with the same tensors on the host, sync after
// sync, with the snapshot on the device or in pinned host memory, and keeps its snapshot when a receiver
// refuses (the next sync carries the changes again, slime #2104). Device buckets are built and written on the
// device (GPU -> pinned -> file); a bucket that also holds host tensors is built on the host; both give the
// host Sender's bytes, files split across several flushes, every format and encoding, mixed dtypes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <random>

#include "gpu_test_util.h"
#include "sync/sender.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;
using gpu::testing::random_bytes;
using gpu::testing::upload;

// Records the files of every push; answers with the status the test sets.
class recording_transport final : public push_transport {
 public:
  explicit recording_transport(std::string dir) : dir_(std::move(dir)) {}
  unsigned next_status = 200;
  std::vector<std::vector<byte_buffer>> pushes;
  std::vector<push_outcome> post_all(const std::vector<std::string>& urls, const std::string&,
                                     const std::string& body, uint64_t) override {
    // The body names the dir and files; read them all back as a receiver would.
    std::vector<byte_buffer> files;
    const std::string d(boost::json::parse(body).as_object().at("dir").as_string());
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(dir_ + "/" + d)) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) {
      std::ifstream in(p, std::ios::binary);
      std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      files.emplace_back(reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size());
    }
    pushes.push_back(std::move(files));
    std::vector<push_outcome> out;
    for (const auto& u : urls) {
      push_outcome o;
      o.url = u;
      o.http_status = next_status;
      o.body = next_status == 200 ? "{}" : R"({"error": "refused"})";
      out.push_back(o);
    }
    return out;
  }

 private:
  std::string dir_;
};

void run_pair(uint64_t gpu_budget, wire_format format, encoding enc, bool with_host_tensor) {
  SCOPED_TRACE(std::string(format == wire_format::native ? "native " : "slime ") + std::string(encoding_name(enc)) +
               (with_host_tensor ? " + a host tensor" : "") + (gpu_budget == 0 ? ", pinned snapshot" : ""));
  std::mt19937_64 rng(51);
  const fs::path root = fs::temp_directory_path() / ("ds_gpu_sender_" + std::to_string(::getpid()));
  fs::remove_all(root);
  sender_options o;
  o.format = format;
  o.enc = enc;
  o.receivers = {"http://r0"};
  o.buffer_bytes = 10 << 10;  // several files per sync: "a" (~3000 changes) and "d" (~2000) each fill one
  o.gpu_snapshot_budget_bytes = gpu_budget;
  // The device packer writes the deltasync-native/1 layout (the host path's default is native/2, records):
  // both Senders are asked for native/1, so their files compare byte for byte.
  o.native_records = false;
  sender_options oc = o, og = o;
  oc.delta_dir = (root / "cpu").string();
  og.delta_dir = (root / "gpu").string();
  fs::create_directories(oc.delta_dir);
  fs::create_directories(og.delta_dir);
  recording_transport tc(oc.delta_dir), tg(og.delta_dir);
  sender cpu(oc, &tc), dev(og, &tg);

  struct t { std::string name; dtype type; std::vector<uint64_t> shape; byte_buffer host; bool on_host = false; };
  std::vector<t> ts = {{"e", dtype::BF16, {40000}, {}}, {"a", dtype::BF16, {300, 1000}, {}}, {"b", dtype::F32, {4097}, {}},
                       {"d", dtype::F32, {200, 1000}, {}}, {"c", dtype::BF16, {5}, {}}};
  // A host tensor after a device tensor of its dtype: the open device bucket ("e") moves to the host builder,
  // and the next device tensor of that dtype ("a") joins the host bucket.
  if (with_host_tensor) ts.insert(ts.begin() + 1, t{"h", dtype::BF16, {50000}, {}, true});
  gpu::stream s;
  std::vector<gpu::device_buffer> dbuf;
  for (auto& x : ts) {
    uint64_t n = 1;
    for (auto d : x.shape) n *= d;
    x.host = random_bytes(n * element_bytes(x.type), rng);
    dbuf.push_back(upload(x.host, s));
    ASSERT_TRUE(cpu.seed(x.name, {x.host.data(), x.type, x.shape, "cpu"}).ok());
    auto st = x.on_host ? dev.seed(x.name, {x.host.data(), x.type, x.shape, "cpu"})
                        : dev.seed(x.name, {dbuf.back().data(), x.type, x.shape, "cuda:0"});
    ASSERT_TRUE(st.ok()) << st.err().message;
  }
  for (uint64_t v = 1; v <= 4; ++v) {
    // Change ~1% of each tensor (a different set each step), on the host and the device alike.
    for (size_t i = 0; i < ts.size(); ++i) {
      const uint32_t eb = element_bytes(ts[i].type);
      for (size_t k = 0; k < ts[i].host.size() / eb; ++k)
        if (rng() % 100 == 0) ts[i].host[k * eb] ^= std::byte{1};
      ASSERT_TRUE(gpu::copy_h2d(dbuf[i].data(), ts[i].host.data(), ts[i].host.size(), s).ok());
    }
    ASSERT_TRUE(s.synchronize().ok());
    // Sync 2's files are refused as invalid (422) by every receiver: withdrawn (docs/fleet.md), both
    // snapshots stay, sync 3 carries its changes again.
    tc.next_status = tg.next_status = v == 2 ? 422 : 200;
    ASSERT_TRUE(cpu.begin(v).ok());
    ASSERT_TRUE(dev.begin(v).ok());
    for (size_t i = 0; i < ts.size(); ++i) {
      ASSERT_TRUE(cpu.add(ts[i].name, {ts[i].host.data(), ts[i].type, ts[i].shape, "cpu"}).ok());
      auto st = ts[i].on_host ? dev.add(ts[i].name, {ts[i].host.data(), ts[i].type, ts[i].shape, "cpu"})
                              : dev.add(ts[i].name, {dbuf[i].data(), ts[i].type, ts[i].shape, "cuda:0"});
      ASSERT_TRUE(st.ok()) << st.err().message;
    }
    auto rc = cpu.finish();
    auto rg = dev.finish();
    EXPECT_EQ(rc.ok(), v != 2);
    EXPECT_EQ(rg.ok(), v != 2);
    EXPECT_EQ(dev.last_report().snapshot_advanced, v != 2);
    EXPECT_EQ(dev.last_report().changed_elements, cpu.last_report().changed_elements) << "sync " << v;
    ASSERT_EQ(tg.pushes.size(), tc.pushes.size());
    EXPECT_TRUE(tg.pushes.back() == tc.pushes.back()) << "sync " << v << ": the GPU sender's files differ";
    EXPECT_EQ(dev.last_report().files, cpu.last_report().files) << "sync " << v;
    EXPECT_GE(dev.last_report().files.size(), 2u) << "sync " << v << ": the buckets should split";
    EXPECT_EQ(dev.last_report().wire_bytes, cpu.last_report().wire_bytes) << "sync " << v;
    EXPECT_EQ(dev.snapshot_version(), v == 2 ? 1u : v);
  }
  fs::remove_all(root);
}

TEST(gpu_sender, files_equal_the_host_senders_with_the_snapshot_on_the_device) {
  DS_REQUIRE_GPU();
  for (auto format : {wire_format::native, wire_format::slime})
    for (auto enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd}) run_pair(~uint64_t{0}, format, enc, false);
}

TEST(gpu_sender, a_bucket_with_host_and_device_tensors_is_built_on_the_host_with_the_same_bytes) {
  DS_REQUIRE_GPU();
  run_pair(~uint64_t{0}, wire_format::native, encoding::deltas, true);
  run_pair(~uint64_t{0}, wire_format::slime, encoding::deltas_zstd, true);
  run_pair(0, wire_format::slime, encoding::indices, true);
}

TEST(gpu_sender, compact_files_are_encoded_on_the_device_with_the_host_senders_bytes) {
  DS_REQUIRE_GPU();
  run_pair(~uint64_t{0}, wire_format::native, encoding::compact, false);  // snapshot on the device
  run_pair(0, wire_format::native, encoding::compact, false);             // snapshot in pinned memory
  run_pair(~uint64_t{0}, wire_format::native, encoding::compact, true);   // and a host tensor in the bucket
}

TEST(gpu_sender, files_equal_the_host_senders_with_the_snapshot_in_pinned_memory) {
  DS_REQUIRE_GPU();
  run_pair(0, wire_format::native, encoding::deltas_zstd, false);
  run_pair(0, wire_format::slime, encoding::deltas, false);
}

TEST(gpu_sender, refuses_a_device_tensor_seeded_on_the_host) {
  DS_REQUIRE_GPU();
  const fs::path root = fs::temp_directory_path() / ("ds_gpu_sender_r_" + std::to_string(::getpid()));
  sender_options o;
  o.delta_dir = root.string();
  fs::create_directories(root);
  sender snd(o, nullptr);
  byte_buffer host(64);
  gpu::stream s;
  gpu::device_buffer d = upload(host, s);
  ASSERT_TRUE(snd.seed("w", {host.data(), dtype::BF16, {32}, "cpu"}).ok());
  ASSERT_TRUE(snd.begin(1).ok());
  auto st = snd.add("w", {d.data(), dtype::BF16, {32}, "cuda:0"});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.err().code, errc::invalid_argument);
  EXPECT_FALSE(snd.add("x", {d.data(), dtype::BF16, {32}, "tpu"}).ok());
  snd.abort();
  fs::remove_all(root);
}

}  // namespace
}  // namespace deltasync
