// event_loop: the one thread that owns sockets, timers and I/O completions (DESIGN.md "One event loop").
// Internally a Boost.Asio io_context run by a single thread; Asio stays out of this header (the http
// module reaches the io_context through io/asio_context.h).
//
// Contract
// * post() is thread-safe; posted functions run on the loop thread in FIFO order.
// * The destructor stops the loop and joins the thread; functions still queued are destroyed unrun.
//   Destroy everything that posts to the loop (backends, readers, writers, pools) before the loop.
// * A function that throws is a programmer error: the exception is logged and the loop keeps running;
//   exceptions never propagate out of the loop.
#pragma once

#include <functional>
#include <memory>

namespace deltasync::io {

class event_loop {
 public:
  event_loop();  // starts the thread
  ~event_loop();
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  void post(std::function<void()> fn);
  // Runs fn on the loop thread and waits for it (inline when already on the loop thread). Not for hot
  // paths: start-up, teardown, tests and the synchronous convenience API.
  void run_sync(const std::function<void()>& fn);
  bool in_loop_thread() const noexcept;

  struct impl;
  impl& internals() noexcept { return *impl_; }

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace deltasync::io
