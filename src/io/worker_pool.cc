// worker_pool: a mutex-guarded job deque drained by a fixed set of threads.
#include "io/worker_pool.h"

#include "base/check.h"
#include "io/event_loop.h"

namespace deltasync::io {

worker_pool::worker_pool(event_loop& loop, size_t threads, size_t max_queued)
    : loop_(loop), max_queued_(max_queued) {
  DS_CHECK(threads > 0 && threads <= 1024, "worker_pool: 1..1024 threads");
  DS_CHECK(max_queued >= threads, "worker_pool: max_queued below the thread count would idle workers");
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

worker_pool::~worker_pool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

bool worker_pool::try_submit(std::function<void()> work, std::function<void()> on_done) {
  {
    std::lock_guard lock(mu_);
    DS_CHECK(!stopping_, "worker_pool: submit during destruction");
    if (outstanding_ >= max_queued_) return false;
    ++outstanding_;
    jobs_.push_back({std::move(work), std::move(on_done)});
  }
  work_cv_.notify_one();
  return true;
}

void worker_pool::submit(std::function<void()> work, std::function<void()> on_done) {
  // Blocking on the loop thread would deadlock: completions that free room run there.
  DS_CHECK(!loop_.in_loop_thread(), "worker_pool::submit blocks; use try_submit on the loop thread");
  {
    std::unique_lock lock(mu_);
    room_cv_.wait(lock, [this] { return outstanding_ < max_queued_; });
    ++outstanding_;
    jobs_.push_back({std::move(work), std::move(on_done)});
  }
  work_cv_.notify_one();
}

size_t worker_pool::queued() const {
  std::lock_guard lock(mu_);
  return outstanding_;
}

void worker_pool::run() {
  for (;;) {
    job j;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      j = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      j.work();
    } catch (...) {
      DS_CHECK(false, "worker_pool: a job threw");
    }
    {
      std::lock_guard lock(mu_);
      --outstanding_;
    }
    room_cv_.notify_one();
    if (j.on_done) loop_.post(std::move(j.on_done));
  }
}

}  // namespace deltasync::io
