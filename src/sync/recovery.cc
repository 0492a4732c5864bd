// Crash recovery (see recovery.h): scan the kept version dirs, follow the marker chain, verify, replay.
#include "sync/recovery.h"

#include <sys/stat.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <system_error>

#include "base/clock.h"
#include "base/log.h"
#include "io/event_loop.h"
#include "io/sync_io.h"
#include "sync/fleet_state.h"
#include "sync/publish_marker.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

struct candidate {
  std::string dir;  // weight_vNNNNNN, or anchor_vNNNNNN for a full-model anchor
  uint64_t name_version = 0;
  bool anchor = false;  // applies on any base (its files set every element of every tensor)
  std::optional<publish_marker> marker;
  std::string invalid;  // why it cannot be applied; empty while it still may be
  bool checked = false;  // check_files passed (the XXH3-64 is the pipeline's)
};

void read_marker(const std::string& delta_dir, candidate& c, const recovery_options& o) {
  const std::string path = delta_dir + "/" + c.dir + "/" + std::string(kPublishMarkerName);
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(path, ec))) {
    c.invalid = "no publish marker (never fully published, or written by a slime trainer)";
    return;
  }
  auto bytes = io::read_file_all(path, o.max_marker_bytes);
  if (!bytes) {
    c.invalid = "publish marker unreadable: " + bytes.err().describe();
    return;
  }
  auto m = parse_publish_marker(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
  if (!m) {
    c.invalid = m.err().describe();
    return;
  }
  if (m->version != c.name_version) {
    c.invalid = "publish marker says version " + std::to_string(m->version) + " in dir " + c.dir;
    return;
  }
  if (m->anchor != c.anchor) {
    c.invalid = c.anchor ? "an anchor dir whose publish marker is not an anchor's"
                         : "a version dir whose publish marker is an anchor's";
    return;
  }
  c.marker = std::move(m).value();
}

// Every listed file, as a plain file (no symlink) of the listed size; its XXH3-64 is checked by the pipeline.
std::string check_files(const std::string& delta_dir, const candidate& c, const recovery_options& o) {
  for (const auto& f : c.marker->files) {
    const std::string path = delta_dir + "/" + c.dir + "/" + f.name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return "file " + f.name + " listed by the marker is missing";
    if (!S_ISREG(st.st_mode)) return "file " + f.name + " is not a regular file";
    if (static_cast<uint64_t>(st.st_size) != f.bytes)
      return "file " + f.name + " holds " + std::to_string(st.st_size) + " bytes, the marker says " + std::to_string(f.bytes);
    if (f.bytes > o.max_file_bytes) return "file " + f.name + " is over max-file-bytes";
  }
  return {};
}

// Every version reachable from `from` over candidates that may still apply, with the step that reaches it
// (nullptr: the start). A full-model anchor is reachable from any version below it; at equal versions a delta
// step is preferred (it reads less).
std::map<uint64_t, candidate*> reachable(std::vector<candidate>& all, uint64_t from, uint64_t max_version) {
  std::vector<candidate*> usable;
  for (auto& c : all)
    if (c.invalid.empty() && c.marker && c.marker->version > from && c.marker->version <= max_version)
      usable.push_back(&c);
  std::sort(usable.begin(), usable.end(), [](auto* a, auto* b) {
    return a->marker->version != b->marker->version ? a->marker->version < b->marker->version : !a->anchor && b->anchor;
  });
  std::map<uint64_t, candidate*> reached;
  reached[from] = nullptr;
  for (auto* c : usable)
    if ((c->anchor || reached.count(c->marker->base_version)) && !reached.count(c->marker->version))
      reached[c->marker->version] = c;
  return reached;
}

// The path from `from` to the highest version reachable.
std::vector<candidate*> best_chain(std::vector<candidate>& all, uint64_t from, uint64_t max_version) {
  auto reached = reachable(all, from, max_version);
  std::vector<candidate*> path;
  for (candidate* c = reached.rbegin()->second; c != nullptr; c = c->anchor ? nullptr : reached[c->marker->base_version])
    path.push_back(c);
  std::reverse(path.begin(), path.end());
  return path;
}

// all_or_nothing: the versions in (from, max_version] the markers cannot reach, when max_version is one of them.
std::string unreachable_versions(std::vector<candidate>& all, uint64_t from, uint64_t max_version) {
  auto reached = reachable(all, from, max_version);
  if (reached.count(max_version)) return {};
  std::string missing;
  for (uint64_t v = from + 1; v <= max_version && missing.size() < 400; ++v)
    if (!reached.count(v)) missing += (missing.empty() ? "" : ", ") + std::to_string(v);
  return missing;
}

}  // namespace

