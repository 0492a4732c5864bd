// Helpers of the Sender (sender.cc): names, JSON quoting for the /sync body, the pre-push hook's spawn, and the
// multi-threaded host diff.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync {

// "weight_v000012" ("anchor_v000012" for a full-model anchor), "rank0000_flush000003.safetensors", "[3, 4]".
inline constexpr std::string_view kVersionDirPrefix = "weight_v";
inline constexpr std::string_view kAnchorDirPrefix = "anchor_v";
std::string version_dir_name(uint64_t version, bool anchor = false);
std::string file_name(uint32_t rank, uint32_t flush);
std::string shape_text(const std::vector<uint64_t>& shape);

// JSON string escaping for the /sync body; the names we send are our own, but a delta dir may hold anything.
std::string json_quote(std::string_view s);

// Runs `command` through /bin/sh -c with extra environment entries and waits for it. Returns the exit status
// (128 + signal when it was killed, as a shell reports it).
result<int> run_hook(const std::string& command, const std::vector<std::string>& extra_env);

// diff_tensor over a large tensor split into chunks diffed on several threads (memory-bound scans scale with
// cores), then concatenated in order, so the result equals one diff_tensor call.
void parallel_diff(byte_span before, byte_span now, uint32_t eb, std::vector<uint32_t>& positions, byte_buffer& values);

}  // namespace deltasync
