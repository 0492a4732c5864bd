// The receiver pipeline against real files on disk (thread I/O backend): commit, refusals, and rollback
// of a partially applied sync.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <random>

#include "codec/compact.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/sum_digest.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "io/worker_pool.h"
#include "sync/receiver.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

struct fixture {
  fs::path dir = fs::temp_directory_path() / ("ds-receiver-" + std::to_string(::getpid()) + "-" +
                                              std::to_string(std::random_device{}()));
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<host_weight_store> store;
  std::unique_ptr<receiver> rx;
  std::vector<byte_buffer> base;  // per tensor
  bool slime_files = false;             // write_native writes slime files carrying deltasync_* claims
  std::optional<uint64_t> file_base;    // write_native's base_version (default: version - 1)

  // `threads` workers; `big_numel` > 0 adds a bf16 tensor "big" of that many elements (its apply is split).
  explicit fixture(size_t threads = 2, uint32_t big_numel = 0) {
    fs::create_directories(dir);
    io::io_backend_options bo;
    bo.backend = "threads";
    backend = std::move(io::make_io_backend(loop, bo)).value();
    io::buffer_pool_options po;
    po.buffer_bytes = 64 << 10;
    po.max_total_bytes = 1 << 20;
    po.lock_memory = false;
    pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
    workers = std::make_unique<io::worker_pool>(loop, threads, 64);
    std::vector<std::pair<store_tensor, byte_buffer>> t;
    std::mt19937_64 rng(7);
    for (int i = 0; i < 3; ++i) {
      byte_buffer b(2 * 5000);
      for (auto& x : b) x = std::byte(rng() & 0xFF);
      base.push_back(b);
      t.push_back({store_tensor{"w" + std::to_string(i), dtype::BF16, {50, 100}, 5000, 10000}, b});
    }
    if (big_numel > 0) {
      byte_buffer b(2 * uint64_t{big_numel});
      for (auto& x : b) x = std::byte(rng() & 0xFF);
      base.push_back(b);
      t.push_back({store_tensor{"big", dtype::BF16, {big_numel}, big_numel, 2 * uint64_t{big_numel}}, b});
    }
    store = host_weight_store::from_tensors(std::move(t));
    receiver_options ro;
    ro.delta_dir = dir.string();
    ro.chunk_bytes = 64 << 10;
    ro.read_workers = 4;
    rx = std::make_unique<receiver>(loop, *backend, *pool, *workers, *store, ro, nullptr);
  }
  ~fixture() {
    rx.reset();
    workers.reset();
    pool.reset();
    backend.reset();
    fs::remove_all(dir);
  }

