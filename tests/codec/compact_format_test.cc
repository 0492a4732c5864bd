// Tests for the compact encoding inside the native format: a hand-derived stream vector, the builder -> reader ->
// apply round trip over every dtype and density, the container rules (one __compact__ tensor, native only), the
// manifest cross-checks, refused applies leaving the tensor untouched, and the wrong-base case the digests catch.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/compact.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "codec/safetensors.h"

namespace deltasync {
namespace {

byte_buffer hex_bytes(std::initializer_list<int> xs) {
  byte_buffer b;
  for (int x : xs) b.push_back(static_cast<std::byte>(x));
  return b;
}

TEST(CompactStream, HandDerivedVector) {
  // positions 3, 4, 100; bf16 1.0 -> next up, 1.0 -> next down, -1.0 -> next down in magnitude order.
  // gaps 3, 0, 95 -> kp 4 (20 bits; k=5 ties and the smaller k wins). Differences +1, -1, +1 -> codes 1, 0, 1 ->
  // symbols 1, 0, 1 -> table {682, 1366} (2048/3 floored, the rest to the most frequent), LEB128 AA 05 D6 0A.
  // rANS from 2^16 backwards over 1, 0, 1: 98272, 294976, 442288 = 0x06BFB0, no byte emitted. One lane of 6 bytes:
  // state B0 BF 06, bits 27 80 0F.
  const std::vector<uint32_t> positions = {3, 4, 100};
  const uint16_t old_v[] = {0x3F80, 0x3F80, 0xBF80}, new_v[] = {0x3F81, 0x3F7F, 0xBF81};
  byte_buffer stream;
  compact::encode(positions, byte_span(reinterpret_cast<const std::byte*>(old_v), 6),
                  byte_span(reinterpret_cast<const std::byte*>(new_v), 6), 2, stream);
  const byte_buffer expected = hex_bytes({0xC2, 0x0D, 0x02, 0x08, 0x03, 0x00, 0x00, 0x00,   // header, n = 3
                                          0x02, 0xAA, 0x05, 0xD6, 0x0A,                     // table: 682, 1366
                                          0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,   // base 0, 9 bytes
                                          0x04, 0x06, 0x00,                                 // kp, lane of 6 bytes
                                          0xB0, 0xBF, 0x06, 0x27, 0x80, 0x0F});             // state, 20 bits
  EXPECT_EQ(stream, expected);
}

TEST(CompactStream, HandDerivedVectorOfTheFirstFormatStillDecodes) {
  // compact/1 (magic 0xC1) of the same change: gaps kp 4, codes 1, 0, 1 Rice-coded with kv 0, 25 bits.
  const byte_buffer v1 = hex_bytes({0xC1, 0x0B, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00,   // header, n = 3
                                    0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00,   // base 0, 6 bytes
                                    0x04, 0x00, 0xC7, 0x10, 0x7C, 0x01});            // kp, kv, 25 bits
  std::vector<uint32_t> positions;
  byte_buffer diffs;
  ASSERT_TRUE(compact::decode(v1, 3, 101, 2, positions, diffs).ok());
  EXPECT_EQ(positions, (std::vector<uint32_t>{3, 4, 100}));
  EXPECT_EQ(diffs, hex_bytes({0x01, 0x00, 0xFF, 0xFF, 0x01, 0x00}));
  auto info = compact::read_header(v1, 3, 2);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, 1u);
}

struct test_tensor {
  std::string name;
  dtype type;
  std::vector<uint64_t> shape;
  byte_buffer before, after;
};

// One tensor per whole-byte dtype (the compact encoding takes any of them) plus a long BF16 one with gaps past
// 65535; ~density of each tensor's elements change, by a small step in their bits or to any other pattern.
std::vector<test_tensor> make_tensors(uint64_t seed, double density) {
  std::mt19937_64 rng(seed);
  std::vector<test_tensor> ts;
  for (const auto& di : all_dtypes()) {
    const uint32_t eb = element_bytes(di.type);
    if (eb != 1 && eb != 2 && eb != 4 && eb != 8) continue;
    ts.push_back({"t." + std::string(di.name), di.type, {33, 31}, {}, {}});
  }
  ts.push_back({"long.bf16", dtype::BF16, {300000}, {}, {}});
  std::bernoulli_distribution change(density);
  for (auto& t : ts) {
    uint64_t n = 1;
    for (uint64_t d : t.shape) n *= d;
    const uint32_t eb = element_bytes(t.type);
    t.before.resize(n * eb);
    for (auto& b : t.before) b = static_cast<std::byte>(rng());
    t.after = t.before;
    for (uint64_t i = 0; i < n; ++i) {
      if (!(density >= 1.0 || change(rng))) continue;
      std::byte* e = t.after.data() + i * eb;
      if (rng() & 1) {
        e[0] = static_cast<std::byte>(static_cast<uint8_t>(e[0]) + 1 + (rng() & 3));  // a few ulps
      } else {
        do {
          for (uint32_t k = 0; k < eb; ++k) e[k] = static_cast<std::byte>(rng());
        } while (std::memcmp(e, t.before.data() + i * eb, eb) == 0);
      }
    }
  }
  return ts;
}

native_fields digests_of(const std::vector<test_tensor>& ts, uint64_t base_version) {
  native_fields nf;
  nf.base_version = base_version;
  for (const auto& t : ts) nf.tensor_digests[t.name] = xxh3_128(t.after);
  return nf;
}

result<byte_buffer> build(const std::vector<test_tensor>& ts, uint64_t version, const native_fields* native) {
  delta_bucket_builder b(encoding::compact);
  for (const auto& t : ts) {
    const uint32_t eb = element_bytes(t.type);
    std::vector<uint32_t> pos;
    byte_buffer vals;
    diff_tensor(t.before, t.after, eb, pos, vals);
    byte_buffer old(vals.size());
    for (size_t k = 0; k < pos.size(); ++k) std::memcpy(old.data() + k * eb, t.before.data() + uint64_t{pos[k]} * eb, eb);
    EXPECT_TRUE(b.can_add(t.type));
    b.add_compact({t.name, t.type, t.shape, pos, vals}, old);
  }
  return b.finish(version, 8, native);
}

std::string meta_of(const delta_file& f, const std::string& key) {
  for (const auto& [k, v] : f.metadata)
    if (k == key) return v;
  return {};
}

TEST(CompactFormat, RoundTripEveryDtypeAndDensity) {
  for (double density : {0.0, 0.0001, 0.01, 0.1, 0.5, 1.0}) {
    SCOPED_TRACE("density " + std::to_string(density));
    const auto ts = make_tensors(static_cast<uint64_t>(density * 1e4) + 3, density);
    const native_fields nf = digests_of(ts, 6);
    auto file = build(ts, 7, &nf);
    ASSERT_TRUE(file.ok()) << file.err().describe();
    auto st = parse_safetensors(*file);
    ASSERT_TRUE(st.ok());
    ASSERT_EQ(st->header.tensors.size(), 1u);
    EXPECT_EQ(st->header.tensors[0].name, "__compact__");
    auto f = parse_delta_file(*file);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    EXPECT_EQ(f->manifest.enc, encoding::compact);
    EXPECT_EQ(meta_of(*f, "encoding"), "compact");
    ASSERT_TRUE(f->native.has_value());
    EXPECT_EQ(f->native->base_version, 6u);
    EXPECT_EQ(f->native->payload_xxh3_64, xxh3_64(f->positions));
    EXPECT_EQ(f->manifest.checksum, delta_checksum(f->positions, dtype::U8, {}));
    uint64_t changed = 0;
    for (const auto& p : f->manifest.params) {
      const auto& t = *std::find_if(ts.begin(), ts.end(), [&](const auto& x) { return x.name == p.name; });
      EXPECT_EQ(p.pos_width, 1u);
      byte_buffer dest = t.before, old;
      ASSERT_TRUE(apply_param(*f, p, dest, &old).ok()) << p.name;
      EXPECT_EQ(dest, t.after) << p.name;
      EXPECT_EQ(old.size(), p.changed() * element_bytes(t.type));
      EXPECT_EQ(f->native->tensor_digests.at(p.name), xxh3_128(dest));
      // The undo record's positions decode from the stream alone (rollback uses decode_positions).
      std::vector<uint32_t> pos;
      ASSERT_TRUE(decode_positions(encoding::compact, 1, f->positions.subspan(p.pos_start, p.pos_end - p.pos_start),
                                   p.numel(), pos)
                      .ok());
      EXPECT_EQ(pos.size(), p.changed());
      changed += p.changed();
    }
    if (density == 0.0) {
      EXPECT_TRUE(f->manifest.params.empty());
    }
    if (density >= 0.01) {
      EXPECT_GT(changed, 0u);
    }
  }
}

TEST(CompactFormat, NeedsTheNativeFormat) {
  const auto ts = make_tensors(1, 0.05);
  auto slime = build(ts, 7, nullptr);
  ASSERT_FALSE(slime.ok());
  EXPECT_EQ(slime.err().code, make_error_code(errc::invalid_argument));
  // A native compact file whose `format` key is dropped reads as a slime file: refused, not applied.
  const native_fields nf = digests_of(ts, 6);
  auto file = build(ts, 7, &nf);
  ASSERT_TRUE(file.ok());
  auto st = parse_safetensors(*file);
  ASSERT_TRUE(st.ok());
  std::vector<tensor_data> tensors;
  for (const auto& t : st->header.tensors) tensors.push_back({{t.name, t.type, t.shape, t.nbytes()}, st->data(t)});
  auto md = st->header.metadata;
  std::erase_if(md, [](const auto& kv) { return kv.first == "format"; });
  auto rewritten = write_safetensors(tensors, md, 8);
  ASSERT_TRUE(rewritten.ok());
  auto f = parse_delta_file(*rewritten);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.err().code, make_error_code(errc::delta_bad_metadata));
}

