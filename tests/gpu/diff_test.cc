// The device diff + compaction + position encoding against the CPU encoder (diff_tensor +
// encode_positions): the packed payload must be the same bytes, for every element width, density and
// encoding, with the snapshot on the device or staged from pinned host memory, and when the change count
// overflows the encoder's scratch.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "codec/delta_format.h"
#include "codec/diff.h"
#include "gpu/kernels.h"
#include "gpu_test_util.h"

namespace deltasync::gpu {
namespace {

using testing::download;
using testing::random_bytes;
using testing::upload;

struct case_tensor {
  byte_buffer before, now;
};

// `now` = `before` with about density of its elements changed (in clusters too, so gaps vary widely).
case_tensor make_tensor(uint64_t numel, uint32_t eb, double density, std::mt19937_64& rng) {
  case_tensor t;
  t.before = random_bytes(numel * eb, rng);
  t.now = t.before;
  std::uniform_real_distribution<double> u(0, 1);
  for (uint64_t i = 0; i < numel; ++i) {
    if (density >= 1.0 || u(rng) < density) {
      // Flip one random bit of the element: a change in any byte of it.
      const uint64_t bit = rng() % (8 * eb);
      t.now[i * eb + bit / 8] ^= std::byte(1u << (bit % 8));
    }
  }
  return t;
}

struct expected_bucket {
  byte_buffer payload;
  std::vector<uint64_t> counts;
  std::vector<uint32_t> widths;
};

expected_bucket cpu_encode(const std::vector<case_tensor>& ts, uint32_t eb, encoding enc) {
  expected_bucket e;
  byte_buffer positions, values;
  for (const auto& t : ts) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    diff_tensor(t.before, t.now, eb, pos, vals);
    e.counts.push_back(pos.size());
    e.widths.push_back(pos.empty() ? 4 : encode_positions(enc, pos, positions));
    values.insert(values.end(), vals.begin(), vals.end());
  }
  e.payload = positions;
  e.payload.insert(e.payload.end(), values.begin(), values.end());
  return e;
}

void check_bucket(const std::vector<case_tensor>& ts, uint32_t eb, encoding enc, bool on_host,
                  diff_encoder_options opt, const std::string& label) {
  stream s;
  std::vector<device_buffer> cur, snap;
  std::vector<pinned_buffer> snap_host;
  std::vector<diff_input> inputs;
  for (const auto& t : ts) {
    cur.push_back(upload(t.now, s));
    diff_input in;
    in.current = cur.back().data();
    in.numel = t.now.size() / eb;
    in.elem_bytes = eb;
    if (on_host) {
      auto p = pinned_buffer::allocate(std::max<size_t>(1, t.before.size()));
      ASSERT_TRUE(p.ok());
      if (!t.before.empty()) std::memcpy(p->data(), t.before.data(), t.before.size());
      snap_host.push_back(std::move(p).value());
      in.snapshot = snap_host.back().data();
      in.snapshot_on_host = true;
    } else {
      snap.push_back(upload(t.before, s));
      in.snapshot = snap.back().data();
    }
    inputs.push_back(in);
  }
  diff_encoder enc_gpu(opt);
  const expected_bucket want = cpu_encode(ts, eb, enc);
  // Twice with the same encoder: scratch reuse must not leak state between buckets.
  for (int round = 0; round < 2; ++round) {
    auto got = enc_gpu.encode(inputs, enc, s);
    ASSERT_TRUE(got.ok()) << label << ": " << got.err().message;
    ASSERT_EQ(got->counts, want.counts) << label;
    for (size_t i = 0; i < ts.size(); ++i)
      if (want.counts[i] > 0) {
        EXPECT_EQ(got->pos_width[i], want.widths[i]) << label << " tensor " << i;
      }
    ASSERT_EQ(got->payload_bytes(), want.payload.size()) << label;
    const byte_buffer payload = download(enc_gpu.payload(), got->payload_bytes(), s);
    ASSERT_TRUE(payload == want.payload) << label << ": payload differs from the CPU encoder's";
  }
}

// Every kernel shape the encoder offers; each must give the CPU encoder's bytes.
struct variant {
  std::string name;
  diff_encoder_options opt;
};
std::vector<variant> all_variants() {
  std::vector<variant> v;
  for (int bpsm : {3, 4}) {
    diff_encoder_options o;
    o.blocks_per_sm = bpsm;
    o.method = diff_method::tile_compact;
    v.push_back({"tile-compact " + std::to_string(bpsm) + "/SM", o});
    o.method = diff_method::mask_two_pass;
    v.push_back({"mask two-pass " + std::to_string(bpsm) + "/SM", o});
    o.method = diff_method::single_pass;
    v.push_back({"single pass 512 x " + std::to_string(bpsm), o});
  }
  diff_encoder_options o;
  o.method = diff_method::single_pass;
  o.block_threads = 256;
  o.blocks_per_sm = 8;
  v.push_back({"single pass 256 x 8", o});
  return v;
}

TEST(gpu_diff, matches_cpu_encoder_for_every_width_density_and_encoding) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(21);
  for (uint32_t eb : {1u, 2u, 4u, 8u}) {
    for (double density : {0.0, 0.0001, 0.01, 0.3, 1.0}) {
      for (encoding enc : {encoding::indices, encoding::deltas}) {
        // Several tensors: sizes off tile boundaries, one tiny, one empty, one spanning many tiles.
        std::vector<case_tensor> ts;
        for (uint64_t numel : {uint64_t{1}, uint64_t{1000}, uint64_t{0}, uint64_t{(1u << 20) / eb + 3}, uint64_t{8191}})
          ts.push_back(make_tensor(numel, eb, density, rng));
        for (const variant& v : all_variants()) {
          check_bucket(ts, eb, enc, false, v.opt,
                       "width " + std::to_string(eb) + " density " + std::to_string(density) + " " +
                           std::string(encoding_name(enc)) + " " + v.name);
        }
      }
    }
  }
}

