// Quoting untrusted names (tensor names, metadata keys) in error messages, cut to a bounded length.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace deltasync::detail {

// Names and metadata come from untrusted files and may be huge; messages quote at most this much of them.
inline constexpr size_t kMaxQuotedChars = 128;

inline std::string quoted(std::string_view s) {
  std::string out = "'";
  out.append(s.substr(0, kMaxQuotedChars));
  if (s.size() > kMaxQuotedChars) out.append("...");
  out.push_back('\'');
  return out;
}

// The reserved safetensors header key holding string metadata.
inline constexpr std::string_view kMetadataKey = "__metadata__";

}  // namespace deltasync::detail