// Rewrites a compact file's metadata key (tensors as they are) and returns the reader's verdict.
errc reparse_with(const byte_buffer& file, const std::string& key, const std::string& value,
                  bool verify_hash = true) {
  auto st = parse_safetensors(file);
  EXPECT_TRUE(st.ok());
  std::vector<tensor_data> tensors;
  for (const auto& t : st->header.tensors) tensors.push_back({{t.name, t.type, t.shape, t.nbytes()}, st->data(t)});
  auto md = st->header.metadata;
  for (auto& [k, v] : md)
    if (k == key) v = value;
  auto out = write_safetensors(tensors, md, 8);
  EXPECT_TRUE(out.ok());
  delta_read_limits limits;
  limits.verify_payload_hash = verify_hash;
  auto f = parse_delta_file(*out, limits);
  return f.ok() ? errc{} : static_cast<errc>(f.err().code.value());
}

TEST(CompactFormat, ContainerAndManifestRules) {
  const auto ts = make_tensors(2, 0.05);
  const native_fields nf = digests_of(ts, 6);
  auto file = build(ts, 7, &nf);
  ASSERT_TRUE(file.ok());
  auto f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok());
  // Another encoding's name on a __compact__ file, and compact on a two-tensor file.
  EXPECT_EQ(reparse_with(*file, "encoding", "deltas"), errc::delta_bad_metadata);
  delta_bucket_builder d(encoding::deltas);
  std::vector<uint32_t> pos = {1, 5};
  byte_buffer vals(4, std::byte{1});
  d.add({"x", dtype::BF16, {10}, pos, vals});
  native_fields nx;
  nx.base_version = 1;
  nx.tensor_digests["x"] = {};
  auto deltas_file = d.finish(2, 8, &nx);
  ASSERT_TRUE(deltas_file.ok());
  EXPECT_EQ(reparse_with(*deltas_file, "encoding", "compact"), errc::delta_bad_metadata);

  // Manifest edits: a wrong count, a wrong pos_width, a wrong dtype size (the stream says 2 bytes).
  const std::string params = meta_of(*f, "params");
  auto edited = [&](const std::string& from, const std::string& to) {
    std::string p = params;
    const size_t at = p.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    p.replace(at, from.size(), to);
    return p;
  };
  const auto& p0 = f->manifest.params[0];
  // pos_width 2 is not compact's (or, for an odd range, not a whole number of entries): refused either way.
  const errc width = reparse_with(*file, "params", edited("\"pos_width\":1", "\"pos_width\":2"));
  EXPECT_TRUE(width == errc::delta_bad_pos_width || width == errc::delta_bad_manifest) << static_cast<int>(width);
  EXPECT_EQ(reparse_with(*file, "params",
                         edited("\"val_end\":" + std::to_string(p0.val_end), "\"val_end\":" + std::to_string(p0.val_end - 1))),
            errc::delta_value_count_mismatch);
  EXPECT_EQ(reparse_with(*file, "params",
                         edited("\"pos_end\":" + std::to_string(p0.pos_end), "\"pos_end\":" + std::to_string(p0.pos_end - 1))),
            errc::delta_bad_manifest);  // the stream's blocks no longer cover its range
}

