// A memory budget shared by the buffers of one piece of work (the receiver gives each sync one: whole-file read
// buffers, decompressed payloads and the undo log all draw from it, docs/service.md `max-sync-memory-bytes`).
// A holder asks before it allocates and gives the bytes back when it frees them, so the total a sync holds
// can never pass the budget whatever its input declares.
//
// Threading: memory_budget is thread-safe (atomic counters): workers decompressing different files draw from
// it at once. A memory_lease belongs to one owner at a time (move-only, not thread-safe itself).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"

namespace deltasync {

class memory_budget {
 public:
  // `key` names the setting that sizes the budget, for refusal messages.
  explicit memory_budget(uint64_t limit_bytes, std::string key = "max-sync-memory-bytes")
      : limit_(limit_bytes), key_(std::move(key)) {}
  memory_budget(const memory_budget&) = delete;
  memory_budget& operator=(const memory_budget&) = delete;

  // Takes `bytes` more if the total held stays within the limit; false (nothing taken) otherwise.
  bool try_acquire(uint64_t bytes) noexcept;
  // Gives back bytes taken earlier. Giving back more than is held is a programmer error (asserts).
  void release(uint64_t bytes) noexcept;

  uint64_t held() const noexcept { return held_.load(std::memory_order_relaxed); }
  uint64_t peak() const noexcept { return peak_.load(std::memory_order_relaxed); }
  uint64_t limit() const noexcept { return limit_; }
  const std::string& key() const noexcept { return key_; }

  // errc::limit_exceeded: "<what> needs N more bytes, but the sync already holds H of its budget of L
  // (<key>)".
  error refusal(std::string_view what, uint64_t wanted) const;

 private:
  std::atomic<uint64_t> held_{0};
  std::atomic<uint64_t> peak_{0};
  const uint64_t limit_;
  const std::string key_;
};

// Bytes held from a budget by one buffer (or a group of them), given back when the lease is destroyed or
// reset. A default lease (no budget) grants everything and counts it, so code can run without a budget.
class memory_lease {
 public:
  memory_lease() = default;
  explicit memory_lease(std::shared_ptr<memory_budget> budget) : budget_(std::move(budget)) {}
  memory_lease(memory_lease&& o) noexcept : budget_(std::move(o.budget_)), bytes_(o.bytes_) { o.bytes_ = 0; }
  memory_lease& operator=(memory_lease&& o) noexcept;
  memory_lease(const memory_lease&) = delete;
  memory_lease& operator=(const memory_lease&) = delete;
  ~memory_lease() { reset(); }

  // Takes `more` bytes from the budget into this lease; false (nothing taken) when the budget is exhausted.
  bool grow(uint64_t more) noexcept;
  // Gives back `less` bytes of this lease (at most what it holds).
  void shrink(uint64_t less) noexcept;
  // Gives everything back.
  void reset() noexcept { shrink(bytes_); }

  uint64_t bytes() const noexcept { return bytes_; }
  const memory_budget* budget() const noexcept { return budget_.get(); }
  // The refusal of a grow() by `wanted` bytes ("memory budget" when there is no budget).
  error refusal(std::string_view what, uint64_t wanted) const;

 private:
  std::shared_ptr<memory_budget> budget_;
  uint64_t bytes_ = 0;
};

}  // namespace deltasync
