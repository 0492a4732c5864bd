// The GPU stub: this build has no GPU kernels yet, whatever the toolkit.
#include "gpu/gpu.h"

#include "base/features.h"

namespace deltasync::gpu {

status available() {
#if DELTASYNC_HAVE_CUDA
  return error(errc::unsupported, "GPU support not built: the CUDA kernels are not implemented in this version");
#else
  return error(errc::unsupported, "GPU support not built: configured without CUDA (DELTASYNC_WITH_CUDA)");
#endif
}

}  // namespace deltasync::gpu