  // Writes one file changing `count` elements of tensor `t` (slime format) into weight_v<version>/name.
  byte_buffer write_delta(uint64_t version, const std::string& file, size_t t, uint32_t first, uint32_t count) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    for (uint32_t k = 0; k < count; ++k) {
      pos.push_back(first + 3 * k);
      vals.push_back(std::byte(0x11));
      vals.push_back(std::byte(0x3F));
    }
    delta_bucket_builder b(encoding::deltas);
    b.add({"w" + std::to_string(t), dtype::BF16, {50, 100}, pos, vals});
    byte_buffer bytes = std::move(b.finish(version)).value();
    fs::path vd = dir / ("weight_v" + std::string(6 - std::to_string(version).size(), '0') + std::to_string(version));
    fs::create_directories(vd);
    EXPECT_TRUE(io::write_file_atomic((vd / file).string(), bytes).ok());
    return bytes;
  }

  result<sync_stats> sync(sync_request req) {
    std::promise<result<sync_stats>> p;
    loop.post([&] { rx->start_sync(req, [&](result<sync_stats> r) { p.set_value(std::move(r)); }); });
    return p.get_future().get();
  }

  // Writes a native/2 file changing `count` elements of tensor `t` to 0x3F11 (from `first`, every third) into
  // weight_v<version>/name, with the XXH3-128 digest of the new tensor and, unless `sum` is nullopt, the
  // additive digest `sum` (by default the new tensor's true one). Returns the new tensor.
  byte_buffer write_native(uint64_t version, const std::string& file, size_t t, uint32_t first, uint32_t count,
                           std::optional<std::optional<digest128>> sum = std::nullopt,
                           std::optional<digest128> xxh = std::nullopt) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    byte_buffer now(store->data(t).begin(), store->data(t).end());
    for (uint32_t k = 0; k < count; ++k) {
      pos.push_back(first + 3 * k);
      vals.push_back(std::byte(0x11));
      vals.push_back(std::byte(0x3F));
      now[2 * (first + 3 * k)] = std::byte(0x11);
      now[2 * (first + 3 * k) + 1] = std::byte(0x3F);
    }
    const std::string name = "w" + std::to_string(t);
    delta_bucket_builder b(encoding::deltas);
    b.add({name, dtype::BF16, {50, 100}, pos, vals});
    native_fields nf;
    nf.base_version = file_base.value_or(version - 1);
    nf.records = true;
    nf.slime = slime_files;
    nf.tensor_digests[name] = xxh ? *xxh : xxh3_128(now);
    if (!sum) nf.tensor_sums[name] = sum_digest(now, 2);
    else if (*sum) nf.tensor_sums[name] = **sum;
    byte_buffer bytes = std::move(b.finish(version, 8, &nf)).value();
    fs::path vd = dir / ("weight_v" + std::string(6 - std::to_string(version).size(), '0') + std::to_string(version));
    fs::create_directories(vd);
    EXPECT_TRUE(io::write_file_atomic((vd / file).string(), bytes).ok());
    return now;
  }

  std::vector<byte_buffer> snapshot() {
    std::vector<byte_buffer> out;
    for (size_t i = 0; i < store->size(); ++i) out.emplace_back(store->data(i).begin(), store->data(i).end());
    return out;
  }
};

sync_request req(uint64_t v, uint64_t base, std::vector<std::string> files) {
  sync_request r;
  r.version = v;
  r.base_version = base;
  r.dir = "weight_v" + std::string(6 - std::to_string(v).size(), '0') + std::to_string(v);
  r.files = std::move(files);
  return r;
}

TEST(Receiver, CommitsAFewFilesAndCountsWhatItRead) {
  fixture f;
  auto a = f.write_delta(1, "rank0000_flush000000.safetensors", 0, 5, 100);
  auto b = f.write_delta(1, "rank0000_flush000001.safetensors", 2, 0, 1000);
  auto r = f.sync(req(1, 0, {"rank0000_flush000000.safetensors", "rank0000_flush000001.safetensors"}));
  ASSERT_TRUE(r.ok()) << r.err().describe();
  EXPECT_EQ(r->changed_elements, 1100u);
  EXPECT_EQ(r->bytes_read, a.size() + b.size());
  EXPECT_EQ(f.store->version(), 1u);
  EXPECT_EQ(load_le<uint16_t>(f.store->data(0).data() + 2 * 5), 0x3F11);
  EXPECT_EQ(f.store->data(1).size(), f.base[1].size());
  EXPECT_TRUE(std::equal(f.store->data(1).begin(), f.store->data(1).end(), f.base[1].begin()));
}

