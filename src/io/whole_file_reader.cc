// whole_file_reader: a read cursor over (file, offset); each read slot reads one chunk straight into the
// file's destination. Files are opened a few ahead of the cursor and closed once wholly read.
#include "io/whole_file_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "base/log.h"
#include "io/buffer_pool.h"  // io_alignment, align_up
#include "io/io_backend.h"

namespace deltasync::io {

struct whole_file_reader::file_state {
  whole_file_spec spec;
  int fd = -1;
  bool direct = false;
  bool opening = false, opened = false, closing = false, closed = false;
  uint64_t next_issue = 0;
  uint64_t bytes_read = 0;
  size_t reads_in_flight = 0;
  bool done = false;
  io_op op;  // open, then close
};

struct whole_file_reader::read_slot {
  io_op op;
  size_t file = 0;
  uint64_t offset = 0;
  size_t want = 0;
  bool busy = false;
};

whole_file_reader::whole_file_reader(io_backend& backend, std::vector<whole_file_spec> files,
                                     const whole_file_reader_options& options)
    : backend_(backend), options_(options) {
  DS_CHECK(options_.chunk_bytes > 0 && is_aligned(options_.chunk_bytes),
           "whole_file_reader: chunk_bytes must be a positive multiple of io_alignment");
  DS_CHECK(options_.reads_in_flight > 0 && options_.reads_in_flight <= 1024, "whole_file_reader: reads_in_flight 1..1024");
  DS_CHECK(options_.max_open_files > 0, "whole_file_reader: max_open_files >= 1");
  for (auto& spec : files) {
    DS_CHECK(spec.dest.size() >= spec.expected_bytes, "whole_file_reader: dest smaller than expected_bytes");
    auto f = std::make_unique<file_state>();
    // O_DIRECT reads whole aligned blocks into aligned memory: the tail needs room up to the next boundary.
    const auto addr = reinterpret_cast<uintptr_t>(spec.dest.data());
    spec.direct = spec.direct && is_aligned(addr) && spec.dest.size() >= align_up(spec.expected_bytes);
    f->spec = std::move(spec);
    files_.push_back(std::move(f));
  }
  for (size_t i = 0; i < options_.reads_in_flight; ++i) slots_.push_back(std::make_unique<read_slot>());
}

whole_file_reader::~whole_file_reader() {
  DS_CHECK(!started_ || finished_, "whole_file_reader destroyed before on_done");
}

void whole_file_reader::start(std::function<void(size_t)> on_file, std::function<void(status)> on_done) {
  DS_CHECK(!started_, "whole_file_reader started twice");
  started_ = true;
  on_file_ = std::move(on_file);
  on_done_ = std::move(on_done);
  pump();
  maybe_done();
}

void whole_file_reader::cancel() {
  if (!started_ || finished_) return;
  fail(error(errc::cancelled, "read cancelled"));
  maybe_done();
}

void whole_file_reader::pump() {
  if (stopping_) return;
  // Open ahead of the read cursor so the next file's open overlaps the current file's reads.
  for (size_t i = issue_file_; i < files_.size() && open_fds_ < options_.max_open_files; ++i) {
    file_state& f = *files_[i];
    if (!f.opening && !f.opened && !f.closed) start_open(i, f.spec.direct);
  }
  while (!stopping_ && reads_in_flight_ < options_.reads_in_flight && issue_file_ < files_.size()) {
    file_state& f = *files_[issue_file_];
    if (f.closed || f.next_issue >= f.spec.expected_bytes) {
      if (!f.opened && !f.closed) return;  // an empty file's open is in flight; on_open pumps again
      ++issue_file_;
      for (size_t i = issue_file_; i < files_.size() && open_fds_ < options_.max_open_files; ++i) {
        file_state& next = *files_[i];
        if (!next.opening && !next.opened && !next.closed) start_open(i, next.spec.direct);
      }
      continue;
    }
    if (!f.opened) return;  // its open is in flight; on_open pumps again
    auto slot = std::find_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s->busy; });
    DS_CHECK(slot != slots_.end(), "no free read slot below reads_in_flight");
    issue_read(issue_file_, **slot);
  }
}

void whole_file_reader::start_open(size_t index, bool direct) {
  file_state& f = *files_[index];
  if (!f.opening) ++open_fds_;
  f.opening = true;
  f.direct = direct;
  f.op.prep_open(f.spec.path, O_RDONLY | (direct ? O_DIRECT : 0));
  f.op.on_complete = [this, index](io_op&) { on_open(index); };
  ++ops_in_flight_;
  backend_.submit(f.op);
}

