// Tests for the host weight store and the checkpoint loader: every checkpoint form and its errors, the
// synthetic model, transactional apply + rollback, refusals that leave tensors untouched, export, digests.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "codec/safetensors.h"
#include "io/sync_io.h"
#include "sync/checkpoint_loader.h"
#include "sync/synthetic_model.h"
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
    std::string tmpl = (fs::temp_directory_path() / "ds_weight_store_XXXXXX").string();
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

struct test_tensor {
  std::string name;
  dtype type;
  std::vector<uint64_t> shape;
  byte_buffer bytes;
};

test_tensor make_tensor(std::mt19937_64& rng, std::string name, dtype type, std::vector<uint64_t> shape) {
  uint64_t numel = 1;
  for (uint64_t d : shape) numel *= d;
  uint64_t nbytes = 0;
  EXPECT_TRUE(tensor_bytes(type, numel, nbytes));
  byte_buffer b(nbytes);
  for (auto& x : b) x = static_cast<std::byte>(rng());
  return {std::move(name), type, std::move(shape), std::move(b)};
}

void write_st(const std::string& path, const std::vector<test_tensor>& tensors) {
  std::vector<tensor_data> data;
  for (const auto& t : tensors) data.push_back({tensor_spec{t.name, t.type, t.shape, t.bytes.size()}, t.bytes});
  auto file = write_safetensors(data, {{"format", "pt"}});
  ASSERT_TRUE(file.ok()) << file.err().describe();
  auto st = io::write_file_atomic(path, *file);
  ASSERT_TRUE(st.ok()) << st.err().describe();
}

void write_text(const std::string& path, const std::string& text) {
  auto st = io::write_file_atomic(path, as_bytes(text));
  ASSERT_TRUE(st.ok()) << st.err().describe();
}

// Checks that the store holds exactly `expected`, in order.
void expect_store_holds(host_weight_store& store, const std::vector<test_tensor>& expected) {
  ASSERT_EQ(store.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const store_tensor& t = store.tensor(i);
    EXPECT_EQ(t.name, expected[i].name);
    EXPECT_EQ(t.type, expected[i].type) << t.name;
    EXPECT_EQ(t.shape, expected[i].shape) << t.name;
    EXPECT_EQ(t.nbytes, expected[i].bytes.size()) << t.name;
    ASSERT_EQ(store.data(i).size(), expected[i].bytes.size()) << t.name;
    EXPECT_TRUE(std::equal(store.data(i).begin(), store.data(i).end(), expected[i].bytes.begin())) << t.name;
    EXPECT_EQ(store.find(t.name), i);
    EXPECT_EQ(store.digest(i), xxh3_128(expected[i].bytes)) << t.name;
  }
}

// A two-shard HF checkpoint: shard 1 holds a, b; shard 2 holds c.
struct sharded_fixture {
  temp_dir dir;
  std::vector<test_tensor> shard1, shard2;
  std::string index_json;

  explicit sharded_fixture(uint64_t seed) {
    std::mt19937_64 rng(seed);
    shard1 = {make_tensor(rng, "model.a.weight", dtype::BF16, {4, 8}), make_tensor(rng, "model.b.bias", dtype::F32, {8})};
    shard2 = {make_tensor(rng, "lm_head.weight", dtype::BF16, {3, 5})};
    index_json = R"({"metadata": {"total_size": 162}, "weight_map": {
        "model.a.weight": "model-00001-of-00002.safetensors",
        "model.b.bias": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}})";
  }
  void write_all() {
    write_st(dir.file("model-00001-of-00002.safetensors"), shard1);
    write_st(dir.file("model-00002-of-00002.safetensors"), shard2);
    write_text(dir.file("model.safetensors.index.json"), index_json);
  }
  std::vector<test_tensor> all() const {
    std::vector<test_tensor> out = shard1;
    out.insert(out.end(), shard2.begin(), shard2.end());
    return out;
  }
};

