// The pull transport's allow list. Both sides of a comparison go through the same normalisation, so an entry
// and a URL that the file server would see as the same place compare equal, and anything ambiguous (dot
// segments, encoded separators) is refused instead of being interpreted.
#include "http/pull_allow.h"

#include <boost/asio/ip/address_v6.hpp>

#include "http/pull_url.h"

namespace deltasync::http {
namespace {

struct normalized {
  std::string host;
  uint16_t port = 80;
  std::vector<std::string> segments;
};

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// The host as compared: lower case; an IPv6 literal (it holds ':') in canonical form. Empty when the host is
// neither a DNS name / IPv4 literal ([a-z0-9.-_]) nor an IPv6 literal.
std::string canonical_host(const std::string& host) {
  std::string h;
  for (char c : host) h += lower(c);
  if (h.find(':') != std::string::npos) {
    boost::system::error_code ec;
    auto a = boost::asio::ip::make_address_v6(h, ec);
    if (ec || a.scope_id() != 0) return {};
    return a.to_string();
  }
  for (char c : h)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_')) return {};
  return h;
}

// The decoded segments of a parsed path ("" or "/a/b"); on refusal `why` says what is wrong with it.
bool path_segments(const std::string& path, std::vector<std::string>& out, std::string& why) {
  for (size_t i = 0; i < path.size(); ++i) {
    const auto b = static_cast<unsigned char>(path[i]);
    if (b <= 0x20 || b >= 0x7f || b == '?' || b == '#' || b == '\\') {
      why = "its path holds a space, a control or non-ASCII byte, '?', '#' or '\\' (percent-encode it)";
      return false;
    }
    if (b == '%' && i + 2 < path.size()) {
      const char hi = path[i + 1], lo = lower(path[i + 2]);
      if ((hi == '2' && lo == 'f') || (hi == '5' && lo == 'c')) {
        why = "its path holds an encoded separator (%2F or %5C)";
        return false;
      }
    }
  }
  auto decoded = pct_decode(path);
  if (!decoded) {
    why = "its path holds a malformed %-escape or an encoded NUL";
    return false;
  }
  out.clear();
  if (decoded->empty()) return true;
  // parse_http_url keeps the leading '/' and strips trailing ones.
  size_t start = 1;
  while (start <= decoded->size()) {
    size_t end = decoded->find('/', start);
    if (end == std::string::npos) end = decoded->size();
    std::string seg = decoded->substr(start, end - start);
    if (seg.empty()) {
      why = "its path has an empty segment ('//')";
      return false;
    }
    if (seg == "." || seg == "..") {
      why = "its path has a '" + seg + "' segment";
      return false;
    }
    for (char c : seg)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        why = "its path holds an encoded control character";
        return false;
      }
    out.push_back(std::move(seg));
    start = end + 1;
  }
  return true;
}

std::string how_to_allow() {
  return "allow a server with `deltasync serve --pull-allow http://HOST:PORT/PREFIX/` (repeatable) or "
         "pull-allow = [\"http://HOST:PORT/PREFIX/\"] in the [serve] section of the config";
}

}  // namespace

result<pull_allowlist> pull_allowlist::parse(const std::vector<std::string>& prefixes) {
  pull_allowlist out;
  for (const auto& text : prefixes) {
    auto bad = [&](const std::string& why) {
      return error(errc::invalid_argument, "bad pull-allow entry '" + text + "': " + why);
    };
    auto u = parse_http_url(text);
    if (!u) return bad(u.err().message);
    entry e;
    e.text = text;
    e.host = canonical_host(u->host);
    if (e.host.empty()) return bad("the host must be a DNS name, an IPv4 literal or an [IPv6] literal");
    e.port = static_cast<uint16_t>(std::stoul(u->port));  // parse_http_url checked 1..65535
    std::string why;
    if (!path_segments(u->prefix, e.segments, why)) return bad(why);
    out.entries_.push_back(std::move(e));
  }
  return out;
}

status pull_allowlist::check(const std::string& base_url) const {
  auto u = parse_http_url(base_url);
  if (!u) return u.err();
  auto refused = [&](const std::string& why) {
    return error(errc::forbidden_url, "pull from '" + base_url + "' refused: " + why + "; " + how_to_allow());
  };
  normalized n;
  n.host = canonical_host(u->host);
  n.port = static_cast<uint16_t>(std::stoul(u->port));
  std::string why;
  if (!path_segments(u->prefix, n.segments, why)) return refused(why);
  if (entries_.empty()) return refused("pull-allow is empty, so this receiver pulls from no server");
  if (!n.host.empty()) {
    for (const auto& e : entries_) {
      if (e.host != n.host || e.port != n.port || e.segments.size() > n.segments.size()) continue;
      bool under = true;
      for (size_t i = 0; i < e.segments.size() && under; ++i) under = e.segments[i] == n.segments[i];
      if (under) return {};
    }
  }
  return refused("no pull-allow entry covers it");
}

std::vector<std::string> pull_allowlist::describe() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.text);
  return out;
}

}  // namespace deltasync::http
