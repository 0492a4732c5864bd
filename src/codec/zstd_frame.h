// One zstd frame around a whole buffer (the `deltas_zstd` wrapping) and bounded decompression.
// Pure: no I/O. The zstd headers stay inside zstd_frame.cc.
#pragma once

#include <cstdint>

#include "base/bytes.h"
#include "base/memory_budget.h"
#include "base/result.h"

namespace deltasync {

// True when the bytes start with the zstd frame magic 28 B5 2F FD.
bool is_zstd_frame(byte_span bytes) noexcept;

// Compresses `in` into one frame that records its content size. Level 1 is what slime writes.
result<byte_buffer> zstd_wrap(byte_span in, int level = 1);

// The content size the frame header declares; fails on a missing magic, an unknown size (streamed frames),
// or a size over `max_bytes`.
result<uint64_t> zstd_content_size(byte_span frame, uint64_t max_bytes);

// Decompresses a single frame into `out`, whose size must equal the declared content size. Fails when the
// frame is corrupt, holds more than one frame, or decodes to a size other than the declared one.
status zstd_unwrap_into(byte_span frame, mutable_byte_span out);

// Decompresses a single frame of at most `max_bytes` (the declared size is checked against it first) in
// bounded pieces: the output starts at min(declared, 1 MiB) and doubles, never past the declared size, only as
// the frame really produces bytes. So a header that lies costs what the frame decodes to, not what it
// declares, and memory is never sized from the untrusted declared size alone. Each growth (the old buffer and
// the new one while it is copied) is first taken from `lease`, when given: a budget that runs out ends the
// decode with errc::limit_exceeded naming the budget's key, and the lease then holds nothing. On success the
// lease holds exactly the returned buffer's size; the caller keeps it as long as the buffer. The decoder's own
// window (at most 2^27 bytes, zstd's default limit) is counted too while it decodes.
// Errors: those of zstd_content_size, zstd_corrupt, zstd_size_lie, limit_exceeded.
result<byte_buffer> zstd_unwrap(byte_span frame, uint64_t max_bytes, memory_lease* lease = nullptr);

}  // namespace deltasync
