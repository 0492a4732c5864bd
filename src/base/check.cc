// The failure path of DS_CHECK: print where and why, then abort so a core dump shows the state.
#include "base/check.h"

#include <cstdio>
#include <cstdlib>

namespace deltasync::detail {

void check_failed(const char* expr, const char* msg, const char* file, int line) noexcept {
  std::fprintf(stderr, "deltasync: check failed at %s:%d: %s (%s)\n", file, line, expr, msg);
  std::fflush(stderr);
  std::abort();
}

}  // namespace deltasync::detail
