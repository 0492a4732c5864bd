// Shared helpers of the GPU tests: a visible skip without a device, and host <-> device copies.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "base/bytes.h"
#include "gpu/gpu.h"

namespace deltasync::gpu::testing {

// Skips the test (visibly, with the reason) when no CUDA device can be used.
#define DS_REQUIRE_GPU()                                                   \
  do {                                                                     \
    auto ds_gpu_ = ::deltasync::gpu::available();                          \
    if (!ds_gpu_) GTEST_SKIP() << "no GPU: " << ds_gpu_.err().message;     \
  } while (0)

inline device_buffer upload(const void* data, size_t n, stream& s) {
  auto b = device_buffer::allocate(n == 0 ? 1 : n);
  EXPECT_TRUE(b.ok());
  if (n > 0) {
    EXPECT_TRUE(copy_h2d(b->data(), data, n, s).ok());
    EXPECT_TRUE(s.synchronize().ok());
  }
  return std::move(b).value();
}
inline device_buffer upload(byte_span b, stream& s) { return upload(b.data(), b.size(), s); }

inline byte_buffer download(const void* d, size_t n, stream& s) {
  byte_buffer out(n);
  if (n > 0) {
    EXPECT_TRUE(copy_d2h(out.data(), d, n, s).ok());
    EXPECT_TRUE(s.synchronize().ok());
  }
  return out;
}

inline byte_buffer random_bytes(size_t n, std::mt19937_64& rng) {
  byte_buffer b(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(b.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return b;
}

}  // namespace deltasync::gpu::testing
