// The receiver's pipeline from pieces to the store: assembly under a byte budget, the streamed and whole
// paths of each file (receiver_internal.h, file_slot), and the apply of the head file in listed order.
// Everything here runs on the loop thread except the worker jobs, which touch only their file's bytes (read
// only once submitted) and the store tensors of the head file's params (distinct within a file).
//
// Order: files apply strictly in the order the request lists them. Two files of one sync that change the
// same element leave the later file's value (as slime's receiver, which applies its files in order), and a
// replay (--recover) gives the same bytes: a sync's result is a function of its input, never of which read
// or decode finished first.
#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "base/check.h"
#include "base/clock.h"
#include "codec/compact.h"
#include "codec/zstd_frame.h"
#include "io/worker_pool.h"
#include "sync/receiver.h"
#include "sync/receiver_internal.h"

namespace deltasync {

using receiver_detail::decoded_file;
using receiver_detail::file_slot;

namespace {

// [slices] The smallest share of a dispatch's changes worth a worker of its own (pick_slices).
constexpr uint64_t kMinSliceChanges = uint64_t{1} << 17;

// The safetensors header (where the manifest lives) is length-prefixed: refuse a long one before parsing it.
uint64_t header_length(byte_span file) {
  uint64_t n = 0;
  if (file.size() >= 8) std::memcpy(&n, file.data(), 8);  // little-endian, like every host we build for
  return n;
}
bool check_manifest_size(byte_span file, uint64_t max_bytes) {
  if (is_zstd_frame(file)) return true;  // checked once unwrapped
  return header_length(file) <= max_bytes;
}
error manifest_too_large(byte_span file, uint64_t max_bytes) {
  return error(errc::limit_exceeded, "the file's header (manifest) holds " + std::to_string(header_length(file)) +
                                         " bytes, over max-manifest-bytes = " + std::to_string(max_bytes));
}

// Everything about one decoded file that can be checked against the store without writing it.
status check_against_store(const weight_store& store, const sync_request& req, uint64_t current_version,
                           const std::string& path, decoded_file& d) {
  const delta_file& f = *d.file;
  if (f.manifest.current_version != req.version)
    return error(errc::delta_version_mismatch, path + ": file is for version " +
                                                   std::to_string(f.manifest.current_version) + ", the request for " +
                                                   std::to_string(req.version));
  if (req.anchor && !f.native)
    return error(errc::delta_version_mismatch, path + ": a full-model anchor must be a native file (it carries the digests)");
  if (f.claims() && f.claims()->base_version != current_version && !req.anchor)
    return error(errc::delta_version_mismatch, path + ": file is based on version " +
                                                   std::to_string(f.claims()->base_version) + ", the store holds " +
                                                   std::to_string(current_version));
  d.tensors.clear();
  for (const auto& p : f.manifest.params) {
    auto idx = store.find(p.name);
    if (!idx) return error(errc::delta_unknown_tensor, path + ": unknown tensor '" + p.name + "'");
    const store_tensor& t = store.tensor(*idx);
    if (t.type != p.type)
      return error(errc::delta_dtype_mismatch, path + ": tensor '" + p.name + "' is " + std::string(name(t.type)) +
                                                   " in the store, " + std::string(name(p.type)) + " in the file");
    if (t.shape != p.shape) return error(errc::delta_shape_mismatch, path + ": tensor '" + p.name + "' has another shape in the store");
    if (req.anchor && p.changed() != p.numel())
      return error(errc::delta_version_mismatch, path + ": a full-model anchor must set every element, but tensor '" +
                                                     p.name + "' gets " + std::to_string(p.changed()) +
                                                     " of " + std::to_string(p.numel()));
    d.tensors.push_back(*idx);
  }
  return {};
}

// The whole-file parse with every check, with the messages the receiver has always given. A zstd payload is
// decompressed against the sync's memory budget, and names are checked against the store while the manifest
// streams in (a manifest of unknown names is refused at its first).
result<delta_file> parse_whole(byte_span bytes, const receiver_options& o, const std::string& path,
                               const weight_store& store, std::shared_ptr<memory_budget> memory) {
  delta_read_limits limits;
  limits.max_decompressed_bytes = o.max_decompressed_bytes;
  limits.max_params = o.max_params_per_file;
  limits.memory = std::move(memory);
  limits.known_tensor = [&store](std::string_view n) { return store.find(n).has_value(); };
  auto f = check_manifest_size(bytes, o.max_manifest_bytes) ? parse_delta_file(bytes, limits)
                                                            : result<delta_file>(manifest_too_large(bytes, o.max_manifest_bytes));
  if (f && !f->storage.empty() && !check_manifest_size(f->storage, o.max_manifest_bytes))
    f = manifest_too_large(f->storage, o.max_manifest_bytes);  // the header inside a zstd frame
  if (f) return f;
  std::string why = f.err().message;
  // Name the setting that bounds it, so the sender's operator knows what to raise.
  if (f.err().is(errc::zstd_too_large)) why += " (max-decompressed-bytes)";
  if (f.err().is(errc::limit_exceeded) && why.find("max-") == std::string::npos) why += " (max-tensors-per-file)";
  return error(f.err().code, path + ": " + why);
}

// Whether tensor t, applied from file f, is verified by its additive digest: the file carries one for it and
// the store keeps them.
bool uses_sum(const weight_store& store, const delta_file& f, const std::string& name, size_t t) {
  return f.claims() && f.claims()->tensor_sums.contains(name) && store.sum(t).has_value();
}

uint64_t undo_need(const delta_file& f) {
  uint64_t need = 0;
  for (const auto& p : f.manifest.params) need += (p.pos_end - p.pos_start) + p.changed() * element_bytes(p.type);
  return need;
}

// Longest-processing-time-first: each param (biggest first) goes to the least-loaded of `jobs` groups.
// A param verified by its XXH3-128 after its apply costs a pass over its tensor too.
std::vector<std::vector<size_t>> balance(const weight_store& store, const decoded_file& d, std::vector<size_t> order,
                                         size_t jobs) {
  const auto& params = d.file->manifest.params;
  auto weight = [&](size_t k) {
    const bool hashed = d.file->claims() && !uses_sum(store, *d.file, params[k].name, d.tensors[k]);
    return (hashed ? store.tensor(d.tensors[k]).nbytes : 0) + params[k].changed() * 16;
  };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return weight(a) > weight(b); });
  std::vector<std::vector<size_t>> out(jobs);
  std::vector<uint64_t> load(jobs, 0);
  for (size_t k : order) {
    const size_t j = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    out[j].push_back(k);
    load[j] += weight(k);
  }
  return out;
}

}  // namespace

