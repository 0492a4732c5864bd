// Internal to src/io: one blocking attempt at an io_op, with the kernel's result convention (>= 0 or
// -errno). Used by the thread backend for everything and by the uring backend for opcodes its kernel
// lacks (ftruncate has no io_uring opcode before 6.9).
#pragma once

#include <cstdint>

#include "io/io_op.h"

namespace deltasync::io::detail {

int64_t run_raw_syscall(const io_op& op) noexcept;

}  // namespace deltasync::io::detail

namespace deltasync::io {

// openat2(dirfd, path, {flags | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS}) through the raw syscall
// (glibc 2.36 has no wrapper): `path` must stay below dirfd without "..", an absolute name or any symlink.
// Returns the fd, or -errno: -EXDEV (escapes dirfd), -ELOOP (a symlink on the way), -ENOENT, and -ENOSYS
// where the kernel (< 5.6) or a seccomp filter lacks openat2 (callers fall back to a checked realpath).
int open_beneath(int dirfd, const char* path, int flags) noexcept;

}  // namespace deltasync::io
