// atomic_file_writer: streams one file from a sequence of pool buffers and publishes it atomically:
// data goes to "<path>.tmp" (O_DIRECT while offsets, lengths and buffers are 4096-aligned; a final
// unaligned tail is written padded through O_DIRECT and trimmed with ftruncate, an unaligned middle
// piece through a second, buffered fd), then fdatasync, rename to <path>, fsync of the directory.
// A reader never sees a partial file under <path>: the name appears only through the rename, after the
// data is durable.
//
// Contract
// * Threading: construct, append and start_commit/start_abort on the loop thread only; callbacks run there.
// * Ownership: append() takes the buffer; it returns to its pool as soon as its write completed, which is
//   the producer's back-pressure (wait on buffer_pool::start_acquire). The writer must stay alive until
//   the commit/abort callback ran; destroying it earlier is a programmer error (DS_CHECK).
// * Limits: at most options.max_in_flight writes in the backend; queued appends are bounded by the pool
//   that supplies the buffers (and DS_CHECKed against options.max_queued).
// * Errors are sticky: after the first failure append() returns it, later writes are dropped, and
//   start_commit reports it. Every error names the path; ENOSPC is errc::no_space. On any error the
//   temp file is closed and removed, and nothing exists under <path> that this writer created.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "io/buffer_pool.h"
#include "io/io_op.h"

namespace deltasync::io {

class io_backend;

struct atomic_file_writer_options {
  bool direct_io = true;        // O_DIRECT for aligned writes (falls back to buffered if refused)
  bool sync = true;             // fdatasync before rename and fsync the directory after
  size_t max_in_flight = 8;     // writes in the backend at once
  size_t max_queued = 4096;     // appends waiting for a write slot
  mode_t mode = 0644;
};

class atomic_file_writer {
 public:
  // Starts opening <path>.tmp (created or truncated) right away.
  atomic_file_writer(io_backend& backend, std::string path, const atomic_file_writer_options& options = {});
  ~atomic_file_writer();
  atomic_file_writer(const atomic_file_writer&) = delete;
  atomic_file_writer& operator=(const atomic_file_writer&) = delete;

  // Appends buf[0, len) at the current end of the file. len <= buf.size().
  status append(buffer_handle buf, size_t len);
  // Finishes the file: on_done(ok) once <path> exists, durable; on_done(error) otherwise.
  void start_commit(std::function<void(status)> on_done);
  // Gives up: waits for writes in flight, removes the temp file, then on_done(). Nothing is published.
  void start_abort(std::function<void()> on_done);

  const std::string& path() const noexcept { return path_; }
  const std::string& temp_path() const noexcept { return tmp_path_; }
  uint64_t bytes_appended() const noexcept { return size_; }
  bool failed() const noexcept { return !first_error_.ok(); }
  bool direct() const noexcept { return direct_; }

 private:
  struct pending_write {
    buffer_handle buf;
    size_t len = 0;
    uint64_t offset = 0;
    bool want_direct = false;
    bool padded = false;  // the final tail: written rounded up through O_DIRECT, trimmed later
  };
  struct write_slot {
    io_op op;
    buffer_handle buf;
    bool busy = false;
  };
  enum class step { idle, open, open_buffered, ftruncate, fdatasync, close_buffered, close, rename, open_dir,
                    fsync_dir, close_dir, done, cleanup_close_buffered, cleanup_close, cleanup_unlink };

  void on_open(io_op& op);
  void on_open_buffered(io_op& op);
  void pump();
  void on_write(write_slot& slot);
  void fail(error e);
  void maybe_finish();
  void next_step(step s);
  void on_meta(io_op& op);
  void finish_cleanup();
  std::string describe_step(const io_op& op, step s) const;

  io_backend& backend_;
  std::string path_;
  std::string tmp_path_;
  atomic_file_writer_options options_;
  int fd_ = -1;           // the temp file, O_DIRECT when direct_
  int fd_buffered_ = -1;  // a second, buffered fd on the temp file for unaligned pieces
  int dir_fd_ = -1;
  bool direct_ = false;
  bool created_ = false;
  bool unaligned_mode_ = false;
  bool need_truncate_ = false;
  bool finishing_ = false;   // commit or abort requested
  bool aborting_ = false;
  bool meta_busy_ = false;   // an open/meta op is in flight
  uint64_t size_ = 0;
  step step_ = step::idle;
  status first_error_;
  std::unique_ptr<pending_write> held_tail_;
  std::deque<pending_write> queue_;
  std::vector<std::unique_ptr<write_slot>> slots_;
  size_t writes_in_flight_ = 0;
  io_op meta_op_;
  std::function<void(status)> on_commit_;
  std::function<void()> on_abort_;
};

}  // namespace deltasync::io
