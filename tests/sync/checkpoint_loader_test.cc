// Tests for what the zero-copy checkpoint loader adds: tensors are views into one block per file, and a
// store applying deltas in place into that shared block changes exactly the elements it should (and rolls
// back bit-identical); the limits fire from the files' sizes before anything is allocated or read; O_DIRECT
// (file not cached) and page-cache reads (file cached) load the same bytes; loaded_tensors keeps its spans
// valid across moves.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/digest.h"
#include "codec/safetensors.h"
#include "io/sync_io.h"
#include "io/whole_file_reader.h"
#include "sync/checkpoint_loader.h"
#include "sync/weight_store.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

uint64_t test_seed() {
  if (const char* s = std::getenv("DS_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "ds_ckpt_loader_XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    if (made == nullptr) std::abort();
    path_ = made;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct named_bytes {
  std::string name;
  std::vector<uint64_t> shape;  // BF16
  byte_buffer bytes;
};

named_bytes random_bf16(std::mt19937_64& rng, std::string name, uint64_t numel) {
  byte_buffer b(numel * 2);
  for (auto& x : b) x = static_cast<std::byte>(rng());
  return {std::move(name), {numel}, std::move(b)};
}

void write_bf16_file(const std::string& path, const std::vector<named_bytes>& tensors) {
  std::vector<tensor_data> data;
  for (const auto& t : tensors) data.push_back({tensor_spec{t.name, dtype::BF16, t.shape, t.bytes.size()}, t.bytes});
  auto file = write_safetensors(data, {{"format", "pt"}});
  ASSERT_TRUE(file.ok()) << file.err().describe();
  ASSERT_TRUE(io::write_file_atomic(path, *file).ok());
}

void make_sparse(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0) << "sparse file of " << bytes << " bytes";
  ::close(fd);
}

void evict(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void read_through_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  byte_buffer sink(1 << 20);
  while (::read(fd, sink.data(), sink.size()) > 0) {
  }
  ::close(fd);
}

TEST(CheckpointLoaderViews, InPlaceApplyIntoASharedFileBlockChangesOnlyItsElements) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  temp_dir dir;
  // An odd-sized tensor in the middle puts its neighbours back to back with it in the data section.
  const std::vector<named_bytes> tensors = {random_bf16(rng, "a", 64), random_bf16(rng, "b", 3),
                                            random_bf16(rng, "c", 64)};
  write_bf16_file(dir.file("model.safetensors"), tensors);

  auto store = host_weight_store::load(dir.path());
  ASSERT_TRUE(store.ok()) << store.err().describe();
  host_weight_store& s = **store;
  ASSERT_EQ(s.size(), 3u);
  // Views, not copies: the three tensors lie back to back in one block.
  EXPECT_EQ(s.data(1).data(), s.data(0).data() + 128);
  EXPECT_EQ(s.data(2).data(), s.data(1).data() + 6);

  // Change the elements at every boundary: a's last, all of b, c's first; and a few inside.
  std::vector<std::vector<uint32_t>> positions = {{0, 31, 63}, {0, 1, 2}, {0, 1, 40}};
  std::vector<byte_buffer> expected;
  delta_bucket_builder builder(encoding::indices);
  std::vector<byte_buffer> values(3);
  for (size_t i = 0; i < 3; ++i) {
    expected.push_back(tensors[i].bytes);
    for (uint32_t p : positions[i]) {
      const auto v = static_cast<uint16_t>(rng());
      std::byte le[2];
      store_le<uint16_t>(le, v);
      values[i].insert(values[i].end(), le, le + 2);
      std::memcpy(expected[i].data() + p * 2, le, 2);
    }
    builder.add({tensors[i].name, dtype::BF16, tensors[i].shape, positions[i], values[i]});
  }
  auto file_bytes = builder.finish(1);
  ASSERT_TRUE(file_bytes.ok()) << file_bytes.err().describe();
  auto file = parse_delta_file(*file_bytes);
  ASSERT_TRUE(file.ok()) << file.err().describe();

  undo_log undo;
  // Apply b alone first: a and c, its neighbours in the block, must not move.
  for (const param_entry& p : file->manifest.params) {
    if (p.name != "b") continue;
    ASSERT_TRUE(s.apply(*s.find("b"), *file, p, undo).ok());
  }
  EXPECT_TRUE(std::equal(s.data(0).begin(), s.data(0).end(), tensors[0].bytes.begin()));
  EXPECT_TRUE(std::equal(s.data(1).begin(), s.data(1).end(), expected[1].begin()));
  EXPECT_TRUE(std::equal(s.data(2).begin(), s.data(2).end(), tensors[2].bytes.begin()));
  for (const param_entry& p : file->manifest.params) {
    if (p.name == "b") continue;
    ASSERT_TRUE(s.apply(*s.find(p.name), *file, p, undo).ok());
  }
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(std::equal(s.data(i).begin(), s.data(i).end(), expected[i].begin())) << tensors[i].name;
    EXPECT_EQ(s.digest(i), xxh3_128(expected[i])) << tensors[i].name;
  }

  s.rollback(undo);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(std::equal(s.data(i).begin(), s.data(i).end(), tensors[i].bytes.begin())) << tensors[i].name;
    EXPECT_EQ(s.digest(i), xxh3_128(tensors[i].bytes)) << tensors[i].name;
  }
}

