// The log formats: text lines as before, and --log-format json: one valid JSON object per line with the stable
// fields (ts, level, module, msg, version) plus the event's own, whatever bytes the message holds (quotes,
// control characters, invalid UTF-8, a message longer than the buffer).
#include "base/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "base/features.h"

namespace deltasync {
namespace {

namespace json = boost::json;

// Runs fn with stderr redirected to a temporary file; returns what was written.
template <class F>
std::string capture_stderr(F fn) {
  std::fflush(stderr);
  FILE* tmp = std::tmpfile();
  EXPECT_NE(tmp, nullptr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(::fileno(tmp), STDERR_FILENO);
  fn();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string out;
  std::rewind(tmp);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, tmp)) > 0) out.append(buf, n);
  std::fclose(tmp);
  return out;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n') {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  EXPECT_EQ(start, s.size()) << "output ends with a newline";
  return out;
}

struct format_guard {
  ~format_guard() {
    set_log_format(log_format::text);
    set_log_level(log_level::info);
  }
};

TEST(log_test, parses_formats) {
  log_format f;
  EXPECT_TRUE(parse_log_format("json", f));
  EXPECT_EQ(f, log_format::json);
  EXPECT_TRUE(parse_log_format("text", f));
  EXPECT_EQ(f, log_format::text);
  EXPECT_FALSE(parse_log_format("JSON ", f));
  EXPECT_FALSE(parse_log_format("", f));
}

TEST(log_test, text_format_is_one_line_per_event) {
  format_guard g;
  set_log_format(log_format::text);
  auto out = capture_stderr([] {
    DS_LOG(info, "sync", "committed version=%d", 3);
    DS_LOG_FIELDS(warn, "http", ({{"sync_version", 4u}}), "refused");
    DS_LOG(debug, "sync", "not shown at info");
  });
  auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 2u) << out;
  EXPECT_NE(lines[0].find("Z info sync: committed version=3"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("Z warn http: refused"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[1].find("sync_version"), std::string::npos) << "text lines carry no fields";
}

TEST(log_test, json_format_writes_stable_fields_and_event_fields) {
  format_guard g;
  set_log_format(log_format::json);
  auto out = capture_stderr([] {
    DS_LOG_FIELDS(info, "sync",
                  ({{"sync_version", uint64_t{12}}, {"base_version", 11u}, {"delta", int64_t{-3}},
                    {"total_ms", 12.5}, {"nan_ms", 0.0 / 0.0}, {"format", "native"},
                    {"error_code", std::string_view("version_conflict")}}),
                  "committed version=%d", 12);
    DS_LOG(error, "serve", "plain");
  });
  auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 2u) << out;
  json::error_code ec;
  json::value v = json::parse(lines[0], ec);
  ASSERT_FALSE(ec) << lines[0];
  const json::object& o = v.as_object();
  EXPECT_EQ(o.at("level").as_string(), "info");
  EXPECT_EQ(o.at("module").as_string(), "sync");
  EXPECT_EQ(o.at("msg").as_string(), "committed version=12");
  EXPECT_EQ(o.at("version").as_string(), DELTASYNC_VERSION);
  const std::string ts(o.at("ts").as_string());
  EXPECT_EQ(ts.size(), 24u) << ts;
  EXPECT_EQ(ts[10], 'T');
  EXPECT_EQ(ts.back(), 'Z');
  EXPECT_EQ(o.at("sync_version").to_number<uint64_t>(), 12u);
  EXPECT_EQ(o.at("base_version").to_number<uint64_t>(), 11u);
  EXPECT_EQ(o.at("delta").as_int64(), -3);
  EXPECT_DOUBLE_EQ(o.at("total_ms").as_double(), 12.5);
  EXPECT_TRUE(o.at("nan_ms").is_null()) << "JSON has no NaN";
  EXPECT_EQ(o.at("format").as_string(), "native");
  EXPECT_EQ(o.at("error_code").as_string(), "version_conflict");
  json::value v2 = json::parse(lines[1], ec);
  ASSERT_FALSE(ec) << lines[1];
  EXPECT_EQ(v2.at("level").as_string(), "error");
  EXPECT_EQ(v2.at("msg").as_string(), "plain");
}

TEST(log_test, json_escapes_any_bytes_and_stays_one_valid_line) {
  format_guard g;
  set_log_format(log_format::json);
  // Quotes, backslash, newline, ESC, DEL, invalid UTF-8 (lone continuation, truncated sequence, overlong,
  // surrogate), valid multi-byte characters.
  const std::string nasty = std::string("a\"b\\c\nd\x1b[31m\x7f") + "\x80" + "\xe2\x82" + "\xc0\xaf" +
                            "\xed\xa0\x80" + "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" + "end";
  const std::string huge(20000, 'y');
  auto out = capture_stderr([&] {
    DS_LOG_FIELDS(warn, "http", ({{"remote", nasty.c_str()}}), "path %s", nasty.c_str());
    DS_LOG(warn, "http", "%s", huge.c_str());
  });
  auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 2u) << "a newline in the message must not split the line";
  json::error_code ec;
  json::value v = json::parse(lines[0], ec);
  ASSERT_FALSE(ec) << lines[0];
  const std::string msg(v.at("msg").as_string());
  EXPECT_EQ(msg.rfind("path a\"b\\c\nd\x1b[31m\x7f", 0), 0u) << msg;
  EXPECT_NE(msg.find("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "end"), std::string::npos) << "valid UTF-8 passes";
  EXPECT_NE(msg.find("\xef\xbf\xbd"), std::string::npos) << "invalid bytes become U+FFFD";
  EXPECT_EQ(std::string(v.at("remote").as_string()), msg.substr(5));
  EXPECT_EQ(lines[0].find('\n'), std::string::npos);
  EXPECT_EQ(lines[0].find('\x1b'), std::string::npos) << "control characters are escaped in the raw line";
  json::value big = json::parse(lines[1], ec);
  ASSERT_FALSE(ec) << "a truncated message is still a valid object";
  EXPECT_GT(big.at("msg").as_string().size(), 1000u);
  EXPECT_LT(big.at("msg").as_string().size(), huge.size());
}

}  // namespace
}  // namespace deltasync
