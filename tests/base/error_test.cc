// Tests for the error vocabulary and result<T>.
#include <gtest/gtest.h>

#include "base/error.h"
#include "base/result.h"

namespace deltasync {
namespace {

result<int> parse_positive(int x) {
  if (x <= 0) return error(errc::invalid_argument, "x must be positive, got " + std::to_string(x));
  return x;
}

result<int> twice(int x) {
  DS_ASSIGN_OR_RETURN(int v, parse_positive(x));
  return 2 * v;
}

TEST(Error, NamesAreStableAndDescribed) {
  error e(errc::st_not_contiguous, "tensor 'w' starts at 8, expected 0");
  EXPECT_TRUE(e.is(errc::st_not_contiguous));
  EXPECT_FALSE(e.is(errc::st_bad_offsets));
  EXPECT_EQ(e.describe(), "tensor 'w' starts at 8, expected 0 [st_not_contiguous]");
  EXPECT_EQ(errc_name(errc::delta_checksum_mismatch), "delta_checksum_mismatch");
  EXPECT_EQ(make_error_code(errc::no_space), std::errc::no_space_on_device);
}

TEST(Result, PropagatesErrorsAndValues) {
  auto ok = twice(21);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 42);
  auto bad = twice(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.err().is(errc::invalid_argument));
  EXPECT_NE(bad.err().message.find("-1"), std::string::npos);
}

TEST(Result, ErrnoErrorNamesTheOperation) {
  error e = errno_error(ENOENT, "open /nope");
  EXPECT_EQ(e.code, std::errc::no_such_file_or_directory);
  EXPECT_NE(e.message.find("open /nope"), std::string::npos);
}

}  // namespace
}  // namespace deltasync
