// Internal to src/io: one blocking attempt at an io_op, with the kernel's result convention (>= 0 or
// -errno). Used by the thread backend for everything and by the uring backend for opcodes its kernel
// lacks (ftruncate has no io_uring opcode before 6.9).
#pragma once

#include <cstdint>

#include "io/io_op.h"

namespace deltasync::io::detail {

int64_t run_raw_syscall(const io_op& op) noexcept;

}  // namespace deltasync::io::detail
