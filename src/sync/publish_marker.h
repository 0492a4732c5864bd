// The publish marker: the file a Sender writes LAST into a version directory, once every delta file of the
// sync is written and durable, to say "this version is complete". Its absence means the version was never
// fully published (a sender killed mid-flush, a full disk): crash recovery never applies such a directory.
//
// {delta_dir}/weight_v{N:06d}/published.json:
//   {"format": "deltasync-publish/1", "version": N, "base_version": M, "wire_format": "native"|"slime",
//    "encoding": "deltas", "files": [{"name": "rank0000_flush000000.safetensors", "bytes": 123,
//                                     "xxh3_64": "<16 lowercase hex of the whole file>"}, ...]}
// plus "anchor": true in the marker of a full-model anchor, {delta_dir}/anchor_v{N:06d}/ (docs/fleet.md): its
// files hold every element of every tensor at version N (full mode), so it applies on any base.
// It is written through the atomic writer (temp file, fdatasync, rename, fsync of the directory), so it is
// never seen half-written, and only after the files it lists are durable under their final names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync {

inline constexpr std::string_view kPublishMarkerName = "published.json";
inline constexpr std::string_view kPublishMarkerFormat = "deltasync-publish/1";
// In the delta dir: locked (flock) by the sender for the duration of a sync, so two senders never write into
// one delta dir at once (the marker assumes one sender per version dir). Holds the holder's pid.
inline constexpr std::string_view kSenderLockName = ".deltasync-sender.lock";

struct publish_marker {
  struct file {
    std::string name;
    uint64_t bytes = 0;
    uint64_t xxh3_64 = 0;  // of the whole file as written
  };
  uint64_t version = 0;
  uint64_t base_version = 0;
  std::string wire_format;  // "native" | "slime"
  std::string encoding;
  std::vector<file> files;
  bool anchor = false;  // a full-model anchor (see the top): applies on any base version
};

std::string serialize_publish_marker(const publish_marker& m);
// Errors (errc::invalid_argument) naming what is wrong: not JSON, a missing or
// mistyped field, another format, base_version >= version, no files, a file name that is not a plain name,
// the same name twice, more than max_files files.
result<publish_marker> parse_publish_marker(std::string_view text, size_t max_files = 1u << 16);

}  // namespace deltasync