using run_ptr = std::shared_ptr<receiver::run>;

struct receiver::pipeline {
  static void fail(receiver& rx, const run_ptr& r, error e) {
    if (!r->failure) {
      r->failure = std::move(e);
      if (!r->reader_done) r->reader->cancel();
      for (auto& s : r->slots) s.held.clear();  // releases their pool buffers
    }
    maybe_finish(rx, r);
  }

  static void maybe_finish(receiver& rx, const run_ptr& r) {
    if (r->finishing || !r->reader_done || r->tasks > 0) return;
    if (!r->failure && r->head < r->slots.size()) return;
    r->finishing = true;
    rx.finish(r);
  }

  // Submits a worker job counted in r->tasks; on refusal, fails the sync.
  static bool submit(receiver& rx, const run_ptr& r, std::function<void()> work, std::function<void()> on_done) {
    ++r->tasks;
    auto done = [r, on_done = std::move(on_done)] {
      --r->tasks;
      on_done();
    };
    if (rx.workers_.try_submit(std::move(work), std::move(done))) return true;
    --r->tasks;
    fail(rx, r, error(errc::limit_exceeded, "worker pool saturated"));
    return false;
  }

  // Copies a piece into its file's buffer; false when the budget is exhausted (the caller holds the piece,
  // and with it a pool buffer, which pauses the reader: back-pressure). The head file is always taken: the
  // sources issue every read of a file before any of the next (piece_source.h), so the head's pieces never
  // wait behind a later file's.
  static bool accept(receiver& rx, const run_ptr& r, io::read_piece& piece) {
    const size_t i = piece.file_index;
    file_slot& s = r->slots[i];
    if (!s.allocated) {
      const uint64_t size = r->sizes[i];
      if (i != r->head && r->assembled_bytes > 0 && r->assembled_bytes + size > rx.options_.max_assembled_bytes)
        return false;
      // [memory budget] The file's buffer is taken from the sync's budget first. A later file waits (held)
      // until the files before it are applied and give their bytes back; the head file cannot wait for
      // anything (files apply in listed order), so when it does not fit the sync is refused.
      if (!r->read_leases[i].grow(size)) {
        if (i != r->head) return false;
        piece.buffer.reset();
        fail(rx, r, r->read_leases[i].refusal(r->paths[i] + ": its read buffer", size));
        return true;
      }
      // Never zero-filled: every byte is written by a piece before anything reads it (pieces arrive in order).
      auto block = page_block::allocate(size, r->paths[i] + ": its read buffer");
      if (!block) {
        piece.buffer.reset();
        fail(rx, r, std::move(block).err());
        return true;
      }
      s.bytes = std::move(block).value();
      s.allocated = true;
      r->assembled_bytes += size;
    }
    if (!piece.bytes.empty()) std::memcpy(s.bytes.data() + piece.offset, piece.bytes.data(), piece.bytes.size());
    s.received = piece.offset + piece.bytes.size();
    r->stats.bytes_read += piece.bytes.size();
    s.complete = piece.last_in_file;
    piece.buffer.reset();
    progress(rx, r, i);
    return true;
  }