TEST(Receiver, AnInvalidSecondFileRollsBackTheFirst) {
  fixture f;
  f.write_delta(1, "a.safetensors", 0, 0, 500);
  auto bad = f.write_delta(1, "b.safetensors", 1, 0, 10);
  bad[bad.size() - 1] ^= std::byte(0xFF);  // flip a value byte: checksum mismatch
  ASSERT_TRUE(io::write_file_atomic((f.dir / "weight_v000001" / "b.safetensors").string(), bad).ok());
  auto before = f.snapshot();
  auto r = f.sync(req(1, 0, {"a.safetensors", "b.safetensors"}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(http_status_for(r.err()), 422u) << r.err().describe();
  EXPECT_NE(r.err().message.find("b.safetensors"), std::string::npos) << r.err().describe();
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->version(), 0u);
  // The same version with good files then commits.
  f.write_delta(1, "b.safetensors", 1, 0, 10);
  EXPECT_TRUE(f.sync(req(1, 0, {"a.safetensors", "b.safetensors"})).ok());
}

TEST(Receiver, ADigestMismatchAfterApplyRollsEverythingBack) {
  fixture f;
  std::vector<uint32_t> pos{1, 2, 3};
  byte_buffer vals(6, std::byte(0x42));
  delta_bucket_builder b(encoding::indices);
  b.add({"w0", dtype::BF16, {50, 100}, pos, vals});
  native_fields nf;
  nf.base_version = 0;
  nf.tensor_digests["w0"] = digest128{1, 2};  // not what w0 hashes to after the apply
  byte_buffer bytes = std::move(b.finish(1, 8, &nf)).value();
  fs::create_directories(f.dir / "weight_v000001");
  ASSERT_TRUE(io::write_file_atomic((f.dir / "weight_v000001" / "n.safetensors").string(), bytes).ok());
  auto before = f.snapshot();
  auto r = f.sync(req(1, 0, {"n.safetensors"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::delta_tensor_digest_mismatch)) << r.err().describe();
  EXPECT_EQ(http_status_for(r.err()), 422u);
  EXPECT_EQ(f.snapshot(), before);  // the apply happened and was undone
  EXPECT_EQ(f.store->version(), 0u);
}

TEST(Receiver, RefusesWithTheDocumentedStatus) {
  fixture f;
  f.write_delta(1, "a.safetensors", 0, 0, 5);
  auto before = f.snapshot();
  auto conflict = f.sync(req(1, 3, {"a.safetensors"}));
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(http_status_for(conflict.err()), 409u);
  auto missing = f.sync(req(1, 0, {"nope.safetensors"}));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(http_status_for(missing.err()), 404u);
  auto escape = f.sync(req(1, 0, {"../a.safetensors"}));
  ASSERT_FALSE(escape.ok());
  EXPECT_EQ(http_status_for(escape.err()), 403u);
  // A file for another version than the request's.
  f.write_delta(2, "a.safetensors", 0, 0, 5);
  sync_request wrong = req(2, 0, {"a.safetensors"});
  wrong.dir = "weight_v000002";
  wrong.version = 1;
  auto mismatch = f.sync(wrong);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_TRUE(mismatch.err().is(errc::delta_version_mismatch)) << mismatch.err().describe();
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->version(), 0u);
}

// The additive digest (tensor_sum128) checked in place of hashing: the sender's value (here the new
// tensor's, computed in full) agrees with what the store kept current while applying.
TEST(Receiver, TheAdditiveDigestOfANativeFileVerifiesTheApply) {
  fixture f;
  const byte_buffer now = f.write_native(1, "n.safetensors", 1, 4, 700);
  auto r = f.sync(req(1, 0, {"n.safetensors"}));
  ASSERT_TRUE(r.ok()) << r.err().describe();
  EXPECT_TRUE(std::equal(now.begin(), now.end(), f.store->data(1).begin()));
  EXPECT_EQ(f.store->sum(1), sum_digest(now, 2));
  EXPECT_EQ(f.store->sum(0), sum_digest(f.base[0], 2));
}

// A wrong additive digest (the XXH3-128 one right): refused, rolled back bit-identical, and the store's
// additive digests back where they were, so the next good sync verifies.
TEST(Receiver, AWrongAdditiveDigestIsRefusedAndRolledBack) {
  fixture f;
  const auto before = f.snapshot();
  const auto sum_before = f.store->sum(1);
  f.write_native(1, "n.safetensors", 1, 4, 700, std::optional<digest128>(digest128{5, 6}));
  auto r = f.sync(req(1, 0, {"n.safetensors"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::delta_tensor_digest_mismatch)) << r.err().describe();
  EXPECT_NE(r.err().message.find("tensor_sum128"), std::string::npos) << r.err().describe();
  EXPECT_EQ(http_status_for(r.err()), 422u);
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->sum(1), sum_before);
  EXPECT_EQ(f.store->version(), 0u);
  f.write_native(1, "n.safetensors", 1, 4, 700);
  EXPECT_TRUE(f.sync(req(1, 0, {"n.safetensors"})).ok());
}

// A corrupted value: the file's payload hash and checksum are consistent (the writer made them), but the
// value is not the one the sender's digests describe. The additive check catches it without hashing.
TEST(Receiver, ACorruptedValueFailsTheAdditiveDigest) {
  fixture f;
  const auto before = f.snapshot();
  byte_buffer intended(f.store->data(2).begin(), f.store->data(2).end());
  for (uint32_t k = 0; k < 50; ++k) {
    intended[2 * (3 * k)] = std::byte(0x11);
    intended[2 * (3 * k) + 1] = std::byte(0x3F);
  }
  intended[2 * 3 * 7] = std::byte(0x12);  // the sender meant another value for one element
  f.write_native(1, "n.safetensors", 2, 0, 50, std::optional<digest128>(sum_digest(intended, 2)), xxh3_128(intended));
  auto r = f.sync(req(1, 0, {"n.safetensors"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::delta_tensor_digest_mismatch)) << r.err().describe();
  EXPECT_NE(r.err().message.find("tensor_sum128"), std::string::npos) << r.err().describe();
  EXPECT_EQ(f.snapshot(), before);
}

// A native file without tensor_sum128 (written before the key existed) still verifies by XXH3-128: a good
// one commits (and the store's additive digest follows the apply), a wrong digest is refused.
TEST(Receiver, ANativeFileWithoutTheAdditiveDigestVerifiesByHash) {
  fixture f;
  const byte_buffer now = f.write_native(1, "n.safetensors", 0, 1, 300, std::optional<digest128>());
  auto r = f.sync(req(1, 0, {"n.safetensors"}));
  ASSERT_TRUE(r.ok()) << r.err().describe();
  EXPECT_EQ(f.store->sum(0), sum_digest(now, 2));
  const auto before = f.snapshot();
  f.write_native(2, "n.safetensors", 0, 2, 300, std::optional<digest128>(), digest128{1, 2});
  auto bad = f.sync(req(2, 1, {"n.safetensors"}));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.err().is(errc::delta_tensor_digest_mismatch)) << bad.err().describe();
  EXPECT_EQ(bad.err().message.find("tensor_sum128"), std::string::npos) << bad.err().describe();
  EXPECT_EQ(f.snapshot(), before);
}

// A slime file written by deltasync (`publish --format slime`) carries its base version and the new tensors'
// digests under deltasync_* keys: the receiver holds it to them as it holds a native file. A good one commits
// (reported as slime); one computed against another base is refused before anything is written; one whose
// digests the applied tensor does not match (by XXH3-128 or additive digest) is refused and rolled back.
TEST(Receiver, SlimeFilesAreVerifiedByTheClaimsTheyCarry) {
  fixture f;
  f.slime_files = true;
  const byte_buffer now = f.write_native(1, "s.safetensors", 1, 4, 700);
  auto ok = f.sync(req(1, 0, {"s.safetensors"}));
  ASSERT_TRUE(ok.ok()) << ok.err().describe();
  EXPECT_FALSE(ok->native);
  EXPECT_TRUE(std::equal(now.begin(), now.end(), f.store->data(1).begin()));
  EXPECT_EQ(f.store->sum(1), sum_digest(now, 2));

  const auto before = f.snapshot();
  f.file_base = 0;  // computed against version 0; the store holds 1
  f.write_native(2, "s.safetensors", 0, 1, 300);
  auto stale = f.sync(req(2, 1, {"s.safetensors"}));
  ASSERT_FALSE(stale.ok());
  EXPECT_TRUE(stale.err().is(errc::delta_version_mismatch)) << stale.err().describe();
  EXPECT_EQ(http_status_for(stale.err()), 422u);  // as a native file's: the file does not fit this store
  EXPECT_NE(stale.err().message.find("based on version 0"), std::string::npos) << stale.err().describe();
  EXPECT_EQ(f.snapshot(), before);
  f.file_base.reset();

  f.write_native(2, "s.safetensors", 0, 1, 300, std::optional<digest128>(), digest128{1, 2});
  auto by_hash = f.sync(req(2, 1, {"s.safetensors"}));
  ASSERT_FALSE(by_hash.ok());
  EXPECT_TRUE(by_hash.err().is(errc::delta_tensor_digest_mismatch)) << by_hash.err().describe();
  EXPECT_EQ(f.snapshot(), before);

  f.write_native(2, "s.safetensors", 2, 1, 300, std::optional<digest128>(digest128{5, 6}));
  auto by_sum = f.sync(req(2, 1, {"s.safetensors"}));
  ASSERT_FALSE(by_sum.ok());
  EXPECT_TRUE(by_sum.err().is(errc::delta_tensor_digest_mismatch)) << by_sum.err().describe();
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->version(), 1u);

  f.write_native(2, "s.safetensors", 2, 1, 300);
  EXPECT_TRUE(f.sync(req(2, 1, {"s.safetensors"})).ok());
}

