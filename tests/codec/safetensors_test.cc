// Tests for the safetensors reader (one hand-built malformed file per validation rule) and writer (round trips).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "codec/safetensors.h"

namespace deltasync {
namespace {

using metadata_t = std::vector<std::pair<std::string, std::string>>;

// A file whose length prefix is the JSON's size, followed by `data_bytes` bytes of data.
byte_buffer make_file(std::string_view json, size_t data_bytes = 0) {
  byte_buffer f(8 + json.size() + data_bytes, std::byte{0x5A});
  store_le<uint64_t>(f.data(), json.size());
  std::memcpy(f.data() + 8, json.data(), json.size());
  return f;
}

// Asserts that parsing fails with exactly `code`, and that the message mentions `mention` when given.
void expect_error(const byte_buffer& file, errc code, std::string_view mention = {}) {
  auto r = parse_safetensors(file);
  ASSERT_FALSE(r.ok()) << "parsed a malformed file";
  EXPECT_TRUE(r.err().is(code)) << "expected " << errc_name(code) << ", got " << r.err().describe();
  if (!mention.empty()) {
    EXPECT_NE(r.err().message.find(mention), std::string::npos) << r.err().message << " should name " << mention;
  }
}

void expect_error(std::string_view json, size_t data_bytes, errc code, std::string_view mention = {}) {
  SCOPED_TRACE(std::string(json));
  expect_error(make_file(json, data_bytes), code, mention);
}

safetensors_view parse_ok(const byte_buffer& file) {
  auto r = parse_safetensors(file);
  EXPECT_TRUE(r.ok()) << r.err().describe();
  return r.ok() ? std::move(r).value() : safetensors_view{};
}

TEST(SafetensorsRead, TooSmall) {
  for (size_t n = 0; n < 8; ++n) {
    byte_buffer f(n, std::byte{0});
    expect_error(f, errc::st_too_small);
  }
}

TEST(SafetensorsRead, HeaderTooLarge) {
  byte_buffer f = make_file("{}");
  store_le<uint64_t>(f.data(), kSafetensorsMaxHeaderBytes + 1);
  expect_error(f, errc::st_header_too_large, "100000001");
  store_le<uint64_t>(f.data(), ~uint64_t{0});  // must not wrap around when added to 8
  expect_error(f, errc::st_header_too_large);
}

TEST(SafetensorsRead, HeaderExactlyAtLimitIsOnlyOutOfBounds) {
  byte_buffer f = make_file("{}");
  store_le<uint64_t>(f.data(), kSafetensorsMaxHeaderBytes);
  expect_error(f, errc::st_header_out_of_bounds);
}

TEST(SafetensorsRead, HeaderOutOfBounds) {
  byte_buffer f = make_file("{}");
  store_le<uint64_t>(f.data(), 3);  // one byte more than the file holds
  expect_error(f, errc::st_header_out_of_bounds, "3");
  byte_buffer only_prefix(8, std::byte{0});
  store_le<uint64_t>(only_prefix.data(), 1);
  expect_error(only_prefix, errc::st_header_out_of_bounds);
}

TEST(SafetensorsRead, HeaderNotUtf8) {
  expect_error("{\"a\xff\":{}}", 0, errc::st_header_not_utf8, "offset 11");
  expect_error("{\"\xc0\x80\":{}}", 0, errc::st_header_not_utf8);          // overlong NUL
  expect_error("{\"\xed\xa0\x80\":{}}", 0, errc::st_header_not_utf8);      // surrogate
  expect_error("{\"\xf4\x90\x80\x80\":{}}", 0, errc::st_header_not_utf8);  // above U+10FFFF
  expect_error("{}  \xe2\x82", 0, errc::st_header_not_utf8);                // truncated at the end
  expect_error("\xff{}", 0, errc::st_header_not_utf8);                      // UTF-8 is checked before '{'
}

TEST(SafetensorsRead, HeaderBadStart) {
  expect_error("", 0, errc::st_header_bad_start);
  expect_error(" {}", 0, errc::st_header_bad_start);
  expect_error("\n{}", 0, errc::st_header_bad_start);
  expect_error("[]", 0, errc::st_header_bad_start);
  expect_error("\"x\"", 0, errc::st_header_bad_start);
}

TEST(SafetensorsRead, HeaderNotJson) {
  expect_error("{", 0, errc::st_header_not_json);
  expect_error("{\"a\":", 0, errc::st_header_not_json);
  expect_error("{}x", 0, errc::st_header_not_json);
  expect_error("{}{}", 0, errc::st_header_not_json);
  expect_error("{\"a\":{},}", 0, errc::st_header_not_json);  // trailing comma
  expect_error("{/*c*/}", 0, errc::st_header_not_json);      // comment
  expect_error("{'a':{}}", 0, errc::st_header_not_json);
  expect_error(std::string_view("{\"a\":{}}\0", 9), 0, errc::st_header_not_json);
  // Escapes must form valid UTF-16: lone surrogates are refused, as serde_json refuses them.
  expect_error(R"({"\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1, errc::st_header_not_json);
  expect_error(R"({"\udc00x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1, errc::st_header_not_json);
  // A syntax error after a structural one still reads as "not JSON", as the reference parses first.
  expect_error("{\"w\":5,", 0, errc::st_header_not_json);
}

TEST(SafetensorsRead, HeaderNotObject) {
  expect_error("{\"w\":5}", 0, errc::st_header_not_object, "'w'");
  expect_error("{\"w\":[0]}", 0, errc::st_header_not_object, "'w'");
  expect_error("{\"w\":\"x\"}", 0, errc::st_header_not_object, "'w'");
  expect_error("{\"w\":null}", 0, errc::st_header_not_object, "'w'");
}

TEST(SafetensorsRead, MetadataNotStrings) {
  expect_error(R"({"__metadata__":{"k":1}})", 0, errc::st_metadata_not_strings, "'k'");
  expect_error(R"({"__metadata__":{"k":{}}})", 0, errc::st_metadata_not_strings, "'k'");
  expect_error(R"({"__metadata__":{"k":["v"]}})", 0, errc::st_metadata_not_strings, "'k'");
  expect_error(R"({"__metadata__":{"k":null}})", 0, errc::st_metadata_not_strings, "'k'");
  expect_error(R"({"__metadata__":"v"})", 0, errc::st_metadata_not_strings, "__metadata__");
  expect_error(R"({"__metadata__":["v"]})", 0, errc::st_metadata_not_strings, "__metadata__");
  expect_error(R"({"__metadata__":null})", 0, errc::st_metadata_not_strings, "__metadata__");
  expect_error(R"({"__metadata__":{"k":"a","k":"b"}})", 0, errc::st_metadata_not_strings, "'k'");
}

TEST(SafetensorsRead, DuplicateTensor) {
  expect_error(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
               8, errc::st_duplicate_tensor, "'w'");
  // Escapes decode before the comparison: "\u0077" is "w".
  expect_error(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("\u0077":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
               8, errc::st_duplicate_tensor, "'w'");
  expect_error(R"({"__metadata__":{},"__metadata__":{}})", 0, errc::st_duplicate_tensor, "__metadata__");
}

TEST(SafetensorsRead, BadTensorEntry) {
  struct bad_case {
    const char* json;
    const char* mention;
  };
  const bad_case cases[] = {
      {R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "dtype"},
      {R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[1]}})", "data_offsets"},
      {R"({"w":{}})", "dtype"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}})", "extra"},
      {R"({"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "dtype"},
      {R"({"w":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})", "dtype"},
      {R"({"w":{"dtype":["U8"],"shape":[1],"data_offsets":[0,1]}})", "dtype"},
      {R"({"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[{}],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[null],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}})", "shape"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "data_offsets"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,1]}})", "data_offsets"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[]}})", "data_offsets"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,1]}})", "data_offsets"},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":{"a":0}}})", "data_offsets"},
      {R"({"w":{"dtype":null,"shape":[1],"data_offsets":[0,1]}})", "dtype"},
  };
  for (const auto& c : cases) {
    expect_error(c.json, 1, errc::st_bad_tensor_entry, c.mention);
    expect_error(c.json, 1, errc::st_bad_tensor_entry, "'w'");
  }
}

