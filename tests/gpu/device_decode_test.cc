// The device decode (sync/device_apply.h, gpu::decode_scatter): the same files applied by the host store,
// by the cuda store decoding on the device, by the cuda store decoding on the host (the previous path) and by
// the borrowed store over device memory give the same bytes, for every encoding (indices, deltas with 2- and
// 4-byte gaps, deltas_zstd, compact), layout (slime, native/1, native/2 records) and dtype; every refusal
// gives the previous path's error code and text and, after the rollback of the params applied before it,
// leaves the tensors bit-identical; undo records stay in device memory (or fall back to the host).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/diff.h"
#include "gpu/kernels.h"
#include "gpu_test_util.h"
#include "sync/borrowed_weight_store.h"
#include "sync/cuda_weight_store.h"
#include "sync/device_apply.h"

namespace deltasync {
namespace {

using gpu::testing::download;
using gpu::testing::random_bytes;
using gpu::testing::upload;

struct tensor_pair {
  std::string name;
  dtype type;
  std::vector<uint64_t> shape;
  byte_buffer before, now;
  uint64_t numel() const {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return n;
  }
};

// Changes element k of t (a bit of its first byte, so every dtype sees a new value; for floats that may be a
// NaN or an inf: they must move bit for bit).
void change(tensor_pair& t, uint64_t k) { t.now[k * element_bytes(t.type)] ^= std::byte{0x40}; }

// Tensors of one dtype: random density, 100% density, gaps past 65535 (4-byte deltas), no change, one element.
std::vector<tensor_pair> make_tensors(dtype type, std::mt19937_64& rng, double density, const std::string& prefix) {
  const uint32_t eb = element_bytes(type);
  std::vector<tensor_pair> out;
  auto add = [&](std::vector<uint64_t> shape) {
    tensor_pair t{prefix + std::to_string(out.size()), type, std::move(shape), {}, {}};
    t.before = random_bytes(t.numel() * eb, rng);
    t.now = t.before;
    out.push_back(std::move(t));
    return &out.back();
  };
  tensor_pair* a = add({700, 300});
  for (uint64_t k = 0; k < a->numel(); ++k)
    if (std::uniform_real_distribution<double>(0, 1)(rng) < density) change(*a, k);
  tensor_pair* full = add({513});
  for (uint64_t k = 0; k < full->numel(); ++k) change(*full, k);
  tensor_pair* sparse = add({3, 100000});
  for (uint64_t k : {uint64_t{5}, uint64_t{70010}, uint64_t{299999}}) change(*sparse, k);
  add({64});  // unchanged: absent from the file
  tensor_pair* one = add({1});
  change(*one, 0);
  return out;
}

loaded_tensors as_loaded(const std::vector<tensor_pair>& ts) {
  loaded_tensors out;
  for (const auto& t : ts) out.add(store_tensor{t.name, t.type, t.shape, t.numel(), t.before.size()}, t.before);
  return out;
}

struct file_kind {
  encoding enc;
  int layout;  // 0 slime, 1 native/1, 2 native/2 (records)
  std::string label() const {
    static const char* names[] = {"slime", "native/1", "native/2"};
    return std::string(encoding_name(enc)) + " " + names[layout];
  }
};

byte_buffer build_file(const std::vector<tensor_pair>& ts, file_kind k) {
  delta_bucket_builder b(k.enc);
  native_fields nf;
  nf.base_version = 0;
  nf.records = k.layout == 2;
  for (const auto& t : ts) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    diff_tensor(t.before, t.now, element_bytes(t.type), pos, vals);
    if (pos.empty()) continue;
    nf.tensor_digests[t.name] = xxh3_128(t.now);
    EXPECT_TRUE(b.can_add(t.type));
    const param_delta p{t.name, t.type, t.shape, pos, vals};
    if (k.enc == encoding::compact) {
      byte_buffer old;
      const uint32_t eb = element_bytes(t.type);
      for (uint32_t q : pos) old.insert(old.end(), t.before.begin() + q * eb, t.before.begin() + (q + 1) * eb);
      b.add_compact(p, old);
    } else {
      b.add(p);
    }
  }
  auto f = b.finish(1, 64, k.layout == 0 ? nullptr : &nf);
  EXPECT_TRUE(f.ok()) << k.label() << ": " << (f.ok() ? "" : f.err().message);
  return std::move(f).value();
}

// The stores under test over the same base tensors.
struct stores {
  std::unique_ptr<host_weight_store> host;
  std::unique_ptr<cuda_weight_store> device, host_decode;
  std::vector<gpu::device_buffer> borrowed_mem;
  std::unique_ptr<borrowed_weight_store> borrowed;
  std::vector<weight_store*> gpu_stores() { return {device.get(), host_decode.get(), borrowed.get()}; }
};

stores make_stores(const std::vector<tensor_pair>& ts) {
  stores s;
  s.host = host_weight_store::from_tensors(as_loaded(ts));
  s.device = std::move(cuda_weight_store::from_tensors(as_loaded(ts), 0)).value();
  s.host_decode = std::move(cuda_weight_store::from_tensors(as_loaded(ts), 0)).value();
  device_apply_options o;
  o.host_decode = true;
  s.host_decode->engine().set_options(o);
  gpu::stream st;
  std::vector<borrowed_tensor> bt;
  for (const auto& t : ts) {
    s.borrowed_mem.push_back(upload(t.before, st));
    bt.push_back({store_tensor{t.name, t.type, t.shape, t.numel(), t.before.size()}, s.borrowed_mem.back().data(), 0});
  }
  s.borrowed = std::move(borrowed_weight_store::create(std::move(bt))).value();
  return s;
}

byte_buffer read_all(const weight_store& s, size_t i) {
  byte_buffer out(s.tensor(i).nbytes);
  EXPECT_TRUE(s.read(i, out).ok());
  return out;
}

void expect_tensors(const weight_store& s, const std::vector<tensor_pair>& ts, bool after, const std::string& label) {
  for (size_t i = 0; i < ts.size(); ++i) {
    const size_t at = *s.find(ts[i].name);
    EXPECT_TRUE(read_all(s, at) == (after ? ts[i].now : ts[i].before))
        << label << " (" << s.kind() << "): tensor " << ts[i].name << (after ? " after apply" : " after rollback");
  }
}

// Applies every param of f in order; the first error, if any.
status apply_file(weight_store& s, const delta_file& f, undo_log& undo) {
  for (const auto& p : f.manifest.params) DS_TRY_STATUS(s.apply(*s.find(p.name), f, p, undo));
  return {};
}

const std::vector<dtype> kDtypes = {dtype::BF16, dtype::F16, dtype::F32, dtype::F64,
                                    dtype::U8,   dtype::I16, dtype::I32, dtype::I64};

TEST(device_decode, every_encoding_layout_and_dtype_applies_bit_exact_and_rolls_back) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(1401);
  for (dtype type : kDtypes) {
    const auto ts = make_tensors(type, rng, 0.012, "t.");
    for (encoding enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd, encoding::compact}) {
      for (int layout : {0, 1, 2}) {
        if (enc == encoding::compact && layout != 1) continue;   // compact: native/1 only
        if (enc == encoding::deltas_zstd && layout == 2) continue;  // the records layout is never zstd-wrapped
        const file_kind k{enc, layout};
        const std::string label = std::string(name(type)) + " " + k.label();
        const byte_buffer bytes = build_file(ts, k);
        auto f = parse_delta_file(bytes);
        ASSERT_TRUE(f.ok()) << label << ": " << f.err().message;
        stores s = make_stores(ts);
        undo_log hu;
        ASSERT_TRUE(apply_file(*s.host, *f, hu).ok()) << label;
        expect_tensors(*s.host, ts, true, label);
        for (weight_store* g : s.gpu_stores()) {
          undo_log u;
          auto st = apply_file(*g, *f, u);
          ASSERT_TRUE(st.ok()) << label << ": " << st.err().message;
          EXPECT_EQ(u.bytes(), hu.bytes()) << label << ": the undo log counts other bytes than the host store's";
          expect_tensors(*g, ts, true, label);
          for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(g->digest(i), xxh3_128(ts[i].now)) << label;
          g->rollback(u);
          expect_tensors(*g, ts, false, label);
        }
      }
    }
  }
}

