// uring_backend: the io_backend on liburing. Submissions are queued on the loop thread and flushed in
// batches; the ring's eventfd is waited on by the loop's io_context, so completions are reaped in
// batches (io_uring_peek_batch_cqe) on the loop thread and their callbacks run after the batch is drained.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <liburing.h>

#include "base/check.h"
#include "base/log.h"
#include "io/asio_context.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/raw_syscall.h"

namespace deltasync::io {
namespace {

constexpr unsigned reap_batch = 64;
// Register-less reads and writes are capped per attempt so lengths fit the SQE's 32-bit field; the
// fold layer resubmits the rest like any short transfer.
constexpr size_t max_raw_bytes = size_t{1} << 30;

unsigned round_up_pow2(unsigned v) {
  unsigned p = 1;
  while (p < v) p <<= 1;
  return p;
}

class uring_backend final : public io_backend {
 public:
  uring_backend(event_loop& loop, unsigned max_in_flight) : io_backend(loop), alive_(std::make_shared<bool>(true)) {
    entries_ = round_up_pow2(std::clamp(max_in_flight, 4u, 4096u));
  }

  status init() {
    io_uring_params params;
    std::memset(&params, 0, sizeof params);
    // CQSIZE: the completion queue holds one entry per operation we allow in flight, so it can never
    // overflow (raw_in_flight_ <= entries_). No SQPOLL (it burns a core polling) and no IOPOLL (it needs
    // polled block devices and excludes buffered files); plain interrupt-driven completion is enough at
    // 1-16 MiB per request.
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = entries_;
    int rc = io_uring_queue_init_params(entries_, &ring_, &params);
    if (rc < 0) return errno_error(-rc, "io_uring_queue_init");
    ring_ok_ = true;
    if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_); probe != nullptr) {
      has_renameat_ = io_uring_opcode_supported(probe, IORING_OP_RENAMEAT) != 0;
      has_unlinkat_ = io_uring_opcode_supported(probe, IORING_OP_UNLINKAT) != 0;
      has_openat_ = io_uring_opcode_supported(probe, IORING_OP_OPENAT) != 0;
      has_close_ = io_uring_opcode_supported(probe, IORING_OP_CLOSE) != 0;
      io_uring_free_probe(probe);
    }
    int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) return errno_error(errno, "eventfd for io_uring");
    rc = io_uring_register_eventfd(&ring_, efd);
    if (rc < 0) {
      ::close(efd);
      return errno_error(-rc, "io_uring_register_eventfd");
    }
    loop().run_sync([&] {
      eventfd_ = std::make_unique<boost::asio::posix::stream_descriptor>(asio_context(loop()), efd);
      arm();
    });
    return {};
  }

  ~uring_backend() override {
    if (eventfd_ != nullptr) {
      loop().run_sync([this] {
        DS_CHECK(in_flight() == 0 && raw_in_flight_ == 0, "uring_backend destroyed with I/O in flight");
        *alive_ = false;
        boost::system::error_code ignored;
        eventfd_->cancel(ignored);
        eventfd_.reset();  // closes the eventfd
      });
    }
    if (ring_ok_) io_uring_queue_exit(&ring_);
  }

  const char* name() const noexcept override { return "uring"; }
  size_t max_in_flight() const noexcept override { return entries_; }

  status register_buffers(std::span<const iovec> buffers) override {
    if (!registered_.empty()) return error(errc::unsupported, "io_uring: another buffer table is already registered");
    int rc = 0;
    loop().run_sync([&] { rc = io_uring_register_buffers(&ring_, buffers.data(), static_cast<unsigned>(buffers.size())); });
    if (rc < 0) return errno_error(-rc, "io_uring_register_buffers (" + std::to_string(buffers.size()) + " buffers)");
    registered_.assign(buffers.begin(), buffers.end());
    return {};
  }

  void unregister_buffers() override {
    if (registered_.empty()) return;
    loop().run_sync([&] {
      int rc = io_uring_unregister_buffers(&ring_);
      if (rc < 0) DS_LOG(warn, "io", "io_uring_unregister_buffers: %s", std::strerror(-rc));
    });
    registered_.clear();
  }

  bool buffers_registered() const noexcept override { return !registered_.empty(); }

  void submit_raw(io_op& op) override {
    op.internal_.next = nullptr;
    if (pending_tail_ != nullptr) pending_tail_->internal_.next = &op; else pending_head_ = &op;
    pending_tail_ = &op;
    // Batch: every submission in this loop turn goes to the kernel with one io_uring_submit.
    if (!flush_posted_) {
      flush_posted_ = true;
      loop().post([this, alive = std::weak_ptr<bool>(alive_)] {
        if (alive.expired() || !*alive.lock()) return;
        flush_posted_ = false;
        flush();
      });
    }
  }

 private:
  bool runs_inline(const io_op& op) const {
    switch (op.code) {
      case op_code::ftruncate: return true;
      case op_code::rename: return !has_renameat_;
      case op_code::unlink: return !has_unlinkat_;
      case op_code::open: return !has_openat_;
      case op_code::close: return !has_close_;
      default: return false;
    }
  }

  // The fixed-buffer index to use, or -1 when op's span is not inside its registered buffer.
  int fixed_index(const io_op& op, size_t n) const {
    if (op.buf_index < 0 || static_cast<size_t>(op.buf_index) >= registered_.size()) return -1;
    const iovec& iov = registered_[static_cast<size_t>(op.buf_index)];
    auto* base = static_cast<std::byte*>(iov.iov_base);
    std::byte* p = raw_buf(op);
    return p >= base && p + n <= base + iov.iov_len ? op.buf_index : -1;
  }

  void prep(io_uring_sqe* sqe, io_op& op) {
    size_t n = std::min(raw_len(op), max_raw_bytes);
    auto n32 = static_cast<unsigned>(n);
    switch (op.code) {
      case op_code::open:
        io_uring_prep_openat(sqe, AT_FDCWD, op.path.c_str(), op.flags | O_CLOEXEC, op.mode);
        break;
      case op_code::read:
      case op_code::write: {
        int idx = fixed_index(op, n);
        bool rd = op.code == op_code::read;
        if (idx >= 0 && rd) io_uring_prep_read_fixed(sqe, op.fd, raw_buf(op), n32, raw_offset(op), idx);
        else if (idx >= 0) io_uring_prep_write_fixed(sqe, op.fd, raw_buf(op), n32, raw_offset(op), idx);
        else if (rd) io_uring_prep_read(sqe, op.fd, raw_buf(op), n32, raw_offset(op));
        else io_uring_prep_write(sqe, op.fd, raw_buf(op), n32, raw_offset(op));
        if (op.buffered) io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
        break;
      }
      case op_code::fsync: io_uring_prep_fsync(sqe, op.fd, op.datasync ? IORING_FSYNC_DATASYNC : 0); break;
      case op_code::close: io_uring_prep_close(sqe, op.fd); break;
      case op_code::rename:
        io_uring_prep_renameat(sqe, AT_FDCWD, op.path.c_str(), AT_FDCWD, op.path2.c_str(), 0);
        break;
      case op_code::unlink: io_uring_prep_unlinkat(sqe, AT_FDCWD, op.path.c_str(), 0); break;
      case op_code::ftruncate:
      case op_code::none: DS_CHECK(false, "op cannot go through the ring");
    }
    io_uring_sqe_set_data(sqe, &op);
  }

  void flush() {
    std::vector<std::pair<io_op*, int64_t>> inline_done;
    while (pending_head_ != nullptr && raw_in_flight_ < entries_) {
      io_op* op = pending_head_;
      io_uring_sqe* sqe = nullptr;
      if (!runs_inline(*op)) {
        sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) {
          // SQ full: hand what is queued to the kernel to make room, then retry once.
          io_uring_submit(&ring_);
          sqe = io_uring_get_sqe(&ring_);
          if (sqe == nullptr) break;
        }
      }
      pending_head_ = op->internal_.next;
      if (pending_head_ == nullptr) pending_tail_ = nullptr;
      if (sqe == nullptr) {
        inline_done.emplace_back(op, detail::run_raw_syscall(*op));
        continue;
      }
      prep(sqe, *op);
      ++raw_in_flight_;
    }
    if (io_uring_sq_ready(&ring_) > 0) {
      int rc = io_uring_submit(&ring_);
      // EAGAIN/EBUSY: the kernel wants completions reaped first; the SQEs stay queued and the next flush
      // (after the eventfd fires) submits them.
      if (rc < 0 && rc != -EAGAIN && rc != -EBUSY) {
        DS_LOG(error, "io", "io_uring_submit: %s", std::strerror(-rc));
      }
    }
    for (auto& [op, res] : inline_done) finish_raw(*op, res);
  }

  void arm() {
    eventfd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [this, alive = std::weak_ptr<bool>(alive_)](const boost::system::error_code& ec) {
                           if (ec || alive.expired() || !*alive.lock()) return;
                           on_eventfd();
                         });
  }

  void on_eventfd() {
    uint64_t count = 0;
    // Clear the counter; EAGAIN just means another reap already consumed it.
    [[maybe_unused]] ssize_t n = ::read(eventfd_->native_handle(), &count, sizeof count);
    reap();
    arm();
  }

  void reap() {
    batch_.clear();
    io_uring_cqe* cqes[reap_batch];
    for (;;) {
      unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, reap_batch);
      if (n == 0) break;
      for (unsigned i = 0; i < n; ++i) {
        batch_.emplace_back(static_cast<io_op*>(io_uring_cqe_get_data(cqes[i])), cqes[i]->res);
      }
      io_uring_cq_advance(&ring_, n);
    }
    DS_CHECK(batch_.size() <= raw_in_flight_, "more completions than submissions");
    raw_in_flight_ -= batch_.size();
    // Callbacks run only after the CQ batch is drained; they may submit, which lands in pending_.
    std::vector<std::pair<io_op*, int64_t>> batch;
    batch.swap(batch_);
    for (auto& [op, res] : batch) finish_raw(*op, res);
    batch.clear();
    batch_.swap(batch);
    flush();
  }

  std::shared_ptr<bool> alive_;  // guards handlers queued on the loop against a destroyed backend
  io_uring ring_{};
  bool ring_ok_ = false;
  unsigned entries_ = 0;
  size_t raw_in_flight_ = 0;
  io_op* pending_head_ = nullptr;
  io_op* pending_tail_ = nullptr;
  bool flush_posted_ = false;
  bool has_renameat_ = false, has_unlinkat_ = false, has_openat_ = false, has_close_ = false;
  std::vector<iovec> registered_;
  std::vector<std::pair<io_op*, int64_t>> batch_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> eventfd_;
};

}  // namespace

result<std::unique_ptr<io_backend>> make_uring_backend(event_loop& loop, unsigned max_in_flight) {
  auto backend = std::make_unique<uring_backend>(loop, max_in_flight);
  if (auto st = backend->init(); !st.ok()) return std::move(st).err();
  return std::unique_ptr<io_backend>(std::move(backend));
}

}  // namespace deltasync::io