  static void on_piece(receiver& rx, const run_ptr& r, io::read_piece piece) {
    if (r->failure) return;  // dropping the piece releases its buffer
    file_slot& s = r->slots[piece.file_index];
    if (!s.held.empty() || !accept(rx, r, piece)) return s.held.push_back(std::move(piece));
    if (r->failure) return;
    pump(rx, r);
  }

  // Held pieces, earliest file first, while the budget takes them.
  static void take_held(receiver& rx, const run_ptr& r) {
    for (size_t j = r->head; j < r->slots.size() && !r->failure; ++j) {
      auto& held = r->slots[j].held;
      while (!held.empty() && !r->failure) {
        if (!accept(rx, r, held.front())) return;
        if (r->failure) return;  // [memory budget] refused: fail() already dropped every held piece
        held.pop_front();
      }
    }
  }

  // After new bytes of file i: start its header parse (streamed path), its final parse, or its decode.
  static void progress(receiver& rx, const run_ptr& r, size_t i) {
    file_slot& s = r->slots[i];
    if (!s.header_tried && !s.complete && s.received >= 8) {
      const byte_span have(s.bytes.data(), s.received);
      const uint64_t hlen = header_length(have);
      if (is_zstd_frame(have) || hlen > rx.options_.max_manifest_bytes) s.header_tried = true;  // whole path
      else if (s.received - 8 >= hlen) start_header(rx, r, i);
    }
    if (!s.complete || s.header_pending) return;
    if (s.stream && !s.verifying && !s.checked) start_verify(rx, r, i);
    if (!s.stream && !s.decoding && !s.whole_ready) start_decode(rx, r, i);
  }