TEST(CheckpointLoader, LoadsSingleFileAndDirectoryWithModelSafetensors) {
  std::mt19937_64 rng(test_seed());
  temp_dir dir;
  std::vector<test_tensor> tensors = {
      make_tensor(rng, "embed", dtype::BF16, {16, 4}), make_tensor(rng, "scale", dtype::F32, {}),
      make_tensor(rng, "empty", dtype::F16, {0, 7}), make_tensor(rng, "mask", dtype::BOOL, {5}),
      make_tensor(rng, "packed", dtype::F4, {2, 4}),  // sub-byte: loads, never delta-applied
  };
  write_st(dir.file("weights.safetensors"), tensors);
  auto a = host_weight_store::load(dir.file("weights.safetensors"));
  ASSERT_TRUE(a.ok()) << a.err().describe();
  expect_store_holds(**a, tensors);
  EXPECT_EQ((*a)->tensor(1).numel, 1u);
  EXPECT_EQ((*a)->tensor(4).numel, 8u);
  EXPECT_EQ((*a)->tensor(4).nbytes, 4u);
  EXPECT_EQ((*a)->kind(), "host");
  EXPECT_EQ((*a)->version(), 0u);

  fs::rename(dir.file("weights.safetensors"), dir.file("model.safetensors"));
  auto b = host_weight_store::load(dir.path());
  ASSERT_TRUE(b.ok()) << b.err().describe();
  expect_store_holds(**b, tensors);
}

TEST(CheckpointLoader, LoadsShardedDirectoryAndIndexFile) {
  sharded_fixture fx(test_seed());
  fx.write_all();
  auto a = host_weight_store::load(fx.dir.path());
  ASSERT_TRUE(a.ok()) << a.err().describe();
  expect_store_holds(**a, fx.all());  // shards in name order, each in offset order
  auto b = load_checkpoint(fx.dir.file("model.safetensors.index.json"));
  ASSERT_TRUE(b.ok()) << b.err().describe();
  ASSERT_EQ(b->size(), 3u);
  EXPECT_EQ((*b)[2].desc.name, "lm_head.weight");
  EXPECT_TRUE(std::equal((*b)[2].bytes.begin(), (*b)[2].bytes.end(), fx.shard2[0].bytes.begin(),
                         fx.shard2[0].bytes.end()));
}

void expect_error(const std::string& path, errc code, std::vector<std::string> mentions) {
  auto r = host_weight_store::load(path);
  ASSERT_FALSE(r.ok()) << "loaded " << path;
  EXPECT_TRUE(r.err().is(code)) << r.err().describe();
  for (const auto& m : mentions) EXPECT_NE(r.err().message.find(m), std::string::npos) << r.err().describe();
}

TEST(CheckpointLoader, MissingPathsAreNotFound) {
  temp_dir dir;
  expect_error(dir.file("nope.safetensors"), errc::not_found, {"nope.safetensors"});
  expect_error(dir.path(), errc::not_found, {"model.safetensors"});  // an empty directory
}

TEST(CheckpointLoader, MissingShardIsNotFound) {
  sharded_fixture fx(test_seed());
  fx.write_all();
  fs::remove(fx.dir.file("model-00002-of-00002.safetensors"));
  expect_error(fx.dir.path(), errc::not_found, {"model-00002-of-00002.safetensors", "lm_head.weight"});
}

TEST(CheckpointLoader, TensorMissingFromItsShard) {
  sharded_fixture fx(test_seed());
  fx.index_json = R"({"weight_map": {"model.a.weight": "model-00001-of-00002.safetensors",
      "model.b.bias": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors",
      "model.ghost": "model-00002-of-00002.safetensors"}})";
  fx.write_all();
  expect_error(fx.dir.path(), errc::invalid_argument, {"model.ghost", "model-00002-of-00002.safetensors"});
}

