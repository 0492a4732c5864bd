// Tests for the native delta format: the writer's five extra metadata keys, a round trip through the reader
// and apply for every encoding, payload corruption caught by the XXH3-64 before anything else, every missing
// or garbled native key refused, slime files left exactly as they were, and the claims a slime file may carry.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "codec/safetensors.h"
#include "codec/zstd_frame.h"

namespace deltasync {
namespace {

constexpr encoding kEncodings[] = {encoding::indices, encoding::deltas, encoding::deltas_zstd};

struct test_tensor {
  std::string name;
  dtype type;
  std::vector<uint64_t> shape;
  byte_buffer before, after;
};

// Random tensors and a new version of each that differs at ~`density` of its elements. A second tensor of
// 70000 elements with sparse changes has gaps past 65535 (uint32 deltas).
std::vector<test_tensor> make_tensors(uint64_t seed, double density) {
  std::mt19937_64 rng(seed);
  std::vector<test_tensor> ts = {
      {"layers.0.weight", dtype::BF16, {64, 48}, {}, {}},
      {"layers.0.bias", dtype::BF16, {70000}, {}, {}},
      {"norm.weight", dtype::F32, {3, 5, 7}, {}, {}},
  };
  std::bernoulli_distribution change(density);
  for (auto& t : ts) {
    uint64_t n = 1;
    for (uint64_t d : t.shape) n *= d;
    const uint32_t eb = element_bytes(t.type);
    t.before.resize(n * eb);
    for (auto& b : t.before) b = static_cast<std::byte>(rng());
    t.after = t.before;
    for (uint64_t i = 0; i < n; ++i)
      if (change(rng)) t.after[i * eb] = static_cast<std::byte>(static_cast<uint8_t>(t.after[i * eb]) ^ 0x5A);
  }
  return ts;
}

native_fields digests_of(const std::vector<test_tensor>& ts, uint64_t base_version) {
  native_fields nf;
  nf.base_version = base_version;
  for (const auto& t : ts) nf.tensor_digests[t.name] = xxh3_128(t.after);
  return nf;
}

// One bucket holding every tensor's diff; the builder promotes BF16 + F32 into F32 __values__.
result<byte_buffer> build(const std::vector<test_tensor>& ts, encoding enc, uint64_t version,
                          const native_fields* native) {
  delta_bucket_builder b(enc);
  for (const auto& t : ts) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    diff_tensor(t.before, t.after, element_bytes(t.type), pos, vals);
    EXPECT_TRUE(b.can_add(t.type));
    b.add({t.name, t.type, t.shape, pos, vals});
  }
  return b.finish(version, 4096, native);
}

// Rewrites a (plain, unzipped) file's metadata through `edit`, keeping its tensors as they are.
byte_buffer with_metadata(const byte_buffer& file,
                          const std::function<void(std::vector<std::pair<std::string, std::string>>&)>& edit) {
  auto st = parse_safetensors(file);
  EXPECT_TRUE(st.ok());
  std::vector<tensor_data> tensors;
  for (const auto& t : st->header.tensors)
    tensors.push_back({{t.name, t.type, t.shape, t.nbytes()}, st->data(t)});
  auto metadata = st->header.metadata;
  edit(metadata);
  auto out = write_safetensors(tensors, metadata, 4096);
  EXPECT_TRUE(out.ok());
  return std::move(out).value();
}

void set_key(std::vector<std::pair<std::string, std::string>>& md, const std::string& key, const std::string& v) {
  for (auto& [k, val] : md)
    if (k == key) {
      val = v;
      return;
    }
  md.emplace_back(key, v);
}

void drop_key(std::vector<std::pair<std::string, std::string>>& md, const std::string& key) {
  std::erase_if(md, [&](const auto& kv) { return kv.first == key; });
}

std::string meta_of(const delta_file& f, const std::string& key) {
  for (const auto& [k, v] : f.metadata)
    if (k == key) return v;
  return {};
}

TEST(NativeFormat, RoundTripEveryEncoding) {
  for (double density : {0.0005, 0.01, 0.3, 1.0}) {
    const auto ts = make_tensors(11, density);
    const native_fields nf = digests_of(ts, 41);
    for (encoding enc : kEncodings) {
      SCOPED_TRACE(std::string(encoding_name(enc)) + " density " + std::to_string(density));
      auto file = build(ts, enc, 42, &nf);
      ASSERT_TRUE(file.ok()) << file.err().describe();
      EXPECT_EQ(is_zstd_frame(*file), enc == encoding::deltas_zstd);
      auto f = parse_delta_file(*file);
      ASSERT_TRUE(f.ok()) << f.err().describe();
      ASSERT_TRUE(f->native.has_value());
      EXPECT_EQ(f->native->base_version, 41u);
      EXPECT_EQ(f->native->version, 42u);
      EXPECT_EQ(f->manifest.current_version, 42u);
      EXPECT_EQ(meta_of(*f, "format"), "deltasync-native/1");
      EXPECT_EQ(meta_of(*f, "payload_xxh3_64").size(), 16u);

      // The payload hash covers __positions__ then __values__, as stored.
      byte_buffer joined(f->positions.begin(), f->positions.end());
      joined.insert(joined.end(), f->values.begin(), f->values.end());
      EXPECT_EQ(f->native->payload_xxh3_64, xxh3_64(joined));
      EXPECT_EQ(meta_of(*f, "payload_xxh3_64"), to_hex64(xxh3_64(joined)));

      // Exactly one digest per param, and applying the file reproduces tensors with those digests.
      ASSERT_EQ(f->native->tensor_digests.size(), f->manifest.params.size());
      // Unchanged tensors are absent from the manifest and from the digests alike.
      const size_t changed =
          static_cast<size_t>(std::count_if(ts.begin(), ts.end(), [](const auto& t) { return t.before != t.after; }));
      ASSERT_EQ(f->manifest.params.size(), changed);
      for (const auto& p : f->manifest.params) {
        const auto& t = *std::find_if(ts.begin(), ts.end(), [&](const auto& x) { return x.name == p.name; });
        byte_buffer dest = t.before;
        ASSERT_TRUE(apply_param(*f, p, dest).ok());
        EXPECT_EQ(dest, t.after) << p.name;
        EXPECT_EQ(f->native->tensor_digests.at(p.name), xxh3_128(dest));
        EXPECT_NE(meta_of(*f, "tensor_xxh3_128").find("\"" + p.name + "\":\"" + to_hex(xxh3_128(dest)) + "\""),
                  std::string::npos);
      }
    }
  }
}

TEST(NativeFormat, EmptyBucketIsValid) {
  native_fields nf;
  nf.base_version = 6;
  for (encoding enc : kEncodings) {
    delta_bucket_builder b(enc);
    auto file = b.finish(7, 4096, &nf);
    ASSERT_TRUE(file.ok());
    auto f = parse_delta_file(*file);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    ASSERT_TRUE(f->native.has_value());
    EXPECT_TRUE(f->manifest.params.empty());
    EXPECT_TRUE(f->native->tensor_digests.empty());
    EXPECT_EQ(f->native->payload_xxh3_64, xxh3_64({}));
    EXPECT_EQ(meta_of(*f, "tensor_xxh3_128"), "{}");
  }
}

TEST(NativeFormat, OnlyTheBucketsDigestsAreWritten) {
  auto ts = make_tensors(3, 0.05);
  native_fields nf = digests_of(ts, 1);
  nf.tensor_digests["not.in.this.bucket"] = digest128{1, 2};
  auto file = build(ts, encoding::deltas, 2, &nf);
  ASSERT_TRUE(file.ok());
  auto f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  EXPECT_EQ(f->native->tensor_digests.count("not.in.this.bucket"), 0u);
  EXPECT_EQ(f->native->tensor_digests.size(), ts.size());
}

// tensor_sum128 (optional): written for the params that have one (others' and foreign names left out), read
// back exactly; absent when no param has one (a file as older writers made it, which still parses); a
// garbled value or a name the file does not change is bad metadata.
TEST(NativeFormat, AdditiveDigestsAreOptionalAndChecked) {
  auto ts = make_tensors(5, 0.05);
  native_fields nf = digests_of(ts, 1);
  auto plain = build(ts, encoding::deltas, 2, &nf);
  ASSERT_TRUE(plain.ok());
  auto f0 = parse_delta_file(*plain);
  ASSERT_TRUE(f0.ok()) << f0.err().describe();
  EXPECT_TRUE(f0->native->tensor_sums.empty());
  EXPECT_EQ(meta_of(*f0, "tensor_sum128"), "");
  nf.tensor_sums[ts[0].name] = digest128{0x0123456789abcdefull, 42};
  nf.tensor_sums["not.in.this.bucket"] = digest128{1, 2};
  auto file = build(ts, encoding::deltas, 2, &nf);
  ASSERT_TRUE(file.ok());
  auto f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  ASSERT_EQ(f->native->tensor_sums.size(), 1u);
  EXPECT_EQ(f->native->tensor_sums.at(ts[0].name), (digest128{0x0123456789abcdefull, 42}));
  using md_t = std::vector<std::pair<std::string, std::string>>;
  const std::string good = to_hex(digest128{3, 4});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not JSON", "{\"a\":"},
      {"a list", "[]"},
      {"not a string", "{\"" + ts[0].name + "\":7}"},
      {"short", "{\"" + ts[0].name + "\":\"" + good.substr(1) + "\"}"},
      {"a tensor not in the file", "{\"other\":\"" + good + "\"}"},
  };
  for (const auto& [what, value] : cases) {
    SCOPED_TRACE(what);
    auto bad = with_metadata(*file, [&](md_t& md) { set_key(md, "tensor_sum128", value); });
    auto g = parse_delta_file(bad);
    ASSERT_FALSE(g.ok());
    EXPECT_TRUE(g.err().is(errc::delta_bad_metadata)) << g.err().describe();
  }
}