TEST(SafetensorsRead, UnknownDtype) {
  expect_error(R"({"w":{"dtype":"BF17","shape":[1],"data_offsets":[0,2]}})", 2, errc::st_unknown_dtype, "BF17");
  expect_error(R"({"w":{"dtype":"bf16","shape":[1],"data_offsets":[0,2]}})", 2, errc::st_unknown_dtype, "'w'");
  expect_error(R"({"w":{"dtype":"","shape":[1],"data_offsets":[0,2]}})", 2, errc::st_unknown_dtype, "'w'");
}

TEST(SafetensorsRead, SizeOverflow) {
  // 2^32 x 2^32 overflows the element count; 2^62 F32 elements overflow the bit count.
  expect_error(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
               errc::st_size_overflow, "'w'");
  expect_error(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0,
               errc::st_size_overflow, "'w'");
  // The product folds left to right, like the reference: a trailing 0 does not save it, a leading one does.
  expect_error(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", 0,
               errc::st_size_overflow);
  auto v = parse_ok(make_file(R"({"w":{"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})"));
  ASSERT_EQ(v.header.tensors.size(), 1u);
  EXPECT_EQ(v.header.tensors[0].nbytes(), 0u);
}

TEST(SafetensorsRead, BadOffsets) {
  expect_error(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[8,4]}})", 8, errc::st_bad_offsets, "'w'");
}

