// The receiver pipeline. The loop thread owns all run state; workers only touch the file they decode, and
// the store during the single apply (or verify / rollback) in flight, so no locks are needed. Verification,
// rollback and commit (finish) are in receiver_commit.cc.
#include "sync/receiver.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include "base/check.h"
#include "base/clock.h"
#include "base/log.h"
#include "io/buffer_pool.h"
#include "io/chunked_reader.h"
#include "io/event_loop.h"
#include "io/worker_pool.h"
#include "sync/file_source.h"
#include "sync/receiver_internal.h"

namespace deltasync {

using receiver_detail::decoded_file;

unsigned http_status_for(const error& e) noexcept {
  if (e.code.category() != deltasync_category()) return 500;
  const int v = e.code.value();
  switch (static_cast<errc>(v)) {
    case errc::bad_request:
    case errc::invalid_argument:
    case errc::unsupported: return 400;
    case errc::unauthorized: return 401;
    case errc::forbidden_path:
    case errc::forbidden_url: return 403;
    case errc::not_found: return 404;
    case errc::version_conflict: return 409;
    case errc::body_too_large:
    case errc::limit_exceeded:
    case errc::zstd_too_large: return 413;
    case errc::busy:
    case errc::too_many_open_files: return 503;  // retry once the operator raised the limit the message names
    case errc::upstream_error: return 502;
    default: break;
  }
  // Every container, zstd and delta-format rule: the file is invalid.
  if ((v >= 100 && v < 400) || v == static_cast<int>(errc::io_error)) return 422;
  return 500;
}

receiver::receiver(io::event_loop& loop, io::io_backend& backend, io::buffer_pool& pool, io::worker_pool& workers,
                   weight_store& store, receiver_options options, metrics_registry* metrics)
    : loop_(loop),
      backend_(backend),
      pool_(pool),
      workers_(workers),
      store_(store),
      options_(std::move(options)),
      m_(std::make_unique<counters>()) {
  if (metrics) {
    m_->syncs_ok = &metrics->counter("deltasync_syncs_ok_total", "Syncs committed");
    m_->syncs_failed = &metrics->counter("deltasync_syncs_failed_total", "Syncs refused or rolled back");
    m_->bytes_read = &metrics->counter("deltasync_bytes_read_total", "Delta file bytes read");
    m_->changed = &metrics->counter("deltasync_changed_elements_total", "Elements overwritten by committed syncs");
    m_->version = &metrics->gauge("deltasync_weight_version", "Weight version the store holds (each committed sync sets it)");
    auto b = latency_buckets_s();
    m_->read = &metrics->histogram("deltasync_sync_read_seconds", "Read stage per sync", b);
    m_->decode = &metrics->histogram("deltasync_sync_decode_seconds", "Decode stage per sync (worker time)", b);
    m_->apply = &metrics->histogram("deltasync_sync_apply_seconds", "Apply stage per sync (worker time)", b);
    m_->verify = &metrics->histogram("deltasync_sync_verify_seconds", "Verify stage per sync", b);
    m_->total = &metrics->histogram("deltasync_sync_seconds", "Request to commit per sync", b);
    m_->version->set(static_cast<double>(store_.version()));
  }
}

receiver::~receiver() { DS_CHECK(!current_, "receiver destroyed with a sync in flight"); }

bool receiver::busy() const noexcept { return current_ != nullptr; }

namespace {

// The safetensors header (where the manifest lives) is length-prefixed: refuse a long one before parsing it.
uint64_t header_length(byte_span file) {
  uint64_t n = 0;
  if (file.size() >= 8) std::memcpy(&n, file.data(), 8);  // little-endian, like every host we build for
  return n;
}
bool check_manifest_size(byte_span file, uint64_t max_bytes) {
  static constexpr std::byte kZstdMagic[4] = {std::byte{0x28}, std::byte{0xB5}, std::byte{0x2F}, std::byte{0xFD}};
  if (file.size() >= 4 && std::memcmp(file.data(), kZstdMagic, 4) == 0) return true;  // checked once unwrapped
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
  if (f.native && f.native->base_version != current_version)
    return error(errc::delta_version_mismatch, path + ": file is based on version " +
                                                   std::to_string(f.native->base_version) + ", the store holds " +
                                                   std::to_string(current_version));
  for (const auto& p : f.manifest.params) {
    auto idx = store.find(p.name);
    if (!idx) return error(errc::delta_unknown_tensor, path + ": unknown tensor '" + p.name + "'");
    const store_tensor& t = store.tensor(*idx);
    if (t.type != p.type)
      return error(errc::delta_dtype_mismatch, path + ": tensor '" + p.name + "' is " + std::string(name(t.type)) +
                                                   " in the store, " + std::string(name(p.type)) + " in the file");
    if (t.shape != p.shape) return error(errc::delta_shape_mismatch, path + ": tensor '" + p.name + "' has another shape in the store");
    d.tensors.push_back(*idx);
  }
  return {};
}

}  // namespace

void receiver::start_sync(sync_request req, std::function<void(result<sync_stats>)> done) {
  auto refuse = [&](error e) {
    if (m_->syncs_failed) m_->syncs_failed->add();
    DS_LOG_FIELDS(warn, "sync",
                  ({{"sync_version", req.version},
                    {"current_version", store_.version()}, {"outcome", "refused"}, {"error_code", e.code_name()}}),
                  "refused version %llu: %s", static_cast<unsigned long long>(req.version), e.describe().c_str());
    last_error_ = e;
    done(std::move(e));
  };
  if (current_) return done(error(errc::busy, "another sync is in progress"));
  const bool disk = req.transport == "disk";
  const bool pull = req.transport == "http";
  auto transport = transports_.find(req.transport);
  if ((pull && !remote_) || (!disk && !pull && transport == transports_.end()))
    return refuse(error(errc::unsupported, "transport '" + req.transport + "' is not built in this receiver"));
  std::unique_ptr<piece_source> source;
  if (!disk && !pull) {
    // The bytes are already on their way: from here on a refusal drains them first (see refuse_draining).
    auto made = transport->second(req, pool_);
    if (!made) return refuse(std::move(made).err());
    source = std::move(made).value();
  }
  auto refuse_any = [&](error e) {
    if (!source) return refuse(std::move(e));
    refuse_draining(std::move(source), std::move(e), std::move(done));
  };
  const uint64_t cur = store_.version();
  if (req.base_version && *req.base_version != cur)
    return refuse_any(error(errc::version_conflict, "base_version " + std::to_string(*req.base_version) +
                                                        " does not match the current version " + std::to_string(cur)));
  if (req.version <= cur)
    return refuse_any(error(errc::version_conflict, "version " + std::to_string(req.version) +
                                                        " is not newer than the current version " + std::to_string(cur)));
  if (pull) return start_pull(std::move(req), std::move(done), cur);  // receiver_transports.cc
  // Disk: each file opened beneath the delta dir and held open (what was checked is what is read). Other
  // transports: the announced names and sizes.
  sync_files opened;
  if (disk) {
    auto o = open_sync_files(options_.delta_dir, req);
    if (!o) return refuse(std::move(o).err());
    opened = std::move(o).value();
  } else {
    for (size_t i = 0; i < req.files.size(); ++i)
      opened.files().push_back({req.transport + ":" + req.dir + "/" + req.files[i], {}, req.sizes.at(i), -1});
  }

  auto r = std::make_shared<run>(options_.max_undo_bytes);
  uint64_t total_bytes = 0;
  std::vector<io::read_file_spec> specs;
  std::vector<std::string> paths;
  for (const auto& f : opened.files()) {
    const uint64_t size = f.bytes;
    if (size > options_.max_file_bytes)
      return refuse_any(error(errc::limit_exceeded, f.path + " holds " + std::to_string(size) +
                                                        " bytes, over max-file-bytes = " + std::to_string(options_.max_file_bytes)));
    total_bytes += size;
    r->sizes.push_back(size);
    paths.push_back(f.path);
    specs.push_back({f.path, size, f.open_path});
  }
  if (total_bytes > options_.max_sync_bytes)
    return refuse_any(error(errc::limit_exceeded, "the sync's files hold " + std::to_string(total_bytes) +
                                                      " bytes, over max-sync-bytes = " + std::to_string(options_.max_sync_bytes)));
  r->opened = std::move(opened);
  r->req = std::move(req);
  r->done = std::move(done);
  r->paths = std::move(paths);
  r->assembling.resize(r->paths.size());
  r->stats.version = r->req.version;
  r->stats.base_version = cur;
  r->stats.files = r->paths.size();
  current_ = r;

  io::chunked_reader_options ro;
  ro.chunk_bytes = options_.chunk_bytes;
  ro.read_workers = options_.read_workers;
  r->reader = disk ? make_disk_file_source(backend_, pool_, std::move(specs), ro) : std::move(source);
  start_pipeline(r, cur);
}

void receiver::start_pipeline(std::shared_ptr<run> r, uint64_t cur) {
  auto read_sw = std::make_shared<stopwatch>();
  // [memory budget] One per sync, whatever the transport; every file's read buffer and the undo log draw on it.
  r->memory = std::make_shared<memory_budget>(options_.max_sync_memory_bytes);
  for (size_t i = 0; i < r->paths.size(); ++i) r->read_leases.emplace_back(r->memory);
  r->undo_lease = memory_lease(r->memory);

  // Forward declarations of the stages as lambdas sharing `r` (all run on the loop thread).
  auto self = this;
  auto fail = std::make_shared<std::function<void(error)>>();
  auto maybe_finish = std::make_shared<std::function<void()>>();
  auto pump_apply = std::make_shared<std::function<void()>>();
  auto accept_piece = std::make_shared<std::function<bool(io::read_piece&)>>();
  r->fail = fail;
  r->maybe_finish = maybe_finish;
  r->pump_apply = pump_apply;
  r->accept_piece = accept_piece;

  *fail = [r, maybe_finish](error e) {
    if (!r->failure) {
      r->failure = std::move(e);
      if (!r->reader_done) r->reader->cancel();
      r->apply_queue.clear();
      r->held.clear();
    }
    (*maybe_finish)();
  };

  *maybe_finish = [self, r, fail] {
    if (r->finishing || !r->reader_done || r->tasks > 0) return;
    if (!r->failure && (!r->apply_queue.empty() || r->applying || r->files_applied < r->paths.size())) return;
    r->finishing = true;
    self->finish(r);
  };

  *pump_apply = [self, r, fail, maybe_finish, pump_apply, accept_piece] {
    if (r->failure || r->applying || r->apply_queue.empty()) return;
    std::shared_ptr<decoded_file> d(r->apply_queue.front().release());
    r->apply_queue.pop_front();
    const auto& params = d->file->manifest.params;
    // The file's params name distinct tensors (the reader refuses duplicates), so they apply in parallel:
    // one job per worker, each with its own undo records, merged into the sync's log when all are done.
    uint64_t undo_need = 0;
    for (const auto& p : params) undo_need += (p.pos_end - p.pos_start) + p.changed() * element_bytes(p.type);
    if (r->undo.bytes() + undo_need > r->undo.max_bytes())
      return (*fail)(error(errc::limit_exceeded, r->paths[d->index] + ": the sync's undo log would pass its limit of " +
                                                     std::to_string(r->undo.max_bytes()) + " bytes"));
    if (!r->undo_lease.grow(undo_need))  // [memory budget] the undo log is held until the sync ends
      return (*fail)(r->undo_lease.refusal(r->paths[d->index] + ": the undo log of its apply", undo_need));
    const size_t jobs = std::max<size_t>(1, std::min(params.size(), self->workers_.threads()));
    struct job_state {
      undo_log undo{~uint64_t{0}};
      status outcome;
      double ms = 0;
      std::vector<size_t> matched;  // tensors whose native digest matched right after this apply
    };
    auto states = std::make_shared<std::vector<job_state>>(jobs);
    // Longest-processing-time-first: each param (biggest tensor first) goes to the least-loaded job, so one
    // job is not left holding the embedding and several large matrices while the others idle.
    auto assign = std::make_shared<std::vector<std::vector<size_t>>>(jobs);
    {
      std::vector<size_t> order(params.size());
      for (size_t k = 0; k < order.size(); ++k) order[k] = k;
      auto weight = [&](size_t k) { return self->store_.tensor(d->tensors[k]).nbytes + params[k].changed() * 16; };
      std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return weight(a) > weight(b); });
      std::vector<uint64_t> load(jobs, 0);
      for (size_t k : order) {
        size_t j = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
        (*assign)[j].push_back(k);
        load[j] += weight(k);
      }
    }
    auto remaining = std::make_shared<size_t>(jobs);
    r->applying = true;
    auto all_done = [self, r, d, states, fail, pump_apply, maybe_finish, accept_piece] {
      r->applying = false;
      status outcome;
      double wall_ms = 0;
      for (auto& js : *states) {
        wall_ms = std::max(wall_ms, js.ms);
        for (auto& rec : js.undo.records()) r->undo.records().push_back(std::move(rec));
        const bool reserved = r->undo.reserve(js.undo.bytes());
        DS_CHECK(reserved, "undo log budget checked before the apply");
        if (!js.outcome && outcome) outcome = js.outcome;
      }
      r->stats.apply_ms += wall_ms;
      // The file's bytes are no longer needed: free its budget and take held pieces.
      r->assembled_bytes -= r->sizes[d->index];
      d->bytes.clear();
      d->bytes.shrink_to_fit();
      d->read_lease.reset();  // [memory budget]
      if (d->file) d->file->storage_lease.reset(), d->file->storage = {};  // the decompressed payload too
      if (!outcome) return (*fail)(outcome.err());
      ++r->files_applied;
      for (size_t k = 0; k < d->file->manifest.params.size(); ++k) {
        r->stats.changed_elements += d->file->manifest.params[k].changed();
        ++r->stats.params;
        if (d->file->native) {
          auto it = d->file->native->tensor_digests.find(d->file->manifest.params[k].name);
          if (it != d->file->native->tensor_digests.end()) r->expected[d->tensors[k]] = it->second;
        }
      }
      // A tensor applied again loses an earlier file's verification; this file's matches count instead.
      for (size_t t : d->tensors) r->verified.erase(t);
      for (const auto& js : *states) r->verified.insert(js.matched.begin(), js.matched.end());
      r->stats.native = r->stats.native || d->file->native.has_value();
      while (!r->held.empty() && !r->failure) {
        if (!(*accept_piece)(r->held.front())) break;
        if (r->failure) break;  // [memory budget] refused: fail() already dropped every held piece
        r->held.pop_front();
      }
      (*pump_apply)();
      (*maybe_finish)();
    };
    for (size_t j = 0; j < jobs; ++j) {
      ++r->tasks;
      auto work = [self, r, d, states, assign, j] {
        if (self->options_.test_apply_delay_ms)
          std::this_thread::sleep_for(std::chrono::milliseconds(self->options_.test_apply_delay_ms));
        stopwatch sw;
        job_state& js = (*states)[j];
        const auto& ps = d->file->manifest.params;
        for (size_t k : (*assign)[j]) {
          auto st = self->store_.apply(d->tensors[k], *d->file, ps[k], js.undo);
          if (!st) {
            js.outcome = error(st.err().code, r->paths[d->index] + ": " + st.err().message);
            break;
          }
          if (d->file->native) {
            auto it = d->file->native->tensor_digests.find(ps[k].name);
            if (it != d->file->native->tensor_digests.end() && self->store_.digest(d->tensors[k]) == it->second)
              js.matched.push_back(d->tensors[k]);
          }
        }
        js.ms = sw.elapsed_ms();
      };
      auto on_done = [r, remaining, all_done] {
        --r->tasks;
        if (--*remaining == 0) all_done();
      };
      if (!self->workers_.try_submit(std::move(work), on_done)) {
        (*states)[j].outcome = error(errc::limit_exceeded, "worker pool saturated");
        on_done();
      }
    }
  };

  auto start_decode = [self, r, fail, pump_apply, maybe_finish, cur](size_t index) {
    auto d = std::make_shared<decoded_file>();
    d->index = index;
    d->bytes = std::move(r->assembling[index]);
    d->read_lease = std::move(r->read_leases[index]);  // [memory budget]
    ++r->tasks;
    auto outcome = std::make_shared<status>();
    auto work = [self, r, d, outcome, cur] {
      stopwatch sw;
      delta_read_limits limits;
      limits.max_decompressed_bytes = self->options_.max_decompressed_bytes;
      limits.max_params = self->options_.max_params_per_file;
      limits.memory = r->memory;  // [memory budget] a zstd payload is decompressed against it
      // Names are checked while the manifest streams in: a manifest of unknown names is refused at its first.
      limits.known_tensor = [store = &self->store_](std::string_view n) { return store->find(n).has_value(); };
      auto f = check_manifest_size(d->bytes, self->options_.max_manifest_bytes)
                   ? parse_delta_file(d->bytes, limits)
                   : result<delta_file>(manifest_too_large(d->bytes, self->options_.max_manifest_bytes));
      if (f && !f->storage.empty() && !check_manifest_size(f->storage, self->options_.max_manifest_bytes))
        f = manifest_too_large(f->storage, self->options_.max_manifest_bytes);  // the header inside a zstd frame
      if (!f) {
        std::string why = f.err().message;
        // Name the setting that bounds it, so the sender's operator knows what to raise.
        if (f.err().is(errc::zstd_too_large)) why += " (max-decompressed-bytes)";
        if (f.err().is(errc::limit_exceeded) && why.find("max-") == std::string::npos) why += " (max-tensors-per-file)";
        *outcome = error(f.err().code, r->paths[d->index] + ": " + why);
      } else {
        d->file.emplace(std::move(f).value());
        *outcome = check_against_store(self->store_, r->req, cur, r->paths[d->index], *d);
      }
      d->decode_ms = sw.elapsed_ms();
    };
    auto on_done = [r, d, outcome, fail, pump_apply, maybe_finish] {
      --r->tasks;
      r->stats.decode_ms += d->decode_ms;
      if (!*outcome) return (*fail)(outcome->err());
      if (r->failure) return (*maybe_finish)();
      auto owned = std::make_unique<decoded_file>(std::move(*d));
      r->apply_queue.push_back(std::move(owned));
      (*pump_apply)();
      (*maybe_finish)();
    };
    if (!self->workers_.try_submit(std::move(work), std::move(on_done))) {
      --r->tasks;
      (*fail)(error(errc::limit_exceeded, "worker pool saturated"));
    }
  };

  // Copies a piece into its file's assembly buffer; false when the budget is exhausted (the caller holds
  // the piece, and with it a pool buffer, which pauses the reader: back-pressure).
  *accept_piece = [self, r, start_decode](io::read_piece& piece) -> bool {
    const size_t i = piece.file_index;
    if (r->assembling[i].empty() && r->sizes[i] > 0 && piece.offset == 0) {
      if (r->assembled_bytes > 0 && r->assembled_bytes + r->sizes[i] > self->options_.max_assembled_bytes) return false;
      // [memory budget] The file's buffer is taken from the sync's budget first: it waits while other files
      // are in flight (their bytes come back once applied), and is refused when nothing is left to wait for.
      if (!r->read_leases[i].grow(r->sizes[i])) {
        if (r->assembled_bytes > 0) return false;
        piece.buffer.reset();
        (*r->fail)(r->read_leases[i].refusal(r->paths[i] + ": its read buffer", r->sizes[i]));
        return true;
      }
      r->assembling[i].resize(r->sizes[i]);
      r->assembled_bytes += r->sizes[i];
    }
    if (!piece.bytes.empty()) std::memcpy(r->assembling[i].data() + piece.offset, piece.bytes.data(), piece.bytes.size());
    r->stats.bytes_read += piece.bytes.size();
    const bool last = piece.last_in_file;
    piece.buffer.reset();
    if (last) start_decode(i);
    return true;
  };

  r->reader->start(
      [r, accept_piece](io::read_piece piece) {
        if (r->failure) return;  // dropping the piece releases its buffer
        if (!r->held.empty() || !(*accept_piece)(piece)) r->held.push_back(std::move(piece));
      },
      [r, read_sw, fail, maybe_finish](status s) {
        r->reader_done = true;
        r->stats.read_ms = read_sw->elapsed_ms();
        if (!s && !r->failure) return (*fail)(s.err());
        (*maybe_finish)();
      });
}

}  // namespace deltasync
