// Golden vectors from the real tools: files written by tests/data/golden/make_golden.py with torch 2.11 and
// safetensors 0.8 the way slime #1806 writes them. We must decode them exactly, reproduce their
// torch.hash_tensor checksums, and turn base.safetensors into new.safetensors bit for bit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "codec/delta_format.h"
#include "codec/safetensors.h"

namespace deltasync {
namespace {

const std::string kDir = std::string(DS_TEST_DATA_DIR) + "/golden";

byte_buffer read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  byte_buffer out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

// name -> raw bytes of every tensor in a checkpoint.
std::map<std::string, byte_buffer> load_tensors(const std::string& path, std::map<std::string, tensor_info>* infos) {
  byte_buffer file = read_file(path);
  auto view = parse_safetensors(file);
  EXPECT_TRUE(view.ok()) << path << ": " << (view.ok() ? "" : view.err().describe());
  std::map<std::string, byte_buffer> out;
  if (!view.ok()) return out;
  for (const auto& t : view->header.tensors) {
    auto d = view->data(t);
    out[t.name] = byte_buffer(d.begin(), d.end());
    if (infos) (*infos)[t.name] = t;
  }
  return out;
}

class GoldenSlimeFiles : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenSlimeFiles, DecodeExactlyAndReproduceChecksums) {
  std::map<std::string, tensor_info> infos;
  auto state = load_tensors(kDir + "/base.safetensors", &infos);
  auto expected = load_tensors(kDir + "/new.safetensors", nullptr);
  ASSERT_FALSE(state.empty());
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(kDir + "/" + GetParam()))
    if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 2u);
  uint64_t params = 0;
  for (const auto& path : files) {
    SCOPED_TRACE(path);
    byte_buffer bytes = read_file(path);
    auto f = parse_delta_file(bytes);  // verifies the torch-computed checksum
    ASSERT_TRUE(f.ok()) << f.err().describe();
    EXPECT_EQ(encoding_name(f->manifest.enc), GetParam() == "deltas_zstd" ? "deltas_zstd" : GetParam());
    EXPECT_EQ(f->manifest.current_version, 1u);
    EXPECT_EQ(delta_checksum(f->positions, f->values_type, f->values), f->manifest.checksum);
    for (const auto& p : f->manifest.params) {
      ASSERT_TRUE(state.count(p.name)) << p.name;
      EXPECT_EQ(p.shape, infos[p.name].shape) << p.name;
      auto s = apply_param(*f, p, state[p.name]);
      ASSERT_TRUE(s.ok()) << p.name << ": " << s.err().describe();
      ++params;
    }
  }
  EXPECT_EQ(params, 6u);  // every param but the unchanged one
  for (const auto& [name, bytes] : expected) {
    EXPECT_EQ(state[name], bytes) << "tensor " << name << " differs from new.safetensors after apply";
  }
}

INSTANTIATE_TEST_SUITE_P(Encodings, GoldenSlimeFiles, ::testing::Values("indices", "deltas", "deltas_zstd"));

TEST(GoldenSlimeFiles, FarGapsUseUint32Width) {
  byte_buffer bytes = read_file(kDir + "/deltas/weight_v000001/rank0000_flush000001.safetensors");
  auto f = parse_delta_file(bytes);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  bool found = false;
  for (const auto& p : f->manifest.params) {
    if (p.name == "far.weight") {
      found = true;
      EXPECT_EQ(p.pos_width, 4u);
      EXPECT_NE(p.pos_start % 4, 0u);  // a uint32 run at an unaligned byte offset
    } else {
      EXPECT_EQ(p.pos_width, 2u) << p.name;
    }
  }
  EXPECT_TRUE(found);
}

TEST(GoldenHashTensor, MatchesTorchForEveryDtype) {
  byte_buffer file = read_file(kDir + "/hash_cases.safetensors");
  auto view = parse_safetensors(file);
  ASSERT_TRUE(view.ok()) << view.err().describe();
  ASSERT_GE(view->header.tensors.size(), 8u);
  for (const auto& t : view->header.tensors) {
    auto want = view->header.meta(t.name);
    ASSERT_TRUE(want.has_value()) << t.name;
    uint64_t got = hash_tensor(t.type, view->data(t));
    EXPECT_EQ(std::to_string(got), *want) << "torch.hash_tensor of " << t.name << " (" << name(t.type) << ")";
  }
}

}  // namespace
}  // namespace deltasync