// GET /checksums never makes a sync fail (issue 17 item 5): a sync that arrives while the pass hashes a
// tensor starts right after that one, and the answer is of the version after the sync, exact.
TEST(Receiver, ChecksumsYieldToASyncAndStayExact) {
  fixture f;
  f.write_delta(1, "a.safetensors", 0, 0, 100);
  f.write_delta(1, "b.safetensors", 2, 1, 100);
  std::promise<result<sync_stats>> synced;
  std::promise<result<receiver::checksums_result>> summed;
  f.loop.post([&] {
    f.rx->checksums([&](result<receiver::checksums_result> r) { summed.set_value(std::move(r)); });
    f.rx->start_sync(req(1, 0, {"a.safetensors", "b.safetensors"}),
                     [&](result<sync_stats> r) { synced.set_value(std::move(r)); });
  });
  auto s = synced.get_future().get();
  ASSERT_TRUE(s.ok()) << s.err().describe();  // not errc::busy
  auto c = summed.get_future().get();
  ASSERT_TRUE(c.ok()) << c.err().describe();
  EXPECT_EQ(c->version, 1u);
  ASSERT_EQ(c->digests.size(), f.store->size());
  for (size_t i = 0; i < f.store->size(); ++i) EXPECT_EQ(c->digests[i], xxh3_128(f.store->data(i))) << i;
  // Asked while a sync is in flight: waits for it, then answers for the new version.
  f.write_delta(2, "a.safetensors", 1, 3, 100);
  std::promise<result<sync_stats>> synced2;
  std::promise<result<receiver::checksums_result>> summed2;
  f.loop.post([&] {
    f.rx->start_sync(req(2, 1, {"a.safetensors"}), [&](result<sync_stats> r) { synced2.set_value(std::move(r)); });
    f.rx->checksums([&](result<receiver::checksums_result> r) { summed2.set_value(std::move(r)); });
  });
  ASSERT_TRUE(synced2.get_future().get().ok());
  auto c2 = summed2.get_future().get();
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->version, 2u);
  for (size_t i = 0; i < f.store->size(); ++i) EXPECT_EQ(c2->digests[i], xxh3_128(f.store->data(i))) << i;
}


