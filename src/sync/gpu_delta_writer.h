// Delta files whose data section lives in device memory (the GPU encoder's packed payload): the header is
// built with the codec's own builder (so the file is the bytes delta_bucket_builder would write), the slime
// checksum and the native payload hash are computed on the device, and the payload streams GPU -> the
// pool's pinned buffers -> the file through the atomic writer (io_uring where available), the D2H copy of
// buffer k+1 overlapping the write of buffer k.
#pragma once

#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/delta_format.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"

namespace deltasync {
namespace io {
class io_backend;
class buffer_pool;
}  // namespace io

// One tensor of a device bucket, in the order given to diff_encoder::encode.
struct device_param {
  std::string name;
  dtype type = dtype::BF16;
  std::vector<uint64_t> shape;
};

// The header of the delta file for an encoded device bucket. Params with no change are left out (as slime
// does). `native` (optional) must hold a digest for every changed param. Synchronizes `s`.
result<byte_buffer> device_delta_header(encoding enc, uint64_t version, const std::vector<device_param>& params,
                                        const gpu::encoded_layout& layout, const void* device_payload,
                                        uint64_t data_alignment, const native_fields* native, gpu::digester& dig,
                                        gpu::stream& s);

// Writes header + the device payload to `path` atomically. `pool` must be pinned for the GPU (created with
// gpu::register_host as its pin hook) for the copies to be asynchronous; blocks the calling thread, which must
// not be the loop thread. Errors as atomic_file_writer's, or the CUDA copy's.
status write_device_file(io::io_backend& backend, io::buffer_pool& pool, const std::string& path, byte_span header,
                         const void* device_payload, uint64_t payload_bytes, gpu::stream& s);

}  // namespace deltasync
