// URL helpers of the pull transport and the file server: "http://host[:port][/prefix]" split into its parts,
// and percent-encoding / -decoding of one path.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace deltasync::http {

struct url_parts {
  std::string host;    // without brackets for IPv6
  std::string port;    // decimal, "80" when absent
  std::string prefix;  // "" or "/a/b" (no trailing '/')
};

// Errors: errc::invalid_argument naming the URL (another scheme, no host, a bad port, user info).
result<url_parts> parse_http_url(const std::string& url);

// Percent-encodes every byte outside RFC 3986's unreserved set and '/'.
std::string pct_encode(std::string_view path);
// Decodes %XX escapes; nullopt for a malformed escape or an encoded NUL.
std::optional<std::string> pct_decode(std::string_view path);

}  // namespace deltasync::http
