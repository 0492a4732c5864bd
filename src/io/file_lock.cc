#include "io/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace deltasync::io {

file_lock& file_lock::operator=(file_lock&& o) noexcept {
  if (this != &o) {
    release();
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

void file_lock::release() noexcept {
  if (fd_ < 0) return;
  // Unlinked while still held, so nothing is left behind; acquire() re-checks that the file it locked is
  // still the one at the path, so a waiter that opened this inode before the unlink does not think it holds
  // the lock.
  ::unlink(path_.c_str());
  ::close(fd_);  // closing the last descriptor of the open file drops the lock
  fd_ = -1;
}

result<file_lock> file_lock::acquire(const std::string& path, const std::string& what) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return error(errc::io_error, "open lock file " + path + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      if (e != EWOULDBLOCK) {
        ::close(fd);
        return error(errc::io_error, "lock " + path + ": " + std::strerror(e));
      }
      char buf[32] = {};
      const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
      ::close(fd);
      std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return error(errc::busy, what + ": " + path + " is locked by another holder" +
                                   (holder.empty() ? std::string() : " (pid " + holder + ")"));
    }
    // Locked; but the previous holder may have unlinked this inode between our open and flock: the lock
    // counts only if the path still names the file we hold.
    struct stat held {}, named {};
    if (::fstat(fd, &held) != 0 || ::stat(path.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
        held.st_dev != named.st_dev) {
      ::close(fd);
      continue;
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      // Still locked; only the note of who holds it is missing (a full disk, say).
    }
    file_lock l;
    l.fd_ = fd;
    l.path_ = path;
    return l;
  }
  return error(errc::busy, what + ": " + path + " kept changing under the lock (others locking and releasing it)");
}

}  // namespace deltasync::io
