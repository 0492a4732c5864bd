// The receiver's transports besides the disk: the registry of pushed transports (NCCL), the refusal that drains
// a pushed sync's announced bytes first, the HTTP pull transport's open step and its one-small-file fetch. The
// pipeline they feed is in receiver.cc; the run state they share is in receiver_internal.h.
#include <memory>
#include <string>
#include <utility>

#include "base/log.h"
#include "io/event_loop.h"
#include "sync/file_source.h"
#include "sync/receiver.h"
#include "sync/receiver_internal.h"

namespace deltasync {

void receiver::set_transport(std::string name, transport_source_factory factory) {
  transports_[std::move(name)] = std::move(factory);
}

void receiver::refuse_draining(std::unique_ptr<piece_source> source, error e,
                               std::function<void(result<sync_stats>)> done) {
  if (m_->syncs_failed) m_->syncs_failed->add();
  DS_LOG(warn, "sync", "refused a sync (draining its announced bytes first): %s", e.describe().c_str());
  last_error_ = e;
  // Busy until the bytes are off the wire: the transport carries one sync at a time.
  auto r = std::make_shared<run>(0);
  r->reader = std::move(source);
  current_ = r;
  piece_source* src = r->reader.get();
  src->start([](io::read_piece) {},
             [this, r, e = std::move(e), done = std::move(done)](status) mutable {
               current_.reset();
               loop_.post([r] { r->reader.reset(); });
               touched({});  // nothing written; a waiting /checksums pass goes on (before done())
               done(std::move(e));
             });
  src->cancel();
}

// The HTTP pull transport: the opener learns the files' sizes (the receiver counts as busy meanwhile), then
// the same pipeline as the disk transport runs on its source.
void receiver::start_pull(sync_request req, std::function<void(result<sync_stats>)> done, uint64_t cur) {
  auto r = std::make_shared<run>(options_.max_undo_bytes);
  r->req = std::move(req);
  r->done = std::move(done);
  auto refuse = [this, r](error e) {
    current_.reset();
    if (m_->syncs_failed) m_->syncs_failed->add();
    DS_LOG(warn, "sync", "refused version %llu (pull from %s): %s", static_cast<unsigned long long>(r->req.version),
           r->req.base_url.c_str(), e.describe().c_str());
    last_error_ = e;
    auto d = std::move(r->done);
    touched({});  // nothing written; a waiting /checksums pass goes on (before done())
    d(std::move(e));
  };
  current_ = r;
  if (auto names = check_remote_names(r->req.dir, r->req.files); !names) return refuse(names.err());
  remote_fetch what{r->req.base_url, r->req.dir, r->req.files, options_.chunk_bytes, options_.read_workers,
                    options_.max_file_bytes};
  remote_->open(what, pool_, [this, r, cur, refuse](result<remote_files> opened) {
    if (!opened) return refuse(std::move(opened).err());
    uint64_t total_bytes = 0;
    for (uint64_t size : opened->sizes) total_bytes += size;
    if (total_bytes > options_.max_sync_bytes)
      return refuse(error(errc::limit_exceeded, "the sync's files hold " + std::to_string(total_bytes) +
                                                    " bytes; the limit is " + std::to_string(options_.max_sync_bytes)));
    if (auto e = receiver_detail::check_expected_sizes(r->req, opened->sizes, opened->urls); !e) return refuse(e.err());
    r->paths = opened->urls;
    r->sizes = opened->sizes;
    r->stats.version = r->req.version;
    r->stats.base_version = cur;
    r->stats.files = r->paths.size();
    r->reader = std::move(opened->source);
    start_pipeline(r, cur);
  });
}

void receiver::fetch_remote_file(const std::string& base_url, const std::string& dir, const std::string& name,
                                 uint64_t max_bytes, std::function<void(result<std::string>)> done) {
  if (!remote_) return done(error(errc::unsupported, "transport 'http' is not built in this receiver"));
  if (auto names = check_remote_names(dir, {name}, true); !names) return done(names.err());
  remote_fetch what{base_url, dir, {name}, options_.chunk_bytes, 1, max_bytes};
  remote_->open(what, pool_, [this, done = std::move(done)](result<remote_files> opened) mutable {
    if (!opened) return done(std::move(opened).err());
    struct fetch {
      std::unique_ptr<file_source> source;
      std::string text;
    };
    auto f = std::make_shared<fetch>();
    f->source = std::move(opened->source);
    f->text.reserve(opened->sizes.at(0));
    f->source->start(
        [f](io::read_piece p) { f->text.append(reinterpret_cast<const char*>(p.bytes.data()), p.bytes.size()); },
        [this, f, done = std::move(done)](status s) mutable {
          // The source (which holds this callback) goes once it has returned.
          loop_.post([source = std::shared_ptr<file_source>(std::move(f->source))] {});
          if (!s) return done(s.err());
          done(std::move(f->text));
        });
  });
}

}  // namespace deltasync
