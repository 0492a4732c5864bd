// The Sender on a disk that fills up mid-sync (a small tmpfs; needs root, else a visible skip): the sync
// fails with no_space naming the file, nothing is left in the delta dir (no partial file, no temp file, no
// version dir, no publish marker), the snapshot stays where it was, and the next sync with room carries the
// changes (its files applied to the old weights give the new ones).
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "codec/delta_format.h"
#include "io/sync_io.h"
#include "sync/sender.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kNumel = 100'000;

class SenderDiskFull : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ds-sender-full-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=16k") != 0) {
      const int err = errno;
      fs::remove_all(dir_);
      GTEST_SKIP() << "cannot mount a small tmpfs (needs root): " << std::strerror(err);
    }
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount(dir_.c_str());
    fs::remove_all(dir_);
  }
  fs::path dir_;
  bool mounted_ = false;
};

TEST_F(SenderDiskFull, FailsCleanlyKeepsTheSnapshotAndTheRetryCarriesTheChanges) {
  std::mt19937_64 rng(9);
  byte_buffer base(kNumel * 2);
  for (auto& b : base) b = std::byte(rng() & 0xFF);
  byte_buffer next = base;
  for (size_t i = 0; i < next.size(); i += 2)
    if (rng() % 10 == 0) next[i] ^= std::byte{0x41};  // ~10k changes: ~40 KiB of delta, the disk holds 16

  sender_options o;
  o.delta_dir = dir_.string();
  sender s(o, nullptr);
  ASSERT_TRUE(s.seed("w", {base.data(), dtype::BF16, {kNumel / 100, 100}}).ok());
  ASSERT_TRUE(s.begin(1).ok());
  // One tensor is one bucket: the write happens in finish().
  ASSERT_TRUE(s.add("w", {next.data(), dtype::BF16, {kNumel / 100, 100}}).ok());
  auto r = s.finish();
  ASSERT_FALSE(r.ok()) << "a 40 KiB sync cannot fit on a 16 KiB disk";
  EXPECT_TRUE(r.err().is(errc::no_space)) << r.err().describe();
  EXPECT_NE(r.err().message.find("rank0000_flush000000.safetensors"), std::string::npos) << r.err().describe();
  EXPECT_EQ(s.snapshot_version(), 0u);
  EXPECT_FALSE(s.in_sync());
  EXPECT_TRUE(fs::is_empty(dir_)) << "no partial file, temp file, version dir or marker may be left";

  // Room again: the next sync diffs against the unchanged snapshot, so it carries the whole step.
  ASSERT_EQ(::umount(dir_.c_str()), 0);
  mounted_ = false;
  ASSERT_TRUE(s.begin(2).ok());
  ASSERT_TRUE(s.add("w", {next.data(), dtype::BF16, {kNumel / 100, 100}}).ok());
  auto ok = s.finish();
  ASSERT_TRUE(ok.ok()) << ok.err().describe();
  EXPECT_EQ(s.snapshot_version(), 2u);
  EXPECT_EQ(ok->base_version, 0u);
  byte_buffer rebuilt = base;
  for (const auto& name : ok->files) {
    auto bytes = std::move(io::read_file_all((dir_ / "weight_v000002" / name).string(), 1 << 20)).value();
    auto f = parse_delta_file(bytes);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    for (const auto& p : f->manifest.params) ASSERT_TRUE(apply_param(*f, p, rebuilt).ok());
  }
  EXPECT_EQ(rebuilt, next);
  EXPECT_TRUE(fs::exists(dir_ / "weight_v000002" / "published.json"));
}

// A bucket flushed by add() (buffer full) that hits ENOSPC: add fails, abort() removes the version dir even
// with keep_files, and the snapshot stays.
TEST_F(SenderDiskFull, AFlushInsideAddThatFailsLeavesNothing) {
  std::mt19937_64 rng(10);
  byte_buffer base(kNumel * 2);
  for (auto& b : base) b = std::byte(rng() & 0xFF);
  byte_buffer next = base;
  for (size_t i = 0; i < next.size(); i += 2)
    if (rng() % 10 == 0) next[i] ^= std::byte{0x41};
  sender_options o;
  o.delta_dir = dir_.string();
  o.buffer_bytes = 4096;
  o.keep_files = true;
  sender s(o, nullptr);
  ASSERT_TRUE(s.seed("w", {base.data(), dtype::BF16, {kNumel}}).ok());
  ASSERT_TRUE(s.begin(1).ok());
  auto st = s.add("w", {next.data(), dtype::BF16, {kNumel}});
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::no_space)) << st.err().describe();
  s.abort();
  EXPECT_EQ(s.snapshot_version(), 0u);
  EXPECT_TRUE(fs::is_empty(dir_)) << "keep_files must not keep a dir whose write failed";
}

}  // namespace
}  // namespace deltasync
