// io_backend: the seam between deltasync's file I/O and the kernel. One interface, three implementations:
// uring_backend (liburing), thread_backend (pread/pwrite on a small thread pool) and fault_backend (a
// fault-injecting decorator for tests). make_io_backend() picks one at start-up.
//
// Contract
// * Threading: submit() is called on the event-loop thread only, and every on_complete runs on that
//   thread, never inside submit() itself (so a callback may submit again without recursion).
// * Ownership: the caller owns each io_op and keeps it alive and unmoved until its on_complete ran; the
//   backend owns nothing of it. The backend must outlive every op submitted to it, and must be destroyed
//   before its event_loop.
// * Limits: a backend runs at most max_in_flight() raw operations at once; further submissions wait in
//   an intrusive queue (no allocation; bounded by the number of ops the callers own).
// * Errors: the kernel result is folded in exactly one place (io_backend::finish_raw): EINTR/EAGAIN are
//   retried, short reads/writes resubmitted for the rest, and what reaches on_complete is either full
//   success or -errno.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/result.h"
#include "io/io_op.h"

namespace deltasync::io {

class event_loop;

class io_backend {
 public:
  explicit io_backend(event_loop& loop) : loop_(loop) {}
  virtual ~io_backend() = default;
  io_backend(const io_backend&) = delete;
  io_backend& operator=(const io_backend&) = delete;

  virtual const char* name() const noexcept = 0;

  // Starts op (see the contract above). Loop thread only.
  void submit(io_op& op);
  // Full operations submitted here and not yet completed.
  size_t in_flight() const noexcept { return in_flight_; }
  virtual size_t max_in_flight() const noexcept = 0;

  // Registers buffers for fixed-buffer I/O (uring only; the others accept and ignore them). At most one
  // table at a time; the memory must stay mapped until unregister_buffers(). An error means "not
  // registered": I/O on those buffers still works, unregistered.
  virtual status register_buffers(std::span<const iovec> buffers);
  virtual void unregister_buffers() {}
  virtual bool buffers_registered() const noexcept { return false; }

  // For decorators: one kernel attempt at op's remaining bytes (op.buf + done, at most raw_limit).
  // Implementations report through finish_raw() on the loop thread.
  virtual void submit_raw(io_op& op) = 0;

  event_loop& loop() const noexcept { return loop_; }

  // The remaining span of a read/write for the next raw attempt.
  static std::byte* raw_buf(const io_op& op) noexcept { return op.buf + op.internal_.done; }
  static size_t raw_len(const io_op& op) noexcept;
  static uint64_t raw_offset(const io_op& op) noexcept { return op.offset + op.internal_.done; }

 protected:
  // Folds one raw kernel result (>= 0 or -errno) into op; resubmits or completes it. Loop thread only.
  static void finish_raw(io_op& op, int64_t res);

 private:
  void fold(io_op& op, int64_t res);
  void complete(io_op& op, int64_t res);

  event_loop& loop_;
  size_t in_flight_ = 0;
};

// The project error for an errno from file I/O, message "<what>: <strerror>": ENOSPC/EDQUOT ->
// errc::no_space, ENOENT -> not_found, ECANCELED -> cancelled, ETIMEDOUT -> timeout, ENOSYS/EOPNOTSUPP ->
// unsupported, anything else -> io_error.
error io_errno_error(int err, std::string_view what);

struct io_backend_options {
  // "auto" (io_uring when a ring can be created, else threads), "uring" or "threads". When "auto", the
  // env DELTASYNC_IO_BACKEND (same values) decides instead, so operators can force one without a config.
  std::string backend = "auto";
  unsigned max_in_flight = 64;   // raw operations in the kernel at once (CQ is sized for this)
  unsigned threads = 4;          // thread backend: worker threads
  bool quiet = false;            // log the choice at debug instead of info (short-lived helpers)
};

// Creates the selected backend and logs which one and why. Errors: invalid_argument for an unknown
// name; unsupported when "uring" is forced and no ring can be created.
result<std::unique_ptr<io_backend>> make_io_backend(event_loop& loop, const io_backend_options& options);

// Concrete factories (only src/cli and tests should name them).
result<std::unique_ptr<io_backend>> make_uring_backend(event_loop& loop, unsigned max_in_flight);
std::unique_ptr<io_backend> make_thread_backend(event_loop& loop, unsigned threads, unsigned max_in_flight);

}  // namespace deltasync::io
