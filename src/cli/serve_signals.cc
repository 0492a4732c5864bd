// sd_notify through libsystemd where the build has it (DELTASYNC_HAVE_SYSTEMD).
#include "cli/serve_signals.h"

#include "base/features.h"
#if DELTASYNC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace deltasync::cli {

bool notify_service_manager(const std::string& state) {
#if DELTASYNC_HAVE_SYSTEMD
  return sd_notify(0, state.c_str()) > 0;
#else
  (void)state;
  return false;
#endif
}

sigset_t serve_signal_set() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  return sigs;
}

}  // namespace deltasync::cli
