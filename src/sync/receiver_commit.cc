// The receiver's last phase (receiver::finish): once nothing is in flight, the digests of the touched tensors
// that were not verified right after their apply are checked on the workers; a failure or a mismatch rolls the
// store back from the undo log, and a success commits the version, the stats and the metrics. The pipeline
// that leads here is in receiver.cc; the run state is in receiver_internal.h.
#include <algorithm>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/log.h"
#include "io/event_loop.h"
#include "io/worker_pool.h"
#include "sync/receiver.h"
#include "sync/receiver_internal.h"

namespace deltasync {

void receiver::finish(std::shared_ptr<run> r) {
  auto complete = [this, r] {
    auto done = std::move(r->done);
    r->stats.total_ms = r->total.elapsed_ms();
    current_.reset();
    // complete() may run inside one of the stages: empty them only after this turn of the loop.
    loop_.post([r] { r->release(); });
    if (r->failure) {
      if (m_->syncs_failed) m_->syncs_failed->add();
      last_error_ = r->failure;
      DS_LOG_FIELDS(warn, "sync",
                    ({{"sync_version", r->req.version},
                      {"current_version", store_.version()}, {"outcome", "failed"},
                      {"error_code", r->failure->code_name()}}),
                    "version %llu failed, store unchanged at %llu: %s",
             static_cast<unsigned long long>(r->req.version), static_cast<unsigned long long>(store_.version()),
             r->failure->describe().c_str());
      // Before done(): its caller may destroy this receiver as soon as it learns the outcome.
      touched(r->touched);  // rolled back, bytes as before; counted as written all the same
      done(*r->failure);
      return;
    }
    store_.set_version(r->req.version);
    last_ = r->stats;
    last_error_.reset();
    const auto& s = r->stats;
    if (m_->syncs_ok) {
      m_->syncs_ok->add();
      m_->bytes_read->add(s.bytes_read);
      m_->changed->add(s.changed_elements);
      m_->version->set(static_cast<double>(s.version));
      m_->read->observe(s.read_ms / 1e3);
      m_->decode->observe(s.decode_ms / 1e3);
      m_->apply->observe(s.apply_ms / 1e3);
      m_->verify->observe(s.verify_ms / 1e3);
      m_->total->observe(s.total_ms / 1e3);
    }
    DS_LOG_FIELDS(info, "sync",
                  ({{"sync_version", s.version}, {"base_version", s.base_version}, {"outcome", "committed"},
                    {"files", s.files}, {"params", s.params}, {"changed_elements", s.changed_elements},
                    {"bytes_read", s.bytes_read}, {"read_ms", s.read_ms}, {"decode_ms", s.decode_ms},
                    {"apply_ms", s.apply_ms}, {"verify_ms", s.verify_ms}, {"total_ms", s.total_ms},
                    {"format", s.native ? "native" : "slime"}}),
           "committed version=%llu base=%llu files=%llu params=%llu changed=%llu bytes_read=%llu read_ms=%.1f "
           "decode_ms=%.1f apply_ms=%.1f verify_ms=%.1f total_ms=%.1f streamed=%llu format=%s",
           static_cast<unsigned long long>(s.version), static_cast<unsigned long long>(s.base_version),
           static_cast<unsigned long long>(s.files), static_cast<unsigned long long>(s.params),
           static_cast<unsigned long long>(s.changed_elements), static_cast<unsigned long long>(s.bytes_read),
           s.read_ms, s.decode_ms, s.apply_ms, s.verify_ms, s.total_ms,
           static_cast<unsigned long long>(s.streamed_files), s.native ? "native" : "slime");
    touched(r->touched);  // before done(), which may end this receiver's life
    done(r->stats);
  };
  // Verification and rollback touch the store: they run on workers (nothing else is in flight now). The
  // digests of the touched tensors are computed in parallel, one job per worker.
  auto rollback_then_complete = [this, r, complete] {
    auto work = [this, r] {
      store_.rollback(r->undo);
      r->undo.clear();
    };
    if (!workers_.try_submit(work, complete)) {
      work();  // no room (unexpected: the pool is otherwise idle): still correct, just on the loop thread
      complete();
    }
  };
  if (!r->failure && r->req.anchor) {
    // A full-model anchor applies on any base only because it sets every tensor: one left out would keep a
    // value of another version.
    std::vector<bool> covered(store_.size());
    for (size_t t : r->touched) covered[t] = true;
    for (size_t t = 0; t < covered.size() && !r->failure; ++t)
      if (!covered[t])
        r->failure = error(errc::delta_version_mismatch, "the full-model anchor " + r->req.dir + " does not set tensor '" +
                                                             store_.tensor(t).name + "'");
  }
  if (r->failure) return rollback_then_complete();
  // The additive digests, which the store kept current while it applied: O(1) per tensor, here on the loop
  // thread (nothing is in flight now).
  {
    stopwatch sum_sw;
    for (const auto& [idx, want] : r->expected_sum) {
      const std::optional<digest128> got = store_.sum(idx);
      if (got && *got == want) continue;
      r->failure = error(errc::delta_tensor_digest_mismatch,
                         "tensor '" + store_.tensor(idx).name + "' has the additive digest (tensor_sum128) " +
                             (got ? to_hex(*got) : std::string("(none)")) + " after apply; the sender's is " +
                             to_hex(want));
      break;
    }
    r->stats.verify_ms += sum_sw.elapsed_ms();
    if (r->failure) return rollback_then_complete();
  }
  auto expected = std::make_shared<std::vector<std::pair<size_t, digest128>>>();
  for (const auto& e : r->expected)
    if (!r->verified.count(e.first)) expected->push_back(e);
  if (expected->empty()) {
    r->undo.clear();
    return complete();
  }
  const size_t jobs = std::max<size_t>(1, std::min(expected->size(), workers_.threads()));
  auto mismatches = std::make_shared<std::vector<std::optional<error>>>(jobs);
  auto remaining = std::make_shared<size_t>(jobs);
  auto sw = std::make_shared<stopwatch>();
  auto all_verified = [this, r, mismatches, sw, complete, rollback_then_complete] {
    r->stats.verify_ms += sw->elapsed_ms();
    for (auto& m : *mismatches)
      if (m && !r->failure) r->failure = *m;
    if (r->failure) return rollback_then_complete();
    r->undo.clear();
    complete();
  };
  for (size_t j = 0; j < jobs; ++j) {
    auto work = [this, expected, mismatches, j, jobs] {
      for (size_t k = j; k < expected->size(); k += jobs) {
        const auto& [idx, want] = (*expected)[k];
        digest128 got = store_.digest(idx);
        if (got != want) {
          (*mismatches)[j] = error(errc::delta_tensor_digest_mismatch,
                                   "tensor '" + store_.tensor(idx).name + "' hashes to " + to_hex(got) +
                                       " after apply; the sender's digest is " + to_hex(want));
          return;
        }
      }
    };
    auto on_done = [remaining, all_verified] {
      if (--*remaining == 0) all_verified();
    };
    if (!workers_.try_submit(work, on_done)) {
      work();
      on_done();
    }
  }
}

}  // namespace deltasync
