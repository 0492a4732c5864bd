// The receiver's HTTP API (DESIGN.md "Receiver service contract") bound to a receiver: POST /sync,
// POST /update_weights_from_disk (SGLang-compatible), GET /healthz, /status, /metrics, /checksums.
#pragma once

#include <memory>

#include "base/metrics.h"
#include "http/server.h"
#include "sync/receiver.h"
#include "sync/recovery.h"

namespace deltasync::io {
class worker_pool;
}
namespace deltasync {
class nccl_member;
}

namespace deltasync::http {

// The returned router's handlers reference `rx`, `workers`, `metrics`, `nccl` and `recovery`: keep them alive
// while it serves. With `nccl` (the NCCL transport, docs/nccl.md) it also serves POST/DELETE /nccl/init and
// reports the group in /status; without it POST /nccl/init answers 400 "NCCL transport not built". With
// `recovery`, GET /status reports what crash recovery replayed (docs/reliability.md).
router make_receiver_routes(receiver& rx, io::worker_pool& workers, metrics_registry& metrics,
                            nccl_member* nccl = nullptr, const recovery_report* recovery = nullptr);

}  // namespace deltasync::http