TEST(device_decode, a_promoted_values_tensor_is_cast_back_exactly) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(1402);
  // BF16 and F32 params in one bucket: __values__ is F32 and the BF16 values are cast back on the device.
  auto ts = make_tensors(dtype::F32, rng, 0.02, "f.");
  for (auto& t : make_tensors(dtype::BF16, rng, 0.02, "b.")) ts.push_back(std::move(t));
  for (encoding enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd}) {
    for (int layout : {0, 1, 2}) {
      if (enc == encoding::deltas_zstd && layout == 2) continue;
      const file_kind k{enc, layout};
      const byte_buffer bytes = build_file(ts, k);
      auto f = parse_delta_file(bytes);
      ASSERT_TRUE(f.ok()) << k.label() << ": " << f.err().message;
      ASSERT_EQ(f->values_type, dtype::F32) << k.label();
      stores s = make_stores(ts);
      for (weight_store* g : s.gpu_stores()) {
        undo_log u;
        auto st = apply_file(*g, *f, u);
        ASSERT_TRUE(st.ok()) << k.label() << ": " << st.err().message;
        expect_tensors(*g, ts, true, k.label());
        g->rollback(u);
        expect_tensors(*g, ts, false, k.label());
      }
    }
  }
}

// A file whose bytes were changed after it was written (checksums not verified, so the store's own checks are
// what refuses it), with the offset of the data section.
struct corrupt_file {
  byte_buffer bytes;
  delta_file f;
};

