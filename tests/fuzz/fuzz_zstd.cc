// libFuzzer target for bounded zstd decompression: any input fails cleanly or decodes to exactly its declared
// size; whatever decodes, and the raw input itself, survives wrap -> unwrap.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "codec/zstd_frame.h"

namespace {

constexpr uint64_t kCapBytes = 16ull << 20;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "fuzz_zstd: %s %s\n", what, detail.c_str());
  std::abort();
}

void round_trip(deltasync::byte_span in) {
  auto frame = deltasync::zstd_wrap(in);
  if (!frame.ok()) fail("wrap failed:", frame.err().describe());
  if (!deltasync::is_zstd_frame(*frame)) fail("wrap wrote no magic");
  auto back = deltasync::zstd_unwrap(*frame, in.size());
  if (!back.ok()) fail("unwrap of a fresh frame failed:", back.err().describe());
  if (!std::equal(back->begin(), back->end(), in.begin(), in.end())) fail("round trip changed the bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const deltasync::byte_span in(reinterpret_cast<const std::byte*>(data), size);
  auto out = deltasync::zstd_unwrap(in, kCapBytes);
  if (out.ok()) {
    auto declared = deltasync::zstd_content_size(in, kCapBytes);
    if (!declared.ok() || *declared != out->size()) fail("decoded size differs from the declared size");
    round_trip(*out);
  } else if (out.err().message.empty()) {
    fail("error without a message");
  }
  round_trip(in);
  return 0;
}
