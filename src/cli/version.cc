// The build's identity, from the generated feature header and the git revision header.
#include "cli/version.h"

#include "base/features.h"
#include "cli/git_revision.h"

namespace deltasync::cli {
namespace {
const char* yes_no(bool b) { return b ? "yes" : "no"; }
}  // namespace

const char* version_string() noexcept { return DELTASYNC_VERSION; }
const char* git_revision() noexcept { return DELTASYNC_GIT_REVISION; }

std::string version_text() {
  std::string out = std::string("deltasync ") + DELTASYNC_VERSION + " (git " + DELTASYNC_GIT_REVISION + ")\n";
  out += std::string("features: cuda=") + yes_no(DELTASYNC_HAVE_CUDA) + " nccl=" + yes_no(DELTASYNC_HAVE_NCCL) +
         " io_uring=yes systemd=" + yes_no(DELTASYNC_HAVE_SYSTEMD) + "\n";
  // io_uring is always compiled in (static liburing); whether this host allows a ring is decided when
  // `serve` starts (logged), with the pread/pwrite thread backend as the fallback.
  out += "io: io_uring with a pread/pwrite thread fallback (--io-backend auto|uring|threads)\n";
#if defined(__clang__)
  out += "compiler: clang " __clang_version__ "\n";
#elif defined(__GNUC__)
  out += "compiler: gcc " __VERSION__ "\n";
#endif
  return out;
}

}  // namespace deltasync::cli
