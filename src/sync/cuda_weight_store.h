// The device weight store (`deltasync serve --store cuda [--device N]`): every tensor in its own GPU
// allocation. apply() hands the param's raw bytes to the device apply engine (sync/device_apply.h): they
// cross PCIe once, and the positions are decoded, bounds- and order-checked on the device together with the
// values' exact cast, then scattered with the overwritten values saved in device memory for the undo log;
// a refusal leaves the tensor untouched with the host decoder's error. rollback() scatters the saved values
// back on the device. digest() is the device XXH3-128, cached per tensor.
//
// Threading: like every weight_store, apply() of distinct tensors may run on several worker threads at once
// (the receiver applies a file's params in parallel): each call takes one of the engine's lanes (a stream,
// staging ring and scratch); digest() likewise. rollback() runs with nothing else in flight.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpu/gpu.h"
#include "sync/device_apply.h"
#include "sync/weight_store.h"

namespace deltasync {

class cuda_weight_store final : public weight_store {
 public:
  // Loads the base checkpoint (as host_weight_store::load) and moves it to device `device`.
  static result<std::unique_ptr<cuda_weight_store>> load(const std::string& path, int device,
                                                         const checkpoint_limits& limits = {});
  // The built-in synthetic model (as host_weight_store::synthetic), on the device.
  static result<std::unique_ptr<cuda_weight_store>> synthetic(std::string_view model, uint64_t seed, int device);
  // Tensors given directly. Errors: unsupported (no GPU), no_space (device memory).
  static result<std::unique_ptr<cuda_weight_store>> from_tensors(loaded_tensors t, int device);
  // Tensors copied from device memory of the same device (device-to-device), e.g. a trainer's snapshot.
  static result<std::unique_ptr<cuda_weight_store>> from_device(std::vector<store_tensor> t,
                                                                const std::vector<const void*>& src, int device);
  ~cuda_weight_store() override;

  std::string_view kind() const noexcept override { return "cuda"; }
  status apply(size_t i, const delta_file& f, const param_entry& p, undo_log& undo) override;
  void rollback(undo_log& undo) override;
  digest128 digest(size_t i) override;
  status read(size_t i, mutable_byte_span out) const override;

  int device() const noexcept { return device_; }
  // Device address of tensor i (for tools and benchmarks on the same device).
  void* device_data(size_t i) const { return data_.at(i).data(); }
  // The engine that applies into this store (benchmarks pick its decode path through it).
  device_apply_engine& engine() const noexcept { return *engine_; }

 private:
  cuda_weight_store(int device, std::unique_ptr<device_apply_engine> engine);
  static result<std::unique_ptr<cuda_weight_store>> create(int device);

  int device_ = 0;
  std::unique_ptr<device_apply_engine> engine_;
  std::vector<gpu::device_buffer> data_;
  mutable std::mutex digest_mu_;
  std::vector<std::optional<digest128>> digests_;  // guarded by digest_mu_
};

}  // namespace deltasync
