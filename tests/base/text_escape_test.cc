// The one escaping rule for untrusted text in logs and error messages (base/text_escape.h), and the logger
// applying it: a name holding a newline cannot forge a log line.
#include "base/text_escape.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "base/log.h"

namespace deltasync {
namespace {

// Output of escape_control must hold no C0/DEL byte and be valid UTF-8 without C1 controls or line separators.
bool clean(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x20 || b == 0x7F) return false;
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = b & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
    for (size_t k = 1; k < n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    if ((cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF) return false;
    i += n;
  }
  return true;
}

TEST(TextEscape, EscapesControlsAndInvalidUtf8AndKeepsTheRest) {
  EXPECT_EQ(escape_control("plain name.weight"), "plain name.weight");
  EXPECT_EQ(escape_control("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(escape_control(std::string("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(escape_control("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
  EXPECT_EQ(escape_control("caf\xc3\xa9 \xe6\x97\xa5"), "caf\xc3\xa9 \xe6\x97\xa5");  // valid UTF-8 stays
  EXPECT_EQ(escape_control("nel\xc2\x85" "ls\xe2\x80\xa8"), "nel\\u0085ls\\u2028");
  EXPECT_EQ(escape_control("bad\xff\xc3"), "bad\\xff\\xc3");
  EXPECT_EQ(escape_control("\xc0\xaf"), "\\xc0\\xaf");          // overlong '/'
  EXPECT_EQ(escape_control("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(escape_control("back\\slash"), "back\\slash");       // untouched: escaping is idempotent
  EXPECT_FALSE(needs_escape("model.layers.0.mlp"));
  EXPECT_TRUE(needs_escape("x\ninfo sync: committed version=999"));
}

TEST(TextEscape, RandomBytesComeOutCleanAndEscapingIsIdempotent) {
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 2000; ++round) {
    std::string s(rng() % 64, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() % 0x20 : rng() & 0xFF);
    const std::string once = escape_control(s);
    ASSERT_TRUE(clean(once)) << "seed " << seed << " round " << round;
    ASSERT_EQ(escape_control(once), once) << "seed " << seed << " round " << round;
    ASSERT_EQ(needs_escape(s), once != s) << "seed " << seed;
    char buf[40];
    const size_t n = escape_control_to(s, buf, sizeof buf);
    ASSERT_LE(n, sizeof buf);
    ASSERT_EQ(std::string(buf, n), once.substr(0, n)) << "seed " << seed << ": a prefix of the full escape";
    ASSERT_TRUE(clean(std::string(buf, n))) << "seed " << seed;
  }
}

// Captures what log_line writes to stderr.
std::string capture_log(const std::string& message) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fds[1], STDERR_FILENO);
  log_line(log_level::warn, "sync", "refused version 3: file w/%s: unknown tensor '%s'", "rank0.safetensors",
           message.c_str());
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(fds[1]);
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  return out;
}

TEST(TextEscape, ALogLineCannotBeForgedByANameHoldingANewline) {
  const std::string out = capture_log("x\n2026-12-02T00:00:00.000Z info sync: committed version=999\r\x1b[2K");
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.find('\n'), out.size() - 1) << "exactly one line: " << out;
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  EXPECT_NE(out.find("'x\\n2026-12-02T00:00:00.000Z info sync: committed version=999\\r\\x1b[2K'"), std::string::npos)
      << out;
  // A long message is cut, but still ends its one line.
  const std::string long_out = capture_log(std::string(10000, '\n'));
  EXPECT_EQ(long_out.find('\n'), long_out.size() - 1);
}

}  // namespace
}  // namespace deltasync
