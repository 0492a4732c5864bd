// The receiver's allow list of pull sources (`deltasync serve --pull-allow`, [serve] pull-allow): a
// "transport": "http" sync names its own base_url, so without a list any holder of the bearer token could make
// the receiver fetch from any host it can reach (SSRF). Each entry is a URL prefix "http://host[:port][/path]".
//
// Matching, after both URLs are parsed by parse_http_url (http:// only, no user info, port 80 when absent):
//  * host: equal, ASCII case-insensitively; an IPv6 literal is compared in its canonical form. Nothing else is
//    normalised: "127.1" is not "127.0.0.1" (a false refusal is the safe mistake). Names are resolved by the
//    resolver after the check, so the list trusts DNS for the names it holds.
//  * port: equal as numbers ("08080" is 8080).
//  * path: the entry's path is a prefix of the URL's path on a segment boundary ("/deltas" allows "/deltas" and
//    "/deltas/x", not "/deltas2"), compared segment by segment after percent-decoding. A path with a "." or
//    ".." segment (also encoded, "%2e%2e"), an empty segment ("//"), an encoded '/' or '\' ("%2F", "%5C"),
//    a bad escape, an encoded NUL, '?', '#', '\', a space, a control or a non-ASCII byte is refused outright
//    (and is a bad entry), so what the file server sees is what was checked.
// An empty list refuses every pull.
//
// Threading: immutable after parse; check() may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace deltasync::http {

class pull_allowlist {
 public:
  pull_allowlist() = default;  // empty: every pull is refused

  // Parses every entry. Errors: errc::invalid_argument naming the entry (not an http:// URL, user info, a bad
  // port, a host that is not a name or an IP literal, a path that would be refused as a URL).
  static result<pull_allowlist> parse(const std::vector<std::string>& prefixes);

  // Ok when base_url lies under an entry. Errors: errc::invalid_argument when base_url is not an http:// URL
  // (parse_http_url's message; HTTP 400); errc::forbidden_url naming base_url and the pull-allow key when no
  // entry allows it or its path is refused (HTTP 403).
  status check(const std::string& base_url) const;

  bool empty() const noexcept { return entries_.empty(); }
  // The entries as given, for logs.
  std::vector<std::string> describe() const;

 private:
  struct entry {
    std::string text;  // as given
    std::string host;  // lower case; canonical for an IPv6 literal
    uint16_t port = 80;
    std::vector<std::string> segments;  // decoded path segments
  };
  std::vector<entry> entries_;
};

}  // namespace deltasync::http
