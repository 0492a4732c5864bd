// fault_backend: a fault-injecting io_backend decorator for tests (here and in later modules). It sits
// between the fold layer and a real backend, so injected EINTR and short transfers exercise the same
// retry code the kernel's do, and injected errors surface exactly as kernel errors would.
//
// Contract: as io_backend. Every decision is drawn from a seeded generator over the sequence of raw
// attempts, so a failing schedule replays from its seed. Loop thread only (like submit()).
#pragma once

#include <cerrno>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <random>

#include "io/io_backend.h"

namespace deltasync::io {

struct fault_options {
  uint64_t seed = 1;
  // Fail the Nth raw attempt (0-based, counting only ops of kind fail_only unless it is none) with
  // -fail_errno, without running it. -1: never.
  int64_t fail_nth = -1;
  int fail_errno = EIO;
  op_code fail_only = op_code::none;
  // Per read/write attempt: probability of transferring only a random prefix (aligned to 4096 when the
  // request is, so O_DIRECT stays valid), and of returning EINTR without running.
  double short_probability = 0.0;
  double eintr_probability = 0.0;
  // Writes past this many bytes in total fail with ENOSPC (the crossing write is cut short first, as a
  // filling disk does).
  uint64_t enospc_after_bytes = std::numeric_limits<uint64_t>::max();
  // "Crash before fsync": the first fsync and every operation after it fail with EIO without running,
  // as if the process died there (nothing is renamed, nothing is cleaned up).
  bool crash_before_fsync = false;
  // Called on every raw attempt before the decision (tests use it to inspect the filesystem mid-flight).
  std::function<void(const io_op&)> observe;
};

class fault_backend final : public io_backend {
 public:
  // inner must outlive this decorator and share its event loop.
  fault_backend(io_backend& inner, const fault_options& options);

  const char* name() const noexcept override { return "fault"; }
  size_t max_in_flight() const noexcept override { return inner_.max_in_flight(); }
  status register_buffers(std::span<const iovec> buffers) override { return inner_.register_buffers(buffers); }
  void unregister_buffers() override { inner_.unregister_buffers(); }
  bool buffers_registered() const noexcept override { return inner_.buffers_registered(); }
  void submit_raw(io_op& op) override;

  uint64_t raw_ops() const noexcept { return raw_ops_; }          // raw attempts seen
  uint64_t faults_injected() const noexcept { return faults_; }   // errors, EINTRs and short transfers
  bool crashed() const noexcept { return crashed_; }

 private:
  void fail(io_op& op, int err);

  io_backend& inner_;
  fault_options options_;
  std::mt19937_64 rng_;
  uint64_t raw_ops_ = 0;
  uint64_t counted_ = 0;
  uint64_t written_ = 0;
  uint64_t faults_ = 0;
  bool crashed_ = false;
};

}  // namespace deltasync::io
