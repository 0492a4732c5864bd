// The compact encoding on the device against the CPU codec: the device encoder writes the CPU's bytes (every
// element size, densities 0..100%, AdamW-like and random values, gaps past 2^16), the device decoder returns
// what the CPU decoder returns and refuses what it refuses, add_apply / gather match their CPU meaning, the
// device store applies and rolls back a compact file like the host store, and the Sender on device tensors
// writes the host Sender's compact files.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "codec/compact.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "gpu/kernels.h"
#include "gpu_test_util.h"
#include "sync/cuda_weight_store.h"
#include "sync/weight_store.h"

namespace deltasync {
namespace {

using gpu::testing::download;
using gpu::testing::random_bytes;
using gpu::testing::upload;

struct change_set {
  uint64_t numel = 0;
  std::vector<uint32_t> positions;
  byte_buffer old_values, new_values;
};

// A stream on the device with the decoder's readable padding after it.
gpu::device_buffer upload_stream(byte_span stream, gpu::stream& s) {
  byte_buffer padded(stream.begin(), stream.end());
  padded.resize(stream.size() + gpu::kCompactStreamPad);
  return upload(padded, s);
}

change_set make_changes(std::mt19937_64& rng, uint64_t numel, double density, uint32_t eb, bool random_values) {
  change_set c;
  c.numel = numel;
  std::bernoulli_distribution pick(density);
  for (uint64_t i = 0; i < numel; ++i)
    if (density >= 1.0 || pick(rng)) c.positions.push_back(static_cast<uint32_t>(i));
  const uint64_t mask = eb == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * eb)) - 1;
  for (size_t i = 0; i < c.positions.size(); ++i) {
    const uint64_t o = rng() & mask;
    uint64_t v;
    do {
      v = random_values ? (rng() & mask) : ((o + ((rng() & 1) ? 1 : mask) * (1 + rng() % 3)) & mask);
    } while (v == o);
    c.old_values.insert(c.old_values.end(), reinterpret_cast<const std::byte*>(&o), reinterpret_cast<const std::byte*>(&o) + eb);
    c.new_values.insert(c.new_values.end(), reinterpret_cast<const std::byte*>(&v), reinterpret_cast<const std::byte*>(&v) + eb);
  }
  return c;
}

TEST(gpu_compact, encoder_writes_the_cpu_bytes_and_decoder_reads_them_back) {
  DS_REQUIRE_GPU();
  gpu::stream s;
  gpu::compact_scratch sc;
  gpu::device_buffer out;
  for (uint32_t eb : {1u, 2u, 4u, 8u})
    for (double density : {0.0, 0.0001, 0.01, 0.1, 0.5, 1.0})
      for (bool random_values : {false, true}) {
        const uint64_t seed = eb * 100 + static_cast<uint64_t>(density * 1e4) + random_values;
        SCOPED_TRACE("seed " + std::to_string(seed));
        std::mt19937_64 rng(seed);
        const change_set c = make_changes(rng, density < 0.001 ? 300000 : 40000, density, eb, random_values);
        byte_buffer want;
        compact::encode(c.positions, c.old_values, c.new_values, eb, want);

        auto dp = upload(c.positions.data(), c.positions.size() * 4, s);
        auto dold = upload(c.old_values, s), dnew = upload(c.new_values, s);
        uint64_t bytes = 0;
        ASSERT_TRUE(gpu::compact_encode(dp.as<uint32_t>(), dold.data(), dnew.data(), c.positions.size(), eb, out, bytes,
                                        sc, s)
                        .ok());
        ASSERT_EQ(bytes, want.size());
        ASSERT_TRUE(download(out.data(), bytes, s) == want) << "eb " << eb << " density " << density;

        // Decode on the device: the CPU decoder's positions and differences.
        std::vector<uint32_t> cpu_pos;
        byte_buffer cpu_diffs;
        ASSERT_TRUE(compact::decode(want, c.positions.size(), c.numel, eb, cpu_pos, cpu_diffs).ok());
        auto ds = upload_stream(want, s);
        auto pos = gpu::device_buffer::allocate(c.positions.size() * 4 + 4);
        auto diffs = gpu::device_buffer::allocate(c.positions.size() * eb + 8);
        ASSERT_TRUE(pos.ok() && diffs.ok());
        ASSERT_TRUE(gpu::compact_decode(want, ds.data(), c.positions.size(), c.numel, eb, pos->as<uint32_t>(),
                                        diffs->data(), sc, s)
                        .ok());
        const byte_buffer got_pos = download(pos->data(), c.positions.size() * 4, s);
        ASSERT_EQ(0, std::memcmp(got_pos.data(), cpu_pos.data(), got_pos.size()));
        ASSERT_TRUE(download(diffs->data(), cpu_diffs.size(), s) == cpu_diffs);
      }
}

