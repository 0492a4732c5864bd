// The NCCL transport without NCCL (DELTASYNC_HAVE_NCCL == 0): every entry point says it is not built.
#include "base/features.h"
#include "gpu/nccl_channel.h"

namespace deltasync::gpu {
namespace {
error not_built() { return error(errc::unsupported, "NCCL transport not built (configured without NCCL: DELTASYNC_WITH_NCCL)"); }
}  // namespace

status nccl_available() { return not_built(); }
result<int> cuda_device_count() { return not_built(); }
result<nccl_unique_id> nccl_new_unique_id() { return not_built(); }
status cuda_host_register(void*, size_t, int) { return not_built(); }
void cuda_host_unregister(void*) noexcept {}
result<std::unique_ptr<broadcast_channel>> open_nccl_channel(const channel_params&, const std::atomic<bool>&) {
  return not_built();
}

}  // namespace deltasync::gpu