// ---- a large param applied in slices (weight_store::applies_slices) ----

// Changes ~30% of "big" (and 100 elements of w0) at random positions, with one gap past 65535 when `wide`
// (uint32 gaps); returns the new tensor and writes the file (slime, or native/2 with additive digests).
byte_buffer write_big(fixture& f, uint64_t version, encoding enc, bool native, bool wide, uint64_t seed) {
  const uint32_t numel = static_cast<uint32_t>(f.store->tensor(3).numel);
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> pos;
  for (uint32_t i = 0; i < numel; ++i)
    if (rng() % 10 < 3 && !(wide && i > numel / 3 && i < numel / 3 + 70000)) pos.push_back(i);
  byte_buffer now(f.store->data(3).begin(), f.store->data(3).end());
  byte_buffer vals;
  for (uint32_t i : pos) {
    auto v = static_cast<uint16_t>(rng());
    if (v == load_le<uint16_t>(now.data() + 2 * uint64_t{i})) v ^= 1;  // a change changes (compact insists)
    vals.push_back(std::byte(v & 0xFF));
    vals.push_back(std::byte(v >> 8));
    store_le(now.data() + 2 * uint64_t{i}, v);
  }
  std::vector<uint32_t> small_pos;
  byte_buffer small_vals, small_now(f.store->data(0).begin(), f.store->data(0).end());
  for (uint32_t k = 0; k < 100; ++k) {
    small_pos.push_back(7 * k);
    small_vals.push_back(std::byte(0x11));
    small_vals.push_back(std::byte(0x3F));
    store_le(small_now.data() + 2 * (7 * k), uint16_t{0x3F11});
  }
  delta_bucket_builder b(enc);
  if (enc == encoding::compact) {  // coded against what the store holds
    auto old_at = [](byte_span t, const std::vector<uint32_t>& at) {
      byte_buffer out;
      for (uint32_t i : at) out.insert(out.end(), t.begin() + 2 * uint64_t{i}, t.begin() + 2 * uint64_t{i} + 2);
      return out;
    };
    b.add_compact({"w0", dtype::BF16, {50, 100}, small_pos, small_vals}, old_at(f.store->data(0), small_pos));
    b.add_compact({"big", dtype::BF16, {numel}, pos, vals}, old_at(f.store->data(3), pos));
  } else {
    b.add({"w0", dtype::BF16, {50, 100}, small_pos, small_vals});
    b.add({"big", dtype::BF16, {numel}, pos, vals});
  }
  native_fields nf;
  if (native) {
    nf.base_version = version - 1;
    nf.records = true;
    nf.tensor_digests["w0"] = xxh3_128(small_now);
    nf.tensor_digests["big"] = xxh3_128(now);
    nf.tensor_sums["w0"] = sum_digest(small_now, 2);
    nf.tensor_sums["big"] = sum_digest(now, 2);
  }
  byte_buffer bytes = std::move(b.finish(version, 8, native ? &nf : nullptr)).value();
  fs::path vd = f.dir / ("weight_v" + std::string(6 - std::to_string(version).size(), '0') + std::to_string(version));
  fs::create_directories(vd);
  EXPECT_TRUE(io::write_file_atomic((vd / "big.safetensors").string(), bytes).ok());
  return now;
}

