// io_op: one caller-owned file operation (open, read, write, fsync, close, ftruncate, rename, unlink)
// submitted to an io_backend. Modelled on an io_uring SQE plus its completion: the caller fills it with a
// prep_* function, sets on_complete, submits it, and must keep it alive and unmoved until on_complete
// has run. Its address is the backend's user_data, so it is neither copyable nor movable.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace deltasync::io {

class io_backend;

enum class op_code : uint8_t { none, open, read, write, fsync, close, ftruncate, rename, unlink };

const char* op_code_name(op_code code) noexcept;

class io_op {
 public:
  io_op() = default;
  io_op(const io_op&) = delete;
  io_op& operator=(const io_op&) = delete;

  // Each prep_* resets the operation; a completed op may be prepped and submitted again.
  void prep_open(std::string path, int flags, mode_t mode = 0644);
  // Reads until len bytes are read or EOF: result() < len only at end of file. buf_index is the fixed
  // (registered) buffer index from buffer_handle::fixed_index(), or -1.
  void prep_read(int fd, std::byte* buf, size_t len, uint64_t offset, int buf_index = -1);
  // Writes all len bytes; a write that makes no progress fails with io_error.
  void prep_write(int fd, const std::byte* buf, size_t len, uint64_t offset, int buf_index = -1);
  void prep_fsync(int fd, bool datasync);
  void prep_close(int fd);
  void prep_ftruncate(int fd, uint64_t size);
  void prep_rename(std::string from, std::string to);
  void prep_unlink(std::string path);

  // Runs on the event-loop thread once the operation finished; the op may be destroyed or resubmitted
  // from inside the callback.
  std::function<void(io_op&)> on_complete;

  // After completion: >= 0 on success (the fd for open, bytes transferred for read/write, 0 otherwise),
  // or -errno. Short transfers and EINTR/EAGAIN never surface here: the backend resubmits them.
  int64_t result() const noexcept { return result_; }
  bool ok() const noexcept { return result_ >= 0; }
  int error_number() const noexcept { return result_ < 0 ? static_cast<int>(-result_) : 0; }
  // "read /path/x" style description, for error messages (the path is known for open/rename/unlink).
  std::string describe() const;

  // Inputs, readable by backends (set through prep_*).
  op_code code = op_code::none;
  int fd = -1;
  int flags = 0;
  mode_t mode = 0;
  bool datasync = false;
  std::byte* buf = nullptr;
  size_t len = 0;
  uint64_t offset = 0;
  int buf_index = -1;
  // Set by callers on buffered (non-O_DIRECT) fds: lets io_uring punt page-cache copies to its worker
  // threads so several cached reads copy in parallel instead of inline in one task.
  bool buffered = false;
  std::string path;
  std::string path2;

  // Backend bookkeeping; not for callers.
  struct internal {
    io_backend* owner = nullptr;  // the outermost backend: where raw completions are folded
    size_t done = 0;              // bytes already transferred by earlier raw attempts
    size_t raw_limit = 0;         // when non-zero, a raw attempt transfers at most this many bytes
    unsigned retries = 0;         // EINTR/EAGAIN retries so far
    io_op* next = nullptr;        // intrusive queue link inside a backend
    bool in_flight = false;
  } internal_;

 private:
  void reset(op_code code_in);
  int64_t result_ = 0;
  friend class io_backend;
};

}  // namespace deltasync::io