TEST(CheckpointLoaderViews, LimitsFireFromSizesBeforeAnythingIsAllocatedOrRead) {
  temp_dir dir;
  // Shard 1 is not a safetensors file at all: had it been read first, the error would be an st_* code.
  {
    std::string garbage(1000, 'x');
    ASSERT_TRUE(io::write_file_atomic(dir.file("s-1.safetensors"), as_bytes(garbage)).ok());
  }
  // Shard 2 is sparse: 64 GiB on paper, nothing on disk. Reading or mapping it would take minutes or fail.
  make_sparse(dir.file("s-2.safetensors"), uint64_t{64} << 30);
  ASSERT_TRUE(io::write_file_atomic(dir.file("model.safetensors.index.json"),
                                    as_bytes(R"({"weight_map": {"x": "s-1.safetensors", "y": "s-2.safetensors"}})"))
                  .ok());

  checkpoint_limits per_file;
  per_file.max_file_bytes = uint64_t{1} << 30;
  auto a = load_checkpoint(dir.path(), per_file);
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(a.err().is(errc::limit_exceeded)) << a.err().describe();
  EXPECT_NE(a.err().message.find("s-2.safetensors"), std::string::npos) << a.err().describe();

  checkpoint_limits total;
  total.max_total_bytes = uint64_t{32} << 30;
  auto b = load_checkpoint(dir.path(), total);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.err().is(errc::limit_exceeded)) << b.err().describe();
  EXPECT_NE(b.err().message.find("s-2.safetensors"), std::string::npos) << b.err().describe();

  // A single file over the default 1 TiB per file.
  make_sparse(dir.file("huge.safetensors"), (uint64_t{1} << 40) + 1);
  auto c = load_checkpoint(dir.file("huge.safetensors"));
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.err().is(errc::limit_exceeded)) << c.err().describe();
}

TEST(CheckpointLoaderViews, CachedAndUncachedFilesLoadTheSameBytes) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  temp_dir dir;
  // Sizes that make the data section end off any 4 KiB boundary, across several 8 MiB read chunks.
  const std::vector<named_bytes> tensors = {random_bf16(rng, "big", (9u << 20) + 7), random_bf16(rng, "tail", 1001)};
  write_bf16_file(dir.file("m.safetensors"), tensors);
  auto check = [&](const char* how) {
    SCOPED_TRACE(how);
    auto t = load_checkpoint(dir.file("m.safetensors"));
    ASSERT_TRUE(t.ok()) << t.err().describe();
    ASSERT_EQ(t->size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ((*t)[i].desc.name, tensors[i].name);
      ASSERT_EQ((*t)[i].bytes.size(), tensors[i].bytes.size());
      EXPECT_TRUE(std::equal((*t)[i].bytes.begin(), (*t)[i].bytes.end(), tensors[i].bytes.begin())) << tensors[i].name;
    }
    EXPECT_GE(t->held_bytes(), tensors[0].bytes.size() + tensors[1].bytes.size());
  };
  evict(dir.file("m.safetensors"));
  EXPECT_LT(io::page_cache_share(dir.file("m.safetensors")), 0.5) << "eviction did not take: both runs read cached";
  check("not cached: O_DIRECT");
  read_through_cache(dir.file("m.safetensors"));
  EXPECT_GE(io::page_cache_share(dir.file("m.safetensors")), 0.5);
  check("cached: page-cache reads");
}

TEST(CheckpointLoaderViews, LoadedTensorsSpansSurviveMovesAndGrowth) {
  std::mt19937_64 rng(7);
  loaded_tensors t;
  std::vector<byte_buffer> want;
  for (int i = 0; i < 100; ++i) {
    named_bytes nb = random_bf16(rng, "t" + std::to_string(i), static_cast<uint64_t>(i));
    want.push_back(nb.bytes);
    store_tensor desc{nb.name, dtype::BF16, nb.shape, nb.shape[0], nb.bytes.size()};
    t.add(std::move(desc), std::move(nb.bytes));
  }
  auto block = page_block::allocate(4096 + 10, "test");
  ASSERT_TRUE(block.ok());
  std::memset(block->data(), 0x42, block->size());
  const mutable_byte_span view(block->data() + 4096, 10);
  t.add_block(std::move(block).value());
  t.add_view(store_tensor{"view", dtype::U8, {10}, 10, 10}, view);

  loaded_tensors moved = std::move(t);
  ASSERT_EQ(moved.size(), 101u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(moved[i].desc.name, "t" + std::to_string(i));
    EXPECT_TRUE(std::equal(moved[i].bytes.begin(), moved[i].bytes.end(), want[i].begin(), want[i].end())) << i;
  }
  EXPECT_EQ(moved[100].bytes.data(), view.data());
  EXPECT_EQ(moved[100].bytes[9], std::byte{0x42});
  EXPECT_EQ(moved.held_bytes(), 4096u + 10u + 99u * 100u);  // sum of 2 x i for i < 100, plus the block
  moved.clear();
  EXPECT_TRUE(moved.empty());
  EXPECT_EQ(moved.held_bytes(), 0u);
}

}  // namespace
}  // namespace deltasync