TEST(CheckpointLoader, DuplicateTensorAcrossShards) {
  sharded_fixture fx(test_seed());
  fx.shard2.push_back(fx.shard1[1]);  // model.b.bias in both shards
  fx.write_all();
  expect_error(fx.dir.path(), errc::invalid_argument,
               {"model.b.bias", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST(CheckpointLoader, TensorNotInIndexIsRefused) {
  sharded_fixture fx(test_seed());
  std::mt19937_64 rng(1);
  fx.shard2.push_back(make_tensor(rng, "stray", dtype::BF16, {2}));
  fx.write_all();
  expect_error(fx.dir.path(), errc::invalid_argument, {"stray", "not listed"});
}

TEST(CheckpointLoader, MalformedIndexIsInvalidArgument) {
  sharded_fixture fx(test_seed());
  fx.write_all();
  const std::string index = fx.dir.file("model.safetensors.index.json");
  for (const char* text : {"{not json", "[]", R"({"metadata": {}})", R"({"weight_map": []})",
                           R"({"weight_map": {"model.a.weight": 7}})",
                           R"({"weight_map": {"model.a.weight": "../outside.safetensors"}})",
                           R"({"weight_map": {"model.a.weight": "/etc/passwd"}})"}) {
    write_text(index, text);
    SCOPED_TRACE(text);
    expect_error(fx.dir.path(), errc::invalid_argument, {"model.safetensors.index.json"});
  }
}

TEST(CheckpointLoader, CorruptFileReportsTheContainerCode) {
  std::mt19937_64 rng(test_seed());
  temp_dir dir;
  write_st(dir.file("model.safetensors"), {make_tensor(rng, "w", dtype::BF16, {64})});
  auto bytes = io::read_file_all(dir.file("model.safetensors"), 1 << 20);
  ASSERT_TRUE(bytes.ok());
  auto check_st_code = [&](const byte_buffer& file, const char* what) {
    SCOPED_TRACE(what);
    write_text(dir.file("model.safetensors"), std::string(as_chars(file)));
    auto r = host_weight_store::load(dir.path());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(&r.err().code.category(), &deltasync_category());
    EXPECT_GE(r.err().code.value(), static_cast<int>(errc::st_too_small)) << r.err().describe();
    EXPECT_LT(r.err().code.value(), static_cast<int>(errc::zstd_not_a_frame)) << r.err().describe();
    EXPECT_NE(r.err().message.find("model.safetensors"), std::string::npos) << r.err().describe();
  };
  byte_buffer truncated(bytes->begin(), bytes->end() - 1);
  check_st_code(truncated, "truncated");
  byte_buffer tiny(bytes->begin(), bytes->begin() + 5);
  check_st_code(tiny, "too small");
  byte_buffer bad_json = *bytes;
  bad_json[8] = std::byte{'['};
  check_st_code(bad_json, "header not an object");
}

TEST(CheckpointLoader, LimitsAreEnforced) {
  std::mt19937_64 rng(test_seed());
  temp_dir dir;
  write_st(dir.file("m.safetensors"), {make_tensor(rng, "a", dtype::U8, {100}), make_tensor(rng, "b", dtype::U8, {1})});
  checkpoint_limits small_file;
  small_file.max_file_bytes = 64;
  auto a = load_checkpoint(dir.file("m.safetensors"), small_file);
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(a.err().is(errc::limit_exceeded)) << a.err().describe();
  checkpoint_limits few_tensors;
  few_tensors.max_tensors = 1;
  auto b = load_checkpoint(dir.file("m.safetensors"), few_tensors);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.err().is(errc::limit_exceeded)) << b.err().describe();
}

TEST(WeightStore, SyntheticEqualsTrainerInitialView) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  auto store = host_weight_store::synthetic("tiny", seed);
  ASSERT_TRUE(store.ok()) << store.err().describe();
  auto layout = synthetic_model("tiny");
  ASSERT_TRUE(layout.ok());
  rl_trainer_sim sim(*layout, seed, 1);  // a different thread count gives the same weights
  ASSERT_EQ((*store)->size(), sim.tensor_count());
  for (size_t i = 0; i < sim.tensor_count(); ++i) {
    const store_tensor& t = (*store)->tensor(i);
    EXPECT_EQ(t.name, layout->tensors[i].name);
    EXPECT_EQ(t.shape, layout->tensors[i].shape);
    EXPECT_EQ(t.type, dtype::BF16);
    ASSERT_EQ((*store)->data(i).size(), sim.bf16(i).size());
    EXPECT_EQ(std::memcmp((*store)->data(i).data(), sim.bf16(i).data(), sim.bf16(i).size()), 0) << t.name;
  }
  EXPECT_FALSE(host_weight_store::synthetic("no-such-model", seed).ok());
}

// The delta files carrying one trainer step of every tensor (one bucket: all tensors are BF16).
result<byte_buffer> step_delta(const host_weight_store& store, const rl_trainer_sim& sim, encoding enc) {
  delta_bucket_builder builder(enc);
  std::vector<std::vector<uint32_t>> positions(sim.tensor_count());
  std::vector<byte_buffer> values(sim.tensor_count());
  for (size_t i = 0; i < sim.tensor_count(); ++i) {
    diff_tensor(store.data(i), sim.bf16(i), 2, positions[i], values[i]);
    builder.add({sim.layout().tensors[i].name, dtype::BF16, sim.layout().tensors[i].shape, positions[i], values[i]});
  }
  return builder.finish(1);
}

std::vector<byte_buffer> snapshot(const host_weight_store& store) {
  std::vector<byte_buffer> out;
  for (size_t i = 0; i < store.size(); ++i) out.emplace_back(store.data(i).begin(), store.data(i).end());
  return out;
}

TEST(WeightStore, ApplyThenRollbackRestoresBitIdenticalBytesAndDigests) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  auto layout = synthetic_model("tiny");
  ASSERT_TRUE(layout.ok());
  for (encoding enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd}) {
    SCOPED_TRACE(std::string(encoding_name(enc)));
    auto store_r = host_weight_store::synthetic("tiny", seed);
    ASSERT_TRUE(store_r.ok());
    host_weight_store& store = **store_r;
    const std::vector<byte_buffer> before = snapshot(store);
    std::vector<digest128> before_digests;
    for (size_t i = 0; i < store.size(); ++i) before_digests.push_back(store.digest(i));  // fills the cache

    rl_trainer_sim sim(*layout, seed, 2);
    sim.step(1e-4);
    auto bytes = step_delta(store, sim, enc);
    ASSERT_TRUE(bytes.ok()) << bytes.err().describe();
    auto file = parse_delta_file(*bytes);
    ASSERT_TRUE(file.ok()) << file.err().describe();
    ASSERT_FALSE(file->manifest.params.empty());

    undo_log undo;
    uint64_t undo_bytes = 0;  // the encoded positions plus the overwritten bf16 values
    for (const param_entry& p : file->manifest.params) {
      auto i = store.find(p.name);
      ASSERT_TRUE(i.has_value()) << p.name;
      auto st = store.apply(*i, *file, p, undo);
      ASSERT_TRUE(st.ok()) << st.err().describe();
      undo_bytes += (p.pos_end - p.pos_start) + p.changed() * 2;
    }
    EXPECT_EQ(undo.bytes(), undo_bytes);
    for (size_t i = 0; i < store.size(); ++i) {
      ASSERT_EQ(std::memcmp(store.data(i).data(), sim.bf16(i).data(), sim.bf16(i).size()), 0) << store.tensor(i).name;
      EXPECT_EQ(store.digest(i), xxh3_128(sim.bf16(i))) << "stale digest cache for " << store.tensor(i).name;
    }

    store.rollback(undo);
    EXPECT_TRUE(undo.records().empty());
    EXPECT_EQ(undo.bytes(), 0u);
    for (size_t i = 0; i < store.size(); ++i) {
      EXPECT_EQ(byte_buffer(store.data(i).begin(), store.data(i).end()), before[i]) << store.tensor(i).name;
      EXPECT_EQ(store.digest(i), before_digests[i]) << store.tensor(i).name;
    }
  }
}

