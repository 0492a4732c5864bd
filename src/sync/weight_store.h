// The receiver's weights: every tensor of the model, its version, per-tensor XXH3-128 digests, and a
// transactional apply (an undo log of overwritten bytes, so a failed sync rolls back to bit-identical).
//
// weight_store is the interface the receiver pipeline uses; host_weight_store keeps tensors in host memory
// (the default, `--store host`); a CUDA store implements the same interface later (`--store cuda`).
//
// Threading: apply()/rollback()/digest() of one store are called by one thread at a time (the receiver's
// apply stage); read-only accessors (size, tensor, find, version) may be called from the loop thread
// between syncs.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/delta_format.h"
#include "codec/digest.h"
#include "codec/dtype.h"
#include "sync/checkpoint_loader.h"  // store_tensor

namespace deltasync {

// Overwritten bytes of one sync, in apply order. Bounded: when recording would exceed max_bytes the apply
// is refused (errc::limit_exceeded) before anything is written.
class undo_log {
 public:
  explicit undo_log(uint64_t max_bytes = 8ull << 30) : max_bytes_(max_bytes) {}
  // The positions are kept encoded (as the file had them: 2-4 bytes each) and decoded only on rollback.
  struct record {
    size_t tensor = 0;
    uint32_t elem_bytes = 0;
    encoding enc = encoding::indices;
    uint32_t pos_width = 4;
    uint64_t pos_base = 0;  // the applied param_entry's: a slice's positions count from it
    byte_buffer encoded_positions;
    byte_buffer old_values;
    // A device store's record keeps its positions and old values in device memory instead (opaque here;
    // sync/device_apply.h): the two buffers above are then empty.
    std::shared_ptr<void> device;
  };
  std::vector<record>& records() noexcept { return records_; }
  uint64_t bytes() const noexcept { return bytes_; }
  uint64_t max_bytes() const noexcept { return max_bytes_; }
  bool reserve(uint64_t more) noexcept {
    if (bytes_ + more > max_bytes_) return false;
    bytes_ += more;
    return true;
  }
  void clear() noexcept {
    records_.clear();
    bytes_ = 0;
  }

 private:
  std::vector<record> records_;
  uint64_t bytes_ = 0;
  uint64_t max_bytes_;
};

class weight_store {
 public:
  virtual ~weight_store() = default;

  virtual std::string_view kind() const noexcept = 0;  // "host" | "cuda"
  size_t size() const noexcept { return tensors_.size(); }
  const store_tensor& tensor(size_t i) const { return tensors_.at(i); }
  std::optional<size_t> find(std::string_view name) const;
  uint64_t total_bytes() const noexcept;
  uint64_t version() const noexcept { return version_; }
  void set_version(uint64_t v) noexcept { version_ = v; }

  // Applies one param of a validated delta file (parse_delta_file) to tensor i, which the caller looked up
  // by name. Checks p's dtype and shape against tensor i (delta_dtype_mismatch / delta_shape_mismatch, also
  // for a sub-byte tensor, which cannot be addressed per element), decodes and bounds-checks p's positions,
  // and refuses with limit_exceeded when recording the overwritten bytes (4 per position + the old values)
  // would pass undo.max_bytes(). Only then records the old values in `undo` and writes. On any error tensor
  // i is untouched and nothing was recorded. Errors name the tensor.
  virtual status apply(size_t i, const delta_file& f, const param_entry& p, undo_log& undo) = 0;
  // Whether apply() takes slices of a param (param_entry::pos_base, or a compact param's run of blocks:
  // param_entry::block_first/block_end; values of the param's own dtype) and may run for disjoint slices of one
  // tensor on several threads at once, each with its own undo log. The receiver then splits a large param's
  // apply across its workers.
  virtual bool applies_slices() const noexcept { return false; }
  // Restores every record in reverse order and clears the log.
  virtual void rollback(undo_log& undo) = 0;
  // XXH3-128 of tensor i's bytes; cached, recomputed after an apply touched the tensor.
  virtual digest128 digest(size_t i) = 0;
  // The additive digest of tensor i (codec/sum_digest.h), kept current by apply() and rollback() in
  // O(changed elements); nullopt for a store that does not keep one (the receiver then checks digest()).
  // It tracks what the store wrote, so it does not see memory that changed behind the store's back: only
  // digest() reads the bytes (docs/verification.md).
  virtual std::optional<digest128> sum(size_t i) const {
    (void)i;
    return std::nullopt;
  }
  // Copies tensor i's bytes out; invalid_argument unless out.size() == nbytes.
  virtual status read(size_t i, mutable_byte_span out) const = 0;

 protected:
  std::vector<store_tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  uint64_t version_ = 0;
  // Appends a tensor description; asserts its name is new.
  void add_tensor(store_tensor t);
};

class host_weight_store final : public weight_store {
 public:
  // Loads a `.safetensors` file or a Hugging Face checkpoint directory (`model.safetensors`, or
  // `model.safetensors.index.json` + shards) through src/io, in load_checkpoint's tensor order (kept by
  // export_safetensors). Errors as load_checkpoint's (sync/checkpoint_loader.h): they name file and tensor.
  static result<std::unique_ptr<host_weight_store>> load(const std::string& path,
                                                         const checkpoint_limits& limits = {});
  // A built-in synthetic model (see sync/synthetic_model.h): the bf16 view of rl_trainer_sim(layout, seed)
  // before any step, so a trainer simulation with the same seed starts from identical weights.
  static result<std::unique_ptr<host_weight_store>> synthetic(std::string_view model, uint64_t seed);
  // Tensors given directly: the store takes the memory over (a loaded checkpoint's file blocks, no copy) and
  // applies deltas into it in place. Asserts unique names.
  static std::unique_ptr<host_weight_store> from_tensors(loaded_tensors t);
  // The same from one buffer per tensor (tests, tools). Asserts each buffer's size == nbytes.
  static std::unique_ptr<host_weight_store> from_tensors(std::vector<std::pair<store_tensor, byte_buffer>> t);

  std::string_view kind() const noexcept override { return "host"; }
  status apply(size_t i, const delta_file& f, const param_entry& p, undo_log& undo) override;
  bool applies_slices() const noexcept override { return true; }
  void rollback(undo_log& undo) override;
  digest128 digest(size_t i) override;
  std::optional<digest128> sum(size_t i) const override {
    const std::lock_guard lock(bookkeeping_);  // slices of tensor i may be applying on other workers
    return sums_.at(i);
  }
  status read(size_t i, mutable_byte_span out) const override;

  byte_span data(size_t i) const { return data_[i].bytes; }
  // Writes every tensor, in store order, to one safetensors file with metadata {"format": "pt"} (atomically,
  // through src/io). Builds the whole file in memory first: a second copy of the model.
  status export_safetensors(const std::string& path) const;

 private:
  loaded_tensors data_;  // data_[i].bytes is tensor i (its desc lives in tensors_)
  std::vector<std::optional<digest128>> digests_;
  std::vector<digest128> sums_;  // additive digests, computed once when the store is made (every core)
  mutable std::mutex bookkeeping_;  // sums_ and digests_ while slices of one tensor apply on several threads
};

}  // namespace deltasync
