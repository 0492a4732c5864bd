// chunked_reader: the receiver's prefetching file reader. Reads a list of files in pieces of chunk_bytes
// with at most read_workers reads in flight, and hands each finished piece to the consumer (the apply
// queue) in file order, as soon as it and every earlier piece of that file are in. Per file: buffered when
// most of it is in the page cache (page_cache_share, sampled at its open), else O_DIRECT where the filesystem
// allows it (buffered fallback, e.g. when open says EINVAL). Buffered reads are marked so io_uring copies
// several in parallel on its workers.
//
// Contract
// * Threading: construct, start() and cancel() on the loop thread; on_piece and on_done run there.
// * Ownership: each piece carries the pool buffer holding its bytes; the consumer releases it (destroys
//   or reset()s the handle, on any thread) when done with it. Memory in use is bounded by the pool: when
//   the consumer holds every buffer, reading pauses until one comes back (back-pressure).
// * Limits: read_workers reads in flight, max_open_files fds, the pool's bytes in memory.
// * Errors: the first error (missing file -> errc::not_found naming the path; a size other than the
//   expected one or a short read -> errc::io_error; EIO and other errnos -> io_errno_error) is reported
//   once through on_done, and no piece is delivered after it. cancel() reports errc::cancelled the same
//   way. on_done(ok) follows the last piece of the last file. on_done runs once nothing is in flight;
//   the reader may be destroyed from inside it (or after it), not before.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "io/buffer_pool.h"
#include "io/io_op.h"

namespace deltasync::io {

class io_backend;

struct read_file_spec {
  std::string path;
  std::optional<uint64_t> expected_bytes;  // when set, any other size is an error
  std::string open_path = {};  // when set, opened instead of `path` (e.g. /proc/self/fd/N); `path` names it in errors
};

struct read_piece {
  size_t file_index = 0;
  uint64_t offset = 0;
  byte_span bytes;        // inside buffer; empty only for an empty file
  buffer_handle buffer;   // release when done with bytes
  bool last_in_file = false;
};

struct chunked_reader_options {
  size_t chunk_bytes = size_t{4} << 20;  // <= the pool's buffer_bytes
  size_t read_workers = 8;               // reads in flight
  size_t max_open_files = 4;
  bool direct_io = true;
  // A file with at least this share of its pages cached is read buffered; above 1: always O_DIRECT.
  double cached_share_for_buffered = 0.5;
};

class chunked_reader {
 public:
  chunked_reader(io_backend& backend, buffer_pool& pool, std::vector<read_file_spec> files,
                 const chunked_reader_options& options);
  ~chunked_reader();
  chunked_reader(const chunked_reader&) = delete;
  chunked_reader& operator=(const chunked_reader&) = delete;

  void start(std::function<void(read_piece)> on_piece, std::function<void(status)> on_done);
  // Stops issuing reads and drops undelivered pieces; on_done(cancelled) once in-flight reads drained.
  void cancel();

  uint64_t bytes_delivered() const noexcept { return bytes_delivered_; }

 private:
  struct file_state {
    read_file_spec spec;
    int fd = -1;
    bool direct = false;
    bool opening = false, opened = false, closing = false, closed = false;
    uint64_t size = 0;
    uint64_t next_issue = 0;
    uint64_t next_deliver = 0;
    bool delivered_all = false;
    size_t reads_in_flight = 0;
    std::map<uint64_t, read_piece> ready;  // completed pieces waiting for an earlier one
    io_op op;                              // open, then close
  };
  struct read_slot {
    io_op op;
    buffer_handle buf;
    size_t file = 0;
    uint64_t offset = 0;
    size_t want = 0;
    bool busy = false;
  };

  void pump();
  bool want_direct(size_t index) const;
  void start_open(size_t index, bool direct);
  void on_open(size_t index);
  void issue_read(size_t index, buffer_handle buf);
  void on_read(read_slot& slot);
  void deliver(file_state& f, size_t index);
  void start_close(size_t index);
  void on_close(size_t index);
  void fail(error e);
  void maybe_done();

  io_backend& backend_;
  buffer_pool& pool_;
  chunked_reader_options options_;
  std::vector<std::unique_ptr<file_state>> files_;
  std::vector<std::unique_ptr<read_slot>> slots_;
  std::function<void(read_piece)> on_piece_;
  std::function<void(status)> on_done_;
  size_t issue_file_ = 0;        // next file to issue reads from
  size_t open_fds_ = 0;          // fds open or opening
  size_t ops_in_flight_ = 0;     // opens, reads and closes
  size_t reads_in_flight_ = 0;
  size_t files_done_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  bool finished_ = false;
  bool waiting_for_buffer_ = false;
  uint64_t acquire_ticket_ = 0;
  buffer_handle spare_;
  status first_error_;
  uint64_t bytes_delivered_ = 0;
};

}  // namespace deltasync::io