delta_read_limits unverified() {
  delta_read_limits l;
  l.verify_checksum = false;
  l.verify_payload_hash = false;
  return l;
}

// Builds the file, lets `edit` change the bytes of param `victim` (its positions and values, as views into
// the buffer), and parses the result.
template <typename Edit>
corrupt_file corrupted(const std::vector<tensor_pair>& ts, file_kind k, const std::string& victim, Edit edit) {
  corrupt_file c;
  c.bytes = build_file(ts, k);
  auto f = parse_delta_file(c.bytes, unverified());
  EXPECT_TRUE(f.ok());
  for (const auto& p : f->manifest.params) {
    if (p.name != victim) continue;
    auto* pos = const_cast<std::byte*>(f->positions.data()) + p.pos_start;
    const uint32_t veb = element_bytes(f->values_type);
    auto* val = const_cast<std::byte*>(f->values.data()) + p.val_start * veb;
    edit(p, pos, val);
  }
  c.f = std::move(f).value();
  return c;
}

// The victim (the first tensor, applied after the others) must be refused with the previous path's exact
// error by every device store; the params applied before it are rolled back to bit-identical.
void expect_refusal(const std::vector<tensor_pair>& ts, const delta_file& f, errc code, const std::string& label) {
  stores s = make_stores(ts);
  std::string host_decode_message;
  for (weight_store* g : {static_cast<weight_store*>(s.host_decode.get()), static_cast<weight_store*>(s.device.get()),
                          static_cast<weight_store*>(s.borrowed.get())}) {
    undo_log u;
    status st;
    // The victim last: the others are written first and must be undone.
    std::vector<const param_entry*> order;
    for (const auto& p : f.manifest.params)
      if (p.name != ts[0].name) order.push_back(&p);
    for (const auto& p : f.manifest.params)
      if (p.name == ts[0].name) order.push_back(&p);
    ASSERT_GT(order.size(), 1u) << label;
    for (const param_entry* p : order) {
      st = g->apply(*g->find(p->name), f, *p, u);
      if (!st) break;
    }
    ASSERT_FALSE(st.ok()) << label << " (" << g->kind() << "): the corrupt param was applied";
    EXPECT_EQ(st.err().code, code) << label << ": " << st.err().message;
    if (g == s.host_decode.get()) host_decode_message = st.err().message;
    else EXPECT_EQ(st.err().message, host_decode_message) << label << ": the device path words the refusal differently";
    EXPECT_EQ(u.records().size(), order.size() - 1) << label << ": the refused param left a record";
    g->rollback(u);
    expect_tensors(*g, ts, false, label);
    for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(g->digest(i), xxh3_128(ts[i].before)) << label;
  }
}