TEST(gpu_compact, huge_gaps_and_the_escape_path) {
  DS_REQUIRE_GPU();
  gpu::stream s;
  gpu::compact_scratch sc;
  gpu::device_buffer out;
  const std::vector<uint32_t> positions = {0, 1, 2, 70000, 70001, 4000000000u, 4294967294u};
  for (uint32_t eb : {1u, 2u, 4u, 8u}) {
    byte_buffer o(positions.size() * eb, std::byte{1}), v(positions.size() * eb, std::byte{2});
    byte_buffer want;
    compact::encode(positions, o, v, eb, want);
    auto dp = upload(positions.data(), positions.size() * 4, s);
    auto dold = upload(o, s), dnew = upload(v, s);
    uint64_t bytes = 0;
    ASSERT_TRUE(gpu::compact_encode(dp.as<uint32_t>(), dold.data(), dnew.data(), positions.size(), eb, out, bytes, sc, s).ok());
    ASSERT_TRUE(download(out.data(), bytes, s) == want) << "eb " << eb;
    auto ds = upload_stream(want, s);
    auto pos = gpu::device_buffer::allocate(positions.size() * 4);
    auto diffs = gpu::device_buffer::allocate(positions.size() * eb);
    ASSERT_TRUE(gpu::compact_decode(want, ds.data(), positions.size(), 4294967295ull, eb, pos->as<uint32_t>(),
                                    diffs->data(), sc, s)
                    .ok());
    const byte_buffer got = download(pos->data(), positions.size() * 4, s);
    EXPECT_EQ(0, std::memcmp(got.data(), positions.data(), got.size()));
  }
}

// Both of the device decoder's paths: blocks staged in shared memory (bf16 at 10%) and blocks too large for the
// stage, read from global memory (random 64-bit values, every element changed).
TEST(gpu_compact, decoder_refuses_what_the_cpu_decoder_refuses) {
  DS_REQUIRE_GPU();
  gpu::stream s;
  gpu::compact_scratch sc;
  struct shape {
    uint64_t numel;
    double density;
    uint32_t eb;
    bool random_values;
    size_t stride;
  };
  for (const shape sh : {shape{60000, 0.1, 2, false, 97}, shape{20000, 1.0, 8, true, 4099}}) {
    SCOPED_TRACE("eb " + std::to_string(sh.eb));
    std::mt19937_64 rng(77);
    const change_set c = make_changes(rng, sh.numel, sh.density, sh.eb, sh.random_values);
    byte_buffer stream;
    compact::encode(c.positions, c.old_values, c.new_values, sh.eb, stream);
    auto pos = gpu::device_buffer::allocate(c.positions.size() * 4);
    auto diffs = gpu::device_buffer::allocate(c.positions.size() * sh.eb);
    size_t refused = 0, tried = 0;
    for (size_t bit = 8 * 8; bit < stream.size() * 8; bit += sh.stride, ++tried) {
      byte_buffer bad = stream;
      bad[bit / 8] ^= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
      std::vector<uint32_t> cp;
      byte_buffer cd;
      const bool cpu_ok = compact::decode(bad, c.positions.size(), c.numel, sh.eb, cp, cd).ok();
      auto ds = upload_stream(bad, s);
      const bool gpu_ok = gpu::compact_decode(bad, ds.data(), c.positions.size(), c.numel, sh.eb, pos->as<uint32_t>(),
                                              diffs->data(), sc, s)
                              .ok();
      ASSERT_EQ(cpu_ok, gpu_ok) << "bit " << bit;
      refused += !gpu_ok;
      if (gpu_ok) {
        const byte_buffer got = download(pos->data(), cp.size() * 4, s);
        ASSERT_EQ(0, std::memcmp(got.data(), cp.data(), got.size())) << "bit " << bit;
        ASSERT_TRUE(download(diffs->data(), cd.size(), s) == cd) << "bit " << bit;
      }
    }
    EXPECT_GT(refused, 0u);
    EXPECT_GT(tried, 100u);
  }
}

