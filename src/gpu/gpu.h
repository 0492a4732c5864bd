// The GPU path's entry points. Without CUDA (DELTASYNC_HAVE_CUDA == 0) this is a stub whose every call
// reports errc::unsupported "GPU support not built". The kernels land with the GPU path issue.
#pragma once

#include "base/result.h"

namespace deltasync::gpu {

// Ok when a CUDA device can be used by this build; otherwise why not.
status available();

}  // namespace deltasync::gpu
