// Blocking syscalls for one io_op attempt; see raw_syscall.h.
#include "io/raw_syscall.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "base/check.h"
#include "io/io_backend.h"

namespace deltasync::io::detail {

int64_t run_raw_syscall(const io_op& op) noexcept {
  ssize_t rc = 0;
  switch (op.code) {
    case op_code::open: rc = ::open(op.path.c_str(), op.flags | O_CLOEXEC, op.mode); break;
    case op_code::read:
      rc = ::pread(op.fd, io_backend::raw_buf(op), io_backend::raw_len(op),
                   static_cast<off_t>(io_backend::raw_offset(op)));
      break;
    case op_code::write:
      rc = ::pwrite(op.fd, io_backend::raw_buf(op), io_backend::raw_len(op),
                    static_cast<off_t>(io_backend::raw_offset(op)));
      break;
    case op_code::fsync: rc = op.datasync ? ::fdatasync(op.fd) : ::fsync(op.fd); break;
    case op_code::close: rc = ::close(op.fd); break;
    case op_code::ftruncate: rc = ::ftruncate(op.fd, static_cast<off_t>(op.offset)); break;
    case op_code::rename: rc = ::rename(op.path.c_str(), op.path2.c_str()); break;
    case op_code::unlink: rc = ::unlink(op.path.c_str()); break;
    case op_code::none: DS_CHECK(false, "io_op without prep");
  }
  if (rc < 0) return -errno;
  return static_cast<int64_t>(rc);
}

}  // namespace deltasync::io::detail

namespace deltasync::io {

int open_beneath(int dirfd, const char* path, int flags) noexcept {
#ifdef SYS_openat2
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
  long rc;
  do {
    rc = ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  } while (rc < 0 && errno == EINTR);  // RESOLVE_* lookups may also return EAGAIN under rename races
  if (rc < 0 && errno == EAGAIN) rc = ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  if (rc < 0) return -errno;
  return static_cast<int>(rc);
#else
  (void)dirfd;
  (void)path;
  (void)flags;
  return -ENOSYS;
#endif
}

}  // namespace deltasync::io
