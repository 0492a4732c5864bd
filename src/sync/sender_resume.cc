// A restarted Sender (sender::resume): where the delta dir's chain stands, and a check that the seeded
// checkpoint is the version it claims to be.
#include <string>

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

}  // namespace deltasync
