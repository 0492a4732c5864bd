// Whole-file helpers for the CLI's offline commands (inspect, demo). The service's data path uses the
// chunked reader and atomic writer of src/io instead.
#pragma once

#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync::cli {

result<byte_buffer> read_whole_file(const std::string& path, uint64_t max_bytes);
// Writes path.tmp, fsyncs, renames over path: a reader never sees a partial file.
status write_file_replace(const std::string& path, byte_span data);
// Every regular file under `path` (or `path` itself) whose name ends in `suffix`, sorted.
result<std::vector<std::string>> list_files(const std::string& path, const std::string& suffix);

}  // namespace deltasync::cli