TEST(device_decode, every_refusal_matches_the_host_decoder_and_leaves_the_tensors_bit_identical) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(1403);
  const auto ts = make_tensors(dtype::BF16, rng, 0.02, "r.");
  const std::string victim = ts[0].name;
  const uint32_t numel = static_cast<uint32_t>(ts[0].numel());
  for (int layout : {0, 2}) {
    const std::string where = layout == 0 ? " slime" : " native/2";
    {
      auto c = corrupted(ts, {encoding::indices, layout}, victim, [](const param_entry& p, std::byte* pos, std::byte*) {
        std::memcpy(pos + 4 * (p.changed() / 2), pos + 4 * (p.changed() / 2 - 1), 4);  // a repeated index
      });
      expect_refusal(ts, c.f, errc::delta_positions_not_ascending, "indices repeated" + where);
    }
    {
      auto c = corrupted(ts, {encoding::indices, layout}, victim, [](const param_entry& p, std::byte* pos, std::byte*) {
        uint32_t a, b;  // two neighbours swapped
        std::memcpy(&a, pos + 4, 4);
        std::memcpy(&b, pos + 8, 4);
        std::memcpy(pos + 4, &b, 4);
        std::memcpy(pos + 8, &a, 4);
        (void)p;
      });
      expect_refusal(ts, c.f, errc::delta_positions_not_ascending, "indices swapped" + where);
    }
    {
      auto c = corrupted(ts, {encoding::indices, layout}, victim, [numel](const param_entry& p, std::byte* pos, std::byte*) {
        std::memcpy(pos + 4 * (p.changed() - 1), &numel, 4);  // the last index one past the end
      });
      expect_refusal(ts, c.f, errc::delta_position_out_of_range, "index past the end" + where);
    }
    {
      auto c = corrupted(ts, {encoding::deltas, layout}, victim, [](const param_entry& p, std::byte* pos, std::byte*) {
        ASSERT_EQ(p.pos_width, 2u);
        const uint16_t big = 0xFFFF;  // every gap at its largest: the sum runs past the tensor
        for (uint64_t k = 0; k < p.changed(); ++k) std::memcpy(pos + 2 * k, &big, 2);
      });
      expect_refusal(ts, c.f, errc::delta_position_out_of_range, "gaps past the end" + where);
    }
    {
      auto c = corrupted(ts, {encoding::deltas, layout}, victim, [](const param_entry& p, std::byte* pos, std::byte*) {
        const uint16_t last = 0x8000;  // only the last gap grows: the last index passes numel by a little
        std::memcpy(pos + 2 * (p.changed() - 1), &last, 2);
      });
      expect_refusal(ts, c.f, errc::delta_position_out_of_range, "last gap past the end" + where);
    }
  }
  // A sparse tensor's 4-byte gaps.
  {
    std::vector<tensor_pair> sp = {ts[2], ts[0], ts[1]};
    auto c = corrupted(sp, {encoding::deltas, 0}, sp[0].name, [](const param_entry& p, std::byte* pos, std::byte*) {
      ASSERT_EQ(p.pos_width, 4u);
      const uint32_t big = 0xFFFFFFFFu;
      std::memcpy(pos, &big, 4);
    });
    expect_refusal(sp, c.f, errc::delta_position_out_of_range, "4-byte gap past the end");
  }
  // A promoted value that does not round-trip to the param's BF16.
  {
    auto mixed = make_tensors(dtype::BF16, rng, 0.02, "m.");
    for (auto& t : make_tensors(dtype::F32, rng, 0.02, "n.")) mixed.push_back(std::move(t));
    for (int layout : {0, 1, 2}) {
      auto c = corrupted(mixed, {encoding::deltas, layout}, mixed[0].name, [](const param_entry& p, std::byte*, std::byte* val) {
        const uint32_t not_bf16 = 0x3F800001u;  // 1 + 2^-23
        std::memcpy(val + 4 * (p.changed() / 3), &not_bf16, 4);
      });
      expect_refusal(mixed, c.f, errc::delta_value_not_representable, "promoted value " + std::to_string(layout));
    }
  }
  // A dtype or shape that is not the store's: refused before anything crosses to the device.
  {
    auto c = corrupted(ts, {encoding::indices, 0}, victim, [](const param_entry&, std::byte*, std::byte*) {});
    for (auto& p : c.f.manifest.params)
      if (p.name == victim) p.type = dtype::F16;
    expect_refusal(ts, c.f, errc::delta_dtype_mismatch, "dtype");
    for (auto& p : c.f.manifest.params)
      if (p.name == victim) {
        p.type = dtype::BF16;
        p.shape = {300, 700};
      }
    expect_refusal(ts, c.f, errc::delta_shape_mismatch, "shape");
  }
}

