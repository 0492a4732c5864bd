// Online catch-up (see catch_up.h): decide, replay the kept chain on a thread of its own, report the gap.
#include "sync/catch_up.h"

#include <cinttypes>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/check.h"
#include "base/clock.h"
#include "base/log.h"
#include "io/event_loop.h"
#include "io/sync_io.h"
#include "sync/file_source.h"
#include "sync/fleet_state.h"
#include "sync/publish_marker.h"
#include "sync/sender_util.h"

namespace deltasync {

bool needs_catch_up(receiver& rx, const sync_request& req) {
  if (!req.base_version || *req.base_version <= rx.store().version()) return false;
  return (req.transport == "disk" && !rx.options().delta_dir.empty()) || (req.transport == "http" && rx.pulls());
}

namespace {

constexpr uint64_t kMaxMarkerBytes = 16u << 20;

bool marker_matches(const publish_marker& m, const sync_request& req) {
  if (m.anchor || m.version != req.version || (req.base_version && m.base_version != *req.base_version)) return false;
  if (m.files.size() != req.files.size()) return false;
  for (size_t i = 0; i < req.files.size(); ++i)
    if (m.files[i].name != req.files[i]) return false;
  return true;
}

}  // namespace

void check_idempotent(receiver& rx, const sync_request& req, std::function<void(bool)> done) {
  const bool disk = req.transport == "disk" && !rx.options().delta_dir.empty();
  const bool pull = req.transport == "http" && rx.pulls();
  if (req.version != rx.store().version() || (!disk && !pull) || !check_remote_names(req.dir, req.files))
    return done(false);
  if (pull)
    return rx.fetch_remote_file(req.base_url, req.dir, std::string(kPublishMarkerName), kMaxMarkerBytes,
                                [req, done = std::move(done)](result<std::string> text) {
                                  auto m = text ? parse_publish_marker(*text) : result<publish_marker>(text.err());
                                  done(m && marker_matches(*m, req));
                                });
  auto bytes = io::read_file_all(rx.options().delta_dir + "/" + req.dir + "/" + std::string(kPublishMarkerName), kMaxMarkerBytes);
  if (!bytes) return done(false);
  auto m = parse_publish_marker(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
  done(m && marker_matches(*m, req));
}

namespace {

std::string gap_message(uint64_t cur, uint64_t target) {
  return "base_version " + std::to_string(target) + " is ahead of this receiver's version " + std::to_string(cur) +
         " and the kept chain cannot close the gap: versions " + std::to_string(cur + 1) + ".." +
         std::to_string(target) + " missing";
}

// The catch-up thread's view of the file server: one small file, fetched on the loop, waited for here.
result<std::string> fetch_text(receiver& rx, io::event_loop& loop, const std::string& base_url, const std::string& dir,
                               std::string_view name) {
  std::promise<result<std::string>> p;
  auto text = p.get_future();
  loop.post([&] {
    rx.fetch_remote_file(base_url, dir, std::string(name), kMaxMarkerBytes,
                         [&p](result<std::string> t) { p.set_value(std::move(t)); });
  });
  return text.get();
}

// The marker of weight_v{version} (anchor_v{version} with `anchor`); one for another version or kind is
// errc::invalid_argument, like a marker that does not parse.
result<publish_marker> fetch_marker(receiver& rx, io::event_loop& loop, const std::string& base_url, uint64_t version,
                                    bool anchor) {
  auto t = fetch_text(rx, loop, base_url, version_dir_name(version, anchor), kPublishMarkerName);
  if (!t) return t.err();
  auto m = parse_publish_marker(*t);
  if (m && (m->version != version || m->anchor != anchor))
    return error(errc::invalid_argument, "its publish marker is for " + std::string(m->anchor ? "anchor" : "version") +
                                             " " + std::to_string(m->version));
  return m;
}

struct remote_step {
  std::string dir;
  publish_marker marker;
};

// The chain from `cur` up to `target` on the file server, in replay order: weight_v{target}'s marker names its
// base, and so on down to `cur`; where a link is missing, the highest anchor_v{N} among the walked versions
// (and the missing one) covers everything below it. An error only for a server that cannot answer; a gap is
// errc::version_conflict naming the missing link.
result<std::vector<remote_step>> walk_remote_chain(receiver& rx, io::event_loop& loop, const std::string& base_url,
                                                   uint64_t cur, uint64_t target) {
  std::vector<remote_step> down;  // target first
  std::string broken;             // why the walk stopped short of cur
  for (uint64_t w = target;;) {
    const std::string dir = version_dir_name(w, false);
    auto m = fetch_marker(rx, loop, base_url, w, false);
    if (!m && !m.err().is(errc::not_found) && !m.err().is(errc::invalid_argument)) return m.err();
    if (!m) {
      broken = dir + ": " + (m.err().is(errc::not_found) ? "no publish marker on the file server (pruned, or never "
                                                           "fully published)" : m.err().describe());
      break;
    }
    const uint64_t base = m->base_version;
    down.push_back({dir, std::move(m).value()});
    if (base == cur) break;
    if (base < cur) {
      broken = dir + " is based on version " + std::to_string(base) + ", below this receiver's";
      break;
    }
    w = base;
  }
  if (broken.empty()) return std::vector<remote_step>(down.rbegin(), down.rend());
  // A full-model anchor at the highest version we can use: every walked version, then the missing link.
  std::vector<uint64_t> tries;
  for (const auto& s : down) tries.push_back(s.marker.version);
  tries.push_back(down.empty() ? target : down.back().marker.base_version);
  for (size_t k = 0; k < tries.size(); ++k) {
    if (tries[k] <= cur) continue;
    auto a = fetch_marker(rx, loop, base_url, tries[k], true);
    if (!a && !a.err().is(errc::not_found) && !a.err().is(errc::invalid_argument)) return a.err();
    if (!a) continue;
    std::vector<remote_step> chain{{version_dir_name(tries[k], true), std::move(a).value()}};
    for (size_t j = k; j-- > 0;) chain.push_back(down[j]);  // the deltas above the anchor, ascending
    return chain;
  }
  return error(errc::version_conflict, gap_message(cur, target) + " on the file server " + base_url + " (" + broken +
                                           ", and no anchor_vN covers it); nothing replayed, the store is unchanged");
}

// Catch-up over the HTTP pull transport, on the catch-up thread: walk, then replay each step by pulling it.
std::optional<error> catch_up_remote(receiver& rx, io::event_loop& loop, const std::string& base_url, uint64_t target,
                                     recovery_report& rep) {
  auto chain = walk_remote_chain(rx, loop, base_url, rep.from_version, target);
  if (!chain) return chain.err();
  for (const auto& s : *chain) {
    stopwatch sw;
    auto r = replay_step(rx, loop, s.marker, s.dir, base_url);
    if (!r) {
      rep.skipped.push_back({s.dir, "refused by the receiver: " + r.err().describe()});
      const errc code = r.err().is(errc::upstream_error) ? errc::upstream_error : errc::version_conflict;
      return error(code, gap_message(rep.to_version, target) + ": replaying " + s.dir + " from " + base_url +
                             " failed: " + r.err().describe());
    }
    const uint64_t base = s.marker.anchor ? rep.to_version : s.marker.base_version;
    const double ms = sw.elapsed_ms();
    DS_LOG(info, "catch_up", "pulled and replayed %s: version %" PRIu64 " -> %" PRIu64 " (%.1f ms)", s.dir.c_str(), base,
           s.marker.version, ms);
    rep.replayed.push_back({s.dir, base, s.marker.version, r->files, r->changed_elements, ms, s.marker.anchor});
    rep.to_version = s.marker.version;
  }
  return std::nullopt;
}

// Catch-up from the delta dir, on the catch-up thread (sync/recovery.h up to target).
std::optional<error> catch_up_local(receiver& rx, io::event_loop& loop, uint64_t target, recovery_report& rep) {
  recovery_options o;
  o.delta_dir = rx.options().delta_dir;
  o.max_file_bytes = rx.options().max_file_bytes;
  o.max_version = target;
  o.all_or_nothing = true;
  rep = recover(rx, loop, o);
  if (!rep.unreachable.empty())
    return error(errc::version_conflict, gap_message(rep.from_version, target) + " (no published, chained version dir for " +
                                             rep.unreachable + "); nothing replayed, the store is unchanged");
  if (rep.to_version == target) return std::nullopt;
  std::string why = gap_message(rep.to_version, target);
  for (const auto& s : rep.skipped) why += "; " + s.dir + ": " + s.reason;
  if (rep.skipped.empty()) why += " (no published version dir on the chain; pruned or never written)";
  return error(errc::version_conflict, std::move(why));
}

}  // namespace

void start_catch_up(receiver& rx, io::event_loop& loop, const sync_request& push,
                    std::function<void(recovery_report, std::optional<error>)> done) {
  const uint64_t cur = rx.store().version();
  const uint64_t target = push.base_version.value_or(cur);
  const std::string base_url = push.transport == "http" ? push.base_url : std::string();
  const std::string from = base_url.empty() ? "the kept chain" : "the chain published on " + base_url;
  DS_LOG(info, "catch_up", "push based on version %" PRIu64 ", store at %" PRIu64 ": replaying %s", target, cur,
         from.c_str());
  // Detached: the steps block on the loop's answers, so they cannot run on the loop; the receiver and the loop
  // outlive the thread because the routes serve nothing else until done() ran on the loop.
  std::thread([&rx, &loop, cur, target, base_url, done = std::move(done)]() mutable {
    recovery_report rep;
    rep.ran = true;
    rep.from_version = rep.to_version = cur;
    auto gap = base_url.empty() ? catch_up_local(rx, loop, target, rep) : catch_up_remote(rx, loop, base_url, target, rep);
    loop.post([rep = std::move(rep), gap = std::move(gap), done = std::move(done)]() mutable {
      done(std::move(rep), std::move(gap));
    });
  }).detach();
}

recovery_report recover_remote(receiver& rx, io::event_loop& loop, const std::string& base_url) {
  DS_CHECK(!loop.in_loop_thread(), "recover_remote() blocks: call it off the loop thread");
  recovery_report rep;
  rep.ran = true;
  loop.run_sync([&] { rep.from_version = rep.to_version = rx.store().version(); });
  auto text = fetch_text(rx, loop, base_url, "", kFleetStateName);
  auto fleet = text ? parse_fleet_state(*text) : result<fleet_state>(text.err());
  if (!fleet) {
    rep.skipped.push_back({base_url + "/" + std::string(kFleetStateName), "the newest published version is unknown: " +
                                                                          fleet.err().describe()});
    return rep;
  }
  DS_LOG(info, "recover", "recovering from version %" PRIu64 " to %" PRIu64 ", the newest published on %s",
         rep.from_version, fleet->published, base_url.c_str());
  if (fleet->published > rep.from_version)
    if (auto gap = catch_up_remote(rx, loop, base_url, fleet->published, rep); gap && rep.skipped.empty())
      rep.skipped.push_back({base_url, gap->describe()});
  DS_LOG(info, "recover", "recovery done: version %" PRIu64 " -> %" PRIu64 ", %zu replayed, %zu skipped",
         rep.from_version, rep.to_version, rep.replayed.size(), rep.skipped.size());
  return rep;
}

}  // namespace deltasync