TEST(SafetensorsRead, SizeMismatch) {
  expect_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, errc::st_size_mismatch, "'w'");
  expect_error(R"({"w":{"dtype":"BF16","shape":[],"data_offsets":[0,4]}})", 4, errc::st_size_mismatch, "'w'");
  expect_error(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,1]}})", 1, errc::st_size_mismatch, "'w'");
}

TEST(SafetensorsRead, MisalignedSize) {
  expect_error(R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2, errc::st_misaligned_size, "'w'");
  expect_error(R"({"w":{"dtype":"F6_E2M3","shape":[2],"data_offsets":[0,2]}})", 2, errc::st_misaligned_size, "'w'");
  expect_error(R"({"w":{"dtype":"F6_E3M2","shape":[],"data_offsets":[0,1]}})", 1, errc::st_misaligned_size, "'w'");
  // Whole bytes are fine: 4 x 6 bits = 3 bytes, 2 x 4 bits = 1 byte.
  parse_ok(make_file(R"({"a":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]},)"
                     R"("b":{"dtype":"F4","shape":[2],"data_offsets":[3,4]}})",
                     4));
}

TEST(SafetensorsRead, NotContiguous) {
  // The first tensor does not start at 0.
  expect_error(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8, errc::st_not_contiguous, "'w'");
  // A hole between two tensors.
  expect_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}})",
               10, errc::st_not_contiguous, "'b'");
  // An overlap.
  expect_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
               6, errc::st_not_contiguous, "'b'");
  // Two tensors over the same bytes.
  expect_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
               4, errc::st_not_contiguous);
}

TEST(SafetensorsRead, SizeMismatchFile) {
  const std::string json = R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  expect_error(json, 5, errc::st_size_mismatch_file, "4");  // one trailing byte
  expect_error(json, 3, errc::st_size_mismatch_file, "4");  // one byte missing
  expect_error("{}", 1, errc::st_size_mismatch_file);        // data with no tensors
  // The largest end a valid tensor can have must not wrap around when added to the header size.
  expect_error(R"({"w":{"dtype":"U8","shape":[2305843009213693951],"data_offsets":[0,2305843009213693951]}})", 0,
               errc::st_size_mismatch_file);
}

