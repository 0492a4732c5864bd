// fault_backend: decides, per raw attempt, whether to pass it to the inner backend, cut it short, or
// complete it with an injected error (always posted, never inline).
#include "io/fault_backend.h"

#include "base/check.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"

namespace deltasync::io {

fault_backend::fault_backend(io_backend& inner, const fault_options& options)
    : io_backend(inner.loop()), inner_(inner), options_(options), rng_(options.seed) {}

void fault_backend::fail(io_op& op, int err) {
  ++faults_;
  loop().post([&op, err] { finish_raw(op, -err); });
}

void fault_backend::submit_raw(io_op& op) {
  ++raw_ops_;
  if (options_.observe) options_.observe(op);
  if (crashed_) return fail(op, EIO);
  if (options_.crash_before_fsync && op.code == op_code::fsync) {
    crashed_ = true;
    return fail(op, EIO);
  }
  if (options_.fail_only == op_code::none || options_.fail_only == op.code) {
    if (static_cast<int64_t>(counted_++) == options_.fail_nth) return fail(op, options_.fail_errno);
  }
  bool transfer = op.code == op_code::read || op.code == op_code::write;
  if (transfer) {
    std::uniform_real_distribution<double> coin(0.0, 1.0);
    if (options_.eintr_probability > 0 && coin(rng_) < options_.eintr_probability) return fail(op, EINTR);
    size_t n = raw_len(op);
    if (op.code == op_code::write && options_.enospc_after_bytes != std::numeric_limits<uint64_t>::max()) {
      uint64_t room = options_.enospc_after_bytes > written_ ? options_.enospc_after_bytes - written_ : 0;
      // Keep the cut aligned so an O_DIRECT write stays valid.
      if (!op.buffered) room = room / io_alignment * io_alignment;
      if (room == 0) return fail(op, ENOSPC);
      if (room < n) {
        op.internal_.raw_limit = static_cast<size_t>(room);
        n = static_cast<size_t>(room);
        ++faults_;
      }
      written_ += n;
    }
    if (options_.short_probability > 0 && n > 1 && coin(rng_) < options_.short_probability) {
      bool aligned = is_aligned(n) && is_aligned(raw_offset(op)) && !op.buffered;
      if (!aligned) {
        op.internal_.raw_limit = 1 + static_cast<size_t>(rng_() % (n - 1));
        ++faults_;
      } else if (n >= 2 * io_alignment) {
        size_t blocks = n / io_alignment;
        op.internal_.raw_limit = io_alignment * (1 + static_cast<size_t>(rng_() % (blocks - 1)));
        ++faults_;
      }
    }
  }
  inner_.submit_raw(op);
}

}  // namespace deltasync::io
