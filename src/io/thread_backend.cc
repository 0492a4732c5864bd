// thread_backend: the io_backend for hosts where io_uring is unavailable (kernel.io_uring_disabled,
// seccomp, ENOSYS). A few threads run blocking syscalls; completions are handed back to the loop in
// batches, one posted drain per batch.
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "base/check.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/raw_syscall.h"

namespace deltasync::io {
namespace {

class thread_backend final : public io_backend {
 public:
  thread_backend(event_loop& loop, unsigned threads, unsigned max_in_flight)
      : io_backend(loop), max_in_flight_(max_in_flight) {
    DS_CHECK(threads > 0 && threads <= 256, "thread backend: 1..256 threads");
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  ~thread_backend() override {
    loop().run_sync([this] { DS_CHECK(in_flight() == 0 && !drain_posted_, "thread_backend destroyed with I/O in flight"); });
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  const char* name() const noexcept override { return "threads"; }
  size_t max_in_flight() const noexcept override { return max_in_flight_; }

  void submit_raw(io_op& op) override {
    {
      std::lock_guard lock(mu_);
      push(queue_head_, queue_tail_, op);
    }
    cv_.notify_one();
  }

 private:
  static void push(io_op*& head, io_op*& tail, io_op& op) {
    op.internal_.next = nullptr;
    if (tail != nullptr) tail->internal_.next = &op; else head = &op;
    tail = &op;
  }

  void work() {
    for (;;) {
      io_op* op = nullptr;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || queue_head_ != nullptr; });
        if (queue_head_ == nullptr) return;  // stopping and nothing left
        op = queue_head_;
        queue_head_ = op->internal_.next;
        if (queue_head_ == nullptr) queue_tail_ = nullptr;
      }
      int64_t res = detail::run_raw_syscall(*op);
      bool post_drain = false;
      {
        std::lock_guard lock(mu_);
        results_.push_back({op, res});
        post_drain = !drain_posted_;
        drain_posted_ = true;
      }
      // One drain per batch: completions that land while a drain is queued ride along with it.
      if (post_drain) loop().post([this] { drain(); });
    }
  }

  void drain() {
    std::vector<std::pair<io_op*, int64_t>> batch;
    {
      std::lock_guard lock(mu_);
      batch.swap(results_);
      drain_posted_ = false;
    }
    // Callbacks run after the batch was taken, never while holding the lock.
    for (auto& [op, res] : batch) finish_raw(*op, res);
  }

  const unsigned max_in_flight_;
  std::mutex mu_;
  std::condition_variable cv_;
  io_op* queue_head_ = nullptr;
  io_op* queue_tail_ = nullptr;
  std::vector<std::pair<io_op*, int64_t>> results_;
  bool drain_posted_ = false;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

std::unique_ptr<io_backend> make_thread_backend(event_loop& loop, unsigned threads, unsigned max_in_flight) {
  return std::make_unique<thread_backend>(loop, threads, max_in_flight);
}

}  // namespace deltasync::io