TEST(SafetensorsRead, EmptyFileIsLegal) {
  auto v = parse_ok(make_file("{}"));
  EXPECT_TRUE(v.header.tensors.empty());
  EXPECT_EQ(v.header.data_bytes, 0u);
  EXPECT_EQ(v.header.data_offset, 10u);
  auto m = parse_ok(make_file(R"({"__metadata__":{}})"));
  EXPECT_TRUE(m.header.metadata.empty());
}

TEST(SafetensorsRead, TrailingWhitespaceIsPadding) {
  const std::string json = R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  auto v = parse_ok(make_file(json + "      ", 2));
  EXPECT_EQ(v.header.header_bytes, json.size() + 6);
  EXPECT_EQ(v.header.data_offset, 8 + json.size() + 6);
  parse_ok(make_file("{} \t\r\n"));
}

TEST(SafetensorsRead, TensorsSortedByOffsetAndViewsPointIntoTheFile) {
  byte_buffer f = make_file(R"({"__metadata__":{"z":"1","a":"2"},)"
                            R"("b":{"dtype":"U16","shape":[2],"data_offsets":[2,6]},)"
                            R"("e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                            R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                            R"("s":{"dtype":"I8","shape":[],"data_offsets":[6,7]}})",
                            7);
  const size_t data_at = f.size() - 7;
  for (size_t i = 0; i < 7; ++i) f[data_at + i] = std::byte{static_cast<unsigned char>(i)};
  auto v = parse_ok(f);
  ASSERT_EQ(v.header.tensors.size(), 4u);
  EXPECT_EQ(v.header.tensors[0].name, "a");
  EXPECT_EQ(v.header.tensors[1].name, "e");  // empty at offset 2 sorts before the tensor starting there
  EXPECT_EQ(v.header.tensors[2].name, "b");
  EXPECT_EQ(v.header.tensors[3].name, "s");
  EXPECT_EQ(v.header.tensors[3].numel(), 1u);
  EXPECT_TRUE(v.header.tensors[3].shape.empty());
  EXPECT_EQ(v.header.tensors[1].numel(), 0u);
  const tensor_info* b = v.header.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, dtype::U16);
  EXPECT_EQ(b->shape, std::vector<uint64_t>{2});
  ASSERT_EQ(v.data(*b).size(), 4u);
  EXPECT_EQ(v.data(*b)[0], std::byte{2});
  EXPECT_EQ(v.header.find("missing"), nullptr);
  ASSERT_EQ(v.header.metadata.size(), 2u);
  EXPECT_EQ(v.header.metadata[0].first, "z");  // file order
  EXPECT_EQ(v.header.meta("a"), "2");
  EXPECT_FALSE(v.header.meta("b").has_value());
  EXPECT_EQ(v.header.data_bytes, 7u);
  EXPECT_EQ(v.header.file_bytes(), f.size());
}

TEST(SafetensorsRead, EscapedNamesDecode) {
  auto v = parse_ok(make_file(R"({"__metadata__":{"k\"\\":"line\nnext \u00e9"},)"
                              R"("a\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                              1));
  ASSERT_EQ(v.header.tensors.size(), 1u);
  EXPECT_EQ(v.header.tensors[0].name, std::string("a\0b", 3));
  EXPECT_EQ(v.header.meta("k\"\\"), "line\nnext \xc3\xa9");
  auto pair = parse_ok(make_file(R"({"\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1));
  ASSERT_EQ(pair.header.tensors.size(), 1u);
  EXPECT_EQ(pair.header.tensors[0].name, "\xf0\x9f\x98\x80");
}