result<sync_stats> replay_step(receiver& rx, io::event_loop& loop, const publish_marker& m, const std::string& dir,
                               const std::string& base_url) {
  DS_CHECK(!loop.in_loop_thread(), "replay_step() blocks: call it off the loop thread");
  sync_request req;
  req.version = m.version;
  if (m.anchor)
    req.anchor = true;  // no base version: it applies on any
  else
    req.base_version = m.base_version;
  req.transport = base_url.empty() ? "disk" : "http";
  req.base_url = base_url;
  req.dir = dir;
  for (const auto& f : m.files) {
    req.files.push_back(f.name);
    req.expect.push_back({f.bytes, f.xxh3_64});
  }
  std::promise<result<sync_stats>> done;
  auto outcome = done.get_future();
  loop.post([&rx, &done, req = std::move(req)]() mutable {
    rx.start_sync(std::move(req), [&done](result<sync_stats> r) { done.set_value(std::move(r)); });
  });
  return outcome.get();
}

recovery_report recover(receiver& rx, io::event_loop& loop, const recovery_options& options) {
  DS_CHECK(!loop.in_loop_thread(), "recover() blocks: call it off the loop thread");
  recovery_report report;
  report.ran = true;
  uint64_t cur = 0;
  loop.run_sync([&] { cur = rx.store().version(); });
  report.from_version = cur;

  std::vector<candidate> all;
  std::error_code ec;
  fs::directory_iterator it(options.delta_dir, ec);
  if (ec) {
    report.skipped.push_back({options.delta_dir, "cannot list the delta dir: " + ec.message()});
  } else {
    for (const auto& entry : it) {
      const std::string name = entry.path().filename().string();
      const auto anchor = anchor_of_dir(name);
      const auto v = anchor ? anchor : version_of_dir(name);
      if (!v) continue;
      candidate c;
      c.dir = name;
      c.name_version = *v;
      c.anchor = anchor.has_value();
      // Never replayed, always reported: a version dir that is a symlink (it could lead anywhere; a live sync
      // through it is refused too) or not a directory at all.
      if (entry.is_symlink(ec))
        c.invalid = "is a symlink (refused: version dirs must be real directories inside the delta dir)";
      else if (!entry.is_directory(ec))
        c.invalid = "is not a directory";
      else
        read_marker(options.delta_dir, c, options);
      all.push_back(std::move(c));
    }
  }
  DS_LOG(info, "recover", "recovering from version %" PRIu64 ": %zu version dirs in %s", cur, all.size(),
         options.delta_dir.c_str());

  if (options.all_or_nothing) {
    report.unreachable = unreachable_versions(all, cur, options.max_version);
    if (!report.unreachable.empty()) {
      report.to_version = cur;
      return report;
    }
  }
  for (;;) {
    auto chain = best_chain(all, cur, options.max_version);
    if (chain.empty()) break;
    candidate& c = *chain.front();
    if (!c.checked) {
      c.invalid = check_files(options.delta_dir, c, options);
      if (!c.invalid.empty()) continue;  // the chain is recomputed without it
      c.checked = true;
    }
    stopwatch sw;
    auto r = replay_step(rx, loop, *c.marker, c.dir);
    if (!r) {
      c.invalid = "refused by the receiver: " + r.err().describe();
      continue;
    }
    recovery_report::step s{c.dir,        c.anchor ? cur : c.marker->base_version, c.marker->version, r->files,
                            r->changed_elements, sw.elapsed_ms(), c.anchor};
    DS_LOG(info, "recover", "replayed %s: version %" PRIu64 " -> %" PRIu64 " (%" PRIu64 " files, %" PRIu64
           " changed elements, %.1f ms)", c.dir.c_str(), s.base_version, s.version, s.files, s.changed_elements, s.ms);
    report.replayed.push_back(std::move(s));
    cur = c.marker->version;
  }
  report.to_version = cur;
  // Report what was left out above the final version (older dirs are history, not skips).
  std::sort(all.begin(), all.end(), [](const candidate& a, const candidate& b) { return a.name_version < b.name_version; });
  for (const auto& c : all) {
    if (c.name_version <= cur || c.name_version > options.max_version) continue;
    if (c.anchor && c.invalid.empty()) continue;  // an anchor the chain did not need is no skip
    const std::string reason = !c.invalid.empty() ? c.invalid
                                                  : "not on a chain from version " + std::to_string(cur) +
                                                        " (its base is " + std::to_string(c.marker->base_version) + ")";
    DS_LOG(warn, "recover", "skipped %s: %s", c.dir.c_str(), reason.c_str());
    report.skipped.push_back({c.dir, reason});
  }
  DS_LOG(info, "recover", "recovery done: version %" PRIu64 " -> %" PRIu64 ", %zu replayed, %zu skipped",
         report.from_version, report.to_version, report.replayed.size(), report.skipped.size());
  return report;
}

}  // namespace deltasync
