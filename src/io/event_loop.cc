// The event loop: one thread running a Boost.Asio io_context, kept alive by a work guard.
#include "io/event_loop.h"

#include <exception>
#include <future>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "base/check.h"
#include "base/log.h"
#include "io/asio_context.h"

namespace deltasync::io {

struct event_loop::impl {
  // concurrency_hint 1: exactly one thread runs this context, so Asio can skip internal locking.
  boost::asio::io_context ctx{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{ctx.get_executor()};
  std::thread thread;
  std::thread::id id;
};

event_loop::event_loop() : impl_(std::make_unique<impl>()) {
  std::promise<void> started;
  impl_->thread = std::thread([this, &started] {
    impl_->id = std::this_thread::get_id();
    started.set_value();
    for (;;) {
      try {
        impl_->ctx.run();
        return;
      } catch (const std::exception& e) {
        DS_LOG(error, "io", "event loop: a handler threw: %s", e.what());
      } catch (...) {
        DS_LOG(error, "io", "event loop: a handler threw a non-exception");
      }
    }
  });
  started.get_future().wait();
}

event_loop::~event_loop() {
  DS_CHECK(!in_loop_thread(), "event_loop destroyed from its own thread");
  impl_->guard.reset();
  impl_->ctx.stop();
  impl_->thread.join();
}

void event_loop::post(std::function<void()> fn) { boost::asio::post(impl_->ctx, std::move(fn)); }

void event_loop::run_sync(const std::function<void()>& fn) {
  if (in_loop_thread()) {
    fn();
    return;
  }
  std::promise<void> done;
  post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

bool event_loop::in_loop_thread() const noexcept { return std::this_thread::get_id() == impl_->id; }

boost::asio::io_context& asio_context(event_loop& loop) noexcept { return loop.internals().ctx; }

}  // namespace deltasync::io
