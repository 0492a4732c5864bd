// Zero-copy import of a tensor from Python through DLPack (`__dlpack_device__` / `__dlpack__`): torch CPU
// and CUDA tensors in every dtype deltasync supports (bf16 included), numpy arrays, anything else that
// speaks the protocol. Only the legacy "dltensor" capsule (DLManagedTensor) is read, which every producer
// still returns when `max_version` is not asked for (torch 1.13 .. 2.x, numpy >= 1.22).
//
// Streams: a CUDA tensor is exported with `__dlpack__(stream=S)`, S being this module's own stream on the
// tensor's device, so the producer orders its pending work before S (recent torch does not synchronise at
// all when no stream is given); the import then waits for S, so when import_tensor returns every write the
// producer had queued on the tensor has finished. A host tensor is exported with `stream=None`.
// Fast path (the Sender's add/seed): when the caller names the producer's current stream (torch's
// current_stream on the tensor's device), the tensor is exported with `stream=-1` (the consumer orders the
// work itself, no producer event) and that stream is synchronised: the same guarantee at a fraction of the
// cost of torch's event dance, which dominated a small add().
//
// Contiguity: only C-contiguous (row-major, dense) tensors are accepted: strides are checked (dimensions of
// size 1 may have any stride) and a strided view is refused with invalid_argument naming the tensor.
//
// Lifetime: imported_tensor owns the DLManagedTensor and calls its deleter when destroyed, with the GIL held
// (some producers' deleters touch Python objects). Until then the producer keeps the memory alive, even when
// the Python object itself is gone.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "codec/dtype.h"

struct DLManagedTensor;

namespace deltasync::python {

class imported_tensor {
 public:
  imported_tensor() = default;
  imported_tensor(imported_tensor&& o) noexcept;
  imported_tensor& operator=(imported_tensor&& o) noexcept;
  imported_tensor(const imported_tensor&) = delete;
  imported_tensor& operator=(const imported_tensor&) = delete;
  ~imported_tensor();  // the GIL must be held

  void* data = nullptr;
  dtype type = dtype::U8;
  std::vector<uint64_t> shape;
  uint64_t numel = 0;
  uint64_t nbytes = 0;
  int device = -1;  // -1: host memory; N: CUDA device N

  // "cpu" or "cuda:N", as sync::tensor_view names devices.
  std::string device_name() const;

 private:
  friend result<imported_tensor> adopt_capsule(const pybind11::object& capsule, const std::string& label);
  DLManagedTensor* managed_ = nullptr;
};

// Imports `obj` (GIL held). `name` labels errors. Errors: invalid_argument (no DLPack protocol, a dtype
// deltasync has no name for, a non-contiguous tensor, the producer refused the export: its message is kept),
// unsupported (a device other than CPU / CUDA / CUDA host, or a CUDA tensor without GPU support in this build).
// `producer_stream`: the cudaStream_t the producer writes the tensor on (see the fast path above); only for
// a CUDA tensor (the caller checked: the protocol is not probed and __dlpack_device__ is not called).
// `producer_synchronised`: the caller has already synchronised that stream since its last write to the
// tensor (Sender.sync: once per device per sync), so the import waits for nothing.
result<imported_tensor> import_tensor(pybind11::handle obj, const std::string& name,
                                      std::optional<intptr_t> producer_stream = std::nullopt,
                                      bool producer_synchronised = false);

// Internal: owns an exported "dltensor" capsule's tensor after checking dtype, contiguity and device.
result<imported_tensor> adopt_capsule(const pybind11::object& capsule, const std::string& label);

}  // namespace deltasync::python
