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

using loaded_tensors = std::vector<std::pair<store_tensor, byte_buffer>>;

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
// shard's tensors in data-offset order. Each tensor owns its bytes; every file is read through src/io
// (io::read_file_all), one at a time, so peak memory is the checkpoint plus one file.
//
// Errors, each naming the file and, where one is concerned, the tensor:
//   not_found        the path, `model.safetensors[.index.json]` in a directory, or a shard file is missing
//                    (shards are checked before any is read);
//   invalid_argument index JSON malformed (not an object, no "weight_map" object, a non-string shard, a shard
//                    path that is absolute or has a `..` component); a tensor listed in the index but absent
//                    from its shard; a tensor in a shard that the index does not map to that shard; the same
//                    tensor in two shards;
//   limit_exceeded   a file, the total or the tensor count over `limits`;
//   st_*             an invalid safetensors container (the code parse_safetensors reports);
//   io_error etc.    as io::read_file_all reports them.
result<loaded_tensors> load_checkpoint(const std::string& path, const checkpoint_limits& limits = {});

}  // namespace deltasync
