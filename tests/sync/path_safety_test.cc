// open_sync_files: every file of a sync opened beneath the delta dir, with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS) and with the checked-realpath fallback, which must refuse exactly the same paths.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/raw_syscall.h"
#include "sync/receiver.h"
#include "sync/sync_request.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

class PathSafety : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ds-paths-" + std::to_string(::getpid()) + "-" +
                                         std::to_string(std::random_device{}()));
    delta_ = root_ / "deltas";
    fs::create_directories(delta_ / "weight_v000001" / "subdir");
    std::ofstream(delta_ / "weight_v000001" / "a.safetensors") << "hello";
    std::ofstream(root_ / "secret") << "outside";
    fs::create_symlink(root_ / "secret", delta_ / "weight_v000001" / "out_link");
    fs::create_symlink(delta_ / "weight_v000001" / "a.safetensors", delta_ / "weight_v000001" / "in_link");
    fs::create_symlink(root_, delta_ / "escape");
    fs::create_symlink(delta_ / "weight_v000001", delta_ / "alias");
    if (GetParam()) {
      const int dirfd = ::open(delta_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      const int fd = io::open_beneath(dirfd, "weight_v000001/a.safetensors", O_PATH);
      ::close(dirfd);
      if (fd == -ENOSYS) GTEST_SKIP() << "openat2 is not available here (kernel < 5.6 or seccomp); the fallback case runs";
      ASSERT_GE(fd, 0) << std::strerror(-fd);
      ::close(fd);
    }
  }
  void TearDown() override { fs::remove_all(root_); }

  result<sync_files> open(const std::string& dir, std::vector<std::string> files) {
    sync_request r;
    r.version = 1;
    r.dir = dir;
    r.files = std::move(files);
    return open_sync_files(delta_.string(), r, GetParam());
  }
  void expect_refused(const std::string& dir, const std::string& file, unsigned want_status) {
    auto r = open(dir, {file});
    ASSERT_FALSE(r.ok()) << dir << "/" << file << " was opened";
    EXPECT_EQ(http_status_for(r.err()), want_status) << dir << "/" << file << ": " << r.err().describe();
  }
  fs::path root_, delta_;
};

TEST_P(PathSafety, OpensAPlainFileAndReadsItThroughItsOpenPath) {
  auto r = open("weight_v000001", {"a.safetensors"});
  ASSERT_TRUE(r.ok()) << r.err().describe();
  ASSERT_EQ(r->files().size(), 1u);
  EXPECT_EQ(r->files()[0].bytes, 5u);
  EXPECT_NE(r->files()[0].path.find("weight_v000001/a.safetensors"), std::string::npos);
  // The open path re-opens the inode that was checked, even after the name is swapped for a symlink.
  fs::remove(delta_ / "weight_v000001" / "a.safetensors");
  fs::create_symlink(root_ / "secret", delta_ / "weight_v000001" / "a.safetensors");
  std::ifstream in(r->files()[0].open_path);
  std::string got;
  in >> got;
  EXPECT_EQ(got, "hello");
}

TEST_P(PathSafety, RefusesEveryEscapeAndEverySymlink) {
  expect_refused("weight_v000001", "out_link", 403);  // symlink leading outside
  expect_refused("weight_v000001", "in_link", 403);   // symlink staying inside: refused too (NO_SYMLINKS)
  expect_refused("escape", "secret", 403);            // symlinked dir leading outside
  expect_refused("alias", "a.safetensors", 403);      // symlinked dir staying inside
  expect_refused("../deltas/weight_v000001", "a.safetensors", 403);
  expect_refused("/etc", "passwd", 403);
  expect_refused("weight_v000001", "../../secret", 403);
  expect_refused("weight_v000001", "subdir/a.safetensors", 403);
  expect_refused("weight_v000001", "", 403);
  expect_refused("weight_v000001", "missing.safetensors", 404);
  expect_refused("weight_v000099", "a.safetensors", 404);
  expect_refused("weight_v000001", "subdir", 400);  // not a regular file
}

INSTANTIATE_TEST_SUITE_P(Openat2AndFallback, PathSafety, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "openat2" : "realpath_fallback"; });

TEST(RequestLimits, TooManyFilesIs413NamingTheSetting) {
  request_limits l;
  l.max_files = 2;
  auto r = parse_sync_request(R"({"version": 1, "dir": "d", "files": ["a", "b", "c"]})", l);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(http_status_for(r.err()), 413u);
  EXPECT_NE(r.err().message.find("max-files-per-sync"), std::string::npos) << r.err().message;
}

}  // namespace
}  // namespace deltasync
