// The GPU path's device plumbing: availability, device memory, pinned host memory, streams and events.
// Every declaration here is plain C++ (no CUDA header leaks out of src/gpu). Without CUDA
// (DELTASYNC_HAVE_CUDA == 0) the same API is a stub whose fallible calls report errc::unsupported
// "GPU support not built", and available() says why.
//
// Threading: a stream is used by one thread at a time; buffers may be shared read-only across threads.
// Errors: every CUDA failure is errc::internal (or errc::no_space for an allocation) naming the call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/result.h"

namespace deltasync::gpu {

// Ok when this build has CUDA and a device can be used; otherwise why not (no driver, no device).
status available();
// Devices visible to this process; 0 without CUDA or without a driver.
int device_count() noexcept;
// Makes `device` current for the calling thread.
status set_device(int device);
// "NVIDIA H200, 132 SMs, 139.8 GiB" for the current device; empty without one.
std::string device_description();
// Free and total bytes of the current device.
status memory_info(uint64_t& free_bytes, uint64_t& total_bytes);

// An ordered queue of device work (a CUDA stream), created on the current device.
class stream {
 public:
  stream();  // asserts on failure: call available() first
  ~stream();
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  // Waits for everything queued; reports the first asynchronous error.
  status synchronize();
  void* native() const noexcept { return s_; }  // the cudaStream_t, for src/gpu's kernels only

 private:
  void* s_ = nullptr;
};

// Waits for everything queued on a stream this module did not create (a cudaStream_t another library owns,
// e.g. the producer's stream of a tensor imported through DLPack); reports the first asynchronous error.
status synchronize_foreign_stream(void* native_stream);

// Device memory (cudaMalloc), owned. Move-only.
class device_buffer {
 public:
  device_buffer() = default;
  static result<device_buffer> allocate(size_t bytes);
  ~device_buffer();
  device_buffer(device_buffer&& o) noexcept;
  device_buffer& operator=(device_buffer&& o) noexcept;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  void* data() const noexcept { return p_; }
  size_t size() const noexcept { return n_; }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Page-locked host memory (cudaHostAlloc), owned. Move-only.
class pinned_buffer {
 public:
  pinned_buffer() = default;
  static result<pinned_buffer> allocate(size_t bytes);
  ~pinned_buffer();
  pinned_buffer(pinned_buffer&& o) noexcept;
  pinned_buffer& operator=(pinned_buffer&& o) noexcept;
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;
  void* data() const noexcept { return p_; }
  size_t size() const noexcept { return n_; }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Grows a scratch buffer to at least `bytes` (its contents are not kept).
status grow(device_buffer& b, size_t bytes);
status grow(pinned_buffer& b, size_t bytes);

// Registers existing host memory as pinned for the GPU (cudaHostRegister) / undoes it.
status register_host(void* p, size_t bytes);
void unregister_host(void* p) noexcept;

// Asynchronous copies on `s` (host memory should be pinned for them to overlap).
status copy_h2d(void* dst, const void* src, size_t bytes, stream& s);
status copy_d2h(void* dst, const void* src, size_t bytes, stream& s);
status copy_d2d(void* dst, const void* src, size_t bytes, stream& s);
status fill_zero(void* dst, size_t bytes, stream& s);

// A recorded point in a stream: for waits between streams and for timing.
class event {
 public:
  event();
  ~event();
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  status record(stream& s);
  status synchronize();
  bool done();  // true once the work before record() finished
  // Makes `s` wait (on the device) for this event.
  status wait_in(stream& s);
  // Milliseconds between two recorded events (both finished).
  static double elapsed_ms(const event& start, const event& end);

 private:
  void* e_ = nullptr;
};

}  // namespace deltasync::gpu
