// borrowed_weight_store: syncs applied in place into memory the caller owns (host and CUDA), rolled back to
// bit-identical bytes, refusals that write nothing, digests of the current bytes, the touched set.
#include "sync/borrowed_weight_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "codec/delta_format.h"
#include "gpu/gpu.h"

namespace deltasync {
namespace {

struct delta {
  byte_buffer bytes;
  delta_file file;
};

// A delta changing every third element of BF16 tensor `name` (shape [8, 16]) to a random value.
delta make_delta(const std::string& name, std::mt19937_64& rng, dtype type = dtype::BF16,
                 std::vector<uint64_t> shape = {8, 16}) {
  std::vector<uint32_t> pos;
  for (uint32_t k = 0; k < 128; k += 3) pos.push_back(k);
  byte_buffer vals(pos.size() * element_bytes(type));
  for (auto& b : vals) b = std::byte(rng() & 0x3F);  // small exponent: a finite bf16
  delta_bucket_builder b(encoding::deltas);
  b.add({name, type, std::move(shape), pos, vals});
  delta d;
  auto bytes = b.finish(1);
  EXPECT_TRUE(bytes.ok());
  d.bytes = std::move(*bytes);
  auto f = parse_delta_file(d.bytes);
  EXPECT_TRUE(f.ok()) << f.err().describe();
  d.file = std::move(*f);
  return d;
}

byte_buffer random_bytes(std::mt19937_64& rng, size_t n) {
  byte_buffer out(n);
  for (auto& b : out) b = std::byte(rng() & 0x3F);
  return out;
}

store_tensor desc(const std::string& name) { return store_tensor{name, dtype::BF16, {8, 16}, 128, 256}; }

TEST(BorrowedWeightStore, AppliesInPlaceIntoCallerMemoryAndRollsBack) {
  std::mt19937_64 rng(7);
  byte_buffer a = random_bytes(rng, 256), b = random_bytes(rng, 256);
  const byte_buffer a0 = a, b0 = b;
  auto store = borrowed_weight_store::create({{desc("a"), a.data(), -1}, {desc("b"), b.data(), -1}});
  ASSERT_TRUE(store.ok()) << store.err().describe();
  borrowed_weight_store& s = **store;
  EXPECT_EQ(s.kind(), "host");
  EXPECT_EQ(s.data(0), a.data());  // no copy: the caller's memory
  delta d = make_delta("b", rng);
  undo_log undo;
  ASSERT_TRUE(s.apply(1, d.file, d.file.manifest.params.at(0), undo).ok());
  EXPECT_EQ(a, a0);
  EXPECT_NE(b, b0);
  EXPECT_EQ(s.touched(), std::vector<size_t>{1});
  EXPECT_EQ(s.digest(1), xxh3_128(b));
  s.rollback(undo);
  EXPECT_EQ(b, b0);
  EXPECT_EQ(s.digest(1), xxh3_128(b0));
  s.clear_touched();
  EXPECT_TRUE(s.touched().empty());
  // The caller may write its tensor between syncs: digests are of the current bytes, never cached.
  b[0] = std::byte{0x11};
  EXPECT_EQ(s.digest(1), xxh3_128(b));
  byte_buffer out(256);
  ASSERT_TRUE(s.read(1, out).ok());
  EXPECT_EQ(out, b);
}

TEST(BorrowedWeightStore, RefusalsWriteNothing) {
  std::mt19937_64 rng(8);
  byte_buffer a = random_bytes(rng, 256);
  const byte_buffer a0 = a;
  auto store = borrowed_weight_store::create({{desc("a"), a.data(), -1}});
  ASSERT_TRUE(store.ok());
  undo_log undo;
  delta wrong_dtype = make_delta("a", rng, dtype::F16);
  auto st = (*store)->apply(0, wrong_dtype.file, wrong_dtype.file.manifest.params.at(0), undo);
  EXPECT_TRUE(st.err().is(errc::delta_dtype_mismatch)) << st.err().describe();
  delta wrong_shape = make_delta("a", rng, dtype::BF16, {16, 8});
  st = (*store)->apply(0, wrong_shape.file, wrong_shape.file.manifest.params.at(0), undo);
  EXPECT_TRUE(st.err().is(errc::delta_shape_mismatch)) << st.err().describe();
  undo_log tight(8);
  delta ok = make_delta("a", rng);
  st = (*store)->apply(0, ok.file, ok.file.manifest.params.at(0), tight);
  EXPECT_TRUE(st.err().is(errc::limit_exceeded)) << st.err().describe();
  EXPECT_EQ(a, a0);
  EXPECT_TRUE(undo.records().empty());
  EXPECT_TRUE((*store)->touched().empty());
}

TEST(BorrowedWeightStore, CreateChecksItsInput) {
  byte_buffer a(256);
  EXPECT_TRUE(borrowed_weight_store::create({{desc("a"), a.data(), -1}, {desc("a"), a.data(), -1}})
                  .err()
                  .is(errc::invalid_argument));
  store_tensor bad = desc("a");
  bad.nbytes = 255;
  EXPECT_TRUE(borrowed_weight_store::create({{bad, a.data(), -1}}).err().is(errc::invalid_argument));
  EXPECT_TRUE(borrowed_weight_store::create({{desc("a"), nullptr, -1}}).err().is(errc::invalid_argument));
}

TEST(BorrowedWeightStore, CudaTensorsInPlace) {
  if (auto st = gpu::available(); !st) GTEST_SKIP() << "no GPU: " << st.err().message;
  std::mt19937_64 rng(9);
  const byte_buffer host0 = random_bytes(rng, 256);
  auto buf = gpu::device_buffer::allocate(256);
  ASSERT_TRUE(buf.ok());
  {
    gpu::stream s;
    ASSERT_TRUE(gpu::copy_h2d(buf->data(), host0.data(), 256, s).ok());
    ASSERT_TRUE(s.synchronize().ok());
  }
  auto store = borrowed_weight_store::create({{desc("w"), buf->data(), 0}});
  ASSERT_TRUE(store.ok()) << store.err().describe();
  EXPECT_EQ((*store)->kind(), "cuda");
  delta d = make_delta("w", rng);
  undo_log undo;
  ASSERT_TRUE((*store)->apply(0, d.file, d.file.manifest.params.at(0), undo).ok());
  byte_buffer expect = host0;
  ASSERT_TRUE(apply_param(d.file, d.file.manifest.params.at(0), expect).ok());
  byte_buffer got(256);
  ASSERT_TRUE((*store)->read(0, got).ok());
  EXPECT_EQ(got, expect);
  EXPECT_EQ((*store)->digest(0), xxh3_128(expect));
  (*store)->rollback(undo);
  ASSERT_TRUE((*store)->read(0, got).ok());
  EXPECT_EQ(got, host0);
}

}  // namespace
}  // namespace deltasync
