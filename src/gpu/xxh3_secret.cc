// The XXH3 default secret, taken from libxxhash's own header so the device digest cannot drift from it.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace deltasync::gpu::detail {

const unsigned char* xxh3_default_secret() noexcept { return XXH3_kSecret; }
unsigned xxh3_default_secret_size() noexcept { return sizeof(XXH3_kSecret); }

}  // namespace deltasync::gpu::detail
