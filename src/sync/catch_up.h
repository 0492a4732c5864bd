// Online catch-up of a lagging receiver (docs/fleet.md). Publishing is the commit point, so a receiver that
// missed a version (down, refused, timed out) sees the next push carry a base_version ahead of its own. Instead
// of a 409 it replays the kept, marker-verified chain of published version dirs from its version up to that
// base (sync/recovery.h with max_version = base: the same verification and the normal transactional
// pipeline), then the push is applied as usual. A gap the markers cannot close (pruned dirs, no marker) is
// errc::version_conflict naming the versions it cannot reach, found before anything is replayed (the store
// is unchanged). A step whose files then fail verification ends the replay there with the same error; what
// was replayed up to it stays applied (each step is a complete published version).
//
// A push for the version the receiver already holds is an idempotent success when the version dir's publish
// marker matches the request (same version, base_version and file names): a retry after a timeout whose
// sync committed anyway.
//
// Threading: plan() and is_idempotent() on the loop thread (they read at most one small marker file);
// start() runs the replay on its own thread, which posts every step to the loop and calls `done` on the loop
// thread. The caller must start no other sync meanwhile (the routes answer 503 while catching up).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/result.h"
#include "sync/receiver.h"
#include "sync/recovery.h"

namespace deltasync::io {
class event_loop;
}

namespace deltasync {

// True when `req` asks for a replay first: a disk push whose base_version is ahead of the store's version
// and a receiver with a delta dir.
bool needs_catch_up(receiver& rx, const sync_request& req);

// True when `req` is for exactly the store's version and {delta_dir}/{req.dir}/published.json matches it.
bool is_idempotent(receiver& rx, const sync_request& req);

// Replays the chain from the store's version up to `target` (blocking work on a thread of its own), then
// calls done on the loop thread with the report, and an error when the store did not reach `target`.
void start_catch_up(receiver& rx, io::event_loop& loop, uint64_t target,
                    std::function<void(recovery_report, std::optional<error>)> done);

}  // namespace deltasync
