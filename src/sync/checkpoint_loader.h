// Loads a whole checkpoint into memory: a `.safetensors` file, or a Hugging Face checkpoint directory
// (`model.safetensors`, or `model.safetensors.index.json` + shard files). Used by the receiver's weight store
// (`serve --base`) and by the sender (`publish --from/--to`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/page_block.h"
#include "base/result.h"
#include "codec/dtype.h"

namespace deltasync {

// One tensor's description. Sub-byte dtypes (F4, F6_*) load like any other, but numel then does not equal
// nbytes / element size (element_bytes() is 0 for them) and they cannot be delta-applied.
struct store_tensor {
  std::string name;
  dtype type = dtype::BF16;
  std::vector<uint64_t> shape;
  uint64_t numel = 0;   // product(shape); 1 for a scalar
  uint64_t nbytes = 0;  // the tensor's byte size in the file
};

// A checkpoint in host memory: tensor descriptions and writable spans of their bytes, in memory this object
// owns. load_checkpoint reads each file whole into one page_block (no zero-fill, no copy) and each tensor's
// span is a view into its file's data section; add() instead gives a tensor a buffer of its own (tests,
// tools, the synthetic model). Spans stay valid for the object's lifetime, across moves, and may be written
// (a weight store applies deltas in place); tensors of one file share its block, so writing one never
// touches another. Move-only; clear() frees everything.
class loaded_tensors {
 public:
  struct entry {
    store_tensor desc;
    mutable_byte_span bytes;  // desc.nbytes long
  };

  loaded_tensors() = default;
  loaded_tensors(loaded_tensors&&) noexcept = default;
  loaded_tensors& operator=(loaded_tensors&&) noexcept = default;
  loaded_tensors(const loaded_tensors&) = delete;
  loaded_tensors& operator=(const loaded_tensors&) = delete;

  size_t size() const noexcept { return tensors_.size(); }
  bool empty() const noexcept { return tensors_.empty(); }
  entry& operator[](size_t i) { return tensors_.at(i); }
  const entry& operator[](size_t i) const { return tensors_.at(i); }
  std::vector<entry>::iterator begin() noexcept { return tensors_.begin(); }
  std::vector<entry>::iterator end() noexcept { return tensors_.end(); }
  std::vector<entry>::const_iterator begin() const noexcept { return tensors_.begin(); }
  std::vector<entry>::const_iterator end() const noexcept { return tensors_.end(); }

  // A tensor that owns its bytes. Asserts bytes.size() == desc.nbytes.
  void add(store_tensor desc, byte_buffer bytes);
  // Takes a block (a whole file's bytes); add_view() then adds tensors inside it.
  void add_block(page_block block);
  // A tensor whose bytes lie inside the block most recently given to add_block (asserted), as does
  // bytes.size() == desc.nbytes.
  void add_view(store_tensor desc, mutable_byte_span bytes);
  void reserve(size_t tensors) { tensors_.reserve(tensors); }
  // Host memory held: every block (whole files, headers included) and every owned buffer.
  uint64_t held_bytes() const noexcept;
  void clear() noexcept;

 private:
  std::vector<entry> tensors_;
  std::vector<page_block> blocks_;
  std::vector<byte_buffer> buffers_;
};

// Bounds on what a load may allocate; a checkpoint comes from local disk, but a wrong path or a corrupt
// index must fail cleanly rather than exhaust memory.
struct checkpoint_limits {
  uint64_t max_file_bytes = 1ull << 40;      // one safetensors file (a shard)
  uint64_t max_total_bytes = 4ull << 40;     // every file of the checkpoint together
  uint64_t max_index_bytes = 64ull << 20;    // model.safetensors.index.json
  size_t max_tensors = size_t{1} << 22;
};

// `path` is one of:
//   * a safetensors file (any name);
//   * a `*.index.json` file: its "weight_map" {tensor: shard file} names shards relative to its directory;
//   * a directory holding `model.safetensors` (preferred, as transformers does) or
//     `model.safetensors.index.json`.
// Order: a single file's tensors in data-offset order; a sharded checkpoint's shards in name order, each
// shard's tensors in data-offset order.
//
// Reading: every file's size is checked against `limits` before any memory is allocated; then each file is
// read whole through src/io (io::whole_file_reader) straight into its own page_block, several reads in
// flight and the next shard's reads overlapping the checks of the one before; the tensors are views into
// those blocks. A file mostly in the page cache is read buffered (from memory); any other with O_DIRECT
// (not through the cache, at the disk's speed). Peak memory: the checkpoint's files, once.
//
// Errors, each naming the file and, where one is concerned, the tensor:
//   not_found        the path, `model.safetensors[.index.json]` in a directory, or a shard file is missing
//                    (shards are checked before any is read);
//   invalid_argument index JSON malformed (not an object, no "weight_map" object, a non-string shard, a shard
//                    path that is absolute or has a `..` component); a tensor listed in the index but absent
//                    from its shard; a tensor in a shard that the index does not map to that shard; the same
//                    tensor in two shards;
//   limit_exceeded   a file or the total over `limits` (from the files' sizes, before anything is allocated
//                    or read), or the tensor count;
//   no_space         the memory for a file could not be mapped;
//   st_*             an invalid safetensors container (the code parse_safetensors reports);
//   io_error etc.    as io::whole_file_reader reports them (io_error also for a file whose size changed
//                    between the check and the read).
result<loaded_tensors> load_checkpoint(const std::string& path, const checkpoint_limits& limits = {});

}  // namespace deltasync
