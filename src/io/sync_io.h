// Synchronous convenience file I/O for tools, the CLI and tests, built on the same machinery as the
// service (backend, pool, chunked_reader, atomic_file_writer). Each call blocks the calling thread.
//
// Contract
// * The two-argument forms create a private event loop, backend (auto selection; env
//   DELTASYNC_IO_BACKEND honoured) and small buffer pool per call: simple, not for hot paths.
// * The forms taking a backend and pool run on that backend's loop and block the caller until done;
//   they must not be called on the loop thread (DS_CHECK).
// * Errors: as chunked_reader / atomic_file_writer, plus errc::limit_exceeded when the file is larger
//   than max_bytes (checked before reading anything).
#pragma once

#include <cstddef>
#include <string>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync::io {

class io_backend;
class buffer_pool;

result<byte_buffer> read_file_all(const std::string& path, size_t max_bytes);
status write_file_atomic(const std::string& path, byte_span data);

result<byte_buffer> read_file_all(io_backend& backend, buffer_pool& pool, const std::string& path, size_t max_bytes);
status write_file_atomic(io_backend& backend, buffer_pool& pool, const std::string& path, byte_span data);

}  // namespace deltasync::io