  static void start_header(receiver& rx, const run_ptr& r, size_t i) {
    file_slot& s = r->slots[i];
    s.header_tried = true;
    s.header_pending = true;
    auto d = std::make_shared<decoded_file>();
    d->index = i;
    auto ok = std::make_shared<bool>(false);
    const byte_span bytes(s.bytes.data(), s.bytes.size());  // beyond the header: not read here
    auto work = [&rx, r, d, ok, bytes] {
      stopwatch sw;
      delta_read_limits limits;
      limits.max_decompressed_bytes = rx.options_.max_decompressed_bytes;
      limits.max_params = rx.options_.max_params_per_file;
      limits.verify_checksum = false;  // the data is still arriving: checked by the final parse
      limits.verify_payload_hash = false;
      auto f = parse_delta_file(bytes, limits);
      if (f) {
        d->file.emplace(std::move(f).value());
        *ok = check_against_store(rx.store_, r->req, r->current_version, r->paths[d->index], *d).ok();
      }
      d->decode_ms = sw.elapsed_ms();
    };
    submit(rx, r, std::move(work), [&rx, r, d, ok, i] {
      file_slot& done_slot = r->slots[i];
      done_slot.header_pending = false;
      r->stats.decode_ms += d->decode_ms;
      if (r->failure) return maybe_finish(rx, r);
      // A header that fails here is not an error yet: the whole path reports it with the usual precedence.
      if (*ok && !d->file->manifest.params.empty()) {
        done_slot.stream = true;
        done_slot.d.reset(new decoded_file(std::move(*d)));
      }
      progress(rx, r, i);
      pump(rx, r);
      maybe_finish(rx, r);
    });
  }

  // Streamed path, once the file is complete: the whole-file parse with every check (checksum, payload hash),
  // on a worker, while the last params may still be applying. The bytes are no longer written.
  static void start_verify(receiver& rx, const run_ptr& r, size_t i) {
    file_slot& s = r->slots[i];
    s.verifying = true;
    auto outcome = std::make_shared<status>();
    auto ms = std::make_shared<double>(0);
    const byte_span bytes(s.bytes.data(), s.bytes.size());
    auto work = [&rx, r, i, bytes, outcome, ms] {
      stopwatch sw;
      *outcome = receiver_detail::check_expected_hash(r->req, i, bytes, r->paths[i]);
      if (*outcome)
        if (auto f = parse_whole(bytes, rx.options_, r->paths[i], rx.store_, r->memory); !f) *outcome = std::move(f).err();
      *ms = sw.elapsed_ms();
    };
    submit(rx, r, std::move(work), [&rx, r, i, outcome, ms] {
      file_slot& done_slot = r->slots[i];
      done_slot.verifying = false;
      done_slot.checked = true;
      r->stats.decode_ms += *ms;
      if (!*outcome) return fail(rx, r, outcome->err());
      pump(rx, r);
      maybe_finish(rx, r);
    });
  }

  // Whole path: parse and check the complete file.
  static void start_decode(receiver& rx, const run_ptr& r, size_t i) {
    file_slot& s = r->slots[i];
    s.decoding = true;
    auto d = std::make_shared<decoded_file>();
    d->index = i;
    d->bytes = std::move(s.bytes);
    auto outcome = std::make_shared<status>();
    auto work = [&rx, r, d, outcome] {
      stopwatch sw;
      // The marker's check first: a file changed since it was published is refused for that.
      auto ok = receiver_detail::check_expected_hash(r->req, d->index, d->bytes.span(), r->paths[d->index]);
      auto f = ok ? parse_whole(d->bytes.span(), rx.options_, r->paths[d->index], rx.store_, r->memory)
                  : result<delta_file>(ok.err());
      if (!f) {
        *outcome = std::move(f).err();
      } else {
        d->file.emplace(std::move(f).value());
        *outcome = check_against_store(rx.store_, r->req, r->current_version, r->paths[d->index], *d);
      }
      d->decode_ms = sw.elapsed_ms();
    };
    submit(rx, r, std::move(work), [&rx, r, d, outcome, i] {
      file_slot& done_slot = r->slots[i];
      done_slot.decoding = false;
      r->stats.decode_ms += d->decode_ms;
      if (!*outcome) return fail(rx, r, outcome->err());
      if (r->failure) return maybe_finish(rx, r);
      done_slot.d.reset(new decoded_file(std::move(*d)));
      done_slot.whole_ready = true;
      pump(rx, r);
      maybe_finish(rx, r);
    });
  }

