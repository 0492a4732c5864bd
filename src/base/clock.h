// Monotonic time for measurements and timeouts, and a stopwatch for stage timings.
#pragma once

#include <chrono>
#include <cstdint>

namespace deltasync {

using mono_clock = std::chrono::steady_clock;

inline uint64_t now_ns() noexcept {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(mono_clock::now().time_since_epoch()).count());
}

class stopwatch {
 public:
  stopwatch() noexcept : start_(now_ns()) {}
  void reset() noexcept { start_ = now_ns(); }
  uint64_t elapsed_ns() const noexcept { return now_ns() - start_; }
  double elapsed_s() const noexcept { return static_cast<double>(elapsed_ns()) * 1e-9; }
  double elapsed_ms() const noexcept { return static_cast<double>(elapsed_ns()) * 1e-6; }

 private:
  uint64_t start_;
};

}  // namespace deltasync