TEST(NativeFormat, WriterRefusesMissingDigestOrBadBaseAndKeepsItsContents) {
  auto ts = make_tensors(5, 0.05);
  delta_bucket_builder b(encoding::indices);
  for (const auto& t : ts) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    diff_tensor(t.before, t.after, element_bytes(t.type), pos, vals);
    b.add({t.name, t.type, t.shape, pos, vals});
  }
  native_fields nf = digests_of(ts, 1);
  nf.tensor_digests.erase(ts[1].name);
  auto missing = b.finish(2, 4096, &nf);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.err().is(errc::invalid_argument));
  EXPECT_NE(missing.err().message.find(ts[1].name), std::string::npos);

  native_fields same = digests_of(ts, 2);
  auto not_below = b.finish(2, 4096, &same);
  ASSERT_FALSE(not_below.ok());
  EXPECT_TRUE(not_below.err().is(errc::invalid_argument));

  EXPECT_EQ(b.param_count(), ts.size());
  native_fields good = digests_of(ts, 1);
  auto file = b.finish(2, 4096, &good);
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(parse_delta_file(*file).ok());
}

TEST(NativeFormat, PayloadCorruptionIsCaughtByTheHash) {
  const auto ts = make_tensors(13, 0.02);
  const native_fields nf = digests_of(ts, 3);
  std::mt19937_64 rng(99);
  for (encoding enc : kEncodings) {
    SCOPED_TRACE(encoding_name(enc));
    auto file = build(ts, enc, 4, &nf);
    ASSERT_TRUE(file.ok());
    byte_buffer plain = enc == encoding::deltas_zstd ? zstd_unwrap(*file, 1 << 30).value() : *file;
    auto st = parse_safetensors(plain);
    ASSERT_TRUE(st.ok());
    const uint64_t data_at = st->header.data_offset;
    const uint64_t data_bytes = st->header.data_bytes;
    ASSERT_GT(data_bytes, 0u);
    for (int trial = 0; trial < 20; ++trial) {
      byte_buffer bad = plain;
      const uint64_t at = data_at + rng() % data_bytes;
      bad[at] ^= std::byte{static_cast<uint8_t>(1u << (rng() % 8))};
      if (enc == encoding::deltas_zstd) bad = zstd_wrap(bad, 1).value();
      auto f = parse_delta_file(bad);
      ASSERT_FALSE(f.ok());
      EXPECT_TRUE(f.err().is(errc::delta_payload_hash_mismatch)) << "byte " << at << ": " << f.err().describe();

      // With the hash check off, the slime checksum still notices (or, in positions, the manifest).
      delta_read_limits no_hash;
      no_hash.verify_payload_hash = false;
      EXPECT_FALSE(parse_delta_file(bad, no_hash).ok());
    }
  }
}