// Bit-exact in every layout a slice can take (indices, 16- and 32-bit gaps, slime and native/2), the
// additive digest follows, and the split really happened.
TEST(ReceiverSlices, ALargeParamAppliesInSlicesBitExactly) {
  struct layout {
    encoding enc;
    bool native, wide;
  };
  for (layout l : {layout{encoding::indices, false, false}, layout{encoding::deltas, false, false},
                   layout{encoding::deltas, false, true}, layout{encoding::deltas, true, false},
                   layout{encoding::indices, true, true}, layout{encoding::compact, true, false},
                   layout{encoding::compact, true, true}}) {
    SCOPED_TRACE(testing::Message() << encoding_name(l.enc) << (l.native ? " native" : " slime") << (l.wide ? " wide" : ""));
    fixture f(4, 1u << 21);
    const byte_buffer now = write_big(f, 1, l.enc, l.native, l.wide, 3);
    auto r = f.sync(req(1, 0, {"big.safetensors"}));
    ASSERT_TRUE(r.ok()) << r.err().describe();
    EXPECT_EQ(r->split_params, 1u);
    EXPECT_TRUE(std::equal(now.begin(), now.end(), f.store->data(3).begin()));
    EXPECT_EQ(f.store->sum(3), sum_digest(now, 2));
    EXPECT_EQ(load_le<uint16_t>(f.store->data(0).data() + 2 * 7), 0x3F11);
  }
}

