// Online catch-up of a lagging receiver (docs/fleet.md). Publishing is the commit point, so a receiver that
// missed a version (down, refused, timed out) sees the next push carry a base_version ahead of its own. Instead
// of a 409 it replays the kept, marker-verified chain of published version dirs from its version up to that
// base (sync/recovery.h with max_version = base: the same verification and the normal transactional
// pipeline), then the push is applied as usual. A gap the markers cannot close (pruned dirs, no marker) is
// errc::version_conflict naming the versions it cannot reach, found before anything is replayed (the store
// is unchanged). A step whose files then fail verification ends the replay there with the same error; what
// was replayed up to it stays applied (each step is a complete published version).
//
// Over the HTTP pull transport the chain is read from the push's file server (see start_catch_up).
//
// A push for the version the receiver already holds is an idempotent success when the version dir's publish
// marker matches the request (same version, base_version and file names): a retry after a timeout whose
// sync committed anyway.
//
// Threading: needs_catch_up() and check_idempotent() on the loop thread (the latter reads one small marker);
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

// True when `req` asks for a replay first: its base_version is ahead of the store's version and the receiver
// can read the chain: a disk push on a receiver with a delta dir, or a pull push ("transport": "http") on a
// receiver that pulls (the chain is read from the push's file server).
bool needs_catch_up(receiver& rx, const sync_request& req);

// done(true) when `req` is for exactly the store's version and its version dir's publish marker matches it
// (same version, base_version and file names): read from the delta dir for a disk push (inline), fetched from
// req.base_url for a pull push (done on the loop thread). done(false) otherwise, also when the marker cannot be
// read. On the loop thread.
void check_idempotent(receiver& rx, const sync_request& req, std::function<void(bool)> done);

// Replays the chain from the store's version up to push.base_version (blocking work on a thread of its own),
// then calls done on the loop thread with the report, and an error when the store did not reach it.
// A disk push replays the delta dir's kept dirs (sync/recovery.h). A pull push walks the publish markers on
// its file server backwards from weight_v{base} (each names its base), which needs no directory listing (any
// static file server), falling back to a full-model anchor_v{N} at the highest version of the walk where a
// link is missing; each step is then pulled through the pipeline with its marker's sizes and XXH3-64. A link
// that is missing with no anchor to cover it is errc::version_conflict naming it, before anything is
// replayed; a file server that cannot be reached is errc::upstream_error.
void start_catch_up(receiver& rx, io::event_loop& loop, const sync_request& push,
                    std::function<void(recovery_report, std::optional<error>)> done);

// serve --recover-from URL: at start-up, brings the store to the newest version the Sender published on that
// file server (URL/fleet.json's "published") by the same backward walk and pulled steps as a pull push's
// catch-up; a receiver with no copy of the delta dir recovers as --recover does with one. Blocks the calling
// thread (never the loop's); the receiver must be idle. Never fails as a whole: a server that cannot be read
// or a gap is a skip in the report, with its reason, and the store stays at the last version it reached.
recovery_report recover_remote(receiver& rx, io::event_loop& loop, const std::string& base_url);

}  // namespace deltasync