TEST(NativeFormat, WrongPayloadHashInMetadata) {
  const auto ts = make_tensors(17, 0.02);
  const native_fields nf = digests_of(ts, 3);
  auto file = build(ts, encoding::deltas, 4, &nf);
  ASSERT_TRUE(file.ok());
  auto bad = with_metadata(*file, [](auto& md) { set_key(md, "payload_xxh3_64", "0123456789abcdef"); });
  auto f = parse_delta_file(bad);
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(f.err().is(errc::delta_payload_hash_mismatch)) << f.err().describe();
}

TEST(NativeFormat, MissingOrGarbledNativeKeysAreBadMetadata) {
  const auto ts = make_tensors(19, 0.02);
  const native_fields nf = digests_of(ts, 3);
  auto built = build(ts, encoding::deltas, 4, &nf);
  ASSERT_TRUE(built.ok());
  const byte_buffer file = std::move(built).value();
  ASSERT_TRUE(parse_delta_file(file).ok());

  const std::string d0 = to_hex(nf.tensor_digests.at(ts[0].name));
  const std::string d1 = to_hex(nf.tensor_digests.at(ts[1].name));
  const std::string d2 = to_hex(nf.tensor_digests.at(ts[2].name));
  auto digests_json = [&](const std::string& extra) {
    return "{\"" + ts[0].name + "\":\"" + d0 + "\",\"" + ts[1].name + "\":\"" + d1 + "\"" + extra + "}";
  };
  std::string upper = d2;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));

  using md_t = std::vector<std::pair<std::string, std::string>>;
  const std::vector<std::pair<std::string, std::function<void(md_t&)>>> cases = {
      {"no base_version", [](md_t& md) { drop_key(md, "base_version"); }},
      {"no version", [](md_t& md) { drop_key(md, "version"); }},
      {"no payload hash", [](md_t& md) { drop_key(md, "payload_xxh3_64"); }},
      {"no digests", [](md_t& md) { drop_key(md, "tensor_xxh3_128"); }},
      {"unknown format", [](md_t& md) { set_key(md, "format", "deltasync-native/2"); }},
      {"a format number never defined", [](md_t& md) { set_key(md, "format", "deltasync-native/9"); }},
      {"empty format", [](md_t& md) { set_key(md, "format", ""); }},
      {"base not decimal", [](md_t& md) { set_key(md, "base_version", "3x"); }},
      {"base negative", [](md_t& md) { set_key(md, "base_version", "-1"); }},
      {"version not decimal", [](md_t& md) { set_key(md, "version", ""); }},
      {"version != current_version", [](md_t& md) { set_key(md, "version", "5"); }},
      {"base == version", [](md_t& md) { set_key(md, "base_version", "4"); }},
      {"base > version", [](md_t& md) { set_key(md, "base_version", "9"); }},
      {"hash too short", [](md_t& md) { set_key(md, "payload_xxh3_64", "0123456789abcde"); }},
      {"hash uppercase", [](md_t& md) { set_key(md, "payload_xxh3_64", "0123456789ABCDEF"); }},
      {"hash not hex", [](md_t& md) { set_key(md, "payload_xxh3_64", "0123456789abcdeg"); }},
      {"digests not JSON", [](md_t& md) { set_key(md, "tensor_xxh3_128", "{\"a\":"); }},
      {"digests a list", [](md_t& md) { set_key(md, "tensor_xxh3_128", "[]"); }},
      {"digest missing for a param", [&](md_t& md) { set_key(md, "tensor_xxh3_128", digests_json("")); }},
      {"digest not a string",
       [&](md_t& md) { set_key(md, "tensor_xxh3_128", digests_json(",\"" + ts[2].name + "\":7")); }},
      {"digest uppercase",
       [&](md_t& md) { set_key(md, "tensor_xxh3_128", digests_json(",\"" + ts[2].name + "\":\"" + upper + "\"")); }},
      {"digest short",
       [&](md_t& md) {
         set_key(md, "tensor_xxh3_128", digests_json(",\"" + ts[2].name + "\":\"" + d2.substr(1) + "\""));
       }},
      {"digest for a tensor not in the file",
       [&](md_t& md) {
         set_key(md, "tensor_xxh3_128",
                 digests_json(",\"" + ts[2].name + "\":\"" + d2 + "\",\"other\":\"" + d2 + "\""));
       }},
  };
  for (const auto& [what, edit] : cases) {
    SCOPED_TRACE(what);
    auto bad = with_metadata(file, edit);
    auto f = parse_delta_file(bad);
    ASSERT_FALSE(f.ok());
    EXPECT_TRUE(f.err().is(errc::delta_bad_metadata)) << f.err().describe();
  }
  // The rewrite itself keeps a good file good (so the cases above fail for their edit alone).
  auto same = with_metadata(file, [](md_t&) {});
  EXPECT_TRUE(parse_delta_file(same).ok());
}

