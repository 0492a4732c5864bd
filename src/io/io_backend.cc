// io_op preparation and the one place where raw kernel results become operation results; backend
// selection at start-up.
#include "io/io_backend.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "base/check.h"
#include "base/log.h"
#include "io/event_loop.h"

namespace deltasync::io {

namespace {
// EINTR/EAGAIN are transient, but a backend that returns them forever must not spin the loop forever.
constexpr unsigned max_transient_retries = 64;
}  // namespace

const char* op_code_name(op_code code) noexcept {
  switch (code) {
    case op_code::none: return "none";
    case op_code::open: return "open";
    case op_code::read: return "read";
    case op_code::write: return "write";
    case op_code::fsync: return "fsync";
    case op_code::close: return "close";
    case op_code::ftruncate: return "ftruncate";
    case op_code::rename: return "rename";
    case op_code::unlink: return "unlink";
  }
  return "?";
}

void io_op::reset(op_code code_in) {
  DS_CHECK(!internal_.in_flight, "io_op prepped while in flight");
  code = code_in;
  fd = -1;
  flags = 0;
  mode = 0;
  datasync = false;
  buf = nullptr;
  len = 0;
  offset = 0;
  buf_index = -1;
  buffered = false;
  path.clear();
  path2.clear();
  internal_ = {};
  result_ = 0;
}

void io_op::prep_open(std::string path_in, int flags_in, mode_t mode_in) {
  reset(op_code::open);
  path = std::move(path_in);
  flags = flags_in;
  mode = mode_in;
}
void io_op::prep_read(int fd_in, std::byte* buf_in, size_t len_in, uint64_t offset_in, int buf_index_in) {
  reset(op_code::read);
  fd = fd_in;
  buf = buf_in;
  len = len_in;
  offset = offset_in;
  buf_index = buf_index_in;
}
void io_op::prep_write(int fd_in, const std::byte* buf_in, size_t len_in, uint64_t offset_in,
                       int buf_index_in) {
  reset(op_code::write);
  fd = fd_in;
  buf = const_cast<std::byte*>(buf_in);  // never written through: the same field serves reads
  len = len_in;
  offset = offset_in;
  buf_index = buf_index_in;
}
void io_op::prep_fsync(int fd_in, bool datasync_in) {
  reset(op_code::fsync);
  fd = fd_in;
  datasync = datasync_in;
}
void io_op::prep_close(int fd_in) {
  reset(op_code::close);
  fd = fd_in;
}
void io_op::prep_ftruncate(int fd_in, uint64_t size) {
  reset(op_code::ftruncate);
  fd = fd_in;
  offset = size;
}
void io_op::prep_rename(std::string from, std::string to) {
  reset(op_code::rename);
  path = std::move(from);
  path2 = std::move(to);
}
void io_op::prep_unlink(std::string path_in) {
  reset(op_code::unlink);
  path = std::move(path_in);
}

std::string io_op::describe() const {
  std::string out = op_code_name(code);
  if (code == op_code::rename) return out + " " + path + " -> " + path2;
  if (!path.empty()) return out + " " + path;
  return out + " fd " + std::to_string(fd) +
         (code == op_code::read || code == op_code::write ? " at offset " + std::to_string(offset) : "");
}

size_t io_backend::raw_len(const io_op& op) noexcept {
  size_t rest = op.len - op.internal_.done;
  return op.internal_.raw_limit != 0 ? std::min(rest, op.internal_.raw_limit) : rest;
}

status io_backend::register_buffers(std::span<const iovec>) { return {}; }

void io_backend::submit(io_op& op) {
  DS_CHECK(loop_.in_loop_thread(), "io_backend::submit off the loop thread");
  DS_CHECK(!op.internal_.in_flight, "io_op submitted twice");
  DS_CHECK(op.code != op_code::none, "io_op submitted without prep");
  DS_CHECK(op.on_complete != nullptr, "io_op submitted without on_complete");
  op.internal_ = {};
  op.internal_.owner = this;
  op.internal_.in_flight = true;
  ++in_flight_;
  submit_raw(op);
}

void io_backend::finish_raw(io_op& op, int64_t res) {
  DS_CHECK(op.internal_.owner != nullptr && op.internal_.in_flight, "raw completion of an idle io_op");
  op.internal_.owner->fold(op, res);
}

void io_backend::fold(io_op& op, int64_t res) {
  DS_CHECK(loop_.in_loop_thread(), "raw completion off the loop thread");
  op.internal_.raw_limit = 0;
  if (res == -EINTR || res == -EAGAIN) {
    if (++op.internal_.retries <= max_transient_retries) return submit_raw(op);
    return complete(op, res);
  }
  if (res < 0) return complete(op, res);
  if (op.code == op_code::read || op.code == op_code::write) {
    DS_CHECK(static_cast<uint64_t>(res) <= op.len - op.internal_.done, "kernel reported too many bytes");
    op.internal_.done += static_cast<size_t>(res);
    if (res == 0) {
      // A read of 0 is end of file; a write of 0 would retry forever.
      return complete(op, op.code == op_code::read ? static_cast<int64_t>(op.internal_.done) : -EIO);
    }
    if (op.internal_.done < op.len) return submit_raw(op);  // short transfer: resubmit the rest
    return complete(op, static_cast<int64_t>(op.internal_.done));
  }
  complete(op, res);
}

void io_backend::complete(io_op& op, int64_t res) {
  DS_CHECK(in_flight_ > 0, "in-flight count underflow");
  --in_flight_;
  op.internal_.in_flight = false;
  op.result_ = res;
  // Copy the callback: it may re-prep (and so reset) this very op.
  auto cb = op.on_complete;
  cb(op);
}

error io_errno_error(int err, std::string_view what) {
  errc code = errc::io_error;
  switch (err) {
    case ENOSPC:
    case EDQUOT: code = errc::no_space; break;
    case ENOENT: code = errc::not_found; break;
    case ECANCELED: code = errc::cancelled; break;
    case ETIMEDOUT: code = errc::timeout; break;
    case ENOSYS:
    case EOPNOTSUPP: code = errc::unsupported; break;
    default: break;
  }
  return error(code, std::string(what) + ": " + std::strerror(err));
}

result<std::unique_ptr<io_backend>> make_io_backend(event_loop& loop, const io_backend_options& options) {
  std::string choice = options.backend;
  const char* from = "config";
  if (choice == "auto") {
    if (const char* env = std::getenv("DELTASYNC_IO_BACKEND"); env != nullptr && *env != '\0') {
      choice = env;
      from = "DELTASYNC_IO_BACKEND";
    }
  }
  if (choice != "auto" && choice != "uring" && choice != "threads") {
    return error(errc::invalid_argument,
                 std::string("io backend '") + choice + "' (from " + from + "): expected auto, uring or threads");
  }
  if (choice != "threads") {
    auto ring = make_uring_backend(loop, options.max_in_flight);
    if (ring.ok()) {
      if (options.quiet) {
        DS_LOG(debug, "io", "I/O backend: io_uring");
      } else {
        DS_LOG(info, "io", "I/O backend: io_uring (%s, max %u in flight)", choice == "uring" ? "forced" : "auto",
               options.max_in_flight);
      }
      return std::move(ring).value();
    }
    if (choice == "uring") {
      return error(errc::unsupported, "io backend 'uring' forced (from " + std::string(from) +
                                          ") but unavailable: " + ring.err().message);
    }
    DS_LOG(warn, "io", "I/O backend: threads (io_uring unavailable: %s)", ring.err().message.c_str());
  } else {
    if (options.quiet) {
      DS_LOG(debug, "io", "I/O backend: threads (forced by %s)", from);
    } else {
      DS_LOG(info, "io", "I/O backend: threads (forced by %s)", from);
    }
  }
  return make_thread_backend(loop, options.threads, options.max_in_flight);
}

}  // namespace deltasync::io