// A store of one BF16 tensor "w" [8, 16], and a delta file changing `count` elements of a tensor "w" of the
// given dtype and shape.
struct one_tensor_case {
  std::unique_ptr<host_weight_store> store;
  byte_buffer file_bytes;
  delta_file file;
};

one_tensor_case make_case(dtype delta_type, std::vector<uint64_t> delta_shape, uint32_t count) {
  std::mt19937_64 rng(42);
  test_tensor w = make_tensor(rng, "w", dtype::BF16, {8, 16});
  one_tensor_case c;
  c.store = host_weight_store::from_tensors({{store_tensor{"w", dtype::BF16, {8, 16}, 128, 256}, w.bytes}});
  std::vector<uint32_t> pos;
  for (uint32_t k = 0; k < count; ++k) pos.push_back(k * 3);
  byte_buffer vals(count * element_bytes(delta_type), std::byte{0x3C});
  delta_bucket_builder b(encoding::deltas);
  b.add({"w", delta_type, std::move(delta_shape), pos, vals});
  auto bytes = b.finish(1);
  EXPECT_TRUE(bytes.ok());
  c.file_bytes = std::move(*bytes);
  auto f = parse_delta_file(c.file_bytes);
  EXPECT_TRUE(f.ok()) << f.err().describe();
  c.file = std::move(*f);
  return c;
}

void expect_refused(one_tensor_case& c, undo_log& undo, errc code) {
  const byte_buffer before(c.store->data(0).begin(), c.store->data(0).end());
  const digest128 d = c.store->digest(0);
  const size_t records = undo.records().size();
  const uint64_t undo_bytes = undo.bytes();
  auto st = c.store->apply(0, c.file, c.file.manifest.params.at(0), undo);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(code)) << st.err().describe();
  EXPECT_NE(st.err().message.find("\"w\""), std::string::npos) << st.err().describe();
  EXPECT_EQ(byte_buffer(c.store->data(0).begin(), c.store->data(0).end()), before);
  EXPECT_EQ(c.store->digest(0), d);
  EXPECT_EQ(undo.records().size(), records);  // nothing recorded for a refused apply
  EXPECT_EQ(undo.bytes(), undo_bytes);
}

