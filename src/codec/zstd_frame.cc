// One-frame zstd wrapping with bounded, size-checked decompression. Contexts are thread_local because creating
// one costs more than compressing a small bucket.
#include "codec/zstd_frame.h"

// ZSTD_getFrameHeader (the window size) is in the static-only API; libzstd is linked statically.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <memory>
#include <string>

namespace deltasync {
namespace {

constexpr std::array<std::byte, 4> kMagic{std::byte{0x28}, std::byte{0xB5}, std::byte{0x2F}, std::byte{0xFD}};

struct cctx_deleter {
  void operator()(ZSTD_CCtx* c) const noexcept { ZSTD_freeCCtx(c); }
};
struct dctx_deleter {
  void operator()(ZSTD_DCtx* d) const noexcept { ZSTD_freeDCtx(d); }
};
using dctx_ptr = std::unique_ptr<ZSTD_DCtx, dctx_deleter>;

// The first piece of a decompressed output; it then doubles, up to the declared size.
constexpr uint64_t kFirstPieceBytes = 1ull << 20;
// zstd's own default limit on the decoder's window (ZSTD_WINDOWLOG_LIMIT_DEFAULT): every standard level fits.
constexpr unsigned kMaxWindowLog = 27;
// Contexts whose window is larger than this are not kept in the worker's thread-local context.
constexpr uint64_t kReuseWindowBytes = 8ull << 20;

ZSTD_CCtx* thread_cctx() noexcept {
  thread_local std::unique_ptr<ZSTD_CCtx, cctx_deleter> c(ZSTD_createCCtx());
  return c.get();
}

ZSTD_DCtx* thread_dctx() noexcept {
  thread_local dctx_ptr d(ZSTD_createDCtx());
  return d.get();
}

std::string zstd_message(size_t code) { return ZSTD_getErrorName(code); }

// The bytes must hold exactly one frame: libzstd would otherwise decode a second frame (or skip a skippable
// one) into the same output, and a truncated frame is better reported before any allocation.
status check_one_frame(byte_span frame) {
  const size_t frame_bytes = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_bytes))
    return error(errc::zstd_corrupt, "zstd frame of " + std::to_string(frame.size()) +
                                         " bytes is truncated or malformed: " + zstd_message(frame_bytes));
  if (frame_bytes != frame.size())
    return error(errc::zstd_corrupt, std::to_string(frame.size() - frame_bytes) +
                                         " trailing bytes after the zstd frame ending at offset " +
                                         std::to_string(frame_bytes));
  return {};
}

// Rebuilds the frame with its header saying "content size unknown", so a streaming decode can count what the
// blocks really produce (libzstd reports a size mismatch only as generic corruption). Empty on a malformed
// header. `window_log` is the window the rewritten header declares when the original had none.
byte_buffer strip_content_size(byte_span frame, unsigned window_log) {
  if (frame.size() < 5) return {};
  const auto fhd = std::to_integer<unsigned>(frame[4]);
  const bool single_segment = (fhd >> 5) & 1u;
  if ((fhd >> 3) & 1u) return {};  // reserved bit
  static constexpr size_t kDictIdBytes[4] = {0, 1, 2, 4};
  const size_t fcs_flag = fhd >> 6;
  const size_t fcs_bytes = fcs_flag == 0 ? (single_segment ? 1 : 0) : (size_t{1} << fcs_flag);
  size_t pos = 5;
  std::byte window_descriptor{static_cast<unsigned char>((window_log - 10) << 3)};
  if (!single_segment) {
    if (frame.size() < 6) return {};
    window_descriptor = frame[5];
    pos = 6;
  }
  const size_t dict_bytes = kDictIdBytes[fhd & 3u];
  if (frame.size() < pos + dict_bytes + fcs_bytes) return {};

  byte_buffer out(kMagic.begin(), kMagic.end());
  // Keep the checksum and dictionary-id flags; clear the content-size flag and the single-segment flag.
  out.push_back(std::byte{static_cast<unsigned char>(fhd & 0x07u)});
  out.push_back(window_descriptor);
  out.insert(out.end(), frame.begin() + static_cast<ptrdiff_t>(pos),
             frame.begin() + static_cast<ptrdiff_t>(pos + dict_bytes));
  out.insert(out.end(), frame.begin() + static_cast<ptrdiff_t>(pos + dict_bytes + fcs_bytes), frame.end());
  return out;
}

