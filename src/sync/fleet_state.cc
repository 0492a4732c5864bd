// The Sender's fleet state file and the retention of published version dirs (see fleet_state.h).
#include "sync/fleet_state.h"

#include <boost/json.hpp>
#include <algorithm>
#include <filesystem>
#include <system_error>

#include "io/sync_io.h"
#include "sync/publish_marker.h"
#include "sync/sender_util.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

std::string state_path(const std::string& delta_dir) { return delta_dir + "/" + std::string(kFleetStateName); }

}  // namespace

uint64_t fleet_state::min_acked(const std::vector<std::string>& receivers, uint64_t base) const {
  uint64_t m = UINT64_MAX;
  for (const auto& [url, v] : acked) m = std::min(m, v);
  for (const auto& url : receivers)
    if (!acked.count(url)) m = std::min(m, base);
  return m == UINT64_MAX ? base : m;
}

std::string serialize_fleet_state(const fleet_state& s) {
  json::object acked;
  for (const auto& [url, v] : s.acked) acked[url] = v;
  return json::serialize(json::object{{"format", std::string(kFleetStateFormat)},
                                      {"published", s.published},
                                      {"acked", std::move(acked)}}) + "\n";
}

result<fleet_state> parse_fleet_state(std::string_view text) {
  std::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return error(errc::invalid_argument, "fleet state: not a JSON object");
  const json::object& o = v.as_object();
  const json::value* f = o.if_contains("format");
  if (!f || !f->is_string() || f->as_string() != kFleetStateFormat)
    return error(errc::invalid_argument, "fleet state: format is not " + std::string(kFleetStateFormat));
  fleet_state s;
  const json::value* p = o.if_contains("published");
  if (!p || !(p->is_uint64() || (p->is_int64() && p->as_int64() >= 0)))
    return error(errc::invalid_argument, "fleet state: 'published' is not a non-negative integer");
  s.published = p->is_uint64() ? p->as_uint64() : static_cast<uint64_t>(p->as_int64());
  const json::value* a = o.if_contains("acked");
  if (!a || !a->is_object()) return error(errc::invalid_argument, "fleet state: 'acked' is not an object");
  for (const auto& [url, ver] : a->as_object()) {
    if (!(ver.is_uint64() || (ver.is_int64() && ver.as_int64() >= 0)))
      return error(errc::invalid_argument, "fleet state: acked version of '" + std::string(url) + "' is not an integer");
    s.acked[std::string(url)] = ver.is_uint64() ? ver.as_uint64() : static_cast<uint64_t>(ver.as_int64());
  }
  return s;
}

result<fleet_state> load_fleet_state(const std::string& delta_dir) {
  std::error_code ec;
  if (!fs::exists(state_path(delta_dir), ec)) return fleet_state{};
  DS_ASSIGN_OR_RETURN(byte_buffer bytes, io::read_file_all(state_path(delta_dir), 16u << 20));
  auto s = parse_fleet_state(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  if (!s) return error(s.err().code, state_path(delta_dir) + ": " + s.err().message);
  return s;
}

status save_fleet_state(const std::string& delta_dir, const fleet_state& s) {
  const std::string text = serialize_fleet_state(s);
  return io::write_file_atomic(state_path(delta_dir),
                               byte_span(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

bool version_published(const std::string& delta_dir, uint64_t version) {
  std::error_code ec;
  return fs::is_regular_file(
      fs::symlink_status(delta_dir + "/" + version_dir_name(version) + "/" + std::string(kPublishMarkerName), ec));
}

namespace {

std::optional<uint64_t> numbered_dir(std::string_view name, std::string_view prefix) {
  if (name.size() <= prefix.size() || !name.starts_with(prefix)) return std::nullopt;
  const std::string_view digits = name.substr(prefix.size());
  if (digits.size() > 19 || digits.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  return std::stoull(std::string(digits));
}

std::vector<uint64_t> marked_dirs(const std::string& delta_dir, std::string_view prefix) {
  std::vector<uint64_t> versions;
  std::error_code ec;
  fs::directory_iterator it(delta_dir, ec);
  if (ec) return versions;
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    const auto v = numbered_dir(name, prefix);
    if (v && !entry.is_symlink(ec) &&
        fs::is_regular_file(fs::symlink_status(entry.path() / std::string(kPublishMarkerName), ec)))
      versions.push_back(*v);
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

}  // namespace

std::optional<uint64_t> version_of_dir(std::string_view name) { return numbered_dir(name, kVersionDirPrefix); }
std::optional<uint64_t> anchor_of_dir(std::string_view name) { return numbered_dir(name, kAnchorDirPrefix); }
std::vector<uint64_t> published_versions(const std::string& delta_dir) { return marked_dirs(delta_dir, kVersionDirPrefix); }
std::vector<uint64_t> anchor_versions(const std::string& delta_dir) { return marked_dirs(delta_dir, kAnchorDirPrefix); }

std::vector<uint64_t> prune_published(const std::string& delta_dir, uint64_t up_to, uint64_t keep) {
  std::vector<uint64_t> removed;
  for (uint64_t v : published_versions(delta_dir)) {
    if (v > up_to || v == keep) continue;
    std::error_code ec;
    fs::remove_all(delta_dir + "/" + version_dir_name(v), ec);
    if (!ec) removed.push_back(v);
  }
  return removed;
}

}  // namespace deltasync
