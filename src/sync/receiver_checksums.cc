// GET /checksums on the receiver: the exact XXH3-128 of every tensor, computed when asked, one tensor per
// worker job and only while no sync is in flight, cached per tensor until a sync writes it. The pass and the
// syncs take turns on the store (one thread at a time touches it): a sync that arrives while a tensor is being
// hashed waits for that one job (deferred_), then the pass waits for the sync (resumed from touched()), then
// hashes again whatever the sync wrote. The answer is built once every tensor's cached digest is current,
// with no sync in flight, so all of them are of one version.
#include <utility>

#include "io/worker_pool.h"
#include "sync/receiver.h"

namespace deltasync {

void receiver::checksums(std::function<void(result<checksums_result>)> done) {
  checksum_waiters_.push_back(std::move(done));
  checksum_step();
}

void receiver::touched(const std::vector<size_t>& tensors) {
  if (tensor_gen_.size() != store_.size()) tensor_gen_.assign(store_.size(), 0);
  for (size_t t : tensors) ++tensor_gen_[t];
  checksum_step();
}

void receiver::checksum_step() {
  if (checksum_waiters_.empty() || hashing_ || current_ || deferred_) return;
  const size_t n = store_.size();
  if (tensor_gen_.size() != n) tensor_gen_.assign(n, 0);
  if (digest_cache_.size() != n) digest_cache_.assign(n, std::nullopt);
  size_t i = 0;
  while (i < n && digest_cache_[i] && digest_cache_[i]->gen == tensor_gen_[i]) ++i;
  if (i == n) {
    checksums_result out;
    out.version = store_.version();
    out.digests.reserve(n);
    for (const auto& c : digest_cache_) out.digests.push_back(c->digest);
    auto waiters = std::move(checksum_waiters_);
    checksum_waiters_.clear();
    for (auto& w : waiters) w(out);
    return;
  }
  hashing_ = true;
  auto got = std::make_shared<digest128>();
  const uint64_t gen = tensor_gen_[i];
  auto work = [this, i, got] { *got = store_.digest(i); };
  auto on_done = [this, i, gen, got] {
    hashing_ = false;
    digest_cache_[i] = cached_digest{gen, *got};  // no sync ran meanwhile: gen is still the tensor's
    if (deferred_) {
      auto [req, sync_done] = std::move(*deferred_);
      deferred_.reset();
      start_sync(std::move(req), std::move(sync_done));  // the pass resumes when it ends (touched())
    }
    checksum_step();  // no-op while that sync is in flight
  };
  if (!workers_.try_submit(std::move(work), std::move(on_done))) {
    hashing_ = false;
    auto waiters = std::move(checksum_waiters_);
    checksum_waiters_.clear();
    for (auto& w : waiters) w(error(errc::busy, "worker pool saturated"));
  }
}

}  // namespace deltasync
