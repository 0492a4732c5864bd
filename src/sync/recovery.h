// Crash recovery: brings a restarted receiver from its base weights to the newest fully published version by
// replaying the version directories kept in the delta dir (the senders ran with keep_files), in chain order.
//
// What is replayed. Only a version dir with a valid publish marker (sync/publish_marker.h) is a candidate;
// its marker names its base_version, version and files. Starting at the store's version, recovery follows
// base_version -> version links to the highest version reachable (a chain always exists when the sender
// advanced one step per acked sync; after a refused sync the sender's next version has the same base, and
// the chain takes the higher one). Each step is verified before it is applied:
//   1. every file the marker lists exists as a regular file of the listed size;
//   2. the files then go through the receiver's normal pipeline (receiver::start_sync) with the marker's
//      sizes and whole-file XXH3-64 as sync_request::expect, so a dir whose files were cut short, overwritten
//      or only partly copied is refused and rolled back (the hash is computed on the bytes the pipeline reads:
//      each file is read once), then native payload hash and base/version checks, slime checksum,
//      transactional apply, per-tensor XXH3-128 after apply.
// A candidate that fails either check is skipped (logged, with the reason, in the report) and the chain is
// recomputed from the current version without it. The store is never left between versions: a refused
// step is rolled back by the pipeline.
// Dirs without a marker are never applied: a sender killed mid-flush, a disk that filled up, or a slime
// #1806 trainer (its format has no marker and no base version, so completeness cannot be checked). They are
// listed as skipped when their version is above the store's.
//
// Threading: blocks the calling thread, which must not be the loop thread; the receiver must be idle and
// nothing else may start syncs meanwhile (serve runs it before it starts listening).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sync/receiver.h"

namespace deltasync::io {
class event_loop;
}

namespace deltasync {

struct recovery_options {
  std::string delta_dir;
  uint64_t max_marker_bytes = 16ull << 20;
  uint64_t max_file_bytes = 8ull << 30;  // a listed file larger than this is skipped
  uint64_t max_version = UINT64_MAX;     // replay no version above this (online catch-up: the push's base)
  // Online catch-up: replay nothing unless the markers chain from the store's version to max_version (files
  // are verified later, step by step); recovery_report::unreachable then names the versions they cannot reach.
  bool all_or_nothing = false;
};

struct recovery_report {
  struct step {
    std::string dir;
    uint64_t base_version = 0;
    uint64_t version = 0;
    uint64_t files = 0;
    uint64_t changed_elements = 0;
    double ms = 0;
    bool anchor = false;  // a full-model anchor (anchor_vN), applied on the version the store held
  };
  struct skip {
    std::string dir;
    std::string reason;
  };
  bool ran = false;
  uint64_t from_version = 0;
  uint64_t to_version = 0;
  std::vector<step> replayed;
  std::vector<skip> skipped;
  std::string unreachable;  // all_or_nothing refused: the versions no chained marker reaches ("2, 3")
};

// One published step through the receiver's normal pipeline, with the marker's file sizes and XXH3-64
// expected (sync_request::expect): version `m.version` on base `m.base_version` (on any base for an anchor),
// the files of `dir` read from the delta dir, or pulled from `base_url` ("transport": "http") when it is set.
// Blocks the calling thread (never the loop's) until the sync ended.
struct publish_marker;
result<sync_stats> replay_step(receiver& rx, io::event_loop& loop, const publish_marker& m, const std::string& dir,
                               const std::string& base_url = {});

// Replays what can be verified; never fails as a whole (a delta dir that cannot be listed is a skip with
// its reason). See the file comment for the rules.
recovery_report recover(receiver& rx, io::event_loop& loop, const recovery_options& options);

}  // namespace deltasync
