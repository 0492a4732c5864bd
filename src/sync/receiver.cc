// The receiver: status codes, the request's checks (versions, paths, sizes, limits) and the start of a sync.
// The pipeline from pieces to the store is in receiver_stream.cc; verification, rollback and commit (finish)
// in receiver_commit.cc. The loop thread owns all run state, so no locks are needed.
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
#include "codec/digest.h"
#include "io/buffer_pool.h"
#include "io/chunked_reader.h"
#include "io/event_loop.h"
#include "io/worker_pool.h"
#include "sync/file_source.h"
#include "sync/receiver_internal.h"

namespace deltasync {

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

namespace receiver_detail {

status check_expected_sizes(const sync_request& req, const std::vector<uint64_t>& sizes,
                            const std::vector<std::string>& paths) {
  if (req.expect.empty()) return {};
  if (req.expect.size() != sizes.size())
    return error(errc::invalid_argument, "the publish marker lists " + std::to_string(req.expect.size()) +
                                             " files, the sync " + std::to_string(sizes.size()));
  for (size_t i = 0; i < sizes.size(); ++i)
    if (sizes[i] != req.expect[i].bytes)
      return error(errc::delta_checksum_mismatch, paths[i] + " holds " + std::to_string(sizes[i]) +
                                                      " bytes, its publish marker says " + std::to_string(req.expect[i].bytes) +
                                                      " (changed or incomplete since it was published)");
  return {};
}

status check_expected_hash(const sync_request& req, size_t i, byte_span bytes, const std::string& path) {
  if (req.expect.empty() || xxh3_64(bytes) == req.expect[i].xxh3_64) return {};
  return error(errc::delta_checksum_mismatch, path + ": does not match the XXH3-64 its publish marker lists "
                                                     "(changed or incomplete since it was published)");
}

}  // namespace receiver_detail

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

bool receiver::busy() const noexcept { return current_ != nullptr || deferred_.has_value(); }

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
  if (current_ || deferred_) return done(error(errc::busy, "another sync is in progress"));
  if (hashing_) {
    // /checksums is hashing one tensor on a worker: this sync starts the moment that one is done.
    deferred_.emplace(std::move(req), std::move(done));
    return;
  }
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
  if (auto e = receiver_detail::check_expected_sizes(req, r->sizes, paths); !e) return refuse_any(e.err());
  r->opened = std::move(opened);
  r->req = std::move(req);
  r->done = std::move(done);
  r->paths = std::move(paths);
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

}  // namespace deltasync
