// whole_file_reader: reads whole files straight into caller memory, with no bounce buffer and no copy: each
// chunk is read by the backend into its final place. For loading checkpoints (src/sync/checkpoint_loader),
// where every byte of every file is kept; the receiver's streaming path is chunked_reader.
//
// Reads are issued in (file, offset) order, at most reads_in_flight at once across files, so the next file's
// reads start while the current file's last ones finish. Each file is read with O_DIRECT when its spec asks
// for it and its destination allows it (aligned address, room for the tail rounded up to io_alignment), and
// buffered otherwise (also when the filesystem refuses O_DIRECT with EINVAL); buffered chunks are marked so
// io_uring copies several of them in parallel on its workers. Use page_cache_share() to choose: O_DIRECT for
// a file that is not in the page cache (no second copy through it), buffered for one that is (served from
// memory rather than the disk).
//
// Contract
// * Threading: construct, start() and cancel() on the backend's loop thread; on_file and on_done run there.
// * Ownership: the caller keeps every dest span valid and does not touch it until that file's on_file (or
//   on_done) ran; the reader owns nothing else. It may be destroyed from inside on_done or after it.
// * Limits: reads_in_flight reads, max_open_files fds.
// * Errors: the first error (a missing file -> errc::not_found naming the path; a size other than
//   expected_bytes, a file that shrank while being read -> errc::io_error; other errnos -> io_errno_error) is
//   reported once through on_done, and on_file is not called after it. cancel() reports errc::cancelled the
//   same way. on_file(i) runs once file i is wholly in its dest, in any order; on_done(ok) follows the last.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "io/io_op.h"

namespace deltasync::io {

class io_backend;

struct whole_file_spec {
  std::string path;
  uint64_t expected_bytes = 0;  // the size the caller allocated for; any other size is an error
  mutable_byte_span dest;       // at least expected_bytes; the bytes past them may be overwritten
  bool direct = true;           // O_DIRECT when dest allows it
};

struct whole_file_reader_options {
  size_t chunk_bytes = size_t{8} << 20;  // a multiple of io_alignment
  size_t reads_in_flight = 8;
  size_t max_open_files = 4;
};

class whole_file_reader {
 public:
  whole_file_reader(io_backend& backend, std::vector<whole_file_spec> files, const whole_file_reader_options& options);
  ~whole_file_reader();
  whole_file_reader(const whole_file_reader&) = delete;
  whole_file_reader& operator=(const whole_file_reader&) = delete;

  void start(std::function<void(size_t file)> on_file, std::function<void(status)> on_done);
  // Stops issuing reads; on_done(cancelled) once in-flight operations drained.
  void cancel();

 private:
  struct file_state;
  struct read_slot;

  void pump();
  void start_open(size_t index, bool direct);
  void on_open(size_t index);
  void issue_read(size_t index, read_slot& slot);
  void on_read(read_slot& slot);
  void start_close(size_t index);
  void on_close(size_t index);
  void fail(error e);
  void maybe_done();

  io_backend& backend_;
  whole_file_reader_options options_;
  std::vector<std::unique_ptr<file_state>> files_;
  std::vector<std::unique_ptr<read_slot>> slots_;
  std::function<void(size_t)> on_file_;
  std::function<void(status)> on_done_;
  size_t issue_file_ = 0;     // next file to issue reads from
  size_t open_fds_ = 0;       // fds open or opening
  size_t ops_in_flight_ = 0;  // opens, reads and closes
  size_t reads_in_flight_ = 0;
  size_t files_done_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  bool finished_ = false;
  status first_error_;
};

// Share (0..1) of the file's pages in the page cache, estimated with mincore over a read-only mapping from
// 256 evenly spread runs of 16 pages (every page of a file of up to 16 MiB); 0 for an empty file or when the
// file cannot be mapped. A hint for whole_file_spec::direct; synchronous, well under a millisecond.
double page_cache_share(const std::string& path);

}  // namespace deltasync::io