  // The head file: start it, feed its ready params to the workers, finish it; then the next one.
  static void pump(receiver& rx, const run_ptr& r) {
    while (!r->failure && r->head < r->slots.size()) {
      file_slot& s = r->slots[r->head];
      if (!s.started) {
        if (!s.stream && !s.whole_ready) return;  // still arriving / decoding
        const uint64_t need = undo_need(*s.d->file);
        const bool over_undo = r->undo.bytes() + need > r->undo.max_bytes();
        // [memory budget] the undo log is held until the sync ends
        if (over_undo || !r->undo_lease.grow(need)) {
          if (s.stream) {
            if (s.verifying) return;  // its bytes are being read: switch once that is over
            // Refused only once the file is known to be otherwise valid: take the whole path (which
            // reports the file's own error first, else this one).
            s.stream = false;
            s.d.reset();
            progress(rx, r, r->head);
            continue;
          }
          if (!over_undo) return fail(rx, r, r->undo_lease.refusal(r->paths[r->head] + ": the undo log of its apply", need));
          return fail(rx, r, error(errc::limit_exceeded, r->paths[r->head] + ": the sync's undo log would pass its limit of " +
                                                             std::to_string(r->undo.max_bytes()) + " bytes"));
        }
        s.started = true;
      }
      dispatch(rx, r, r->head);
      if (r->failure) return;
      const size_t n = s.d->file->manifest.params.size();
      const bool applied = s.jobs_in_flight == 0 && (s.params_done == n || s.param_error);
      if (!applied || (s.stream && !s.checked)) return;
      if (s.param_error) return fail(rx, r, *s.param_error);
      finish_file(rx, r);
    }
    maybe_finish(rx, r);
  }

  // Submits the head file's params that can run now: every one (whole path, once) or those whose bytes
  // are in (streamed), spread over the workers.
  static void dispatch(receiver& rx, const run_ptr& r, size_t i) {
    file_slot& s = r->slots[i];
    if (s.param_error) return;
    if (s.stream && s.jobs_in_flight >= rx.workers_.threads()) return;  // more come ready meanwhile
    const delta_file& f = *s.d->file;
    const auto& params = f.manifest.params;
    size_t end = s.next_param;
    if (!s.stream) {
      end = params.size();
    } else {
      const std::byte* base = s.bytes.data();
      const uint64_t vb = element_bytes(f.values_type);
      while (end < params.size()) {
        const auto& p = params[end];
        const uint64_t pos_end = static_cast<uint64_t>(f.positions.data() - base) + p.pos_end;
        // A compact stream holds its values inside its position range (there is no __values__).
        const uint64_t val_end =
            f.manifest.enc == encoding::compact ? 0 : static_cast<uint64_t>(f.values.data() - base) + p.val_end * vb;
        if (std::max(pos_end, val_end) > s.received) break;
        ++end;
      }
    }
    if (end == s.next_param) return;
    const size_t first = s.next_param;
    s.next_param = end;
    const bool delay = first == 0 || !s.stream;  // the test hook delays a file's first jobs
    for (size_t k = first; k < end; ++k) r->touched.push_back(s.d->tensors[k]);
    std::vector<size_t> whole, split;
    pick_slices(rx, *s.d, first, end, whole, split);
    if (!whole.empty()) {
      const size_t jobs = std::min(whole.size(), rx.workers_.threads());
      auto groups = balance(rx.store_, *s.d, whole, jobs);
      for (auto& g : groups) {
        auto items = std::make_shared<std::vector<apply_item>>();
        for (size_t k : g) items->push_back({k, &f.manifest.params[k], nullptr});
        if (!submit_apply(rx, r, i, std::move(items), delay)) return;
      }
    }
    for (size_t k : split)
      if (!plan_slices(rx, r, i, k, delay)) return;
  }

  // One job's share of a file's apply: a whole param (slices == nullptr) or one slice of a split one.
  struct apply_item {
    size_t k;                                        // the param's index in the manifest
    const param_entry* p;                            // what to apply: the manifest's entry or a slice of it
    std::shared_ptr<std::vector<param_entry>> slices;  // keeps a slice alive
  };

