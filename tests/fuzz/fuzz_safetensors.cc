// libFuzzer target for the safetensors reader: any input either fails cleanly or parses to a header that survives
// write -> parse unchanged (tensors, metadata and data bytes), with every tensor view inside the file.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "codec/safetensors.h"

namespace {

using deltasync::byte_span;
using deltasync::safetensors_view;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "fuzz_safetensors: %s %s\n", what, detail.c_str());
  std::abort();
}

bool same_tensors(const safetensors_view& a, const safetensors_view& b) {
  if (a.header.tensors.size() != b.header.tensors.size()) return false;
  for (size_t i = 0; i < a.header.tensors.size(); ++i) {
    const auto& x = a.header.tensors[i];
    const auto& y = b.header.tensors[i];
    if (x.name != y.name || x.type != y.type || x.shape != y.shape || x.begin != y.begin || x.end != y.end)
      return false;
    const byte_span dx = a.data(x), dy = b.data(y);
    if (!std::equal(dx.begin(), dx.end(), dy.begin(), dy.end())) return false;
  }
  return true;
}

std::vector<deltasync::tensor_data> tensors_of(const safetensors_view& v) {
  std::vector<deltasync::tensor_data> out;
  for (const auto& t : v.header.tensors) out.push_back({{t.name, t.type, t.shape, t.nbytes()}, v.data(t)});
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const byte_span file(reinterpret_cast<const std::byte*>(data), size);
  auto parsed = deltasync::parse_safetensors(file);
  if (!parsed.ok()) {
    if (parsed.err().message.empty()) fail("error without a message");
    return 0;
  }
  const safetensors_view& v = *parsed;
  uint64_t expected = 0;
  for (const auto& t : v.header.tensors) {
    if (t.begin != expected || t.end < t.begin) fail("tensors not contiguous", t.name);
    expected = t.end;
  }
  if (v.header.file_bytes() != size) fail("data section does not end at the file end");

  const auto tensors = tensors_of(v);
  auto written = deltasync::write_safetensors(tensors, v.header.metadata);
  if (!written.ok()) fail("cannot re-write a parsed file:", written.err().describe());
  auto reparsed = deltasync::parse_safetensors(*written);
  if (!reparsed.ok()) fail("cannot parse a re-written file:", reparsed.err().describe());
  if (!same_tensors(v, *reparsed)) fail("tensors changed through write -> parse");
  if (v.header.metadata != reparsed->header.metadata) fail("metadata changed through write -> parse");
  if (reparsed->header.data_offset % 8 != 0) fail("data section not 8-byte aligned");

  // The writer is deterministic: writing the re-parsed file gives the same bytes.
  auto again = deltasync::write_safetensors(tensors_of(*reparsed), reparsed->header.metadata);
  if (!again.ok() || *again != *written) fail("write is not idempotent");

  // The O_DIRECT layout accepts the same tensors and lands on its boundary.
  std::vector<deltasync::tensor_spec> specs;
  for (const auto& t : tensors) specs.push_back(t.spec);
  auto layout = deltasync::build_safetensors_header(specs, v.header.metadata, 4096);
  if (!layout.ok() || layout->header.size() % 4096 != 0 || layout->data_bytes != v.header.data_bytes)
    fail("4096-aligned layout failed");
  return 0;
}