void whole_file_reader::on_open(size_t index) {
  --ops_in_flight_;
  file_state& f = *files_[index];
  const int err = f.op.error_number();
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
  if (!stopping_) {
    // fstat on a just-opened fd is answered from the inode already in memory: cheap enough inline.
    struct stat st;
    if (::fstat(f.fd, &st) != 0) {
      fail(io_errno_error(errno, "stat " + f.spec.path));
    } else if (!S_ISREG(st.st_mode)) {
      fail(error(errc::io_error, "read " + f.spec.path + ": not a regular file"));
    } else if (static_cast<uint64_t>(st.st_size) != f.spec.expected_bytes) {
      fail(error(errc::io_error, "read " + f.spec.path + ": expected " + std::to_string(f.spec.expected_bytes) +
                                     " bytes, file has " + std::to_string(st.st_size) + " (it changed?)"));
    } else if (f.spec.expected_bytes == 0) {
      f.done = true;
      ++files_done_;
      on_file_(index);
      start_close(index);
    }
  }
  if (stopping_) start_close(index);
  pump();
  maybe_done();
}

void whole_file_reader::issue_read(size_t index, read_slot& slot) {
  file_state& f = *files_[index];
  slot.busy = true;
  slot.file = index;
  slot.offset = f.next_issue;
  slot.want = static_cast<size_t>(std::min<uint64_t>(options_.chunk_bytes, f.spec.expected_bytes - f.next_issue));
  f.next_issue += slot.want;
  // O_DIRECT lengths must be aligned too: read the tail rounded up (the constructor made sure dest has the
  // room); EOF cuts it to size.
  const size_t len = f.direct ? align_up(slot.want) : slot.want;
  slot.op.prep_read(f.fd, f.spec.dest.data() + slot.offset, len, slot.offset);
  slot.op.buffered = !f.direct;
  slot.op.on_complete = [this, &slot](io_op&) { on_read(slot); };
  ++f.reads_in_flight;
  ++reads_in_flight_;
  ++ops_in_flight_;
  backend_.submit(slot.op);
}

void whole_file_reader::on_read(read_slot& slot) {
  --ops_in_flight_;
  --reads_in_flight_;
  slot.busy = false;
  file_state& f = *files_[slot.file];
  --f.reads_in_flight;
  if (!slot.op.ok()) {
    fail(io_errno_error(slot.op.error_number(), "read " + f.spec.path + " at offset " + std::to_string(slot.offset)));
  } else if (static_cast<uint64_t>(slot.op.result()) < slot.want) {
    fail(error(errc::io_error, "read " + f.spec.path + " at offset " + std::to_string(slot.offset) + ": expected " +
                                   std::to_string(slot.want) + " bytes, got " + std::to_string(slot.op.result()) +
                                   " (file shrank?)"));
  } else if (!stopping_) {
    f.bytes_read += slot.want;
    if (f.bytes_read == f.spec.expected_bytes) {
      f.done = true;
      ++files_done_;
      on_file_(slot.file);  // may call cancel()
    }
  }
  if (f.reads_in_flight == 0 && f.opened && !f.closing && (f.done || stopping_)) start_close(slot.file);
  pump();
  maybe_done();
}

void whole_file_reader::start_close(size_t index) {
  file_state& f = *files_[index];
  if (f.closing || f.closed || !f.opened || f.reads_in_flight > 0) return;
  f.closing = true;
  f.op.prep_close(f.fd);
  f.op.on_complete = [this, index](io_op&) { on_close(index); };
  ++ops_in_flight_;
  backend_.submit(f.op);
}

void whole_file_reader::on_close(size_t index) {
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

void whole_file_reader::fail(error e) {
  if (stopping_) return;
  stopping_ = true;
  first_error_ = std::move(e);
  for (size_t i = 0; i < files_.size(); ++i) start_close(i);  // those with reads in flight close in on_read
}

void whole_file_reader::maybe_done() {
  if (finished_ || !started_ || ops_in_flight_ > 0) return;
  if (!stopping_ && files_done_ < files_.size()) return;
  for (auto& f : files_) {
    if (f->opened && !f->closed) return;  // a close is about to be issued
  }
  finished_ = true;
  auto cb = std::move(on_done_);
  cb(stopping_ ? first_error_ : status{});
}

double page_cache_share(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return 0;
  }
  const auto size = static_cast<size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return 0;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  // A sample is enough to choose how to read, and mincore over every page of a multi-GB file costs tens of
  // milliseconds: probe runs of 16 pages spread evenly over the file (all of it when that is no more).
  constexpr size_t probes = 256, run_pages = 16;
  const size_t pages = (size + page - 1) / page;
  const size_t stride = pages <= probes * run_pages ? run_pages : pages / probes;
  unsigned char vec[run_pages];
  size_t checked = 0, resident = 0;
  for (size_t first = 0; first < pages; first += stride) {
    const size_t n = std::min(run_pages, pages - first);
    if (::mincore(static_cast<std::byte*>(map) + first * page, n * page, vec) != 0) break;
    checked += n;
    for (size_t k = 0; k < n; ++k) resident += vec[k] & 1u;
  }
  ::munmap(map, size);
  return checked == 0 ? 0 : static_cast<double>(resident) / static_cast<double>(checked);
}

}  // namespace deltasync::io