  // [slices] A param whose changes are several times a worker's fair share of the dispatch would keep one
  // worker busy while the others idle (an embedding is a fifth of a model): when the store takes slices, it is
  // split into runs of positions (a compact param: runs of its stream's blocks) that apply on several workers.
  // Only params whose values are of the store's own dtype, verified by an additive digest or by nothing (a
  // per-param XXH3-128 is taken after the whole param, in one job).
  static void pick_slices(receiver& rx, const decoded_file& d, size_t first, size_t end, std::vector<size_t>& whole,
                          std::vector<size_t>& split) {
    const delta_file& f = *d.file;
    const auto& params = f.manifest.params;
    uint64_t total = 0;
    for (size_t k = first; k < end; ++k) total += params[k].changed();
    const size_t threads = rx.workers_.threads();
    const uint64_t share = std::max<uint64_t>(kMinSliceChanges, total / std::max<size_t>(1, threads));
    const bool can = rx.store_.applies_slices() && threads > 1;
    const bool compact = f.manifest.enc == encoding::compact;
    for (size_t k = first; k < end; ++k) {
      const param_entry& p = params[k];
      const bool eligible = can && p.changed() >= 2 * share && (compact || f.values_type == p.type) &&
                            (!f.claims() || uses_sum(rx.store_, f, p.name, d.tensors[k]));
      (eligible ? split : whole).push_back(k);
    }
  }

  // On a worker: validates the whole param's positions (so a refusal is the unsplit path's, word for word)
  // and cuts them into slices, each starting where the last left off; then the slices go to the workers. A
  // param that does not validate is applied whole, which refuses it as it always did. A compact param's runs
  // of blocks check themselves (each with decode's checks and messages on its blocks; only which of several
  // faults is named first may differ) and a refusal rolls the sync back like any failed apply.
  static bool plan_slices(receiver& rx, const run_ptr& r, size_t i, size_t k, bool delay) {
    file_slot& s = r->slots[i];
    decoded_file* d = s.d.get();
    const size_t parts = rx.workers_.threads();
    auto slices = std::make_shared<std::vector<param_entry>>();
    auto work = [&rx, d, k, parts, slices] {
      const delta_file& f = *d->file;
      const param_entry& p = f.manifest.params[k];
      if (f.manifest.enc == encoding::compact) {
        // Runs of whole blocks, each decoded and checked by its own job (compact::decode_blocks): only the
        // header is read here. A stream whose header does not hold is applied whole, refused there as always.
        if (p.pos_start > p.pos_end || p.pos_end > f.positions.size()) return;
        auto info = compact::read_header(f.positions.subspan(p.pos_start, p.pos_end - p.pos_start), p.changed(),
                                         element_bytes(p.type));
        if (info.ok() && info->version == 2) *slices = cut_compact_slices(p, *info, parts);
        return;
      }
      const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
      const uint64_t numel = rx.store_.tensor(d->tensors[k]).numel;
      const uint32_t veb = element_bytes(f.values_type);
      if (p.pos_start > p.pos_end || p.pos_end > f.positions.size() || p.pos_width == 0 || veb == 0 ||
          encoded.size() / p.pos_width != p.changed() || p.val_start > p.val_end || p.val_end > f.values.size() / veb ||
          !check_positions(f.manifest.enc, p.pos_width, encoded, numel).ok())
        return;  // applied whole: refused there as always
      *slices = cut_slices(f.manifest.enc, p, encoded, parts);
    };
    ++s.jobs_in_flight;
    return submit(rx, r, std::move(work), [&rx, r, i, k, slices, delay] {
      file_slot& done_slot = r->slots[i];
      const auto& ps = done_slot.d->file->manifest.params;
      bool ok = true;
      if (!r->failure && !done_slot.param_error) {
        if (slices->size() < 2) {
          auto items = std::make_shared<std::vector<apply_item>>();
          items->push_back({k, &ps[k], nullptr});
          ok = submit_apply(rx, r, i, std::move(items), delay);
        } else {
          ++r->stats.split_params;
          auto left = std::make_shared<size_t>(slices->size());
          for (const param_entry& piece : *slices) {
            auto items = std::make_shared<std::vector<apply_item>>();
            items->push_back({k, &piece, slices});
            if (!(ok = submit_apply(rx, r, i, std::move(items), delay, left))) break;
          }
        }
      } else {
        ++done_slot.params_done;  // not applied: the sync fails (or has failed) anyway
      }
      --done_slot.jobs_in_flight;
      if (!ok) return;
      pump(rx, r);
      maybe_finish(rx, r);
    });
  }

