// atomic_file_writer: a write pipeline (bounded slots) plus a chain of metadata steps, one op at a time:
// commit = [ftruncate] -> fdatasync -> close(s) -> rename -> open dir -> fsync dir -> close dir;
// cleanup = close(s) -> unlink. Each step is chosen from the current state, so a failure anywhere
// switches to the cleanup chain without special cases.
#include "io/atomic_file_writer.h"

#include <fcntl.h>

#include <cstdint>
#include <cstring>

#include "base/check.h"
#include "base/log.h"
#include "io/io_backend.h"

namespace deltasync::io {

namespace {
std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
}  // namespace

atomic_file_writer::atomic_file_writer(io_backend& backend, std::string path, const atomic_file_writer_options& options)
    : backend_(backend), path_(std::move(path)), tmp_path_(path_ + ".tmp"), options_(options) {
  DS_CHECK(options_.max_in_flight > 0 && options_.max_in_flight <= 1024, "writer: max_in_flight 1..1024");
  slots_.reserve(options_.max_in_flight);
  for (size_t i = 0; i < options_.max_in_flight; ++i) slots_.push_back(std::make_unique<write_slot>());
  direct_ = options_.direct_io;
  next_step(step::open);
}

atomic_file_writer::~atomic_file_writer() {
  DS_CHECK(step_ == step::done, "atomic_file_writer destroyed before its commit/abort callback ran");
}

status atomic_file_writer::append(buffer_handle buf, size_t len) {
  DS_CHECK(!finishing_, "append after start_commit/start_abort");
  DS_CHECK(len <= buf.size(), "append longer than its buffer");
  if (!first_error_.ok()) return first_error_;
  if (len == 0) return {};
  uint64_t offset = size_;
  size_ += len;
  if (held_tail_ != nullptr) {
    // The held unaligned piece was not the last one after all: it must go through the buffered fd, and
    // every later offset is unaligned.
    held_tail_->want_direct = false;
    held_tail_->padded = false;
    queue_.push_back(std::move(*held_tail_));
    held_tail_.reset();
    unaligned_mode_ = true;
  }
  bool buf_aligned = is_aligned(reinterpret_cast<uintptr_t>(buf.data()));
  if (!unaligned_mode_ && is_aligned(offset) && buf_aligned) {
    if (is_aligned(len)) {
      queue_.push_back({std::move(buf), len, offset, true, false});
    } else {
      // Possibly the final tail: hold it until the next append or the commit decides.
      held_tail_ = std::make_unique<pending_write>(pending_write{std::move(buf), len, offset, true, true});
    }
  } else {
    queue_.push_back({std::move(buf), len, offset, false, false});
    unaligned_mode_ = true;
  }
  DS_CHECK(queue_.size() <= options_.max_queued, "writer: too many queued appends");
  pump();
  return {};
}

void atomic_file_writer::start_commit(std::function<void(status)> on_done) {
  DS_CHECK(!finishing_, "start_commit twice");
  finishing_ = true;
  on_commit_ = std::move(on_done);
  if (held_tail_ != nullptr) {
    queue_.push_back(std::move(*held_tail_));
    held_tail_.reset();
  }
  pump();
  maybe_finish();
}

void atomic_file_writer::start_abort(std::function<void()> on_done) {
  DS_CHECK(!finishing_, "start_abort after start_commit/start_abort");
  finishing_ = true;
  aborting_ = true;
  on_abort_ = std::move(on_done);
  held_tail_.reset();
  queue_.clear();
  maybe_finish();
}

void atomic_file_writer::fail(error e) {
  if (first_error_.ok()) {
    DS_LOG(debug, "io", "writer %s: %s", path_.c_str(), e.describe().c_str());
    first_error_ = std::move(e);
  }
  held_tail_.reset();
  queue_.clear();  // returns the buffers to their pool
}

void atomic_file_writer::pump() {
  if (step_ != step::idle || meta_busy_) return;  // opening, or already in the commit chain
  if (!first_error_.ok() || aborting_) {
    queue_.clear();
    return;
  }
  while (!queue_.empty() && writes_in_flight_ < slots_.size()) {
    pending_write& w = queue_.front();
    bool use_direct = direct_ && w.want_direct;
    int fd = use_direct || !direct_ ? fd_ : fd_buffered_;
    if (fd < 0) return next_step(step::open_buffered);
    size_t len = w.len;
    if (use_direct && w.padded) {
      len = align_up(w.len);
      need_truncate_ = true;
    }
    DS_CHECK(len <= w.buf.size(), "padded tail exceeds its buffer");
    write_slot* slot = nullptr;
    for (auto& s : slots_) {
      if (!s->busy) {
        slot = s.get();
        break;
      }
    }
    DS_CHECK(slot != nullptr, "no free write slot below max_in_flight");
    slot->busy = true;
    slot->buf = std::move(w.buf);
    slot->op.prep_write(fd, slot->buf.data(), len, w.offset, slot->buf.fixed_index());
    slot->op.buffered = !use_direct;
    slot->op.on_complete = [this, slot](io_op&) { on_write(*slot); };
    queue_.pop_front();
    ++writes_in_flight_;
    backend_.submit(slot->op);
  }
}

void atomic_file_writer::on_write(write_slot& slot) {
  --writes_in_flight_;
  slot.busy = false;
  slot.buf.reset();
  if (!slot.op.ok()) {
    fail(io_errno_error(slot.op.error_number(),
                        "write " + tmp_path_ + " at offset " + std::to_string(slot.op.offset)));
  }
  pump();
  maybe_finish();
}

void atomic_file_writer::maybe_finish() {
  if (!finishing_ || step_ != step::idle || meta_busy_ || writes_in_flight_ > 0) return;
  if (first_error_.ok() && !aborting_ && !queue_.empty()) return;
  step_ = step::done;  // placeholder: next_step below sets the real step
  on_meta(meta_op_);   // meta_op_ is idle here; on_meta picks the first step of the right chain
}

void atomic_file_writer::next_step(step s) {
  step_ = s;
  meta_busy_ = true;
  switch (s) {
    case step::open:
      meta_op_.prep_open(tmp_path_, O_WRONLY | O_CREAT | O_TRUNC | (direct_ ? O_DIRECT : 0), options_.mode);
      break;
    case step::open_buffered: meta_op_.prep_open(tmp_path_, O_WRONLY); break;
    case step::ftruncate: meta_op_.prep_ftruncate(fd_, size_); break;
    case step::fdatasync: meta_op_.prep_fsync(fd_, true); break;
    case step::close_buffered:
    case step::cleanup_close_buffered: meta_op_.prep_close(fd_buffered_); break;
    case step::close:
    case step::cleanup_close: meta_op_.prep_close(fd_); break;
    case step::rename: meta_op_.prep_rename(tmp_path_, path_); break;
    case step::open_dir: meta_op_.prep_open(parent_dir(path_), O_RDONLY | O_DIRECTORY); break;
    case step::fsync_dir: meta_op_.prep_fsync(dir_fd_, false); break;
    case step::close_dir: meta_op_.prep_close(dir_fd_); break;
    case step::cleanup_unlink: meta_op_.prep_unlink(tmp_path_); break;
    case step::idle:
    case step::done: DS_CHECK(false, "not an I/O step");
  }
  meta_op_.on_complete = [this](io_op& op) { on_meta(op); };
  backend_.submit(meta_op_);
}

void atomic_file_writer::on_meta(io_op& op) {
  step s = step_;
  bool was_busy = meta_busy_;
  meta_busy_ = false;
  int err = was_busy ? op.error_number() : 0;
  bool cleaning = !first_error_.ok() || aborting_;
  switch (was_busy ? s : step::idle) {
    case step::open:
      if (err == EINVAL && direct_) {
        // The filesystem refuses O_DIRECT (e.g. some FUSE mounts): write buffered instead.
        direct_ = false;
        return next_step(step::open);
      }
      if (err == 0) {
        fd_ = static_cast<int>(op.result());
        created_ = true;
      } else {
        fail(io_errno_error(err, "open " + tmp_path_));
      }
      step_ = step::idle;
      pump();
      return maybe_finish();
    case step::open_buffered:
      step_ = step::idle;
      if (err == 0) fd_buffered_ = static_cast<int>(op.result());
      else fail(io_errno_error(err, "open " + tmp_path_ + " (buffered)"));
      pump();
      return maybe_finish();
    case step::close_buffered:
    case step::cleanup_close_buffered: fd_buffered_ = -1; break;
    case step::close:
    case step::cleanup_close: fd_ = -1; break;
    case step::ftruncate: need_truncate_ = false; break;
    case step::fdatasync: break;
    case step::rename:
      if (err == 0) {
        // From here on the temp name is gone; on a later failure the cleanup removes the final name.
        tmp_path_ = path_;
      }
      break;
    case step::open_dir: if (err == 0) dir_fd_ = static_cast<int>(op.result()); break;
    case step::fsync_dir: break;
    case step::close_dir: dir_fd_ = -1; break;
    case step::cleanup_unlink: created_ = false; break;
    case step::idle:
    case step::done: break;
  }
  if (err != 0) {
    if (cleaning) {
      DS_LOG(warn, "io", "writer cleanup: %s: %s", op.describe().c_str(), std::strerror(err));
    } else {
      fail(io_errno_error(err, describe_step(op, s)));
      cleaning = true;
    }
  }
  if (cleaning) {
    if (dir_fd_ >= 0) return next_step(step::close_dir);
    if (fd_buffered_ >= 0) return next_step(step::cleanup_close_buffered);
    if (fd_ >= 0) return next_step(step::cleanup_close);
    if (created_) return next_step(step::cleanup_unlink);
    return finish_cleanup();
  }
  // Commit chain; `s` is the step that just completed.
  if (s == step::done) s = step::idle;
  bool synced = s == step::fdatasync || s == step::close_buffered || s == step::close;
  if (need_truncate_) return next_step(step::ftruncate);
  if (options_.sync && !synced && fd_ >= 0) return next_step(step::fdatasync);
  if (fd_buffered_ >= 0) return next_step(step::close_buffered);
  if (fd_ >= 0) return next_step(step::close);
  if (s == step::close || s == step::close_buffered) return next_step(step::rename);
  if (options_.sync && s == step::rename) return next_step(step::open_dir);
  if (s == step::open_dir) return next_step(step::fsync_dir);
  if (s == step::fsync_dir) return next_step(step::close_dir);
  step_ = step::done;
  created_ = false;
  auto cb = std::move(on_commit_);
  cb(status{});
}

std::string atomic_file_writer::describe_step(const io_op& op, step s) const {
  switch (s) {
    case step::open_dir:
    case step::fsync_dir:
    case step::close_dir:
      return std::string(op_code_name(op.code)) + " directory " + parent_dir(path_) + " (publishing " + path_ + ")";
    case step::rename: return op.describe();
    default: return std::string(op_code_name(op.code)) + " " + tmp_path_;
  }
}

void atomic_file_writer::finish_cleanup() {
  step_ = step::done;
  if (aborting_) {
    auto cb = std::move(on_abort_);
    return cb();
  }
  auto cb = std::move(on_commit_);
  cb(first_error_);
}

}  // namespace deltasync::io