TEST(WeightStore, DtypeOrShapeMismatchLeavesTensorUntouched) {
  undo_log undo;
  auto dtype_case = make_case(dtype::F16, {8, 16}, 10);
  expect_refused(dtype_case, undo, errc::delta_dtype_mismatch);
  auto shape_case = make_case(dtype::BF16, {16, 8}, 10);
  expect_refused(shape_case, undo, errc::delta_shape_mismatch);
  auto flat_case = make_case(dtype::BF16, {128}, 10);
  expect_refused(flat_case, undo, errc::delta_shape_mismatch);
}

TEST(WeightStore, SubByteTensorsLoadButCannotBeApplied) {
  std::mt19937_64 rng(3);
  test_tensor packed = make_tensor(rng, "w", dtype::F4, {8, 16});
  auto c = make_case(dtype::BF16, {8, 16}, 4);
  c.store = host_weight_store::from_tensors({{store_tensor{"w", dtype::F4, {8, 16}, 128, 64}, packed.bytes}});
  undo_log undo;
  expect_refused(c, undo, errc::delta_dtype_mismatch);
}

TEST(WeightStore, UndoLimitRefusesBeforeWriting) {
  auto c = make_case(dtype::BF16, {8, 16}, 10);  // needs 10 x (2 + 2) = 40 undo bytes (uint16 gaps + bf16)
  undo_log tight(39);
  expect_refused(c, tight, errc::limit_exceeded);
  undo_log exact(40);
  auto st = c.store->apply(0, c.file, c.file.manifest.params.at(0), exact);
  ASSERT_TRUE(st.ok()) << st.err().describe();
  EXPECT_EQ(exact.bytes(), 40u);
  ASSERT_EQ(exact.records().size(), 1u);
  EXPECT_EQ(exact.records()[0].encoded_positions.size(), 20u);
  EXPECT_EQ(exact.records()[0].old_values.size(), 20u);
  // Applying the same param again would need 40 more bytes.
  expect_refused(c, exact, errc::limit_exceeded);
}

TEST(WeightStore, ExportThenLoadGivesIdenticalTensorsAndDigests) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("DS_TEST_SEED=" + std::to_string(seed));
  sharded_fixture fx(seed);
  fx.write_all();
  auto a = host_weight_store::load(fx.dir.path());
  ASSERT_TRUE(a.ok()) << a.err().describe();
  const std::string out = fx.dir.file("export.safetensors");
  auto st = (*a)->export_safetensors(out);
  ASSERT_TRUE(st.ok()) << st.err().describe();
  auto b = host_weight_store::load(out);
  ASSERT_TRUE(b.ok()) << b.err().describe();
  expect_store_holds(**b, fx.all());  // same order as the load
  for (size_t i = 0; i < (*a)->size(); ++i) EXPECT_EQ((*a)->digest(i), (*b)->digest(i));

  auto synth = host_weight_store::synthetic("tiny", seed);
  ASSERT_TRUE(synth.ok());
  ASSERT_TRUE((*synth)->export_safetensors(out).ok());
  auto back = host_weight_store::load(out);
  ASSERT_TRUE(back.ok()) << back.err().describe();
  ASSERT_EQ((*back)->size(), (*synth)->size());
  EXPECT_EQ((*back)->total_bytes(), (*synth)->total_bytes());
  for (size_t i = 0; i < (*synth)->size(); ++i) {
    EXPECT_EQ((*back)->tensor(i).name, (*synth)->tensor(i).name);
    EXPECT_EQ((*back)->digest(i), (*synth)->digest(i));
  }
}

TEST(WeightStore, DigestIsXxh3_128OfTheBytesAndReadCopiesThem) {
  const std::string_view text = "deltasync";
  byte_buffer bytes(as_bytes(text).begin(), as_bytes(text).end());
  auto store = host_weight_store::from_tensors({{store_tensor{"t", dtype::U8, {9}, 9, 9}, bytes}});
  EXPECT_EQ(to_hex(store->digest(0)), "d69edd92b3a2aede11601c10a5e0d34e");  // xxhsum -H2
  EXPECT_EQ(store->total_bytes(), 9u);
  EXPECT_FALSE(store->find("missing").has_value());
  byte_buffer out(9);
  ASSERT_TRUE(store->read(0, out).ok());
  EXPECT_EQ(out, bytes);
  byte_buffer wrong(8);
  auto st = store->read(0, wrong);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.err().is(errc::invalid_argument));
}

}  // namespace
}  // namespace deltasync