  // Cuts a validated param into `parts` runs of positions of about the same length; each slice's pos_base is
  // the index after its predecessor's last (its gap list continues from there).
  static std::vector<param_entry> cut_slices(encoding enc, const param_entry& p, byte_span encoded, size_t parts) {
    const uint64_t n = p.changed();
    const uint32_t w = p.pos_width;
    std::vector<param_entry> out;
    uint64_t at = 0, next = 0;  // entries consumed; the index the next entry's gap counts from
    for (size_t j = 0; j < parts; ++j) {
      const uint64_t to = n * (j + 1) / parts;
      if (to == at) continue;
      param_entry piece = p;
      piece.pos_start = p.pos_start + at * w;
      piece.pos_end = p.pos_start + to * w;
      piece.val_start = p.val_start + at;
      piece.val_end = p.val_start + to;
      piece.pos_base = next;
      if (enc == encoding::indices) {
        next = uint64_t{load_le<uint32_t>(encoded.data() + 4 * (to - 1))} + 1;
      } else {
        for (uint64_t e = at; e < to; ++e)
          next += (w == 2 ? uint64_t{load_le<uint16_t>(encoded.data() + 2 * e)} : load_le<uint32_t>(encoded.data() + 4 * e)) + 1;
      }
      out.push_back(std::move(piece));
      at = to;
    }
    return out;
  }

  // Cuts a compact param into `parts` runs of about as many blocks; each slice's values range is its changes.
  static std::vector<param_entry> cut_compact_slices(const param_entry& p, const compact::stream_info& info,
                                                     size_t parts) {
    std::vector<param_entry> out;
    uint32_t at = 0;
    for (size_t j = 0; j < parts; ++j) {
      const auto to = static_cast<uint32_t>(uint64_t{info.blocks} * (j + 1) / parts);
      if (to == at) continue;
      param_entry piece = p;
      piece.block_first = at;
      piece.block_end = to;
      piece.val_start = p.val_start + uint64_t{at} * compact::kBlockElems;
      piece.val_end = p.val_start + std::min<uint64_t>(info.count, uint64_t{to} * compact::kBlockElems);
      out.push_back(std::move(piece));
      at = to;
    }
    return out;
  }

  // Submits one apply job of file i's items. `left` counts a split param's slices still to finish: the param
  // is done when the last one is.
  static bool submit_apply(receiver& rx, const run_ptr& r, size_t i, std::shared_ptr<std::vector<apply_item>> items,
                           bool delay, std::shared_ptr<size_t> left = nullptr) {
    file_slot& s = r->slots[i];
    struct job_state {
      undo_log undo{~uint64_t{0}};
      status outcome;
      double ms = 0;
      std::vector<size_t> matched;
    };
    auto js = std::make_shared<job_state>();
    decoded_file* d = s.d.get();  // owned by the slot until the file is finished, after every job
    auto work = [&rx, r, d, js, items, delay] {
      if (delay && rx.options_.test_apply_delay_ms)
        std::this_thread::sleep_for(std::chrono::milliseconds(rx.options_.test_apply_delay_ms));
      stopwatch sw;
      for (const apply_item& it : *items) {
        auto st = rx.store_.apply(d->tensors[it.k], *d->file, *it.p, js->undo);
        if (!st) {
          js->outcome = error(st.err().code, r->paths[d->index] + ": " + st.err().message);
          break;
        }
        // A tensor with an additive digest is checked at the end in O(1); the others are hashed here, while hot
        // (never a slice: pick_slices keeps those whole).
        const std::string& name = it.p->name;
        if (const native_info* c = d->file->claims(); c && !uses_sum(rx.store_, *d->file, name, d->tensors[it.k])) {
          auto dg = c->tensor_digests.find(name);
          if (dg != c->tensor_digests.end() && rx.store_.digest(d->tensors[it.k]) == dg->second)
            js->matched.push_back(d->tensors[it.k]);
        }
      }
      js->ms = sw.elapsed_ms();
    };
    ++s.jobs_in_flight;
    const bool ok = submit(rx, r, std::move(work), [&rx, r, i, js, items, left] {
      file_slot& done_slot = r->slots[i];
      --done_slot.jobs_in_flight;
      // Merged even after a failure: the rollback must undo this job's writes.
      for (auto& rec : js->undo.records()) r->undo.records().push_back(std::move(rec));
      const bool reserved = r->undo.reserve(js->undo.bytes());
      DS_CHECK(reserved, "undo log budget checked before the apply");
      if (!left) done_slot.params_done += items->size();
      else if (--*left == 0) ++done_slot.params_done;
      done_slot.apply_ms = std::max(done_slot.apply_ms, js->ms);  // whole path: the slowest job; streamed: summed below
      if (done_slot.stream) r->stats.apply_ms += js->ms;
      done_slot.matched.insert(done_slot.matched.end(), js->matched.begin(), js->matched.end());
      if (!js->outcome && !done_slot.param_error) done_slot.param_error = js->outcome.err();
      if (!done_slot.stream && done_slot.param_error) return fail(rx, r, *done_slot.param_error);
      pump(rx, r);
      maybe_finish(rx, r);
    });
    if (!ok) --s.jobs_in_flight;
    return ok;
  }

