// Tests for the error vocabulary and result<T>.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cerrno>

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

TEST(Error, AnErrnoErrorSaysItsTextOnceAndNamesTheErrno) {
  const error e = errno_error(EACCES, "open /d/weight_v1/f");
  EXPECT_EQ(e.describe(), "open /d/weight_v1/f: Permission denied [EACCES]");
}

TEST(Error, RunningOutOfFileDescriptorsNamesTheLimitToRaise) {
  struct rlimit lim {};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  const error e = errno_error(EMFILE, "open /d/weight_v1/f");
  EXPECT_TRUE(e.is(errc::too_many_open_files));
  const std::string d = e.describe();
  EXPECT_NE(d.find("RLIMIT_NOFILE"), std::string::npos) << d;
  EXPECT_NE(d.find(std::to_string(lim.rlim_cur)), std::string::npos) << d;
  EXPECT_EQ(d.find("Too many open files"), d.rfind("Too many open files")) << "said once: " << d;
  EXPECT_NE(d.find("[too_many_open_files]"), std::string::npos) << d;
  const error sys = errno_error(ENFILE, "accept");
  EXPECT_TRUE(sys.is(errc::too_many_open_files));
  EXPECT_NE(sys.message.find("fs.file-max"), std::string::npos) << sys.message;
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