TEST(gpu_compact, store_applies_and_rolls_back_like_the_host_store) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(8);
  std::vector<std::pair<store_tensor, byte_buffer>> base_h, base_d;
  std::vector<byte_buffer> before, now;
  delta_bucket_builder b(encoding::compact);
  native_fields nf;
  nf.base_version = 3;
  const std::vector<std::pair<dtype, uint64_t>> specs = {{dtype::BF16, 300000}, {dtype::F32, 4097}, {dtype::U8, 70001}, {dtype::F64, 9}};
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto [t, numel] = specs[i];
    const uint32_t eb = element_bytes(t);
    const std::string name = "p" + std::to_string(i);
    before.push_back(random_bytes(numel * eb, rng));
    now.push_back(before.back());
    for (uint64_t k = 0; k < numel; ++k)
      if (rng() % 50 == 0) now.back()[k * eb] = static_cast<std::byte>(static_cast<uint8_t>(now.back()[k * eb]) + 1);
    std::vector<uint32_t> pos;
    byte_buffer vals;
    diff_tensor(before.back(), now.back(), eb, pos, vals);
    byte_buffer old(vals.size());
    for (size_t k = 0; k < pos.size(); ++k) std::memcpy(old.data() + k * eb, before.back().data() + uint64_t{pos[k]} * eb, eb);
    b.add_compact({name, t, {numel}, pos, vals}, old);
    nf.tensor_digests[name] = xxh3_128(now.back());
    store_tensor st;
    st.name = name;
    st.type = t;
    st.shape = {numel};
    st.numel = numel;
    st.nbytes = numel * eb;
    base_h.emplace_back(st, before.back());
    base_d.emplace_back(st, before.back());
  }
  auto file = b.finish(4, 8, &nf);
  ASSERT_TRUE(file.ok());
  auto f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  auto host = host_weight_store::from_tensors(std::move(base_h));
  loaded_tensors lt;
  for (auto& [st, bytes] : base_d) lt.add(st, std::move(bytes));
  auto dev = cuda_weight_store::from_tensors(std::move(lt), 0);
  ASSERT_TRUE(dev.ok()) << dev.err().message;
  undo_log hu, du;
  for (const auto& p : f->manifest.params) {
    const size_t i = *host->find(p.name);
    ASSERT_TRUE(host->apply(i, *f, p, hu).ok());
    auto st = (*dev)->apply(i, *f, p, du);
    ASSERT_TRUE(st.ok()) << st.err().message;
  }
  EXPECT_EQ(du.bytes(), hu.bytes());
  for (size_t i = 0; i < specs.size(); ++i) {
    byte_buffer out(now[i].size());
    ASSERT_TRUE((*dev)->read(i, out).ok());
    EXPECT_TRUE(out == now[i]) << "tensor " << i;
    EXPECT_EQ((*dev)->digest(i), nf.tensor_digests.at("p" + std::to_string(i)));
  }
  (*dev)->rollback(du);
  for (size_t i = 0; i < specs.size(); ++i) {
    byte_buffer out(before[i].size());
    ASSERT_TRUE((*dev)->read(i, out).ok());
    EXPECT_TRUE(out == before[i]) << "tensor " << i << " after rollback";
  }
}

}  // namespace
}  // namespace deltasync
