// Online catch-up (see catch_up.h): decide, replay the kept chain on a thread of its own, report the gap.
#include "sync/catch_up.h"

#include <algorithm>
#include <cinttypes>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "base/log.h"
#include "io/event_loop.h"
#include "io/sync_io.h"
#include "sync/fleet_state.h"
#include "sync/publish_marker.h"
#include "sync/sender_util.h"

namespace deltasync {

bool needs_catch_up(receiver& rx, const sync_request& req) {
  return req.transport == "disk" && req.base_version && *req.base_version > rx.store().version() &&
         !rx.options().delta_dir.empty();
}

bool is_idempotent(receiver& rx, const sync_request& req) {
  if (req.version != rx.store().version() || req.transport != "disk" || rx.options().delta_dir.empty() ||
      req.dir.empty() || req.dir.find('/') != std::string::npos || req.dir == "..")
    return false;
  auto bytes = io::read_file_all(rx.options().delta_dir + "/" + req.dir + "/" + std::string(kPublishMarkerName), 16u << 20);
  if (!bytes) return false;
  auto m = parse_publish_marker(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
  if (!m || m->version != req.version || (req.base_version && m->base_version != *req.base_version)) return false;
  if (m->files.size() != req.files.size()) return false;
  for (size_t i = 0; i < req.files.size(); ++i)
    if (m->files[i].name != req.files[i]) return false;
  return true;
}

namespace {

// Before replaying anything: is `target` reachable from `cur` over the markers of the kept dirs (base ->
// version links)? Returns the reason when not (naming the versions without a usable marker), empty when it is.
// Files are verified later, step by step, by recover().
std::string unreachable(const std::string& delta_dir, uint64_t cur, uint64_t target) {
  std::map<uint64_t, uint64_t> base_of;  // version -> base_version, from valid markers in (cur, target]
  std::set<uint64_t> anchors;            // full-model anchors in (cur, target]: reachable from any version
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(delta_dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool anchor = anchor_of_dir(name).has_value();
    if ((!anchor && !version_of_dir(name)) || e.is_symlink(ec)) continue;
    auto bytes = io::read_file_all(e.path().string() + "/" + std::string(kPublishMarkerName), 16u << 20);
    if (!bytes) continue;
    auto m = parse_publish_marker(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
    if (!m || m->version <= cur || m->version > target || m->anchor != anchor ||
        name != version_dir_name(m->version, anchor))
      continue;
    if (anchor)
      anchors.insert(m->version);
    else
      base_of[m->version] = m->base_version;
  }
  std::set<uint64_t> reached{cur};
  std::set<uint64_t> versions(anchors);
  for (const auto& [v, b] : base_of) versions.insert(v);
  for (uint64_t v : versions) {
    auto b = base_of.find(v);
    if (anchors.count(v) || (b != base_of.end() && reached.count(b->second))) reached.insert(v);
  }
  if (reached.count(target)) return {};
  std::string missing;
  for (uint64_t v = cur + 1; v <= target && missing.size() < 400; ++v)
    if (!reached.count(v)) missing += (missing.empty() ? "" : ", ") + std::to_string(v);
  return "base_version " + std::to_string(target) + " is ahead of this receiver's version " + std::to_string(cur) +
         " and the kept chain cannot close the gap: versions " + std::to_string(cur + 1) + ".." +
         std::to_string(target) + " missing (no published, chained version dir for " + missing +
         "); nothing replayed, the store is unchanged";
}

}  // namespace

void start_catch_up(receiver& rx, io::event_loop& loop, uint64_t target,
                    std::function<void(recovery_report, std::optional<error>)> done) {
  recovery_options o;
  o.delta_dir = rx.options().delta_dir;
  o.max_file_bytes = rx.options().max_file_bytes;
  o.max_version = target;
  DS_LOG(info, "catch_up", "push based on version %" PRIu64 ", store at %" PRIu64 ": replaying the kept chain",
         target, rx.store().version());
  // Detached: recover() blocks on the loop's answers, so it cannot run on the loop; the receiver and the loop
  // outlive the thread because the routes serve nothing else until done() ran on the loop.
  const uint64_t cur = rx.store().version();
  std::thread([&rx, &loop, o, cur, target, done = std::move(done)]() mutable {
    if (std::string why = unreachable(o.delta_dir, cur, target); !why.empty()) {
      recovery_report none;
      none.from_version = none.to_version = cur;
      loop.post([none, why, done = std::move(done)]() mutable {
        done(none, error(errc::version_conflict, why));
      });
      return;
    }
    recovery_report rep = recover(rx, loop, o);
    loop.post([rep = std::move(rep), target, done = std::move(done)]() mutable {
      std::optional<error> gap;
      if (rep.to_version != target) {
        std::string why = "base_version " + std::to_string(target) + " is ahead of this receiver's version " +
                          std::to_string(rep.to_version) + " and the kept chain cannot close the gap: versions " +
                          std::to_string(rep.to_version + 1) + ".." + std::to_string(target) + " missing";
        for (const auto& s : rep.skipped) why += "; " + s.dir + ": " + s.reason;
        if (rep.skipped.empty()) why += " (no published version dir on the chain; pruned or never written)";
        gap = error(errc::version_conflict, std::move(why));
      }
      done(std::move(rep), std::move(gap));
    });
  }).detach();
}

}  // namespace deltasync
