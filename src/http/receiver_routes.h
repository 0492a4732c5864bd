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

namespace deltasync::http {

// The returned router's handlers reference `rx`, `workers`, `metrics` and `recovery` (when given: GET
// /status reports it): keep them alive while it serves.
router make_receiver_routes(receiver& rx, io::worker_pool& workers, metrics_registry& metrics,
                            const recovery_report* recovery = nullptr);

}  // namespace deltasync::http