TEST(NativeFormat, SlimeFilesAreUnaffected) {
  const auto ts = make_tensors(23, 0.02);
  for (encoding enc : kEncodings) {
    SCOPED_TRACE(encoding_name(enc));
    auto file = build(ts, enc, 8, nullptr);
    ASSERT_TRUE(file.ok());
    auto f = parse_delta_file(*file);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    EXPECT_FALSE(f->native.has_value());
    EXPECT_EQ(f->metadata.size(), 4u);  // encoding, current_version, checksum, params: nothing else
    for (const auto& p : f->manifest.params) {
      const auto& t = *std::find_if(ts.begin(), ts.end(), [&](const auto& x) { return x.name == p.name; });
      byte_buffer dest = t.before;
      ASSERT_TRUE(apply_param(*f, p, dest).ok());
      EXPECT_EQ(dest, t.after);
    }
  }
  // Without `format`, stray native-looking keys are ignored, garbled or not: the file is slime's.
  auto file = build(ts, encoding::indices, 8, nullptr);
  ASSERT_TRUE(file.ok());
  auto stray = with_metadata(*file, [](auto& md) {
    set_key(md, "version", "not a number");
    set_key(md, "payload_xxh3_64", "zz");
  });
  auto f = parse_delta_file(stray);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  EXPECT_FALSE(f->native.has_value());
}