// Called after libzstd reported corruption on a frame declaring `declared` bytes: tells a frame that decodes
// cleanly to a different size (a lie) from one that does not decode at all. Memory stays bounded by the
// declared size, which the caller already capped.
status diagnose_corruption(byte_span frame, uint64_t declared, size_t original_error) {
  const error corrupt(errc::zstd_corrupt, "zstd frame is corrupt: " + zstd_message(original_error));
  // A window of at least the declared size (the whole content, as in single-segment frames) and at least one
  // full block; back-references past it only occur in frames that are corrupt anyway.
  const unsigned window_log = std::clamp(static_cast<unsigned>(std::bit_width(declared)), 17u, 31u);
  const byte_buffer stripped = strip_content_size(frame, window_log);
  if (stripped.empty()) return corrupt;
  dctx_ptr d(ZSTD_createDCtx());
  if (!d) return corrupt;
  if (ZSTD_isError(ZSTD_DCtx_setParameter(d.get(), ZSTD_d_windowLogMax, static_cast<int>(window_log))))
    return corrupt;

  byte_buffer scratch(64 * 1024);
  ZSTD_inBuffer in{stripped.data(), stripped.size(), 0};
  uint64_t produced = 0;
  for (;;) {
    ZSTD_outBuffer o{scratch.data(), scratch.size(), 0};
    const size_t r = ZSTD_decompressStream(d.get(), &o, &in);
    if (ZSTD_isError(r)) return corrupt;
    produced += o.pos;
    if (produced > declared)
      return error(errc::zstd_size_lie, "zstd frame declares " + std::to_string(declared) +
                                            " bytes but decodes to more");
    if (r == 0) break;
    if (o.pos == 0 && in.pos == in.size) return corrupt;  // truncated: no input left and no progress
  }
  if (produced != declared)
    return error(errc::zstd_size_lie, "zstd frame declares " + std::to_string(declared) + " bytes but decodes to " +
                                          std::to_string(produced));
  return corrupt;
}

}  // namespace

bool is_zstd_frame(byte_span bytes) noexcept {
  return bytes.size() >= kMagic.size() && std::equal(kMagic.begin(), kMagic.end(), bytes.begin());
}

result<byte_buffer> zstd_wrap(byte_span in, int level) {
  ZSTD_CCtx* c = thread_cctx();
  if (c == nullptr) return error(errc::internal, "cannot allocate a zstd compression context");
  const size_t bound = ZSTD_compressBound(in.size());
  if (ZSTD_isError(bound) || bound == 0)
    return error(errc::limit_exceeded, "cannot zstd-compress " + std::to_string(in.size()) + " bytes in one frame");
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  if (size_t r = ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level); ZSTD_isError(r))
    return error(errc::invalid_argument, "zstd level " + std::to_string(level) + ": " + zstd_message(r));
  // The content size goes in the header (ZSTD_c_contentSizeFlag defaults to 1): readers require it.
  byte_buffer out(bound);
  const size_t r = ZSTD_compress2(c, out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(r)) return error(errc::internal, "zstd compression failed: " + zstd_message(r));
  out.resize(r);
  return out;
}

result<uint64_t> zstd_content_size(byte_span frame, uint64_t max_bytes) {
  if (!is_zstd_frame(frame)) return error(errc::zstd_not_a_frame, "no zstd magic 28 B5 2F FD at offset 0");
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR)
    return error(errc::zstd_corrupt, "zstd frame header is truncated or invalid (" + std::to_string(frame.size()) +
                                         " bytes available)");
  if (size == ZSTD_CONTENTSIZE_UNKNOWN)
    return error(errc::zstd_unknown_size, "zstd frame header does not declare its content size");
  if (size > max_bytes)
    return error(errc::zstd_too_large, "zstd frame declares " + std::to_string(size) + " bytes, over the cap of " +
                                           std::to_string(max_bytes));
  return static_cast<uint64_t>(size);
}

status zstd_unwrap_into(byte_span frame, mutable_byte_span out) {
  DS_ASSIGN_OR_RETURN(uint64_t declared, zstd_content_size(frame, std::numeric_limits<uint64_t>::max()));
  if (declared != out.size())
    return error(errc::invalid_argument, "zstd frame declares " + std::to_string(declared) +
                                             " bytes but the output buffer holds " + std::to_string(out.size()));
  DS_TRY_STATUS(check_one_frame(frame));
  ZSTD_DCtx* d = thread_dctx();
  if (d == nullptr) return error(errc::internal, "cannot allocate a zstd decompression context");
  ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
  const size_t r = ZSTD_decompressDCtx(d, out.data(), out.size(), frame.data(), frame.size());
  if (!ZSTD_isError(r)) {
    if (r != declared)  // libzstd checks this itself; kept so a library change cannot slip a short buffer through
      return error(errc::zstd_size_lie, "zstd frame declares " + std::to_string(declared) + " bytes but decodes to " +
                                            std::to_string(r));
    return {};
  }
  switch (ZSTD_getErrorCode(r)) {
    case ZSTD_error_dstSize_tooSmall:
      return error(errc::zstd_size_lie, "zstd frame declares " + std::to_string(declared) +
                                            " bytes but decodes to more");
    case ZSTD_error_corruption_detected:
      return diagnose_corruption(frame, declared, r);
    default:
      return error(errc::zstd_corrupt, "zstd frame is corrupt: " + zstd_message(r));
  }
}

