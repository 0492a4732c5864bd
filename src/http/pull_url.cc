// URL parsing and percent-coding for the pull transport.
#include "http/pull_url.h"

namespace deltasync::http {

result<url_parts> parse_http_url(const std::string& url) {
  constexpr std::string_view scheme = "http://";
  auto bad = [&](const std::string& why) {
    return error(errc::invalid_argument, "bad base URL '" + url + "': " + why);
  };
  if (url.compare(0, scheme.size(), scheme) != 0) return bad("only http://host[:port][/prefix] is supported");
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  url_parts u;
  if (slash != std::string::npos) u.prefix = rest.substr(slash);
  while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  if (authority.empty() || authority.find('@') != std::string::npos) return bad("expected http://host:port");
  std::string port;
  if (authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) return bad("unterminated '['");
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return bad("junk after ']'");
      port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (port.empty()) port = "80";
  unsigned long n = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || n > 65535) return bad("bad port");
    n = n * 10 + static_cast<unsigned long>(c - '0');
  }
  if (u.host.empty() || n == 0 || n > 65535) return bad("bad host or port");
  u.port = port;
  return u;
}

std::string pct_encode(std::string_view path) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : path) {
    const auto b = static_cast<unsigned char>(c);
    if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '-' || b == '.' ||
        b == '_' || b == '~' || b == '/') {
      out += c;
    } else {
      out += '%';
      out += hex[b >> 4];
      out += hex[b & 15];
    }
  }
  return out;
}

std::optional<std::string> pct_decode(std::string_view path) {
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') {
      out += path[i];
      continue;
    }
    if (i + 2 >= path.size()) return std::nullopt;
    const int hi = val(path[i + 1]), lo = val(path[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

}  // namespace deltasync::http