TEST(SafetensorsRead, StreamingEntryPointsAgree) {
  byte_buffer f = make_file(R"({"w":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})", 3);
  auto n = read_safetensors_header_length(byte_span(f).first(8), f.size());
  ASSERT_TRUE(n.ok()) << n.err().describe();
  auto h = parse_safetensors_header(byte_span(f).subspan(8, *n), f.size());
  ASSERT_TRUE(h.ok()) << h.err().describe();
  EXPECT_EQ(h->data_offset, 8 + *n);
  EXPECT_EQ(h->tensors.size(), 1u);
  // The same header checked against a file one byte longer.
  auto longer = parse_safetensors_header(byte_span(f).subspan(8, *n), f.size() + 1);
  ASSERT_FALSE(longer.ok());
  EXPECT_TRUE(longer.err().is(errc::st_size_mismatch_file));
  auto short_prefix = read_safetensors_header_length(byte_span(f).first(7), f.size());
  ASSERT_FALSE(short_prefix.ok());
  EXPECT_TRUE(short_prefix.err().is(errc::st_too_small));
}

// ---- writer ----

byte_buffer pattern(size_t n, uint32_t seed) {
  byte_buffer b(n);
  std::mt19937 rng(seed);
  for (auto& x : b) x = std::byte{static_cast<unsigned char>(rng())};
  return b;
}

void expect_same_tensors(const safetensors_view& v, const std::vector<tensor_data>& in) {
  ASSERT_EQ(v.header.tensors.size(), in.size());
  for (const auto& t : in) {
    SCOPED_TRACE(t.spec.name);
    const tensor_info* got = v.header.find(t.spec.name);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->type, t.spec.type);
    EXPECT_EQ(got->shape, t.spec.shape);
    EXPECT_EQ(got->nbytes(), t.spec.nbytes);
    auto d = v.data(*got);
    ASSERT_EQ(d.size(), t.data.size());
    EXPECT_TRUE(std::equal(d.begin(), d.end(), t.data.begin()));
  }
}

TEST(SafetensorsWrite, ExactJsonTheReferenceLoads) {
  byte_buffer data(4, std::byte{1});
  auto f = write_safetensors({{{"w", dtype::BF16, {2}, 4}, data}}, {{"k", "v"}});
  ASSERT_TRUE(f.ok()) << f.err().describe();
  const std::string json = R"({"__metadata__":{"k":"v"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  const uint64_t n = load_le<uint64_t>(f->data());
  EXPECT_EQ((8 + n) % 8, 0u);
  ASSERT_GE(n, json.size());
  EXPECT_LT(n - json.size(), 8u);
  const std::string_view header = as_chars(byte_span(*f).subspan(8, n));
  EXPECT_EQ(header.substr(0, json.size()), json);
  EXPECT_EQ(header.find_first_not_of(' ', json.size()), std::string_view::npos);
  EXPECT_EQ(f->size(), 8 + n + 4);
}

TEST(SafetensorsWrite, NoMetadataOmitsTheKey) {
  auto f = write_safetensors({}, {});
  ASSERT_TRUE(f.ok()) << f.err().describe();
  EXPECT_EQ(as_chars(*f).substr(8), "{}      ");
  auto v = parse_ok(*f);
  EXPECT_TRUE(v.header.tensors.empty());
}

TEST(SafetensorsWrite, RoundTripEveryDtype) {
  std::vector<byte_buffer> storage;
  std::vector<tensor_data> tensors;
  for (const auto& d : all_dtypes()) {
    // 8 elements fill whole bytes for every dtype, the 4- and 6-bit ones included.
    const uint64_t bytes = 8 * d.bits / 8;
    storage.push_back(pattern(bytes, d.bits));
    tensors.push_back({{"t." + std::string(d.name), d.type, {2, 4}, bytes}, storage.back()});
  }
  auto f = write_safetensors(tensors, {});
  ASSERT_TRUE(f.ok()) << f.err().describe();
  auto v = parse_ok(*f);
  expect_same_tensors(v, tensors);
  EXPECT_EQ(v.header.data_offset % 8, 0u);
}