TEST(CompactFormat, RefusedApplyLeavesTheTensorUntouched) {
  const auto ts = make_tensors(4, 0.2);
  const native_fields nf = digests_of(ts, 6);
  auto file = build(ts, 7, &nf);
  ASSERT_TRUE(file.ok());
  // Flip bits inside the streams (past each stream's header and directory); skip the payload hash so the
  // corruption reaches apply. Every apply either succeeds or leaves the tensor as it was.
  size_t refused = 0;
  for (size_t flip = 0; flip < 400; ++flip) {
    byte_buffer bad = *file;
    auto st = parse_safetensors(bad);
    ASSERT_TRUE(st.ok());
    const size_t data_at = static_cast<size_t>(st->data(st->header.tensors[0]).data() - bad.data());
    const size_t len = st->header.tensors[0].nbytes();
    const size_t at = data_at + (flip * 7919) % len;
    bad[at] ^= std::byte{static_cast<uint8_t>(1u << (flip % 8))};
    delta_read_limits limits;
    limits.verify_payload_hash = false;
    limits.verify_checksum = false;
    auto f = parse_delta_file(bad, limits);
    if (!f.ok()) {
      ++refused;
      continue;
    }
    for (const auto& p : f->manifest.params) {
      const auto& t = *std::find_if(ts.begin(), ts.end(), [&](const auto& x) { return x.name == p.name; });
      byte_buffer dest = t.before;
      if (!apply_param(*f, p, dest).ok()) {
        ++refused;
        EXPECT_EQ(dest, t.before) << "a refused apply wrote into " << p.name;
      }
    }
    // With the hash on, the same file is refused before any apply.
    EXPECT_FALSE(parse_delta_file(bad).ok());
  }
  EXPECT_GT(refused, 100u) << "most flips inside the codes are caught by the decoder itself";
}

TEST(CompactFormat, WrongBaseGivesWrongTensorsThatTheDigestsCatch) {
  // Not idempotent: applying the same file twice (or on another base) does not give the new tensor, and the
  // per-tensor digest says so (the receiver then rolls back; the base_version check refuses it before that).
  const auto ts = make_tensors(5, 0.05);
  const native_fields nf = digests_of(ts, 6);
  auto file = build(ts, 7, &nf);
  ASSERT_TRUE(file.ok());
  auto f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok());
  size_t caught = 0;
  for (const auto& p : f->manifest.params) {
    const auto& t = *std::find_if(ts.begin(), ts.end(), [&](const auto& x) { return x.name == p.name; });
    byte_buffer dest = t.after;  // already applied once
    ASSERT_TRUE(apply_param(*f, p, dest).ok());
    EXPECT_NE(dest, t.after);
    caught += xxh3_128(dest) != f->native->tensor_digests.at(p.name);
  }
  EXPECT_EQ(caught, f->manifest.params.size());
}

}  // namespace
}  // namespace deltasync
