// `deltasync bench`: child processes (receiver, file server; optionally in a network namespace) and the disk
// baselines measured next to the syncs.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "base/clock.h"
#include "cli/bench.h"

extern char** environ;

namespace deltasync::cli {

result<uint16_t> bench_child::start(const std::vector<std::string>& args, const std::string& port_file,
                                    const std::string& netns, int timeout_s) {
  stop();
  ::unlink(port_file.c_str());
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return errno_error(errno, "readlink /proc/self/exe");
  exe[n] = '\0';
  std::vector<std::string> argv_s;
  if (!netns.empty()) argv_s = {"ip", "netns", "exec", netns};
  argv_s.push_back(exe);
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  argv_s.push_back("--port-file");
  argv_s.push_back(port_file);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = netns.empty() ? posix_spawn(&pid_, exe, nullptr, nullptr, argv.data(), environ)
                               : posix_spawnp(&pid_, "ip", nullptr, nullptr, argv.data(), environ);
  if (rc != 0) {
    pid_ = -1;
    return errno_error(rc, "start " + argv_s[0]);
  }
  for (int i = 0; i < timeout_s * 10; ++i) {
    std::ifstream in(port_file);
    unsigned port = 0;
    if (in >> port && port != 0) return static_cast<uint16_t>(port);
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return error(errc::internal, args.front() + " exited during start-up (status " + std::to_string(status) + ")" +
                                       (netns.empty() ? "" : " in network namespace " + netns));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  stop();
  return error(errc::timeout, args.front() + " did not start listening within " + std::to_string(timeout_s) + " s");
}

void bench_child::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

namespace {

struct fd_closer {
  int fd;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

result<double> disk_write_bps(const std::string& path, uint64_t bytes) {
  constexpr size_t block = 4 << 20;
  void* mem = nullptr;
  if (posix_memalign(&mem, 4096, block) != 0) return error(errc::internal, "out of memory");
  std::unique_ptr<void, decltype(&std::free)> buf(mem, &std::free);
  std::mt19937_64 rng(42);
  auto* words = static_cast<uint64_t*>(mem);
  for (size_t i = 0; i < block / 8; ++i) words[i] = rng();
  fd_closer f{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (f.fd < 0) return errno_error(errno, "open " + path);
  stopwatch sw;
  for (uint64_t done = 0; done < bytes;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(block, bytes - done));
    words[0] = done;  // every block differs
    const ssize_t w = ::write(f.fd, mem, n);
    if (w <= 0) return errno_error(errno, "write " + path);
    done += static_cast<uint64_t>(w);
  }
  if (::fsync(f.fd) != 0) return errno_error(errno, "fsync " + path);
  return static_cast<double>(bytes) / sw.elapsed_s();
}

result<double> disk_read_bps(const std::string& path) {
  constexpr size_t block = 4 << 20;
  void* mem = nullptr;
  if (posix_memalign(&mem, 4096, block) != 0) return error(errc::internal, "out of memory");
  std::unique_ptr<void, decltype(&std::free)> buf(mem, &std::free);
  fd_closer f{::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC)};
  if (f.fd < 0) {  // no O_DIRECT here (tmpfs, some network filesystems): drop the cached pages instead
    f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd < 0) return errno_error(errno, "open " + path);
    ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  uint64_t total = 0;
  stopwatch sw;
  for (;;) {
    const ssize_t r = ::read(f.fd, mem, block);
    if (r < 0) return errno_error(errno, "read " + path);
    if (r == 0) break;
    total += static_cast<uint64_t>(r);
  }
  if (total == 0) return error(errc::io_error, path + " is empty");
  return static_cast<double>(total) / sw.elapsed_s();
}

}  // namespace deltasync::cli