TEST(SafetensorsWrite, EmptyAndScalarTensors) {
  byte_buffer one(2, std::byte{7});
  std::vector<tensor_data> tensors = {
      {{"empty", dtype::F32, {0}, 0}, {}},
      {{"empty2d", dtype::BF16, {3, 0}, 0}, {}},
      {{"scalar", dtype::F16, {}, 2}, one},
      {{"empty_last", dtype::U8, {0}, 0}, {}},
  };
  auto f = write_safetensors(tensors, {});
  ASSERT_TRUE(f.ok()) << f.err().describe();
  auto v = parse_ok(*f);
  expect_same_tensors(v, tensors);
  EXPECT_EQ(v.header.find("scalar")->numel(), 1u);
  EXPECT_EQ(v.header.data_bytes, 2u);
}

TEST(SafetensorsWrite, MetadataWithEscapes) {
  metadata_t meta = {
      {"encoding", "deltas"},
      {"quote\"back\\slash", "ctl \x01\x1f\n\t\r\b\f end"},
      {"", ""},
      {"unicode \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "[{\"name\":\"w\"}]"},
      {"__metadata__", "a key like the reserved one is fine inside metadata"},
  };
  byte_buffer data(1, std::byte{3});
  std::vector<tensor_data> tensors = {{{"name \"with\" \\ and \x02", dtype::U8, {1}, 1}, data}};
  auto f = write_safetensors(tensors, meta);
  ASSERT_TRUE(f.ok()) << f.err().describe();
  auto v = parse_ok(*f);
  EXPECT_EQ(v.header.metadata, meta);
  expect_same_tensors(v, tensors);
}

TEST(SafetensorsWrite, Align4096) {
  byte_buffer data = pattern(10, 1);
  for (uint64_t align : {uint64_t{8}, uint64_t{64}, uint64_t{4096}, uint64_t{1} << 16}) {
    SCOPED_TRACE(align);
    auto layout = build_safetensors_header({{"w", dtype::U8, {10}, 10}}, {{"k", "v"}}, align);
    ASSERT_TRUE(layout.ok()) << layout.err().describe();
    EXPECT_EQ(layout->header.size() % align, 0u);
    EXPECT_EQ(layout->data_bytes, 10u);
    EXPECT_EQ(layout->data_offsets, std::vector<uint64_t>{0});
    auto f = write_safetensors({{{"w", dtype::U8, {10}, 10}, data}}, {{"k", "v"}}, align);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    auto v = parse_ok(*f);
    EXPECT_EQ(v.header.data_offset % align, 0u);
    EXPECT_EQ(v.header.data_offset, layout->header.size());
    EXPECT_EQ(v.header.meta("k"), "v");
  }
}

TEST(SafetensorsWrite, LayoutOffsetsFollowTheGivenOrder) {
  auto layout = build_safetensors_header(
      {{"z", dtype::F32, {3}, 12}, {"a", dtype::U8, {1}, 1}, {"m", dtype::I64, {}, 8}}, {});
  ASSERT_TRUE(layout.ok()) << layout.err().describe();
  EXPECT_EQ(layout->data_offsets, (std::vector<uint64_t>{0, 12, 13}));
  EXPECT_EQ(layout->data_bytes, 21u);
}

TEST(SafetensorsWrite, Rejections) {
  auto code = [](const std::vector<tensor_spec>& t, const metadata_t& m, uint64_t align = 8) {
    auto r = build_safetensors_header(t, m, align);
    return r.ok() ? errc::ok : static_cast<errc>(r.err().code.value());
  };
  EXPECT_EQ(code({{"w", dtype::F32, {2}, 4}}, {}), errc::st_size_mismatch);
  EXPECT_EQ(code({{"w", dtype::F4, {3}, 2}}, {}), errc::st_misaligned_size);
  EXPECT_EQ(code({{"w", dtype::F4, {}, 1}}, {}), errc::st_misaligned_size);
  EXPECT_EQ(code({{"w", dtype::F64, {uint64_t{1} << 62}, 0}}, {}), errc::st_size_overflow);
  EXPECT_EQ(code({{"w", dtype::U8, {1}, 1}, {"w", dtype::U8, {1}, 1}}, {}), errc::st_duplicate_tensor);
  EXPECT_EQ(code({{"__metadata__", dtype::U8, {1}, 1}}, {}), errc::invalid_argument);
  EXPECT_EQ(code({{"bad \xff", dtype::U8, {1}, 1}}, {}), errc::st_header_not_utf8);
  EXPECT_EQ(code({}, {{"k", "\xc0\x80"}}), errc::st_header_not_utf8);
  EXPECT_EQ(code({}, {{"k", "a"}, {"k", "b"}}), errc::st_metadata_not_strings);
  EXPECT_EQ(code({}, {}, 4), errc::invalid_argument);
  EXPECT_EQ(code({}, {}, 24), errc::invalid_argument);
  EXPECT_EQ(code({}, {}, 0), errc::invalid_argument);
  EXPECT_EQ(code({{"a", dtype::U8, {~uint64_t{0}}, ~uint64_t{0}}, {"b", dtype::U8, {1}, 1}}, {}),
            errc::st_size_overflow);
  // The data given must match the spec.
  byte_buffer three(3);
  auto w = write_safetensors({{{"w", dtype::U8, {4}, 4}, three}}, {});
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(w.err().is(errc::st_size_mismatch));
  EXPECT_NE(w.err().message.find("'w'"), std::string::npos);
}

// Random tensors, names and metadata through write -> parse; the seed is printed so any failure replays.
TEST(SafetensorsWrite, RandomRoundTripProperty) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto random_string = [&](size_t max_len) {
    static const std::string_view pieces[] = {"a", "Z", "0", ".", "_", "\"", "\\", "\n", "\x01", "\x7f",
                                              "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", " ", "/"};
    std::string s;
    const size_t len = pick(max_len + 1);
    for (size_t i = 0; i < len; ++i) s += pieces[pick(std::size(pieces))];
    return s;
  };
  const auto dtypes = all_dtypes();
  for (int iter = 0; iter < 300; ++iter) {
    SCOPED_TRACE("iteration " + std::to_string(iter));
    std::vector<byte_buffer> storage;
    std::vector<tensor_data> tensors;
    const size_t count = pick(8);
    storage.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      const dtype_info& d = dtypes[pick(dtypes.size())];
      std::vector<uint64_t> shape(pick(4));
      for (auto& s : shape) s = pick(6);
      uint64_t numel = 1;
      for (auto s : shape) numel *= s;
      if ((numel * d.bits) % 8 != 0) shape.push_back(8);  // whole bytes for the 4- and 6-bit dtypes
      numel = 1;
      for (auto s : shape) numel *= s;
      const uint64_t bytes = numel * d.bits / 8;
      storage.push_back(pattern(bytes, static_cast<uint32_t>(rng())));
      tensors.push_back({{std::to_string(i) + "#" + random_string(6), d.type, shape, bytes}, storage.back()});
    }
    metadata_t meta;
    const size_t meta_count = pick(4);
    for (size_t i = 0; i < meta_count; ++i) meta.emplace_back(std::to_string(i) + "#" + random_string(5), random_string(20));
    const uint64_t align = uint64_t{8} << pick(10);
    auto f = write_safetensors(tensors, meta, align);
    ASSERT_TRUE(f.ok()) << f.err().describe();
    auto v = parse_ok(*f);
    expect_same_tensors(v, tensors);
    EXPECT_EQ(v.header.metadata, meta);
    EXPECT_EQ(v.header.data_offset % align, 0u);
    EXPECT_EQ(v.header.file_bytes(), f->size());
    if (HasFailure()) return;

    // Any single corrupted header byte yields a value or an error, never a crash or an invalid view.
    byte_buffer g = *f;
    const size_t at = pick(v.header.data_offset);
    g[at] = std::byte{static_cast<unsigned char>(rng())};
    auto r = parse_safetensors(g);
    if (r.ok()) {
      for (const auto& t : r->header.tensors) EXPECT_LE(r->header.data_offset + t.end, g.size());
    }
  }
}

}  // namespace
}  // namespace deltasync
