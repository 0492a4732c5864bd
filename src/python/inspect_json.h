// deltasync.inspect's C++ side (no Python here, so it builds with the rest of the libraries): one delta file
// validated in full (container, manifest, every param's positions, the checksum, the native payload hash)
// and its manifest returned as JSON text; a plain safetensors checkpoint is described by its tensors.
// Errors: as io::read_file_all, parse_safetensors and parse_delta_file report them, naming the file.
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"

namespace deltasync::python {

result<std::string> inspect_json(const std::string& path, uint64_t max_bytes);

}  // namespace deltasync::python