TEST(device_decode, undo_records_stay_on_the_device_and_fall_back_to_the_host_when_the_arena_is_full) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(1404);
  const auto ts = make_tensors(dtype::BF16, rng, 0.05, "u.");
  for (encoding enc : {encoding::deltas, encoding::compact}) {
    const byte_buffer bytes = build_file(ts, {enc, 1});
    auto f = parse_delta_file(bytes);
    ASSERT_TRUE(f.ok());
    for (uint64_t arena : {uint64_t{4} << 30, uint64_t{0}}) {
      auto store = std::move(cuda_weight_store::from_tensors(as_loaded(ts), 0)).value();
      device_apply_options o;
      o.max_arena_bytes = arena;
      store->engine().set_options(o);
      undo_log u;
      ASSERT_TRUE(apply_file(*store, *f, u).ok());
      ASSERT_FALSE(u.records().empty());
      for (const auto& r : u.records()) {
        if (arena > 0) {
          EXPECT_TRUE(r.device != nullptr);
          EXPECT_TRUE(r.old_values.empty() && r.encoded_positions.empty()) << "a device record kept host bytes";
        } else {
          EXPECT_TRUE(r.device == nullptr);
          EXPECT_FALSE(r.old_values.empty() || r.encoded_positions.empty()) << "a host record without its bytes";
        }
      }
      expect_tensors(*store, ts, true, "arena " + std::to_string(arena));
      store->rollback(u);
      expect_tensors(*store, ts, false, "arena " + std::to_string(arena));
      // A second sync reuses the arena's blocks (they were freed with the first sync's records).
      const uint64_t held = store->engine().arena_bytes();
      undo_log u2;
      ASSERT_TRUE(apply_file(*store, *f, u2).ok());
      EXPECT_EQ(store->engine().arena_bytes(), held);
      store->rollback(u2);
      expect_tensors(*store, ts, false, "second sync");
    }
  }
}

// The fixtures themselves, on the host store (runs without a GPU): every file kind applies bit-exact and every
// corruption is refused with the code the device path must give.
TEST(device_decode, the_fixtures_hold_on_the_host_store) {
  std::mt19937_64 rng(1405);
  for (dtype type : kDtypes) {
    const auto ts = make_tensors(type, rng, 0.012, "h.");
    for (encoding enc : {encoding::indices, encoding::deltas, encoding::deltas_zstd, encoding::compact}) {
      for (int layout : {0, 1, 2}) {
        if (enc == encoding::compact && layout != 1) continue;
        if (enc == encoding::deltas_zstd && layout == 2) continue;
        const file_kind k{enc, layout};
        const byte_buffer bytes = build_file(ts, k);
        auto f = parse_delta_file(bytes);
        ASSERT_TRUE(f.ok()) << k.label() << ": " << f.err().message;
        auto host = host_weight_store::from_tensors(as_loaded(ts));
        undo_log u;
        ASSERT_TRUE(apply_file(*host, *f, u).ok()) << k.label();
        expect_tensors(*host, ts, true, k.label());
        host->rollback(u);
        expect_tensors(*host, ts, false, k.label());
      }
    }
  }
  const auto ts = make_tensors(dtype::BF16, rng, 0.02, "r.");
  const uint32_t numel = static_cast<uint32_t>(ts[0].numel());
  auto refused = [&](const delta_file& f, errc code, const std::string& label) {
    auto host = host_weight_store::from_tensors(as_loaded(ts));
    undo_log u;
    auto st = apply_file(*host, f, u);
    ASSERT_FALSE(st.ok()) << label;
    EXPECT_EQ(st.err().code, code) << label << ": " << st.err().message;
  };
  auto c1 = corrupted(ts, {encoding::indices, 2}, ts[0].name, [](const param_entry& p, std::byte* pos, std::byte*) {
    std::memcpy(pos + 4 * (p.changed() / 2), pos + 4 * (p.changed() / 2 - 1), 4);
  });
  refused(c1.f, errc::delta_positions_not_ascending, "repeated");
  auto c2 = corrupted(ts, {encoding::indices, 0}, ts[0].name, [numel](const param_entry& p, std::byte* pos, std::byte*) {
    std::memcpy(pos + 4 * (p.changed() - 1), &numel, 4);
  });
  refused(c2.f, errc::delta_position_out_of_range, "past the end");
  auto c3 = corrupted(ts, {encoding::deltas, 0}, ts[0].name, [](const param_entry& p, std::byte* pos, std::byte*) {
    EXPECT_EQ(p.pos_width, 2u);
    const uint16_t last = 0x8000;
    std::memcpy(pos + 2 * (p.changed() - 1), &last, 2);
  });
  refused(c3.f, errc::delta_position_out_of_range, "last gap");
}

