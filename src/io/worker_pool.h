// worker_pool: the fixed set of threads for CPU-bound work (decode, zstd, diff, CPU apply). Work runs on
// a worker; its completion is posted back to the event loop, so results are consumed on the loop thread.
//
// Contract
// * Limits: `threads` workers and at most `max_queued` jobs waiting or running. try_submit() refuses
//   (returns false) beyond that; submit() blocks a non-loop caller until there is room (back-pressure
//   for producer threads); the loop thread must use try_submit() and retry from a later completion.
// * Threading: work runs on a worker thread; on_done runs on the loop thread after work returned.
// * Exceptions: a job must not throw (DS_CHECK); report failures through the captured state.
// * The destructor finishes queued jobs, then joins; on_done callbacks already posted still run if the
//   loop is alive. Destroy the pool before the event loop.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace deltasync::io {

class event_loop;

class worker_pool {
 public:
  worker_pool(event_loop& loop, size_t threads, size_t max_queued);
  ~worker_pool();
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  bool try_submit(std::function<void()> work, std::function<void()> on_done);
  void submit(std::function<void()> work, std::function<void()> on_done);

  // Typed convenience: fn() runs on a worker, on_done(value) on the loop thread.
  template <typename T>
  bool try_submit_value(std::function<T()> fn, std::function<void(T)> on_done) {
    auto slot = std::make_shared<std::optional<T>>();
    return try_submit([slot, fn = std::move(fn)] { slot->emplace(fn()); },
                      [slot, on_done = std::move(on_done)] { on_done(std::move(**slot)); });
  }

  size_t queued() const;  // jobs waiting or running
  size_t max_queued() const noexcept { return max_queued_; }
  size_t threads() const noexcept { return threads_.size(); }

 private:
  struct job {
    std::function<void()> work;
    std::function<void()> on_done;
  };
  void run();

  event_loop& loop_;
  const size_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable room_cv_;
  std::deque<job> jobs_;   // guarded by mu_
  size_t outstanding_ = 0;  // guarded by mu_: queued + running
  bool stopping_ = false;   // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace deltasync::io
