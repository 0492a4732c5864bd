// io::file_lock: one holder at a time (also across processes, and between two acquires in one process), the
// refusal names the holder's pid, release removes the file, a dead holder's leftover file is taken over.
#include "io/file_lock.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace deltasync::io {
namespace {

namespace fs = std::filesystem;

class FileLock : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("deltasync_file_lock_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "x.lock").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string path_;
};

TEST_F(FileLock, OneHolderAtATimeAndReleaseRemovesTheFile) {
  auto a = file_lock::acquire(path_, "publish");
  ASSERT_TRUE(a.ok()) << a.err().message;
  EXPECT_TRUE(a->held());
  EXPECT_TRUE(fs::exists(path_));
  auto b = file_lock::acquire(path_, "publish");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.err().code, errc::busy);
  EXPECT_NE(b.err().message.find("publish: " + path_), std::string::npos) << b.err().message;
  EXPECT_NE(b.err().message.find("(pid " + std::to_string(::getpid()) + ")"), std::string::npos) << b.err().message;
  a->release();
  EXPECT_FALSE(a->held());
  EXPECT_FALSE(fs::exists(path_)) << "release leaves nothing behind";
  auto c = file_lock::acquire(path_, "publish");
  ASSERT_TRUE(c.ok()) << c.err().message;
  file_lock moved = std::move(c).value();  // the lock travels with the object
  EXPECT_TRUE(moved.held());
  EXPECT_FALSE(file_lock::acquire(path_, "publish").ok());
}

TEST_F(FileLock, ALeftoverFileOfADeadHolderIsTakenOver) {
  std::ofstream(path_) << "999999\n";  // the file, not the lock: its holder is gone
  auto a = file_lock::acquire(path_, "publish");
  ASSERT_TRUE(a.ok()) << a.err().message;
  std::ifstream in(path_);
  std::string pid;
  in >> pid;
  EXPECT_EQ(pid, std::to_string(::getpid()));
}

TEST_F(FileLock, AnotherProcessHoldsItUntilItDies) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only async-signal-safe calls after fork (the test process may have threads): lock the file the way
    // file_lock does (flock on the path, the pid written in it) and hold it until killed.
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    char c = fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 'y' : 'n';
    char digits[24];
    int n = 0;
    for (pid_t p = ::getpid(); p > 0; p /= 10) digits[n++] = static_cast<char>('0' + p % 10);
    char text[24];
    for (int i = 0; i < n; ++i) text[i] = digits[n - 1 - i];
    text[n] = '\n';
    if (c == 'y' && ::pwrite(fd, text, n + 1, 0) != n + 1) c = 'n';
    (void)!::write(ready[1], &c, 1);
    ::pause();  // holds the lock until killed
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto mine = file_lock::acquire(path_, "parent");
  ASSERT_FALSE(mine.ok());
  EXPECT_EQ(mine.err().code, errc::busy);
  EXPECT_NE(mine.err().message.find("(pid " + std::to_string(child) + ")"), std::string::npos) << mine.err().message;
  ::kill(child, SIGKILL);
  int st = 0;
  ::waitpid(child, &st, 0);
  auto after = file_lock::acquire(path_, "parent");
  EXPECT_TRUE(after.ok()) << "the kernel dropped the dead child's lock: " << (after.ok() ? "" : after.err().message);
  ::close(ready[0]);
  ::close(ready[1]);
}

}  // namespace
}  // namespace deltasync::io