// A slime file written with native_fields::slime: slime's four keys and tensors exactly as a plain slime file
// has them (so slime's receiver, which reads its keys by name, loads the same thing), plus the deltasync_* keys,
// read back as slime_claims (never as a native file); every garbled or half-present claim is bad metadata.
TEST(NativeFormat, SlimeFilesCarryTheirBaseAndDigestsUnderTheirOwnKeys) {
  const auto ts = make_tensors(29, 0.02);
  native_fields nf = digests_of(ts, 7);
  nf.slime = true;
  nf.records = true;  // ignored for a slime file
  nf.tensor_sums[ts[0].name] = digest128{5, 6};
  for (encoding enc : kEncodings) {
    SCOPED_TRACE(encoding_name(enc));
    auto plain = build(ts, enc, 8, nullptr);
    auto file = build(ts, enc, 8, &nf);
    ASSERT_TRUE(plain.ok() && file.ok());
    auto f = parse_delta_file(*file);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    EXPECT_FALSE(f->native.has_value());
    ASSERT_TRUE(f->slime_claims.has_value());
    EXPECT_EQ(f->claims(), &*f->slime_claims);
    EXPECT_EQ(f->slime_claims->base_version, 7u);
    EXPECT_EQ(f->slime_claims->version, 8u);
    EXPECT_EQ(f->slime_claims->tensor_digests.size(), ts.size());
    for (const auto& t : ts) EXPECT_EQ(f->slime_claims->tensor_digests.at(t.name), xxh3_128(t.after));
    EXPECT_EQ(f->slime_claims->tensor_sums.at(ts[0].name), (digest128{5, 6}));
    EXPECT_EQ(meta_of(*f, "format"), "");
    EXPECT_EQ(f->metadata.size(), 7u);  // slime's four, deltasync's three
    auto g = parse_delta_file(*plain);
    ASSERT_TRUE(g.ok());
    EXPECT_FALSE(g->slime_claims.has_value());
    EXPECT_EQ(g->claims(), nullptr);
    EXPECT_EQ(meta_of(*f, "params"), meta_of(*g, "params"));
    EXPECT_EQ(meta_of(*f, "checksum"), meta_of(*g, "checksum"));
    EXPECT_TRUE(std::equal(f->positions.begin(), f->positions.end(), g->positions.begin(), g->positions.end()));
    EXPECT_TRUE(std::equal(f->values.begin(), f->values.end(), g->values.begin(), g->values.end()));
    for (const auto& p : f->manifest.params) {
      const auto& t = *std::find_if(ts.begin(), ts.end(), [&](const auto& x) { return x.name == p.name; });
      byte_buffer dest = t.before;
      ASSERT_TRUE(apply_param(*f, p, dest).ok());
      EXPECT_EQ(dest, t.after);
    }
  }

  auto built = build(ts, encoding::deltas, 8, &nf);
  ASSERT_TRUE(built.ok());
  const std::string d0 = to_hex(nf.tensor_digests.at(ts[0].name));
  using md_t = std::vector<std::pair<std::string, std::string>>;
  const std::vector<std::pair<std::string, std::function<void(md_t&)>>> cases = {
      {"digests without a base", [](md_t& md) { drop_key(md, "deltasync_base_version"); }},
      {"a base without digests", [](md_t& md) { drop_key(md, "deltasync_tensor_xxh3_128"); }},
      {"sums alone",
       [](md_t& md) {
         drop_key(md, "deltasync_base_version");
         drop_key(md, "deltasync_tensor_xxh3_128");
       }},
      {"base not decimal", [](md_t& md) { set_key(md, "deltasync_base_version", "7a"); }},
      {"base == current_version", [](md_t& md) { set_key(md, "deltasync_base_version", "8"); }},
      {"digests not an object", [](md_t& md) { set_key(md, "deltasync_tensor_xxh3_128", "[]"); }},
      {"a digest missing", [&](md_t& md) { set_key(md, "deltasync_tensor_xxh3_128", "{\"" + ts[0].name + "\":\"" + d0 + "\"}"); }},
      {"a sum for a tensor not in the file",
       [&](md_t& md) { set_key(md, "deltasync_tensor_sum128", "{\"other\":\"" + d0 + "\"}"); }},
  };
  for (const auto& [what, edit] : cases) {
    SCOPED_TRACE(what);
    auto bad = parse_delta_file(with_metadata(*built, edit));
    ASSERT_FALSE(bad.ok());
    EXPECT_TRUE(bad.err().is(errc::delta_bad_metadata)) << bad.err().describe();
    EXPECT_NE(bad.err().message.find("slime delta file"), std::string::npos) << bad.err().message;
  }
  // Without deltasync's keys it is a plain slime file again.
  auto stripped = with_metadata(*built, [](md_t& md) {
    drop_key(md, "deltasync_base_version");
    drop_key(md, "deltasync_tensor_xxh3_128");
    drop_key(md, "deltasync_tensor_sum128");
  });
  auto s = parse_delta_file(stripped);
  ASSERT_TRUE(s.ok()) << s.err().describe();
  EXPECT_EQ(s->claims(), nullptr);

  // compact stays native-only.
  delta_bucket_builder cb(encoding::compact);
  std::vector<uint32_t> pos = {1};
  byte_buffer vals(2), old(2);
  vals[0] = std::byte{1};
  cb.add_compact({ts[0].name, ts[0].type, ts[0].shape, pos, vals}, old);
  auto compact = cb.finish(8, 4096, &nf);
  ASSERT_FALSE(compact.ok());
  EXPECT_TRUE(compact.err().is(errc::invalid_argument));
}


