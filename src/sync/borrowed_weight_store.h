// A weight store over memory the caller owns: each tensor is a pointer into someone else's allocation (a
// torch or numpy tensor handed over through DLPack by the Python module, an inference engine's parameters),
// host memory or CUDA device memory of one device. Syncs are applied there in place, with the same
// validation, undo log and rollback as host_weight_store / cuda_weight_store: a refused sync leaves the
// caller's bytes bit-identical.
//
// Ownership: the store never allocates, frees or moves the tensors' memory; the caller keeps every region
// alive and at a fixed address for the store's lifetime (the Python module holds the DLPack capsules).
// Digests are not cached: the caller may write its tensors between syncs, so digest() always hashes the
// current bytes (on the device for CUDA tensors).
//
// Touched set: every tensor an apply() wrote is remembered (touched(), clear_touched()) so that a front end
// can hand an engine exactly the tensors a sync changed (the Python Receiver's load_weights hook).
//
// CUDA tensors are applied by the device apply engine (sync/device_apply.h) that cuda_weight_store uses: the
// param's raw bytes cross PCIe once and are decoded, checked and scattered on the device.
//
// Threading: as every weight_store; apply() of distinct tensors may run on several workers at once (host
// tensors need nothing shared; CUDA tensors take one of the engine's lanes: stream, staging ring, scratch).
#pragma once

#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "sync/device_apply.h"
#include "sync/weight_store.h"

namespace deltasync {

struct borrowed_tensor {
  store_tensor desc;  // name, dtype, shape, numel, nbytes (numel x element size)
  void* data = nullptr;
  int device = -1;    // -1: host memory; N: CUDA device N
};

class borrowed_weight_store final : public weight_store {
 public:
  // Errors: invalid_argument (a null pointer for a non-empty tensor, a duplicate name, nbytes that does not
  // match shape and dtype, CUDA tensors on more than one device), unsupported (CUDA tensors without a usable
  // GPU in this build or process).
  static result<std::unique_ptr<borrowed_weight_store>> create(std::vector<borrowed_tensor> tensors);
  ~borrowed_weight_store() override;

  // "cuda" when any tensor lives on a device, else "host".
  std::string_view kind() const noexcept override;
  status apply(size_t i, const delta_file& f, const param_entry& p, undo_log& undo) override;
  void rollback(undo_log& undo) override;
  digest128 digest(size_t i) override;
  status read(size_t i, mutable_byte_span out) const override;

  void* data(size_t i) const { return data_.at(i); }
  int device(size_t i) const { return devices_.at(i); }
  // Indices of the tensors written since the last clear_touched(), ascending.
  std::vector<size_t> touched() const;
  void clear_touched();

 private:
  borrowed_weight_store();
  void mark_touched(size_t i);

  std::vector<void*> data_;
  std::vector<int> devices_;
  int cuda_device_ = -1;  // the one device of every CUDA tensor, -1 when none
  mutable std::mutex touched_mu_;
  std::vector<bool> touched_;  // guarded by touched_mu_
  std::unique_ptr<device_apply_engine> engine_;  // when any tensor is on a device
};

}  // namespace deltasync
