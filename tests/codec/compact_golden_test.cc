// Golden compact streams (tests/data/golden/compact/): the compact/1 streams the first release wrote
// (make_v1_golden.cc) still decode to their recorded positions and differences, and the compact/2 encoder writes,
// for the same changes, exactly the committed v2 streams — any change to the format's bytes shows up here. With
// DS_WRITE_GOLDEN=1 the test rewrites the v2 files instead (only for a deliberate, versioned format change).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "codec/compact.h"

namespace deltasync {
namespace {

const std::string kDir = std::string(DS_TEST_DATA_DIR) + "/golden/compact/";

byte_buffer read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  byte_buffer out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

struct expected {
  uint64_t count = 0, numel = 0, elem_bytes = 0;
  std::vector<uint32_t> positions;
  byte_buffer diffs;
};

expected read_expect(const std::string& path) {
  const byte_buffer b = read_file(path);
  expected e;
  if (b.size() < 24) return e;
  std::memcpy(&e.count, b.data(), 8);
  std::memcpy(&e.numel, b.data() + 8, 8);
  std::memcpy(&e.elem_bytes, b.data() + 16, 8);
  if (b.size() != 24 + e.count * (4 + e.elem_bytes)) return expected{};
  e.positions.resize(e.count);
  std::memcpy(e.positions.data(), b.data() + 24, e.count * 4);
  e.diffs.assign(b.begin() + 24 + static_cast<std::ptrdiff_t>(e.count * 4), b.end());
  return e;
}

class CompactGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(CompactGolden, FirstFormatDecodesAndSecondFormatBytesHold) {
  const std::string name = GetParam();
  const expected e = read_expect(kDir + "v1_" + name + ".expect");
  ASSERT_GT(e.count, 0u) << "missing or malformed " << kDir << "v1_" << name << ".expect";
  const uint32_t eb = static_cast<uint32_t>(e.elem_bytes);

  const byte_buffer v1 = read_file(kDir + "v1_" + name + ".stream");
  std::vector<uint32_t> pos;
  byte_buffer diffs;
  auto st = compact::decode(v1, e.count, e.numel, eb, pos, diffs);
  ASSERT_TRUE(st.ok()) << st.err().describe();
  EXPECT_EQ(pos, e.positions);
  EXPECT_EQ(diffs, e.diffs);

  // The same changes against a zero tensor (old 0, new = the difference) in compact/2.
  const byte_buffer zeros(e.diffs.size());
  byte_buffer v2;
  compact::encode(e.positions, zeros, e.diffs, eb, v2);
  const std::string v2_path = kDir + "v2_" + name + ".stream";
  if (std::getenv("DS_WRITE_GOLDEN") != nullptr) {
    std::ofstream(v2_path, std::ios::binary).write(reinterpret_cast<const char*>(v2.data()), static_cast<std::streamsize>(v2.size()));
    GTEST_SKIP() << "wrote " << v2_path;
  }
  const byte_buffer want = read_file(v2_path);
  ASSERT_FALSE(want.empty()) << "missing " << v2_path;
  EXPECT_TRUE(v2 == want) << "compact/2 bytes changed for " << name << " (" << v2.size() << " vs " << want.size()
                          << " bytes): a format change needs a new version";
  ASSERT_TRUE(compact::decode(want, e.count, e.numel, eb, pos, diffs).ok());
  EXPECT_EQ(pos, e.positions);
  EXPECT_EQ(diffs, e.diffs);
  // Random values (f32_random) cost compact/2 their bit-width symbol on top of the raw bits, compact/1 stored
  // them raw: within 1%.
  EXPECT_LE(static_cast<double>(want.size()), 1.01 * static_cast<double>(v1.size()) + 64);
}

INSTANTIATE_TEST_SUITE_P(Streams, CompactGolden, ::testing::Values("bf16_adamw", "f32_random", "u8_dense", "f64_sparse"));

}  // namespace
}  // namespace deltasync
