// chunked_reader: issues reads in global (file, offset) order, keeps completed pieces per file in a
// reorder map, and delivers each file's pieces strictly in order. Files are opened a few ahead of the
// read cursor and closed once fully delivered.
#include "io/chunked_reader.h"
#include "io/whole_file_reader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>

#include "base/check.h"
#include "base/log.h"
#include "io/io_backend.h"

namespace deltasync::io {

chunked_reader::chunked_reader(io_backend& backend, buffer_pool& pool, std::vector<read_file_spec> files,
                               const chunked_reader_options& options)
    : backend_(backend), pool_(pool), options_(options) {
  DS_CHECK(options_.chunk_bytes > 0 && options_.chunk_bytes <= pool_.buffer_bytes(),
           "chunked_reader: chunk_bytes must be in 1 .. pool buffer_bytes");
  DS_CHECK(options_.read_workers > 0 && options_.read_workers <= 1024, "chunked_reader: read_workers 1..1024");
  DS_CHECK(options_.max_open_files > 0, "chunked_reader: max_open_files >= 1");
  // O_DIRECT needs every offset aligned, i.e. an aligned chunk size.
  if (!is_aligned(options_.chunk_bytes)) options_.direct_io = false;
  for (auto& spec : files) {
    auto f = std::make_unique<file_state>();
    f->spec = std::move(spec);
    files_.push_back(std::move(f));
  }
  for (size_t i = 0; i < options_.read_workers; ++i) slots_.push_back(std::make_unique<read_slot>());
}

chunked_reader::~chunked_reader() {
  DS_CHECK(!started_ || finished_, "chunked_reader destroyed before on_done");
}

void chunked_reader::start(std::function<void(read_piece)> on_piece, std::function<void(status)> on_done) {
  DS_CHECK(!started_, "chunked_reader started twice");
  started_ = true;
  on_piece_ = std::move(on_piece);
  on_done_ = std::move(on_done);
  pump();
  maybe_done();
}

void chunked_reader::cancel() {
  if (!started_ || finished_) return;
  fail(error(errc::cancelled, "read cancelled"));
  maybe_done();
}

void chunked_reader::pump() {
  if (stopping_) return;
  // Open ahead of the read cursor so the next file's open overlaps the current file's reads.
  for (size_t i = issue_file_; i < files_.size() && open_fds_ < options_.max_open_files; ++i) {
    file_state& f = *files_[i];
    if (!f.opening && !f.opened) start_open(i, want_direct(i));
  }
  while (!stopping_ && reads_in_flight_ < options_.read_workers && issue_file_ < files_.size()) {
    file_state& f = *files_[issue_file_];
    if (!f.opened) return;  // its open is in flight; on_open pumps again
    if (f.next_issue >= f.size) {
      ++issue_file_;
      if (issue_file_ < files_.size() && !files_[issue_file_]->opening && !files_[issue_file_]->opened &&
          open_fds_ < options_.max_open_files) {
        start_open(issue_file_, want_direct(issue_file_));
      }
      continue;
    }
    buffer_handle buf = spare_ ? std::move(spare_) : pool_.try_acquire();
    if (!buf) {
      if (!waiting_for_buffer_) {
        // Every buffer is in flight or held by the consumer: resume when one comes back.
        waiting_for_buffer_ = true;
        acquire_ticket_ = pool_.start_acquire([this](buffer_handle h) {
          waiting_for_buffer_ = false;
          if (!stopping_) spare_ = std::move(h);
          pump();
          maybe_done();
        });
      }
      return;
    }
    issue_read(issue_file_, std::move(buf));
  }
}

// O_DIRECT for a file that is not in the page cache (the disk at its speed, no second copy through the cache);
// buffered for one that mostly is (served from memory: O_DIRECT would go to the disk for bytes already in RAM).
bool chunked_reader::want_direct(size_t index) const {
  if (!options_.direct_io) return false;
  if (options_.cached_share_for_buffered > 1.0) return true;
  const file_state& f = *files_[index];
  return page_cache_share(f.spec.open_path.empty() ? f.spec.path : f.spec.open_path) < options_.cached_share_for_buffered;
}

void chunked_reader::start_open(size_t index, bool direct) {
  file_state& f = *files_[index];
  if (!f.opening) ++open_fds_;
  f.opening = true;
  f.direct = direct;
  f.op.prep_open(f.spec.open_path.empty() ? f.spec.path : f.spec.open_path, O_RDONLY | (direct ? O_DIRECT : 0));
  f.op.on_complete = [this, index](io_op&) { on_open(index); };
  ++ops_in_flight_;
  backend_.submit(f.op);
}

void chunked_reader::on_open(size_t index) {
  --ops_in_flight_;
  file_state& f = *files_[index];
  int err = f.op.error_number();
  if (err == EINVAL && f.direct && !stopping_) {
    // tmpfs (before 6.6) and some FUSE filesystems refuse O_DIRECT: read this file buffered.
    return start_open(index, false);
  }
  f.opening = false;
  if (err != 0) {
    --open_fds_;
    f.closed = true;
    fail(io_errno_error(err, "open " + f.spec.path));
    return maybe_done();
  }
  f.fd = static_cast<int>(f.op.result());
  f.opened = true;
  if (stopping_) {
    start_close(index);
    return maybe_done();
  }
  // fstat on a just-opened fd is answered from the inode already in memory: cheap enough inline.
  struct stat st;
  if (::fstat(f.fd, &st) != 0) {
    fail(io_errno_error(errno, "stat " + f.spec.path));
  } else if (!S_ISREG(st.st_mode)) {
    fail(error(errc::io_error, "read " + f.spec.path + ": not a regular file"));
  } else {
    f.size = static_cast<uint64_t>(st.st_size);
    if (f.spec.expected_bytes && *f.spec.expected_bytes != f.size) {
      fail(error(errc::io_error, "read " + f.spec.path + ": expected " + std::to_string(*f.spec.expected_bytes) +
                                     " bytes, file has " + std::to_string(f.size)));
    } else if (f.size == 0) {
      // Every file gets at least one piece, so the consumer sees each file end.
      f.delivered_all = true;
      on_piece_(read_piece{index, 0, {}, {}, true});
      ++files_done_;
      start_close(index);
    }
  }
  if (stopping_ && !f.closing && !f.closed) start_close(index);
  pump();
  maybe_done();
}

void chunked_reader::issue_read(size_t index, buffer_handle buf) {
  file_state& f = *files_[index];
  read_slot* slot = nullptr;
  for (auto& s : slots_) {
    if (!s->busy) {
      slot = s.get();
      break;
    }
  }
  DS_CHECK(slot != nullptr, "no free read slot below read_workers");
  slot->busy = true;
  slot->file = index;
  slot->offset = f.next_issue;
  slot->want = static_cast<size_t>(std::min<uint64_t>(options_.chunk_bytes, f.size - f.next_issue));
  slot->buf = std::move(buf);
  f.next_issue += slot->want;
  // O_DIRECT lengths must be aligned too: read the tail rounded up; EOF cuts it to size.
  size_t len = f.direct ? align_up(slot->want) : slot->want;
  DS_CHECK(len <= slot->buf.size(), "read exceeds its buffer");
  slot->op.prep_read(f.fd, slot->buf.data(), len, slot->offset, slot->buf.fixed_index());
  slot->op.buffered = !f.direct;
  slot->op.on_complete = [this, slot](io_op&) { on_read(*slot); };
  ++f.reads_in_flight;
  ++reads_in_flight_;
  ++ops_in_flight_;
  backend_.submit(slot->op);
}

void chunked_reader::on_read(read_slot& slot) {
  --ops_in_flight_;
  --reads_in_flight_;
  slot.busy = false;
  file_state& f = *files_[slot.file];
  --f.reads_in_flight;
  buffer_handle buf = std::move(slot.buf);
  if (!slot.op.ok()) {
    fail(io_errno_error(slot.op.error_number(), "read " + f.spec.path + " at offset " + std::to_string(slot.offset)));
  } else if (static_cast<uint64_t>(slot.op.result()) < slot.want) {
    fail(error(errc::io_error, "read " + f.spec.path + " at offset " + std::to_string(slot.offset) + ": expected " +
                                   std::to_string(slot.want) + " bytes, got " + std::to_string(slot.op.result()) +
                                   " (file shrank?)"));
  } else if (!stopping_) {
    read_piece piece;
    piece.file_index = slot.file;
    piece.offset = slot.offset;
    piece.bytes = byte_span(buf.data(), slot.want);
    piece.buffer = std::move(buf);
    piece.last_in_file = slot.offset + slot.want == f.size;
    f.ready.emplace(slot.offset, std::move(piece));
    deliver(f, slot.file);
  }
  if (stopping_ && f.reads_in_flight == 0 && f.opened && !f.closing && !f.closed) start_close(slot.file);
  buf.reset();
  pump();
  maybe_done();
}

void chunked_reader::deliver(file_state& f, size_t index) {
  for (auto it = f.ready.find(f.next_deliver); it != f.ready.end() && !stopping_; it = f.ready.find(f.next_deliver)) {
    read_piece piece = std::move(it->second);
    f.ready.erase(it);
    f.next_deliver += piece.bytes.size();
    bytes_delivered_ += piece.bytes.size();
    bool last = piece.last_in_file;
    on_piece_(std::move(piece));  // may call cancel()
    if (last) {
      f.delivered_all = true;
      ++files_done_;
      if (f.reads_in_flight == 0) start_close(index);
    }
  }
}

void chunked_reader::start_close(size_t index) {
  file_state& f = *files_[index];
  if (f.closing || f.closed || !f.opened) return;
  f.closing = true;
  f.op.prep_close(f.fd);
  f.op.on_complete = [this, index](io_op&) { on_close(index); };
  ++ops_in_flight_;
  backend_.submit(f.op);
}

void chunked_reader::on_close(size_t index) {
  --ops_in_flight_;
  file_state& f = *files_[index];
  if (!f.op.ok()) DS_LOG(warn, "io", "close %s: %s", f.spec.path.c_str(), std::strerror(f.op.error_number()));
  f.closing = false;
  f.closed = true;
  f.opened = false;
  f.fd = -1;
  --open_fds_;
  pump();
  maybe_done();
}

void chunked_reader::fail(error e) {
  if (stopping_) return;
  stopping_ = true;
  first_error_ = std::move(e);
  spare_.reset();
  for (size_t i = 0; i < files_.size(); ++i) {
    file_state& f = *files_[i];
    f.ready.clear();  // undelivered pieces: their buffers go back to the pool
    if (f.opened && f.reads_in_flight == 0) start_close(i);
  }
  if (waiting_for_buffer_ && pool_.cancel_acquire(acquire_ticket_)) waiting_for_buffer_ = false;
}

void chunked_reader::maybe_done() {
  if (finished_ || !started_ || ops_in_flight_ > 0 || waiting_for_buffer_) return;
  if (!stopping_ && files_done_ < files_.size()) return;
  if (stopping_) {
    for (auto& f : files_) {
      if (f->opened && !f->closed) return;  // a close is about to be issued by the caller
    }
  }
  finished_ = true;
  auto cb = std::move(on_done_);
  cb(stopping_ ? first_error_ : status{});
}

}  // namespace deltasync::io