  // The head file is applied (and, streamed, verified): account for it, free its bytes, move on.
  static void finish_file(receiver& rx, const run_ptr& r) {
    file_slot& s = r->slots[r->head];
    const decoded_file& d = *s.d;
    const delta_file& f = *d.file;
    if (!s.stream) r->stats.apply_ms += s.apply_ms;
    if (s.stream) ++r->stats.streamed_files;
    ++r->files_applied;
    for (size_t k = 0; k < f.manifest.params.size(); ++k) {
      r->stats.changed_elements += f.manifest.params[k].changed();
      ++r->stats.params;
      if (const native_info* c = f.claims()) {
        const std::string& name = f.manifest.params[k].name;
        const size_t t = d.tensors[k];
        if (uses_sum(rx.store_, f, name, t)) {
          r->expected_sum[t] = c->tensor_sums.find(name)->second;
          r->expected.erase(t);
        } else if (auto it = c->tensor_digests.find(name); it != c->tensor_digests.end()) {
          r->expected[t] = it->second;
          r->expected_sum.erase(t);
        }
      }
    }
    // A tensor applied again loses an earlier file's verification; this file's matches count instead.
    for (size_t t : d.tensors) r->verified.erase(t);
    r->verified.insert(s.matched.begin(), s.matched.end());
    r->stats.native = r->stats.native || f.native.has_value();
    r->assembled_bytes -= r->sizes[r->head];
    r->read_leases[r->head].reset();  // [memory budget] with s.d goes the decompressed payload's lease too
    s.d.reset();
    s.bytes.reset();
    ++r->head;
    take_held(rx, r);
  }
};

void receiver::start_pipeline(std::shared_ptr<run> r, uint64_t cur) {
  auto read_sw = std::make_shared<stopwatch>();
  r->current_version = cur;
  r->slots.resize(r->paths.size());
  // [memory budget] One per sync, whatever the transport; every file's read buffer and the undo log draw on it.
  r->memory = std::make_shared<memory_budget>(options_.max_sync_memory_bytes);
  for (size_t i = 0; i < r->paths.size(); ++i) r->read_leases.emplace_back(r->memory);
  r->undo_lease = memory_lease(r->memory);
  receiver& rx = *this;
  r->reader->start([&rx, r](io::read_piece piece) { pipeline::on_piece(rx, r, std::move(piece)); },
                   [&rx, r, read_sw](status s) {
                     r->reader_done = true;
                     r->stats.read_ms = read_sw->elapsed_ms();
                     if (!s && !r->failure) return pipeline::fail(rx, r, s.err());
                     pipeline::pump(rx, r);
                   });
}

}  // namespace deltasync
