// The per-sync memory budget: a compare-and-swap loop keeps the held total within the limit without a lock.
#include "base/memory_budget.h"

#include "base/check.h"

namespace deltasync {

bool memory_budget::try_acquire(uint64_t bytes) noexcept {
  uint64_t cur = held_.load(std::memory_order_relaxed);
  for (;;) {
    if (bytes > limit_ || cur > limit_ - bytes) return false;
    if (held_.compare_exchange_weak(cur, cur + bytes, std::memory_order_relaxed)) break;
  }
  const uint64_t now = cur + bytes;
  uint64_t p = peak_.load(std::memory_order_relaxed);
  while (now > p && !peak_.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
  return true;
}

void memory_budget::release(uint64_t bytes) noexcept {
  const uint64_t before = held_.fetch_sub(bytes, std::memory_order_relaxed);
  DS_CHECK(before >= bytes, "memory budget: released more than was held");
}

error memory_budget::refusal(std::string_view what, uint64_t wanted) const {
  return error(errc::limit_exceeded, std::string(what) + " needs " + std::to_string(wanted) +
                                         " more bytes, but the sync already holds " + std::to_string(held()) +
                                         " of its memory budget of " + std::to_string(limit_) + " (" + key_ + ")");
}

memory_lease& memory_lease::operator=(memory_lease&& o) noexcept {
  if (this != &o) {
    reset();
    budget_ = std::move(o.budget_);
    bytes_ = o.bytes_;
    o.bytes_ = 0;
  }
  return *this;
}

bool memory_lease::grow(uint64_t more) noexcept {
  if (budget_ && !budget_->try_acquire(more)) return false;
  bytes_ += more;
  return true;
}

void memory_lease::shrink(uint64_t less) noexcept {
  DS_CHECK(less <= bytes_, "memory lease: shrunk by more than it holds");
  if (budget_ && less > 0) budget_->release(less);
  bytes_ -= less;
}

error memory_lease::refusal(std::string_view what, uint64_t wanted) const {
  if (budget_) return budget_->refusal(what, wanted);
  return error(errc::limit_exceeded, std::string(what) + " needs " + std::to_string(wanted) + " more bytes");
}

}  // namespace deltasync
