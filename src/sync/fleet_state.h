// The fleet state a Sender keeps next to its version dirs: which version it published last and which
// version each receiver it has pushed to acknowledged. Publishing is the commit point (docs/fleet.md): a
// version is committed once its files and publish marker are durable, whatever the receivers answered, and
// the chain of published version dirs above the lowest acknowledged version is kept so a lagging receiver
// can replay it (sync/catch_up.h). This file is what makes that retention survive a restarted `publish`.
//
// {delta_dir}/fleet.json (written through the atomic writer after every push):
//   {"format": "deltasync-fleet/1", "published": N, "acked": {"http://host:port": V, ...}}
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace deltasync {

inline constexpr std::string_view kFleetStateName = "fleet.json";
inline constexpr std::string_view kFleetStateFormat = "deltasync-fleet/1";

struct fleet_state {
  uint64_t published = 0;                  // the newest version this delta dir committed
  std::map<std::string, uint64_t> acked;   // receiver url -> the newest version it answered 200 for
  // The lowest acknowledged version over `receivers` and every receiver already known (a receiver never
  // seen counts as `base`, the version the sync started from).
  uint64_t min_acked(const std::vector<std::string>& receivers, uint64_t base) const;
};

std::string serialize_fleet_state(const fleet_state& s);
// errc::invalid_argument naming what is wrong (not JSON, another format, a mistyped field).
result<fleet_state> parse_fleet_state(std::string_view text);
// A missing file is an empty state; an unreadable or invalid one is an error.
result<fleet_state> load_fleet_state(const std::string& delta_dir);
status save_fleet_state(const std::string& delta_dir, const fleet_state& s);

// Removes the published version dirs ({delta_dir}/weight_vN with a publish marker) whose version is at or
// below `up_to`, except `keep` (the newest one, which is the base of the next sync). Returns the versions
// removed. Dirs without a marker are not touched here (recovery lists them as skipped).
std::vector<uint64_t> prune_published(const std::string& delta_dir, uint64_t up_to, uint64_t keep);

// "weight_v000012" -> 12; nullopt for any other name. anchor_of_dir: the same for "anchor_v000012".
std::optional<uint64_t> version_of_dir(std::string_view name);
std::optional<uint64_t> anchor_of_dir(std::string_view name);

// The versions of the full-model anchors {delta_dir}/anchor_vN (real dirs holding a publish marker), ascending.
std::vector<uint64_t> anchor_versions(const std::string& delta_dir);

// The versions whose dir {delta_dir}/weight_vN (a real dir, not a symlink) holds a publish marker, ascending;
// empty when there are none or the delta dir cannot be listed.
std::vector<uint64_t> published_versions(const std::string& delta_dir);

// True when {delta_dir}/weight_vN holds a publish marker (the version was published and is never rewritten).
bool version_published(const std::string& delta_dir, uint64_t version);

}  // namespace deltasync
