// The GPU API without CUDA (DELTASYNC_HAVE_CUDA == 0): every fallible call reports "GPU support not built".
#include "base/check.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"

namespace deltasync::gpu {
namespace {
error not_built() {
  return error(errc::unsupported, "GPU support not built: configured without CUDA (DELTASYNC_WITH_CUDA)");
}
}  // namespace

status available() { return not_built(); }
int device_count() noexcept { return 0; }
status set_device(int) { return not_built(); }
std::string device_description() { return {}; }
status memory_info(uint64_t&, uint64_t&) { return not_built(); }

stream::stream() { DS_CHECK(false, "gpu::stream without CUDA (check gpu::available() first)"); }
stream::~stream() = default;
status stream::synchronize() { return not_built(); }
status synchronize_foreign_stream(void*) { return not_built(); }

result<device_buffer> device_buffer::allocate(size_t) { return not_built(); }
device_buffer::~device_buffer() = default;
device_buffer::device_buffer(device_buffer&&) noexcept {}
device_buffer& device_buffer::operator=(device_buffer&&) noexcept { return *this; }
result<pinned_buffer> pinned_buffer::allocate(size_t) { return not_built(); }
pinned_buffer::~pinned_buffer() = default;
pinned_buffer::pinned_buffer(pinned_buffer&&) noexcept {}
pinned_buffer& pinned_buffer::operator=(pinned_buffer&&) noexcept { return *this; }
status grow(device_buffer&, size_t) { return not_built(); }
status grow(pinned_buffer&, size_t) { return not_built(); }
status register_host(void*, size_t) { return not_built(); }
void unregister_host(void*) noexcept {}
status copy_h2d(void*, const void*, size_t, stream&) { return not_built(); }
status copy_d2h(void*, const void*, size_t, stream&) { return not_built(); }
status copy_d2d(void*, const void*, size_t, stream&) { return not_built(); }
status fill_zero(void*, size_t, stream&) { return not_built(); }

event::event() { DS_CHECK(false, "gpu::event without CUDA (check gpu::available() first)"); }
event::~event() = default;
status event::record(stream&) { return not_built(); }
status event::synchronize() { return not_built(); }
bool event::done() { return true; }
status event::wait_in(stream&) { return not_built(); }
double event::elapsed_ms(const event&, const event&) { return -1; }

struct diff_encoder::impl {};
diff_encoder::diff_encoder(diff_encoder_options) : impl_(nullptr) {}
diff_encoder::~diff_encoder() = default;
result<encoded_layout> diff_encoder::encode(std::span<const diff_input>, encoding, stream&) { return not_built(); }
const void* diff_encoder::payload() const noexcept { return nullptr; }
const uint32_t* diff_encoder::positions() const noexcept { return nullptr; }
const void* diff_encoder::values() const noexcept { return nullptr; }

struct digester::impl {};
digester::digester(uint64_t, uint64_t) : impl_(nullptr) {}
digester::~digester() = default;
result<digest128> digester::digest(const void*, uint64_t, stream&) { return not_built(); }
result<uint64_t> digester::digest64(const void*, uint64_t, stream&) { return not_built(); }
result<uint64_t> digester::start(const void*, uint64_t, stream&) { return not_built(); }
result<digest128> digester::collect(uint64_t) { return not_built(); }
void digester::drop_pending() noexcept {}
status digester::digest_many(std::span<const std::pair<const void*, uint64_t>>, std::span<digest128>, stream&) {
  return not_built();
}

status scatter_apply(void*, dtype, uint64_t, const uint32_t*, uint64_t, const void*, dtype, void*, stream&) {
  return not_built();
}
status scatter_restore(void*, uint32_t, const uint32_t*, uint64_t, const void*, stream&) { return not_built(); }
status add_apply(void*, uint32_t, const uint32_t*, uint64_t, const void*, void*, stream&) { return not_built(); }
status gather(const void*, uint32_t, const uint32_t*, uint64_t, void*, stream&) { return not_built(); }
status compact_encode(const uint32_t*, const void*, const void*, uint64_t, uint32_t, device_buffer&, uint64_t&,
                      compact_scratch&, stream&) {
  return not_built();
}
status compact_decode(byte_span, const void*, uint64_t, uint64_t, uint32_t, uint32_t*, void*, compact_scratch&,
                      stream&) {
  return not_built();
}
result<decode_status> decode_scatter(const decode_scatter_args&, decode_scratch&, stream&) { return not_built(); }
status decode_positions_unchecked(encoding, uint32_t, const void*, uint64_t, uint32_t*, decode_scratch&, stream&) {
  return not_built();
}
result<uint64_t> xor_hash(const void*, uint64_t, dtype, stream&) { return not_built(); }
result<digest128> sum_digest(const void*, uint64_t, uint32_t, stream&) { return not_built(); }

}  // namespace deltasync::gpu
