// The service manager side of `deltasync serve`: readiness and state reported to systemd through sd_notify
// (libsystemd; a no-op when NOTIFY_SOCKET is unset or the build has no libsystemd), and the signals serve
// waits for.
//   READY=1      once the base weights are loaded and the port is bound (Type=notify units start then)
//   RELOADING=1  while SIGHUP re-reads the token file, READY=1 again after
//   STOPPING=1   on SIGTERM/SIGINT, while the sync in flight finishes or rolls back
#pragma once

#include <csignal>
#include <string>

namespace deltasync::cli {

// Sends `state` ("READY=1\nSTATUS=...") to the service manager; false when not supervised (or no libsystemd).
bool notify_service_manager(const std::string& state);

// The set serve blocks before starting any thread and then sigwaits on: SIGINT, SIGTERM, SIGHUP.
sigset_t serve_signal_set();

}  // namespace deltasync::cli
