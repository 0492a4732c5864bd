// One zstd frame around a whole buffer (the `deltas_zstd` wrapping) and bounded decompression.
// Pure: no I/O. The zstd headers stay inside zstd_frame.cc.
#pragma once

#include <cstdint>

#include "base/bytes.h"
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

// Convenience: zstd_content_size + allocation + zstd_unwrap_into.
result<byte_buffer> zstd_unwrap(byte_span frame, uint64_t max_bytes);

}  // namespace deltasync
