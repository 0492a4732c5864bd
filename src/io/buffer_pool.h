// buffer_pool: the fixed set of page-aligned I/O buffers every file read and write goes through.
// One anonymous mmap split into equal buffers; mlock'ed when RLIMIT_MEMLOCK allows (otherwise left
// unlocked, logged once); registered with the io_backend as fixed buffers when it can be (otherwise used
// unregistered, logged). A pin hook lets a CUDA build cudaHostRegister the region later.
//
// Contract
// * Limits: total bytes are fixed at creation (options.max_total_bytes); nothing grows.
// * Threading: try_acquire() and buffer release (buffer_handle destruction) are thread-safe, so a
//   consumer may release on a worker thread. start_acquire() callbacks always run on the loop thread.
// * Ownership: a buffer_handle owns one buffer until destroyed or reset(). The pool must outlive every
//   handle and is destroyed before the backend it registered with, and before the event loop.
// * Back-pressure: try_acquire() never blocks (empty handle when exhausted); start_acquire() queues a
//   callback (at most buffer_count() waiters) that receives a buffer once one is released.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <deque>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync::io {

class event_loop;
class io_backend;
class buffer_pool;

inline constexpr size_t io_alignment = 4096;  // O_DIRECT alignment of offsets, lengths and addresses

inline constexpr size_t align_up(size_t n, size_t a = io_alignment) noexcept { return (n + a - 1) / a * a; }
inline constexpr bool is_aligned(uint64_t n, size_t a = io_alignment) noexcept { return n % a == 0; }

class buffer_handle {
 public:
  buffer_handle() = default;
  buffer_handle(buffer_handle&& other) noexcept { *this = std::move(other); }
  buffer_handle& operator=(buffer_handle&& other) noexcept;
  buffer_handle(const buffer_handle&) = delete;
  buffer_handle& operator=(const buffer_handle&) = delete;
  ~buffer_handle() { reset(); }

  explicit operator bool() const noexcept { return pool_ != nullptr; }
  std::byte* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }  // capacity, a multiple of io_alignment
  mutable_byte_span span() const noexcept { return {data_, size_}; }
  // The index to pass as io_op buf_index (the fixed-buffer index when the pool is registered).
  int fixed_index() const noexcept { return index_; }
  // Returns the buffer to its pool (thread-safe); the handle becomes empty.
  void reset() noexcept;

 private:
  friend class buffer_pool;
  buffer_pool* pool_ = nullptr;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  int index_ = -1;
};

struct buffer_pool_options {
  size_t buffer_bytes = size_t{4} << 20;      // rounded up to io_alignment
  size_t max_total_bytes = size_t{256} << 20;  // hard cap; buffer count = max_total_bytes / buffer_bytes
  bool lock_memory = true;                     // mlock (falls back to unlocked when RLIMIT_MEMLOCK refuses)
  bool register_with_backend = true;           // io_uring fixed buffers when the backend can
  // Hook points for pinning with the GPU runtime (cudaHostRegister / cudaHostUnregister) in CUDA builds;
  // an error from pin fails create().
  std::function<status(void* addr, size_t bytes)> pin;
  std::function<void(void* addr, size_t bytes)> unpin;
};

class buffer_pool {
 public:
  // backend may be null (no registration). Errors: invalid_argument for a zero/oversized geometry,
  // limit_exceeded for more than 16384 buffers (io_uring's fixed-buffer table limit), io_error when
  // mmap fails.
  static result<std::unique_ptr<buffer_pool>> create(event_loop& loop, io_backend* backend,
                                                     const buffer_pool_options& options);
  ~buffer_pool();
  buffer_pool(const buffer_pool&) = delete;
  buffer_pool& operator=(const buffer_pool&) = delete;

  buffer_handle try_acquire();
  // Loop thread only. cb(handle) runs on the loop thread (posted, never inline) once a buffer is free.
  // Returns a ticket for cancel_acquire(). DS_CHECKs that waiters stay within buffer_count().
  uint64_t start_acquire(std::function<void(buffer_handle)> cb);
  // Loop thread only. Drops a queued waiter; false when its callback was already scheduled (it will run).
  bool cancel_acquire(uint64_t ticket);

  size_t buffer_bytes() const noexcept { return buffer_bytes_; }
  size_t buffer_count() const noexcept { return count_; }
  size_t total_bytes() const noexcept { return buffer_bytes_ * count_; }
  size_t available() const;
  bool locked() const noexcept { return locked_; }
  bool registered() const noexcept { return registered_; }

 private:
  friend class buffer_handle;
  buffer_pool(event_loop& loop) : loop_(loop) {}
  void release(int index) noexcept;
  buffer_handle make_handle(int index);

  event_loop& loop_;
  io_backend* backend_ = nullptr;
  std::byte* base_ = nullptr;
  size_t map_bytes_ = 0;
  size_t buffer_bytes_ = 0;
  size_t count_ = 0;
  bool locked_ = false;
  bool registered_ = false;
  std::function<void(void*, size_t)> unpin_;
  mutable std::mutex mu_;
  std::vector<int> free_;                                     // guarded by mu_
  struct waiter {
    uint64_t ticket;
    std::function<void(buffer_handle)> cb;
  };
  std::deque<waiter> waiters_;                                // guarded by mu_
  uint64_t next_ticket_ = 1;                                  // guarded by mu_
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // read on the loop thread only
};

}  // namespace deltasync::io
