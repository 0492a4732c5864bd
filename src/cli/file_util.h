// Directory listing and token files for the CLI's offline commands. File contents go through src/io (sync_io.h).
#pragma once

#include <string>
#include <vector>

#include "base/result.h"

namespace deltasync::cli {

// The bearer token in the first line of `path` (trailing spaces and CR dropped); empty is an error.
result<std::string> read_token_file(const std::string& path);

// Every regular file under `path` (or `path` itself) whose name ends in `suffix`, sorted.
result<std::vector<std::string>> list_files(const std::string& path, const std::string& suffix);

}  // namespace deltasync::cli
