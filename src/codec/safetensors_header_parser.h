// The streaming first pass over a safetensors header's JSON: syntax plus the per-entry grammar, collecting raw
// entries and metadata for the cross-field checks in safetensors.cc. Internal to src/codec.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

namespace deltasync::detail {

// One header entry as the JSON spells it, before any cross-field validation.
struct raw_entry {
  std::string name;
  std::string dtype_name;
  std::vector<uint64_t> shape;
  std::vector<uint64_t> offsets;
  bool has_dtype = false;
  bool has_shape = false;
  bool has_offsets = false;
};

struct raw_header {
  std::vector<raw_entry> entries;  // in file order
  std::vector<std::pair<std::string, std::string>> metadata;  // __metadata__, in file order
};

// Parses `text` (the header JSON, already checked to be UTF-8) with the header grammar:
//   { "__metadata__": { str: str, ... }, name: { "dtype": str, "shape": [uint...], "data_offsets": [uint, uint] } }
// Duplicate names are kept for the caller to report. `text_offset` is the file offset of text[0] and only
// serves error messages. A JSON syntax error (st_header_not_json) wins over any grammar violation, which then
// reports the first one met: st_header_not_object, st_metadata_not_strings, st_bad_tensor_entry,
// st_duplicate_tensor (__metadata__ twice).
result<raw_header> parse_raw_header(std::string_view text, uint64_t text_offset);

}  // namespace deltasync::detail
