// The receiver's HTTP API (DESIGN.md "Receiver service contract") bound to a receiver: POST /sync,
// POST /update_weights_from_disk (SGLang-compatible), GET /healthz, /status, /metrics, /checksums.
#pragma once

#include <functional>
#include <memory>

#include "base/metrics.h"
#include "http/server.h"
#include "sync/receiver.h"
#include "sync/recovery.h"

namespace deltasync::io {
class event_loop;
class worker_pool;
}
namespace deltasync {
class nccl_member;
}

namespace deltasync::http {

// The returned router's handlers reference `rx`, `workers`, `metrics` and `nccl`: keep them alive while it
// serves. With `nccl` (the NCCL transport, docs/nccl.md) it also serves POST/DELETE /nccl/init and reports the
// group in /status; without it POST /nccl/init answers 400 "NCCL transport not built".
router make_receiver_routes(receiver& rx, io::worker_pool& workers, metrics_registry& metrics,
                            nccl_member* nccl = nullptr);

struct route_options {
  nccl_member* nccl = nullptr;
  // Online catch-up (sync/catch_up.h, docs/fleet.md): with a loop, a /sync push whose base_version is ahead
  // of the store makes the receiver replay the kept chain first (answering 503 busy to other syncs and
  // /checksums meanwhile), and a push for the version it holds whose marker matches is an idempotent 200.
  io::event_loop* loop = nullptr;
  // POST /update_weights_from_disk: by default a weight_version that is not exactly the store's version + 1
  // is refused (slime files are deltas against the previous version: applying one across a gap yields
  // weights matching no checkpoint). True accepts any newer version (serve --sglang-allow-version-gap).
  bool sglang_allow_version_gap = false;
  // serve --recover: called once, when the routes are made, with a callback that must run on the loop thread
  // with the report once recovery is done. Until then pushes and /checksums answer 503 busy with
  // Retry-After, and GET /status serves (version, "recovering": true; then "recovery": what it replayed,
  // docs/reliability.md).
  std::function<void(std::function<void(recovery_report)>)> start_recovery;
};
router make_receiver_routes(receiver& rx, io::worker_pool& workers, metrics_registry& metrics,
                            const route_options& options);

}  // namespace deltasync::http
