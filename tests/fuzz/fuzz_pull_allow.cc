// libFuzzer target for the pull transport's allow list (http/pull_allow.h), which judges a base_url taken from
// an untrusted /sync body. The input is "ENTRY\nURL". Whatever the bytes: no crash; an allowed URL parses, has
// no dot segment and stays allowed after nothing but a trailing '/'; an entry that parses allows itself; and
// appending a ".." or "%2e%2e" segment to an allowed URL is always refused.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "http/pull_allow.h"
#include "http/pull_url.h"

namespace {

[[noreturn]] void fail(const char* what, const std::string& a, const std::string& b) {
  std::fprintf(stderr, "fuzz_pull_allow: %s: entry '%s', url '%s'\n", what, a.c_str(), b.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltasync;
  const std::string in(reinterpret_cast<const char*>(data), size);
  const size_t nl = in.find('\n');
  const std::string entry = in.substr(0, nl);
  const std::string url = nl == std::string::npos ? entry : in.substr(nl + 1);
  auto list = http::pull_allowlist::parse({entry});
  if (!list) {
    if (!list.err().is(errc::invalid_argument)) fail("a bad entry is not invalid_argument", entry, url);
    return 0;
  }
  if (!list->check(entry)) fail("an entry does not allow itself", entry, entry);
  auto verdict = list->check(url);
  if (!verdict) {
    if (!verdict.err().is(errc::invalid_argument) && !verdict.err().is(errc::forbidden_url))
      fail("a refusal with another code", entry, url);
    return 0;
  }
  auto parsed = http::parse_http_url(url);
  if (!parsed) fail("an allowed URL does not parse", entry, url);
  if (!list->check(url + "/")) fail("a trailing '/' changed the verdict", entry, url);
  for (const char* dots : {"/..", "/../x", "/%2e%2e", "/%2E./x", "/./x"})
    if (list->check(url + dots)) fail("a dot segment passed", entry, url + dots);
  return 0;
}