TEST(gpu_diff, wide_gaps_choose_uint32_deltas) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(22);
  case_tensor t;
  const uint64_t numel = 300000;
  t.before = random_bytes(numel * 2, rng);
  t.now = t.before;
  for (uint64_t i : {uint64_t{5}, uint64_t{70000}, uint64_t{70001}, uint64_t{299999}}) t.now[2 * i] ^= std::byte{1};
  case_tensor narrow = make_tensor(200000, 2, 0.001, rng);
  for (const variant& v : all_variants()) check_bucket({t, narrow}, 2, encoding::deltas, false, v.opt, "wide gaps " + v.name);
}

TEST(gpu_diff, ranks_across_many_tiles) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(25);
  // 40 MiB + 3 elements of bf16 (1281 tiles, 161 super-tiles of the mask variant: look-backs past 32
  // predecessors; tile-compact: places taken out of tile order) and a small tail.
  std::vector<case_tensor> ts = {make_tensor((uint64_t{20} << 20) + 3, 2, 0.01, rng), make_tensor(5000, 2, 0.5, rng)};
  for (const variant& v : all_variants()) {
    check_bucket(ts, 2, encoding::deltas, false, v.opt, "many tiles " + v.name);
    check_bucket(ts, 2, encoding::indices, false, v.opt, "many tiles, indices, " + v.name);
  }
}

TEST(gpu_diff, snapshot_staged_from_pinned_host_memory) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(23);
  diff_encoder_options opt;
  opt.staging_chunk_bytes = 64 << 10;  // many chunks per tensor
  for (uint32_t eb : {2u, 4u}) {
    std::vector<case_tensor> ts;
    for (uint64_t numel : {uint64_t{(1u << 20) / eb + 5}, uint64_t{17}, uint64_t{300000}})
      ts.push_back(make_tensor(numel, eb, 0.02, rng));
    for (const variant& v : all_variants()) {
      diff_encoder_options o = v.opt;
      o.staging_chunk_bytes = opt.staging_chunk_bytes;
      check_bucket(ts, eb, encoding::deltas, true, o, "staged width " + std::to_string(eb) + " " + v.name);
    }
  }
}

TEST(gpu_diff, scratch_overflow_reruns_with_a_larger_capacity) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(24);
  diff_encoder_options opt;
  opt.initial_capacity = 1024;
  std::vector<case_tensor> ts = {make_tensor(500000, 2, 0.2, rng), make_tensor(1000, 2, 1.0, rng)};
  for (const variant& v : all_variants()) {
    diff_encoder_options o = v.opt;
    o.initial_capacity = opt.initial_capacity;
    check_bucket(ts, 2, encoding::indices, false, o, "overflow " + v.name);
  }
}

TEST(gpu_diff, mixed_widths_are_refused) {
  DS_REQUIRE_GPU();
  stream s;
  std::mt19937_64 rng(25);
  device_buffer a = upload(random_bytes(64, rng), s);
  diff_input x{a.data(), a.data(), 32, 2, false};
  diff_input y{a.data(), a.data(), 16, 4, false};
  diff_encoder e;
  const diff_input both[] = {x, y};
  auto r = e.encode(both, encoding::indices, s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code, errc::invalid_argument);
}

}  // namespace
}  // namespace deltasync::gpu
