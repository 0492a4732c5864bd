// Where the delta dir's chain stands: a restarted Sender (sender::resume) and the check that the seeded
// checkpoint is the version it claims to be; full-model anchors (sender::write_anchor, and finish() writing
// one every anchor_every versions) and the retention they allow.
#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "base/log.h"

#include "codec/delta_format.h"
#include "codec/digest.h"
#include "io/sync_io.h"
#include "sync/fleet_state.h"
#include "sync/publish_marker.h"
#include "sync/sender.h"
#include "sync/sender_impl.h"
#include "sync/sender_util.h"

namespace deltasync {
namespace {

constexpr size_t kMaxMarkerBytes = 16u << 20;

result<publish_marker> read_marker(const std::string& dir) {
  const std::string path = dir + "/" + std::string(kPublishMarkerName);
  DS_ASSIGN_OR_RETURN(byte_buffer bytes, io::read_file_all(path, kMaxMarkerBytes));
  auto m = parse_publish_marker(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  if (!m) return error(m.err().code, path + ": " + m.err().message);
  return m;
}

}  // namespace

result<uint64_t> sender::resume(std::optional<uint64_t> version) {
  impl& s = *impl_;
  if (s.active) return error(errc::invalid_argument, "resume: sync " + std::to_string(s.version) + " is in progress");
  if (s.nccl() || s.options.delta_dir.empty()) {
    if (!version) return error(errc::invalid_argument, "resume: no delta dir to find the newest published version in");
    snapshot_version_ = *version;
    return *version;
  }
  if (!version) {
    const auto published = published_versions(s.options.delta_dir);
    version = published.empty() ? 0 : published.back();
  }
  snapshot_version_ = *version;
  if (*version == 0 || !version_published(s.options.delta_dir, *version)) return *version;

  // The version's native files name the XXH3-128 of every tensor they changed: the seeded copy of each must
  // hash to it, or the checkpoint the Sender was seeded with is not that version (its next delta would be
  // computed against weights no receiver holds).
  const std::string dir = s.options.delta_dir + "/" + version_dir_name(*version);
  DS_ASSIGN_OR_RETURN(publish_marker marker, read_marker(dir));
  if (marker.wire_format != "native") return *version;  // slime files carry no digests of the new tensors
  for (const auto& f : marker.files) {
    const std::string path = dir + "/" + f.name;
    DS_ASSIGN_OR_RETURN(byte_buffer bytes, io::read_file_all(path, f.bytes));
    auto file = parse_delta_file(bytes);
    if (!file) return error(file.err().code, "resume from version " + std::to_string(*version) + ": " + path + ": " +
                                                 file.err().message);
    if (!file->native) continue;
    for (const auto& [name, want] : file->native->tensor_digests) {
      auto it = s.snapshot.find(name);
      if (it == s.snapshot.end() || it->second.on_gpu) continue;  // device snapshots are not hashed here
      if (xxh3_128(it->second.bytes) != want) {
        snapshot_version_ = 0;
        return error(errc::version_conflict,
                     "resume: the seeded tensor '" + name + "' is not its state at version " + std::to_string(*version) +
                         " (the newest published version: " + path + " names another XXH3-128); seed the checkpoint "
                         "of version " + std::to_string(*version) + ", or publish with the base version it holds");
      }
    }
  }
  return *version;
}

result<sync_report> sender::finish() {
  auto r = finish_sync();
  impl& s = *impl_;
  if (s.options.anchor_every == 0 || s.nccl() || !s.last.snapshot_advanced ||
      s.last.version % s.options.anchor_every != 0)
    return r;
  auto a = write_anchor();
  if (!a) {
    DS_LOG(warn, "sender", "version %llu: the full-model anchor was not written: %s",
           static_cast<unsigned long long>(s.last.version), a.err().describe().c_str());
    s.last.anchor_error = a.err().describe();
  } else {
    s.last.anchor_version = s.last.version;
  }
  if (r) *r = s.last;  // finish_sync() returned a copy of it; the anchor's fields and pruned dirs are added
  return r;
}

void sender::set_anchor_every(uint64_t k) noexcept { impl_->options.anchor_every = k; }

result<std::string> sender::write_anchor() {
  namespace fs = std::filesystem;
  impl& s = *impl_;
  const uint64_t v = snapshot_version_;
  if (s.active) return error(errc::invalid_argument, "write_anchor: sync " + std::to_string(s.version) + " is in progress");
  if (s.nccl() || s.options.delta_dir.empty())
    return error(errc::invalid_argument, "write_anchor: anchors live in a delta dir (the disk or HTTP pull transport)");
  if (v == 0) return error(errc::invalid_argument, "write_anchor: nothing published yet (snapshot version 0)");
  for (const auto& [name, t] : s.snapshot)
    if (t.on_gpu)
      return error(errc::unsupported, "write_anchor: tensor '" + name + "' is a device snapshot (anchors are written "
                                      "from host snapshots)");
  const std::string dir = s.options.delta_dir + "/" + version_dir_name(v, true);
  const auto existing = anchor_versions(s.options.delta_dir);
  if (std::find(existing.begin(), existing.end(), v) == existing.end()) {
    sender_options o = s.options;
    o.mode = update_mode::full;
    o.format = wire_format::native;
    o.enc = encoding::deltas;
    o.receivers.clear();
    o.pull_base_url.clear();
    o.pre_push_hook.clear();
    o.keep_files = true;
    o.anchor_every = 0;
    o.anchor_layout = true;
    sender a(o, nullptr);
    a.set_snapshot_version(v - 1);
    DS_TRY_STATUS(a.begin(v));
    std::vector<std::string> names;
    for (const auto& [name, t] : s.snapshot) names.push_back(name);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const auto& t = s.snapshot.at(name);
      if (auto st = a.add(name, tensor_view{t.bytes.data(), t.type, t.shape, "cpu"}); !st) {
        a.abort();
        std::error_code ec;
        fs::remove_all(dir, ec);
        return error(st.err().code, "write_anchor: " + st.err().message);
      }
    }
    auto done = a.finish();
    if (!done) return error(done.err().code, "write_anchor: " + done.err().message);
  }
  // Retention: the anchor serves every version below it, so older anchors and (without keep_files, with
  // receivers) the chain up to it go; the newest version dir stays (idempotent retries check its marker).
  std::error_code ec;
  for (uint64_t old : existing)
    if (old < v) fs::remove_all(s.options.delta_dir + "/" + version_dir_name(old, true), ec);
  if (!s.options.keep_files && !s.options.receivers.empty())
    for (uint64_t p : prune_published(s.options.delta_dir, v, v)) s.last.pruned.push_back(p);
  DS_LOG(info, "sender", "full-model anchor of version %llu written: %s", static_cast<unsigned long long>(v), dir.c_str());
  return dir;
}

}  // namespace deltasync
