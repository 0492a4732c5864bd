// The pull transport's allow list (http/pull_allow.h): host, port and scheme compared exactly, the path as a
// prefix on a segment boundary after percent-decoding, and every string-prefix trick (a host that only starts
// like an allowed one, user info, dot segments plain or encoded, encoded separators) refused.
#include "http/pull_allow.h"

#include <gtest/gtest.h>

#include "sync/receiver.h"

namespace deltasync::http {
namespace {

pull_allowlist make(const std::vector<std::string>& entries) {
  auto a = pull_allowlist::parse(entries);
  EXPECT_TRUE(a.ok()) << a.err().describe();
  return a.ok() ? std::move(a).value() : pull_allowlist{};
}

// The code of the refusal, or errc::ok when the URL is allowed.
errc verdict(const pull_allowlist& a, const std::string& url) {
  auto s = a.check(url);
  if (s) return errc::ok;
  return static_cast<errc>(s.err().code.value());
}

TEST(PullAllow, ExactHostAndPortPathPrefixOnASegmentBoundary) {
  auto a = make({"http://trainer-0:8080/deltas/"});
  for (const char* ok :
       {"http://trainer-0:8080/deltas", "http://trainer-0:8080/deltas/", "http://trainer-0:8080/deltas/run1",
        "http://trainer-0:8080/deltas/run1/x", "http://TRAINER-0:8080/deltas", "http://trainer-0:08080/deltas"})
    EXPECT_EQ(verdict(a, ok), errc::ok) << ok;
  for (const char* no :
       {"http://trainer-0:8080/deltas2", "http://trainer-0:8080/delta", "http://trainer-0:8080/",
        "http://trainer-0:8080", "http://trainer-0:8080/other/deltas", "http://trainer-0:8081/deltas",
        "http://trainer-0/deltas", "http://trainer-1:8080/deltas", "http://trainer-0.evil.com:8080/deltas",
        "http://evil:8080/deltas", "http://evil/http://trainer-0:8080/deltas", "http://trainer-00:8080/deltas"})
    EXPECT_EQ(verdict(a, no), errc::forbidden_url) << no;
}

TEST(PullAllow, SchemeAndAuthorityTricksAreRefused) {
  auto a = make({"http://trainer-0:8080/"});
  EXPECT_EQ(verdict(a, "http://trainer-0:8080/x"), errc::ok);
  // Not http:// or not a plain authority: the URL itself is bad (400), so it is never fetched either.
  for (const char* bad :
       {"https://trainer-0:8080/", "HTTP://trainer-0:8080/", "ftp://trainer-0:8080/", "http://trainer-0:8080@evil/",
        "http://trainer-0:8080.evil.com/", "http://u:p@trainer-0:8080/", "//trainer-0:8080/", "trainer-0:8080",
        "http://trainer-0:8080\\@evil/"})
    EXPECT_EQ(verdict(a, bad), errc::invalid_argument) << bad;
  // Hosts that are not the allowed name byte for byte (after lower-casing) are refused, even when a resolver
  // might map them to it.
  for (const char* no : {"http://trainer-0.:8080/", "http://trainer%2D0:8080/", "http://trainer-0%00:8080/"})
    EXPECT_NE(verdict(a, no), errc::ok) << no;
}

TEST(PullAllow, DotSegmentsAndEncodedSeparatorsAreRefused) {
  auto a = make({"http://h:1/deltas/"});
  for (const char* no :
       {"http://h:1/deltas/../secret", "http://h:1/deltas/..", "http://h:1/deltas/./x",
        "http://h:1/deltas/%2e%2e/secret", "http://h:1/deltas/%2E%2e", "http://h:1/deltas/.%2E/x",
        "http://h:1/deltas//x", "http://h:1/deltas%2F..%2Fsecret", "http://h:1/deltas%2fx",
        "http://h:1/deltas/%5c..%5cx", "http://h:1/deltas\\..\\x", "http://h:1/deltas?x=1", "http://h:1/deltas#x",
        "http://h:1/deltas/a b", "http://h:1/deltas/a\r\nX: y", "http://h:1/deltas/%00", "http://h:1/deltas/%zz",
        "http://h:1/deltas/%0a", "http://h:1/deltas/\xc3\xa9"}) {
    auto s = a.check(no);
    ASSERT_FALSE(s.ok()) << no;
    EXPECT_TRUE(s.err().is(errc::forbidden_url)) << no << ": " << s.err().describe();
  }
}

TEST(PullAllow, PercentEncodingComparesDecoded) {
  auto a = make({"http://h:1/my%20dir/"});
  EXPECT_EQ(verdict(a, "http://h:1/my%20dir/x"), errc::ok);
  EXPECT_EQ(verdict(a, "http://h:1/my%20dir"), errc::ok);
  EXPECT_EQ(verdict(a, "http://h:1/my%20dirx"), errc::forbidden_url);
  auto b = make({"http://h:1/deltas"});
  EXPECT_EQ(verdict(b, "http://h:1/del%74as/x"), errc::ok);  // the server decodes %74 to 't' too
  EXPECT_EQ(verdict(b, "http://h:1/del%74a"), errc::forbidden_url);
}

TEST(PullAllow, IPv6LiteralsCompareCanonically) {
  auto a = make({"http://[::1]:8080/", "http://127.0.0.1:9000"});
  EXPECT_EQ(verdict(a, "http://[::1]:8080/deltas"), errc::ok);
  EXPECT_EQ(verdict(a, "http://[0:0:0:0:0:0:0:1]:8080/deltas"), errc::ok);
  EXPECT_EQ(verdict(a, "http://[::0001]:8080"), errc::ok);
  EXPECT_EQ(verdict(a, "http://[::2]:8080/"), errc::forbidden_url);
  EXPECT_EQ(verdict(a, "http://[::1]:8081/"), errc::forbidden_url);
  EXPECT_EQ(verdict(a, "http://[::ffff:127.0.0.1]:9000/"), errc::forbidden_url);
  EXPECT_EQ(verdict(a, "http://127.0.0.1:9000/x"), errc::ok);
  EXPECT_EQ(verdict(a, "http://127.1:9000/x"), errc::forbidden_url);  // not normalised: refused, the safe side
}

TEST(PullAllow, EmptyListRefusesEverythingNamingTheKey) {
  pull_allowlist none;
  EXPECT_TRUE(none.empty());
  auto s = none.check("http://127.0.0.1:8080/deltas");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::forbidden_url));
  EXPECT_NE(s.err().message.find("http://127.0.0.1:8080/deltas"), std::string::npos) << s.err().message;
  EXPECT_NE(s.err().message.find("pull-allow"), std::string::npos) << s.err().message;
  EXPECT_EQ(http_status_for(s.err()), 403u);
  auto a = make({"http://h:1/"});
  auto t = a.check("http://other:1/x");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.err().message.find("'http://other:1/x'"), std::string::npos) << t.err().message;
  EXPECT_NE(t.err().message.find("--pull-allow"), std::string::npos) << t.err().message;
  EXPECT_NE(t.err().message.find("[serve]"), std::string::npos) << t.err().message;
}

TEST(PullAllow, BadEntriesAreRefusedNamingThem) {
  for (const char* bad : {"", "trainer-0:8080", "https://h:1/", "http://u@h:1/", "http://h:0/", "http://h:1/a/../b",
                          "http://h:1/a/%2e%2e", "http://h:1/a%2fb", "http://h%2e:1/", "http://h:1/a?b",
                          "http://[zz::1]:1/", "http://h!:1/"}) {
    auto a = pull_allowlist::parse({"http://ok:1/", bad});
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_TRUE(a.err().is(errc::invalid_argument)) << bad;
    EXPECT_NE(a.err().message.find(std::string("'") + bad + "'"), std::string::npos) << a.err().message;
  }
  auto good = pull_allowlist::parse({"http://a:1", "http://b:2/x/y/"});
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->describe(), (std::vector<std::string>{"http://a:1", "http://b:2/x/y/"}));
}

}  // namespace
}  // namespace deltasync::http