TEST(device_decode, the_kernel_decodes_gaps_past_65535_and_reports_what_it_found) {
  DS_REQUIRE_GPU();
  gpu::stream s;
  gpu::decode_scratch scratch;
  // 4-byte gaps: positions 0, 70000, 4000000, numel - 1.
  const uint64_t numel = 5000000;
  const std::vector<uint32_t> want = {0, 70000, 4000000, static_cast<uint32_t>(numel - 1)};
  std::vector<uint32_t> gaps;
  uint32_t next = 0;
  for (uint32_t p : want) {
    gaps.push_back(p - next);
    next = p + 1;
  }
  auto enc = upload(gaps.data(), gaps.size() * 4, s);
  std::vector<uint16_t> dest_host(numel, 0), vals = {1, 2, 3, 4};
  auto dest = upload(dest_host.data(), numel * 2, s);
  auto values = upload(vals.data(), 8, s);
  auto positions = gpu::device_buffer::allocate(16).value();
  auto old = gpu::device_buffer::allocate(8).value();
  gpu::decode_scatter_args a;
  a.enc = encoding::deltas;
  a.pos_width = 4;
  a.encoded = enc.data();
  a.count = 4;
  a.numel = numel;
  a.dest = dest.data();
  a.values = values.data();
  a.positions = positions.as<uint32_t>();
  a.old_values = old.data();
  auto st = gpu::decode_scatter(a, scratch, s);
  ASSERT_TRUE(st.ok()) << st.err().message;
  EXPECT_TRUE(st->applied);
  EXPECT_EQ(st->end, numel);
  const byte_buffer got = download(positions.data(), 16, s);
  std::vector<uint32_t> got_pos(4);
  std::memcpy(got_pos.data(), got.data(), 16);
  EXPECT_EQ(got_pos, want);
  const byte_buffer after = download(dest.data(), numel * 2, s);
  for (size_t k = 0; k < 4; ++k) {
    uint16_t v;
    std::memcpy(&v, after.data() + 2 * want[k], 2);
    EXPECT_EQ(v, vals[k]);
  }
  // One position too many for the bound: nothing is written.
  a.numel = numel - 1;
  auto dest2 = upload(dest_host.data(), numel * 2, s);
  a.dest = dest2.data();
  auto st2 = gpu::decode_scatter(a, scratch, s);
  ASSERT_TRUE(st2.ok());
  EXPECT_FALSE(st2->applied);
  EXPECT_TRUE(download(dest2.data(), numel * 2, s) ==
              byte_buffer(reinterpret_cast<const std::byte*>(dest_host.data()),
                          reinterpret_cast<const std::byte*>(dest_host.data()) + numel * 2));
  // Indices: the first descent is reported.
  const std::vector<uint32_t> idx = {3, 9, 9, 2};
  auto enc3 = upload(idx.data(), 16, s);
  a.enc = encoding::indices;
  a.encoded = enc3.data();
  a.numel = numel;
  auto st3 = gpu::decode_scatter(a, scratch, s);
  ASSERT_TRUE(st3.ok());
  EXPECT_FALSE(st3->applied);
  EXPECT_EQ(st3->first_not_ascending, 2u);
}

}  // namespace
}  // namespace deltasync
