// The CUDA runtime behind gpu.h: availability, memory, streams, events.
#include <cuda_runtime.h>

#include <cstdio>
#include <utility>

#include "base/check.h"
#include "gpu/cuda_check.h"
#include "gpu/gpu.h"

namespace deltasync::gpu {

using detail::cuda_status;

status available() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return error(errc::unsupported, std::string("no usable CUDA device: ") + cudaGetErrorName(e) + " (" +
                                        cudaGetErrorString(e) + ")");
  if (n == 0) return error(errc::unsupported, "no usable CUDA device: the driver reports none");
  return {};
}

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

status set_device(int device) {
  const int n = device_count();
  if (device < 0 || device >= n)
    return error(errc::invalid_argument, "CUDA device " + std::to_string(device) + " does not exist (" +
                                             std::to_string(n) + " visible)");
  return cuda_status(cudaSetDevice(device), "cudaSetDevice");
}

std::string device_description() {
  int dev = 0;
  cudaDeviceProp p{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) return {};
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s, %d SMs, %.1f GiB, device %d", p.name, p.multiProcessorCount,
                static_cast<double>(p.totalGlobalMem) / double(1ull << 30), dev);
  return buf;
}

status memory_info(uint64_t& free_bytes, uint64_t& total_bytes) {
  size_t f = 0, t = 0;
  DS_CUDA_TRY(cudaMemGetInfo(&f, &t));
  free_bytes = f;
  total_bytes = t;
  return {};
}

// ---- stream ----

stream::stream() {
  cudaStream_t s = nullptr;
  cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  DS_CHECK(e == cudaSuccess, "cudaStreamCreate failed (check gpu::available() first)");
  s_ = s;
}
stream::~stream() {
  if (s_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(s_));
}
status stream::synchronize() {
  return cuda_status(cudaStreamSynchronize(static_cast<cudaStream_t>(s_)), "cudaStreamSynchronize");
}

status synchronize_foreign_stream(void* native_stream) {
  return cuda_status(cudaStreamSynchronize(static_cast<cudaStream_t>(native_stream)), "cudaStreamSynchronize");
}

// ---- device_buffer ----

result<device_buffer> device_buffer::allocate(size_t bytes) {
  device_buffer b;
  if (bytes == 0) return b;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free allocation error
    return error(errc::no_space, "cudaMalloc of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(e));
  }
  b.p_ = p;
  b.n_ = bytes;
  return b;
}
device_buffer::~device_buffer() {
  if (p_ != nullptr) cudaFree(p_);
}
device_buffer::device_buffer(device_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
device_buffer& device_buffer::operator=(device_buffer&& o) noexcept {
  if (this != &o) {
    if (p_ != nullptr) cudaFree(p_);
    p_ = std::exchange(o.p_, nullptr);
    n_ = std::exchange(o.n_, 0);
  }
  return *this;
}

// ---- pinned_buffer ----

result<pinned_buffer> pinned_buffer::allocate(size_t bytes) {
  pinned_buffer b;
  if (bytes == 0) return b;
  void* p = nullptr;
  cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return error(errc::no_space, "cudaHostAlloc of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(e));
  }
  b.p_ = p;
  b.n_ = bytes;
  return b;
}
pinned_buffer::~pinned_buffer() {
  if (p_ != nullptr) cudaFreeHost(p_);
}
pinned_buffer::pinned_buffer(pinned_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
pinned_buffer& pinned_buffer::operator=(pinned_buffer&& o) noexcept {
  if (this != &o) {
    if (p_ != nullptr) cudaFreeHost(p_);
    p_ = std::exchange(o.p_, nullptr);
    n_ = std::exchange(o.n_, 0);
  }
  return *this;
}

status grow(device_buffer& b, size_t bytes) { return detail::ensure(b, bytes); }
status grow(pinned_buffer& b, size_t bytes) { return detail::ensure_pinned(b, bytes); }

status register_host(void* p, size_t bytes) {
  return cuda_status(cudaHostRegister(p, bytes, cudaHostRegisterPortable), "cudaHostRegister");
}
void unregister_host(void* p) noexcept { cudaHostUnregister(p); }

// ---- copies ----

namespace {
cudaStream_t native(stream& s) { return static_cast<cudaStream_t>(s.native()); }
}  // namespace

status copy_h2d(void* dst, const void* src, size_t bytes, stream& s) {
  if (bytes == 0) return {};
  return cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, native(s)), "cudaMemcpyAsync H2D");
}
status copy_d2h(void* dst, const void* src, size_t bytes, stream& s) {
  if (bytes == 0) return {};
  return cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, native(s)), "cudaMemcpyAsync D2H");
}
status copy_d2d(void* dst, const void* src, size_t bytes, stream& s) {
  if (bytes == 0) return {};
  return cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, native(s)), "cudaMemcpyAsync D2D");
}
status fill_zero(void* dst, size_t bytes, stream& s) {
  if (bytes == 0) return {};
  return cuda_status(cudaMemsetAsync(dst, 0, bytes, native(s)), "cudaMemsetAsync");
}

// ---- event ----

event::event() {
  cudaEvent_t e = nullptr;
  cudaError_t r = cudaEventCreate(&e);
  DS_CHECK(r == cudaSuccess, "cudaEventCreate failed (check gpu::available() first)");
  e_ = e;
}
event::~event() {
  if (e_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(e_));
}
status event::record(stream& s) {
  return cuda_status(cudaEventRecord(static_cast<cudaEvent_t>(e_), native(s)), "cudaEventRecord");
}
status event::synchronize() {
  return cuda_status(cudaEventSynchronize(static_cast<cudaEvent_t>(e_)), "cudaEventSynchronize");
}
bool event::done() { return cudaEventQuery(static_cast<cudaEvent_t>(e_)) == cudaSuccess; }
status event::wait_in(stream& s) {
  return cuda_status(cudaStreamWaitEvent(native(s), static_cast<cudaEvent_t>(e_), 0), "cudaStreamWaitEvent");
}
double event::elapsed_ms(const event& start, const event& end) {
  float ms = 0;
  if (cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.e_), static_cast<cudaEvent_t>(end.e_)) != cudaSuccess)
    return -1;
  return ms;
}

}  // namespace deltasync::gpu