// The streamable layout (deltasync-native/2): one __records__ tensor, each param's positions then values,
// read back to the same tensors as native/1 in every encoding; a corrupt byte is a payload hash mismatch; a
// record that overlaps the previous one is refused.
TEST(NativeFormat, RecordsLayoutRoundTripsAndIsCheckedLikeNative1) {
  using md_t = std::vector<std::pair<std::string, std::string>>;
  for (double density : {0.001, 0.05, 1.0}) {
    const auto ts = make_tensors(19, density);
    native_fields nf = digests_of(ts, 7);
    native_fields nf2 = nf;
    nf2.records = true;
    for (encoding enc : kEncodings) {
      SCOPED_TRACE(std::string(encoding_name(enc)) + " density " + std::to_string(density));
      auto v1 = build(ts, enc, 8, &nf);
      auto v2 = build(ts, enc, 8, &nf2);
      ASSERT_TRUE(v1.ok() && v2.ok());
      auto f1 = parse_delta_file(*v1);
      auto f2 = parse_delta_file(*v2);
      ASSERT_TRUE(f1.ok()) << f1.err().describe();
      ASSERT_TRUE(f2.ok()) << f2.err().describe();
      EXPECT_FALSE(f1->records);
      EXPECT_TRUE(f2->records);
      EXPECT_EQ(meta_of(*f2, "format"), "deltasync-native/2");
      EXPECT_EQ(f2->positions.data(), f2->values.data());
      EXPECT_EQ(f2->native->payload_xxh3_64, xxh3_64(f2->positions));
      ASSERT_EQ(f1->manifest.params.size(), f2->manifest.params.size());
      uint64_t floor = 0;
      for (size_t k = 0; k < f2->manifest.params.size(); ++k) {
        const param_entry& p = f2->manifest.params[k];
        EXPECT_GE(p.pos_start, floor);
        EXPECT_LE(p.pos_end, p.val_start * element_bytes(f2->values_type));
        floor = p.val_end * element_bytes(f2->values_type);
        const test_tensor& t = *std::find_if(ts.begin(), ts.end(), [&](const auto& x) { return x.name == p.name; });
        byte_buffer a = t.before, b = t.before;
        ASSERT_TRUE(apply_param(*f1, f1->manifest.params[k], a).ok());
        ASSERT_TRUE(apply_param(*f2, p, b).ok());
        EXPECT_EQ(a, t.after);
        EXPECT_EQ(b, t.after);
      }
      if (enc == encoding::deltas_zstd || f2->manifest.params.empty()) continue;
      byte_buffer bad = *v2;
      bad[bad.size() - 2] ^= std::byte{0x01};
      auto fb = parse_delta_file(bad);
      ASSERT_FALSE(fb.ok());
      EXPECT_TRUE(fb.err().is(errc::delta_payload_hash_mismatch)) << fb.err().describe();
    }
  }
  // A manifest whose second record starts inside the first one's values.
  const auto ts = make_tensors(23, 0.05);
  native_fields nf = digests_of(ts, 7);
  nf.records = true;
  auto file = build(ts, encoding::indices, 8, &nf);
  ASSERT_TRUE(file.ok());
  auto f = parse_delta_file(*file);
  ASSERT_TRUE(f.ok());
  ASSERT_GE(f->manifest.params.size(), 2u);
  auto params = f->manifest.params;
  ASSERT_GE(params[1].pos_start - params[0].pos_end, 8u) << "the first record holds values";
  params[1].pos_start -= 4;  // into the first record's values, past its positions
  params[1].pos_end -= 4;
  auto bad = with_metadata(*file, [&](md_t& md) { set_key(md, "params", params_to_json(params)); });
  delta_read_limits no_hash;
  no_hash.verify_payload_hash = false;
  no_hash.verify_checksum = false;
  auto fb = parse_delta_file(bad, no_hash);
  ASSERT_FALSE(fb.ok());
  EXPECT_TRUE(fb.err().is(errc::delta_manifest_bounds)) << fb.err().describe();
}

}  // namespace
}  // namespace deltasync
