// buffer_pool: one anonymous mapping carved into equal buffers, a free list and a FIFO of waiters.
#include "io/buffer_pool.h"

#include <sys/mman.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "base/check.h"
#include "base/log.h"
#include "io/event_loop.h"
#include "io/io_backend.h"

namespace deltasync::io {

namespace {
constexpr size_t max_buffers = 16384;  // io_uring's fixed-buffer table limit
std::atomic<bool> mlock_warned{false};
}  // namespace

buffer_handle& buffer_handle::operator=(buffer_handle&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    index_ = std::exchange(other.index_, -1);
  }
  return *this;
}

void buffer_handle::reset() noexcept {
  if (pool_ == nullptr) return;
  std::exchange(pool_, nullptr)->release(index_);
  data_ = nullptr;
  size_ = 0;
  index_ = -1;
}

result<std::unique_ptr<buffer_pool>> buffer_pool::create(event_loop& loop, io_backend* backend,
                                                         const buffer_pool_options& options) {
  size_t buffer_bytes = align_up(options.buffer_bytes);
  if (buffer_bytes == 0 || buffer_bytes > (size_t{1} << 30)) {
    return error(errc::invalid_argument, "buffer pool: buffer_bytes must be in 1 B .. 1 GiB, got " +
                                             std::to_string(options.buffer_bytes));
  }
  size_t count = options.max_total_bytes / buffer_bytes;
  if (count == 0) {
    return error(errc::invalid_argument, "buffer pool: max_total_bytes " + std::to_string(options.max_total_bytes) +
                                             " holds no buffer of " + std::to_string(buffer_bytes) + " bytes");
  }
  if (count > max_buffers) {
    return error(errc::limit_exceeded, "buffer pool: " + std::to_string(count) + " buffers exceed the limit of " +
                                           std::to_string(max_buffers) + "; use larger buffers");
  }
  std::unique_ptr<buffer_pool> pool(new buffer_pool(loop));
  pool->buffer_bytes_ = buffer_bytes;
  pool->count_ = count;
  pool->map_bytes_ = buffer_bytes * count;
  void* p = ::mmap(nullptr, pool->map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno_error(errno, "buffer pool: mmap " + std::to_string(pool->map_bytes_) + " bytes");
  pool->base_ = static_cast<std::byte*>(p);

  if (options.pin) {
    if (auto st = options.pin(p, pool->map_bytes_); !st.ok()) return std::move(st).err();
    pool->unpin_ = options.unpin;
  }
  if (options.lock_memory) {
    if (::mlock(p, pool->map_bytes_) == 0) {
      pool->locked_ = true;
    } else if (!mlock_warned.exchange(true)) {
      // Usually RLIMIT_MEMLOCK without CAP_IPC_LOCK: buffers still work, they may just be paged out.
      DS_LOG(warn, "io", "buffer pool: mlock of %zu bytes failed (%s); using unlocked buffers", pool->map_bytes_,
             std::strerror(errno));
    }
  }
  if (backend != nullptr && options.register_with_backend) {
    std::vector<iovec> iovs(count);
    for (size_t i = 0; i < count; ++i) iovs[i] = {pool->base_ + i * buffer_bytes, buffer_bytes};
    if (auto st = backend->register_buffers(iovs); st.ok()) {
      pool->backend_ = backend;
      pool->registered_ = backend->buffers_registered();
    } else {
      DS_LOG(info, "io", "buffer pool: %zu buffers not registered as fixed buffers (%s); using them unregistered",
             count, st.err().message.c_str());
    }
  }
  pool->free_.reserve(count);
  for (size_t i = count; i-- > 0;) pool->free_.push_back(static_cast<int>(i));
  return pool;
}

buffer_pool::~buffer_pool() {
  {
    std::lock_guard lock(mu_);
    DS_CHECK(free_.size() == count_, "buffer_pool destroyed while buffers are out");
  }
  // Waiter callbacks already posted must not reach a dead pool; the flag is read on the loop thread.
  loop_.run_sync([this] { *alive_ = false; });
  if (backend_ != nullptr) backend_->unregister_buffers();
  if (unpin_) unpin_(base_, map_bytes_);
  if (locked_) ::munlock(base_, map_bytes_);
  ::munmap(base_, map_bytes_);
}

buffer_handle buffer_pool::make_handle(int index) {
  buffer_handle h;
  h.pool_ = this;
  h.index_ = index;
  h.data_ = base_ + static_cast<size_t>(index) * buffer_bytes_;
  h.size_ = buffer_bytes_;
  return h;
}

buffer_handle buffer_pool::try_acquire() {
  std::lock_guard lock(mu_);
  if (free_.empty()) return {};
  int index = free_.back();
  free_.pop_back();
  return make_handle(index);
}

uint64_t buffer_pool::start_acquire(std::function<void(buffer_handle)> cb) {
  DS_CHECK(loop_.in_loop_thread(), "start_acquire off the loop thread");
  std::lock_guard lock(mu_);
  uint64_t ticket = next_ticket_++;
  if (!free_.empty() && waiters_.empty()) {
    int index = free_.back();
    free_.pop_back();
    loop_.post([this, index, cb = std::move(cb), alive = alive_] {
      if (*alive) cb(make_handle(index));
    });
    return ticket;
  }
  DS_CHECK(waiters_.size() < count_, "buffer pool: more waiters than buffers");
  waiters_.push_back({ticket, std::move(cb)});
  return ticket;
}

bool buffer_pool::cancel_acquire(uint64_t ticket) {
  std::lock_guard lock(mu_);
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->ticket == ticket) {
      waiters_.erase(it);
      return true;
    }
  }
  return false;
}

size_t buffer_pool::available() const {
  std::lock_guard lock(mu_);
  return free_.size();
}

void buffer_pool::release(int index) noexcept {
  std::function<void(buffer_handle)> cb;
  {
    std::lock_guard lock(mu_);
    if (waiters_.empty()) {
      free_.push_back(index);
      return;
    }
    cb = std::move(waiters_.front().cb);
    waiters_.pop_front();
  }
  // The buffer passes straight to the oldest waiter; its callback runs on the loop thread.
  loop_.post([this, index, cb = std::move(cb), alive = alive_] {
    if (*alive) cb(make_handle(index));
  });
}

}  // namespace deltasync::io