result<byte_buffer> zstd_unwrap(byte_span frame, uint64_t max_bytes, memory_lease* lease) {
  DS_ASSIGN_OR_RETURN(uint64_t declared, zstd_content_size(frame, max_bytes));
  if (declared > std::numeric_limits<size_t>::max() / 2)
    return error(errc::zstd_too_large, "zstd frame declares " + std::to_string(declared) + " bytes");
  DS_TRY_STATUS(check_one_frame(frame));
  memory_lease unbudgeted;
  memory_lease& held = lease ? *lease : unbudgeted;
  const uint64_t held_before = held.bytes();
  auto give_back = [&] { held.shrink(held.bytes() - held_before); };

  ZSTD_frameHeader fh{};
  if (ZSTD_isError(ZSTD_getFrameHeader(&fh, frame.data(), frame.size())))
    return error(errc::zstd_corrupt, "zstd frame header is invalid");
  // The decoder keeps a window of up to this many bytes besides our output (none when the output can hold the
  // whole frame, which only happens once it has grown to the declared size).
  const uint64_t window = std::min<uint64_t>(fh.windowSize, declared);
  if (window > (uint64_t{1} << kMaxWindowLog))
    return error(errc::zstd_corrupt, "zstd frame needs a window of " + std::to_string(fh.windowSize) +
                                         " bytes, over the decoder's limit of " +
                                         std::to_string(uint64_t{1} << kMaxWindowLog) + " (every standard level fits)");
  if (!held.grow(window)) return held.refusal("decompressing the zstd frame's window", window);

  // A context keeps its window buffer between frames: a large one is not kept in the worker's thread-local.
  dctx_ptr own;
  if (window > kReuseWindowBytes) own.reset(ZSTD_createDCtx());
  ZSTD_DCtx* d = own ? own.get() : thread_dctx();
  if (d == nullptr) {
    give_back();
    return error(errc::internal, "cannot allocate a zstd decompression context");
  }
  ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
  ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, static_cast<int>(kMaxWindowLog));

  byte_buffer out;
  // Grows `out` to `want` bytes; the lease covers both buffers while the old one is copied.
  auto grow_to = [&](uint64_t want) -> status {
    const uint64_t old_bytes = out.size();
    if (!held.grow(want)) return held.refusal("decompressing the zstd frame", want - old_bytes);
    out.resize(static_cast<size_t>(want));
    held.shrink(old_bytes);
    return {};
  };
  ZSTD_inBuffer in{frame.data(), frame.size(), 0};
  uint64_t produced = 0;
  bool overflow = false;  // the frame decodes past its declared size
  size_t r = 1;
  for (;;) {
    if (produced == out.size() && produced < declared) {
      const uint64_t next = std::min<uint64_t>(declared, std::max<uint64_t>(out.size() * 2, kFirstPieceBytes));
      if (auto st = grow_to(next); !st) {
        out = {};
        give_back();
        return st.err();
      }
    }
    // Once the output holds the declared size, one byte of room tells a frame that ends (only its epilogue
    // is left) from one that lies.
    std::byte probe[1];
    const bool probing = produced == out.size();
    ZSTD_outBuffer o = probing ? ZSTD_outBuffer{probe, sizeof probe, 0}
                               : ZSTD_outBuffer{out.data() + produced, out.size() - static_cast<size_t>(produced), 0};
    const size_t before_in = in.pos;
    r = ZSTD_decompressStream(d, &o, &in);
    if (ZSTD_isError(r)) break;
    if (probing && o.pos > 0) {
      overflow = true;
      break;
    }
    produced += o.pos;
    if (r == 0) break;
    if (o.pos == 0 && in.pos == before_in) break;  // no progress with input and room left: truncated
  }
  if (ZSTD_isError(r) || overflow || r != 0 || produced != declared) {
    out = {};  // freed before the diagnosis, which decodes once more into a small scratch buffer
    std::string d_s = std::to_string(declared);
    status why = ZSTD_isError(r) && ZSTD_getErrorCode(r) == ZSTD_error_corruption_detected
                     ? diagnose_corruption(frame, declared, r)
                 : ZSTD_isError(r) && ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall
                     ? status(error(errc::zstd_corrupt, "zstd frame is corrupt: " + zstd_message(r)))
                 : ZSTD_isError(r) || overflow ? status(error(errc::zstd_size_lie, "zstd frame declares " + d_s + " bytes but decodes to more"))
                 : r != 0   ? status(error(errc::zstd_corrupt, "zstd frame is truncated after " +
                                                                   std::to_string(produced) + " decoded bytes"))
                            : status(error(errc::zstd_size_lie, "zstd frame declares " + d_s + " bytes but decodes to " +
                                                                    std::to_string(produced)));
    give_back();
    return std::move(why).err();
  }
  held.shrink(window);  // the decoder's window is no longer needed; the lease now covers `out` alone
  return out;
}

}  // namespace deltasync