// A sync whose second file is bad rolls the sliced param back bit-identical, additive digest included.
TEST(ReceiverSlices, ARefusedSyncRollsTheSlicesBack) {
 for (const bool compact : {false, true}) {
  SCOPED_TRACE(compact ? "compact" : "deltas");
  fixture f(4, 1u << 21);
  const auto before = f.snapshot();
  const auto sum_before = f.store->sum(3);
  write_big(f, 1, compact ? encoding::compact : encoding::deltas, compact, true, 5);
  auto bad = f.write_delta(1, "z.safetensors", 1, 0, 10);
  bad[bad.size() - 1] ^= std::byte(0xFF);  // checksum mismatch
  ASSERT_TRUE(io::write_file_atomic((f.dir / "weight_v000001" / "z.safetensors").string(), bad).ok());
  auto r = f.sync(req(1, 0, {"big.safetensors", "z.safetensors"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::delta_checksum_mismatch)) << r.err().describe();
  EXPECT_EQ(f.snapshot(), before);
  EXPECT_EQ(f.store->sum(3), sum_before);
 }
}

// A file with a valid checksum whose positions are raw bytes (encoded_bucket: no writer checks), "big" only.
byte_buffer raw_file(encoding enc, uint32_t width, const byte_buffer& positions, uint32_t numel, uint64_t count) {
  encoded_bucket eb;
  eb.enc = enc;
  eb.current_version = 1;
  param_entry e;
  e.name = "big";
  e.shape = {numel};
  e.pos_start = 0;
  e.pos_end = positions.size();
  e.pos_width = width;
  e.val_start = 0;
  e.val_end = count;
  eb.params.push_back(e);
  const byte_buffer values(2 * count, std::byte{0x3F});
  eb.positions_bytes = positions.size();
  eb.value_count = count;
  eb.checksum = delta_checksum(positions, dtype::BF16, values);
  auto layout = build_delta_header(eb);
  EXPECT_TRUE(layout.ok()) << layout.err().describe();
  byte_buffer file = layout->header;
  const size_t data_start = file.size();
  file.insert(file.end(), positions.begin(), positions.end());
  file.resize(data_start + layout->data_offsets[1]);
  file.insert(file.end(), values.begin(), values.end());
  return file;
}

// A large param whose positions are bad is refused with the unsplit path's error, word for word (one worker
// never splits), and leaves the store as it was: indices out of range at the end and out of order in the
// middle, gaps that run past the end.
TEST(ReceiverSlices, BadPositionsAreRefusedAsWithoutSlices) {
  const uint32_t numel = 1u << 21;
  const uint64_t count = numel / 3;
  for (int kind = 0; kind < 3; ++kind) {
    SCOPED_TRACE(kind);
    byte_buffer pos;
    for (uint64_t k = 0; k < count; ++k) {
      if (kind == 2) {
        pos.push_back(std::byte{2});
        pos.push_back(std::byte{0});
      } else {
        uint32_t x = static_cast<uint32_t>(3 * k);
        if (kind == 0 && k == count - 1) x = numel + 5;          // past the end
        if (kind == 1 && k == count / 2 + 1) x = 3 * static_cast<uint32_t>(count / 2);  // repeats its predecessor
        for (int b = 0; b < 4; ++b) pos.push_back(std::byte((x >> (8 * b)) & 0xFF));
      }
    }
    if (kind == 2) store_le(pos.data() + 2 * (count / 2), uint16_t{0xFFFF});  // ... and then past the end
    std::string messages[2];
    for (size_t threads : {size_t{1}, size_t{4}}) {
      fixture f(threads, numel);
      const auto before = f.snapshot();
      const byte_buffer file = raw_file(kind == 2 ? encoding::deltas : encoding::indices, kind == 2 ? 2 : 4, pos, numel, count);
      fs::create_directories(f.dir / "weight_v000001");
      ASSERT_TRUE(io::write_file_atomic((f.dir / "weight_v000001" / "big.safetensors").string(), file).ok());
      auto r = f.sync(req(1, 0, {"big.safetensors"}));
      ASSERT_FALSE(r.ok());
      const std::string text = r.err().describe();
      messages[threads == 1 ? 0 : 1] = text.substr(text.find("weight_v"));  // each fixture has its own dir
      EXPECT_EQ(f.snapshot(), before);
    }
    EXPECT_EQ(messages[0], messages[1]);
    EXPECT_NE(messages[0].find(kind == 1 ? "ascend" : "past"), std::string::npos) << messages[0];
  }
}

// A compact param whose stream is malformed in a middle block (a valid payload hash over it: the sender's
// bytes, not the wire) is refused with the unsplit path's message, and the runs applied before the fault was
// found are rolled back.
TEST(ReceiverSlices, AMalformedCompactBlockIsRefusedAsWithoutSlices) {
  const uint32_t numel = 1u << 21;
  std::string messages[2];
  for (size_t threads : {size_t{1}, size_t{4}}) {
    fixture f(threads, numel);
    const auto before = f.snapshot();
    std::mt19937_64 rng(12);
    std::vector<uint32_t> pos;
    for (uint32_t i = 0; i < numel; ++i)
      if (rng() % 10 < 3) pos.push_back(i);
    byte_buffer old_v, new_v;
    for (uint32_t i : pos) {
      const byte_span t = f.store->data(3);
      old_v.insert(old_v.end(), t.begin() + 2 * uint64_t{i}, t.begin() + 2 * uint64_t{i} + 2);
      new_v.push_back(t[2 * uint64_t{i}] ^ std::byte{1});  // one ulp's worth of bits away
      new_v.push_back(t[2 * uint64_t{i} + 1]);
    }
    byte_buffer stream;
    compact::encode(pos, old_v, new_v, 2, stream);
    auto info = compact::read_header(stream, pos.size(), 2);
    ASSERT_TRUE(info.ok());
    const uint32_t bad_block = info->blocks / 2 + 1;
    size_t at = info->dir_offset + compact::kDirEntryBytes * info->blocks;
    for (uint32_t b = 0; b < bad_block; ++b)
      at += load_le<uint32_t>(stream.data() + info->dir_offset + compact::kDirEntryBytes * b + 4);
    stream[at + 1 + 2 * compact::kLanesPerBlock + 2] = std::byte{0};  // lane 0's rANS state below 2^16
    delta_bucket_builder b(encoding::compact);
    b.add_compact_stream("big", dtype::BF16, {numel}, pos.size(), stream);
    native_fields nf;  // an additive digest: what makes the param eligible for slices
    nf.base_version = 0;
    nf.records = true;
    nf.tensor_digests["big"] = {};
    nf.tensor_sums["big"] = sum_digest(f.store->data(3), 2);
    auto file = b.finish(1, 8, &nf);
    ASSERT_TRUE(file.ok()) << file.err().describe();
    fs::create_directories(f.dir / "weight_v000001");
    ASSERT_TRUE(io::write_file_atomic((f.dir / "weight_v000001" / "big.safetensors").string(), *file).ok());
    auto r = f.sync(req(1, 0, {"big.safetensors"}));
    ASSERT_FALSE(r.ok());
    const std::string text = r.err().describe();
    messages[threads == 1 ? 0 : 1] = text.substr(text.find("weight_v"));
    EXPECT_EQ(f.snapshot(), before);
  }
  EXPECT_EQ(messages[0], messages[1]);
  EXPECT_NE(messages[0].find("lane 0 starts in a rANS state below 2^16"), std::string::npos) << messages[0];
}

}  // namespace
}  // namespace deltasync
