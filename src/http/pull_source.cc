// The pull transport's client. One pull_job per sync owns read_workers connection slots; each slot runs one
// request at a time (HEAD while opening, then ranged GETs), reading a GET's body straight into a pool buffer.
// Completed pieces wait in a per-file map until every earlier piece of that file has been delivered.
#include "http/pull_source.h"

#include <charconv>
#include <chrono>
#include <future>
#include <map>
#include <optional>
#include <random>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "base/check.h"
#include "base/clock.h"
#include "base/log.h"
#include "http/pull_url.h"
#include "io/asio_context.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"

namespace deltasync::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

constexpr uint32_t k_max_header_bytes = 64 << 10;
constexpr size_t k_read_buffer_bytes = 1 << 20;

struct piece_plan {
  size_t file = 0;
  uint64_t offset = 0;
  size_t bytes = 0;
};

class pull_job : public std::enable_shared_from_this<pull_job> {
 public:
  pull_job(asio::io_context& ctx, io::buffer_pool& pool, url_parts url, remote_fetch what, pull_options options)
      : ctx_(ctx), pool_(pool), url_(std::move(url)), what_(std::move(what)), options_(options), resolver_(ctx) {
    const size_t n = std::max<size_t>(1, what_.read_workers);
    for (size_t i = 0; i < n; ++i) slots_.push_back(std::make_unique<slot>(ctx_));
    for (const auto& f : what_.files) targets_.push_back(url_.prefix + (what_.dir.empty() ? std::string() : "/" + pct_encode(what_.dir)) + "/" + pct_encode(f));
    sizes_.assign(what_.files.size(), 0);
  }

  // Phase 1: HEAD every file. done runs on the loop thread once no request is in flight.
  void start_open(std::function<void(result<remote_files>)> done) {
    open_done_ = std::move(done);
    auto self = shared_from_this();
    resolver_.async_resolve(url_.host, url_.port, [self](beast::error_code ec, tcp::resolver::results_type results) {
      if (ec) return self->finish_open(error(errc::upstream_error, "resolve " + self->url_.host + ": " + ec.message()));
      self->endpoints_ = results;
      self->pump_heads();
    });
  }

  // Phase 2: GET every file in ranges.
  void start_get(std::function<void(io::read_piece)> on_piece, std::function<void(status)> on_done) {
    on_piece_ = std::move(on_piece);
    on_done_ = std::move(on_done);
    const uint64_t chunk = std::max<uint64_t>(1, std::min<uint64_t>(what_.chunk_bytes, pool_.buffer_bytes()));
    next_deliver_.assign(sizes_.size(), 0);
    ready_.resize(sizes_.size());
    for (size_t f = 0; f < sizes_.size(); ++f) {
      if (sizes_[f] == 0) {
        io::read_piece p;
        p.file_index = f;
        p.last_in_file = true;
        pending_empty_.push_back(std::move(p));
      }
      for (uint64_t off = 0; off < sizes_[f]; off += chunk)
        plan_.push_back({f, off, static_cast<size_t>(std::min(chunk, sizes_[f] - off))});
    }
    getting_ = true;
    auto self = shared_from_this();
    asio::post(ctx_, [self] {
      for (auto& p : self->pending_empty_)
        if (!self->stopping_) self->on_piece_(std::move(p));
      self->pending_empty_.clear();
      self->pump_gets();
    });
  }

  void cancel() {
    if (finished_) return;
    fail(error(errc::cancelled, "pull cancelled"));
  }

  // Closes idle connections (the source is being destroyed: nothing is in flight any more).
  void close_all() {
    for (auto& s : slots_) {
      beast::error_code ignored;
      s->stream.socket().close(ignored);
    }
  }

  const std::vector<uint64_t>& sizes() const { return sizes_; }
  std::vector<std::string> urls() const {
    std::vector<std::string> out;
    for (const auto& t : targets_) out.push_back("http://" + url_.host + ":" + url_.port + t);
    return out;
  }

 private:
  struct slot {
    // Beast reads at most (capacity - size) of the buffer per call (512 bytes when it is small): a large
    // capacity makes each read up to 64 KiB instead of hundreds of bytes.
    explicit slot(asio::io_context& ctx) : stream(ctx), backoff(ctx) { buf.reserve(k_read_buffer_bytes); }
    beast::tcp_stream stream;
    asio::steady_timer backoff;  // the wait before a retry of a request the server turned away
    beast::flat_buffer buf;
    bool connected = false;
    bool busy = false;
    bool reused = false;  // this request runs on a connection that already served one
    bool retried = false;
    // Retries of this request after the server turned it away (503, or a fresh connection dropped before
    // any answer byte: a server over its connection limit); since: started at its first attempt.
    uint32_t turned_away = 0;
    stopwatch since;
    bhttp::request<bhttp::empty_body> req;
    std::optional<bhttp::response_parser<bhttp::empty_body>> head;
    std::optional<bhttp::response_parser<bhttp::buffer_body>> get;
    size_t file = 0;
    piece_plan piece;
    io::buffer_handle buffer;
  };

  std::string url_of(size_t file) const { return "http://" + url_.host + ":" + url_.port + targets_[file]; }

  void pump_heads() {
    for (auto& s : slots_) {
      if (stopping_ || next_head_ >= targets_.size()) break;
      if (s->busy) continue;
      s->busy = true;
      s->file = next_head_++;
      send(*s, /*head=*/true);
    }
    release_idle();
    if (!stopping_ && heads_done_ == targets_.size()) return finish_open({});
    if (stopping_ && idle()) finish_open(*failure_);
  }

  void finish_open(status st) {
    if (!open_done_) return;
    auto done = std::move(open_done_);
    open_done_ = nullptr;
    if (!st) {
      finished_ = true;
      close_all();
      return done(st.err());
    }
    done(result<remote_files>(remote_files{}));
  }

  void pump_gets() {
    if (!stopping_) {
      for (auto& s : slots_) {
        if (next_plan_ >= plan_.size()) break;
        if (s->busy) continue;
        io::buffer_handle b = spare_ ? std::move(spare_) : pool_.try_acquire();
        if (!b) {
          if (!waiting_) {
            waiting_ = true;
            auto self = shared_from_this();
            ticket_ = pool_.start_acquire([self](io::buffer_handle h) {
              self->waiting_ = false;
              self->spare_ = std::move(h);
              self->pump_gets();
            });
          }
          break;
        }
        s->busy = true;
        s->piece = plan_[next_plan_++];
        s->file = s->piece.file;
        s->buffer = std::move(b);
        send(*s, /*head=*/false);
      }
    }
    release_idle();
    maybe_done();
  }

  bool idle() const {
    for (const auto& s : slots_)
      if (s->busy) return false;
    return true;
  }

  void maybe_done() {
    if (finished_ || !on_done_ || !idle() || waiting_) return;
    if (!stopping_ && (next_plan_ < plan_.size() || delivered_ < plan_.size())) return;
    finished_ = true;
    spare_.reset();
    auto done = std::move(on_done_);
    on_done_ = nullptr;
    done(failure_ ? status(*failure_) : status());
  }

  void fail(error e) {
    if (!failure_) {
      failure_ = std::move(e);
      DS_LOG(warn, "pull", "%s", failure_->describe().c_str());
    }
    stopping_ = true;
    for (auto& m : ready_) m.clear();
    if (waiting_ && pool_.cancel_acquire(ticket_)) waiting_ = false;
    for (auto& s : slots_) {
      if (!s->busy) continue;
      beast::error_code ignored;
      s->stream.socket().cancel(ignored);
      s->backoff.cancel();
    }
    if (open_done_) {
      if (idle()) finish_open(*failure_);
    } else {
      maybe_done();
    }
  }

  void send(slot& s, bool head) {
    if (s.turned_away == 0) s.since.reset();
    s.req = {};
    s.req.version(11);
    s.req.method(head ? bhttp::verb::head : bhttp::verb::get);
    s.req.target(targets_[s.file]);
    s.req.set(bhttp::field::host, url_.host + ":" + url_.port);
    s.req.set(bhttp::field::user_agent, "deltasync-pull");
    if (!head)
      s.req.set(bhttp::field::range, "bytes=" + std::to_string(s.piece.offset) + "-" +
                                         std::to_string(s.piece.offset + s.piece.bytes - 1));
    s.req.keep_alive(true);
    s.reused = s.connected;
    if (s.connected) return write(s, head);
    auto self = shared_from_this();
    s.stream.expires_after(std::chrono::milliseconds(options_.timeout_ms));
    s.stream.async_connect(endpoints_, [self, &s, head](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return self->slot_error(s, head, "connect " + self->url_.host + ":" + self->url_.port, ec, false);
      s.connected = true;
      s.buf.clear();
      s.buf.reserve(k_read_buffer_bytes);
      self->write(s, head);
    });
  }

  void write(slot& s, bool head) {
    auto self = shared_from_this();
    s.stream.expires_after(std::chrono::milliseconds(options_.timeout_ms));
    bhttp::async_write(s.stream, s.req, [self, &s, head](beast::error_code ec, size_t) {
      if (ec) return self->slot_error(s, head, "send request", ec, true);
      self->read_header(s, head);
    });
  }

  void read_header(slot& s, bool head) {
    auto self = shared_from_this();
    s.stream.expires_after(std::chrono::milliseconds(options_.timeout_ms));
    if (head) {
      s.head.emplace();
      s.head->header_limit(k_max_header_bytes);
      s.head->skip(true);  // a HEAD answer has no body, whatever its Content-Length says
      bhttp::async_read(s.stream, s.buf, *s.head, [self, &s](beast::error_code ec, size_t) {
        if (ec) return self->slot_error(s, true, "read HEAD answer", ec, true);
        self->on_head(s);
      });
      return;
    }
    s.get.emplace();
    s.get->header_limit(k_max_header_bytes);
    // At least 4 KiB: a short error answer (a 503 of a server over its limit) must still parse; the body of
    // a 206 is held to exactly the range by the Content-Length check in on_get_header.
    s.get->body_limit(std::max<uint64_t>(s.piece.bytes, 4096));
    bhttp::async_read_header(s.stream, s.buf, *s.get, [self, &s](beast::error_code ec, size_t) {
      if (ec) return self->slot_error(s, false, "read answer header", ec, true);
      self->on_get_header(s);
    });
  }

  // A failure on a reused keep-alive connection before any answer byte is retried once on a fresh one: the
  // server may have closed it while idle.
  void slot_error(slot& s, bool head, const std::string& what, beast::error_code ec, bool may_retry) {
    beast::error_code ignored;
    s.stream.socket().close(ignored);
    s.connected = false;
    if (!stopping_ && may_retry && s.reused && !s.retried && ec != beast::error::timeout) {
      s.retried = true;
      return send(s, head);
    }
    if (stopping_) return slot_idle(s);
    if (may_retry && !s.reused && dropped(ec) && retry_later(s, head, 0)) return;
    std::string msg = url_of(s.file) + ": " + what + ": " +
                      (ec == beast::error::timeout ? "timed out after " + std::to_string(options_.timeout_ms) + " ms"
                                                   : ec.message());
    if (!head) msg += " (range " + std::to_string(s.piece.offset) + "+" + std::to_string(s.piece.bytes) + ")";
    msg += retries_text(s);
    s.busy = false;
    s.buffer.reset();
    fail(error(errc::upstream_error, msg));
  }

  // A connection the server accepted and then dropped before answering (how a server over its connection
  // limit, or one whose backlog overflowed, turns a client away).
  static bool dropped(beast::error_code ec) {
    return ec == asio::error::connection_reset || ec == asio::error::eof || ec == bhttp::error::end_of_stream ||
           ec == asio::error::broken_pipe;
  }

  // Sends the request again after a back-off (doubling from retry_min_ms up to retry_max_ms, at least the
  // server's Retry-After up to that cap, with jitter) while the request's first attempt is less than
  // retry_for_ms ago. False when the budget is spent: the caller fails the pull.
  bool retry_later(slot& s, bool head, uint32_t retry_after_s) {
    if (stopping_ || s.since.elapsed_ms() >= options_.retry_for_ms) return false;
    uint64_t wait = std::min<uint64_t>(options_.retry_max_ms, uint64_t{options_.retry_min_ms} << std::min(s.turned_away, 20u));
    wait = std::min<uint64_t>(options_.retry_max_ms, std::max<uint64_t>(wait, uint64_t{retry_after_s} * 1000));
    wait = wait / 2 + jitter_() % (wait / 2 + 1);
    ++s.turned_away;
    close_slot(s);
    auto self = shared_from_this();
    s.backoff.expires_after(std::chrono::milliseconds(wait));
    s.backoff.async_wait([self, &s, head](beast::error_code ec) {
      if (ec || self->stopping_) return self->slot_idle(s);
      self->send(s, head);
    });
    return true;
  }

  std::string retries_text(const slot& s) const {
    if (s.turned_away == 0) return {};
    return " (turned away " + std::to_string(s.turned_away) + " times, retried for " +
           std::to_string(static_cast<uint64_t>(s.since.elapsed_ms())) + " ms; pull retry-for is " +
           std::to_string(options_.retry_for_ms) +
           " ms)";
  }

  // 503 Service Unavailable: the server asks the client to come back (Retry-After, in seconds, if it says).
  bool busy_answer(slot& s, bool head, unsigned code, const bhttp::fields& f) {
    if (code != 503) return false;
    uint32_t after = 0;
    if (auto it = f.find(bhttp::field::retry_after); it != f.end()) {
      const auto v = it->value();
      std::from_chars(v.data(), v.data() + v.size(), after);
    }
    return retry_later(s, head, after);
  }

  void slot_idle(slot& s) {
    s.busy = false;
    s.retried = false;
    s.turned_away = 0;
    s.buffer.reset();
    if (open_done_) return pump_heads();
    pump_gets();
  }

  // While one of the job's requests waits to be let in, an idle connection (nothing to send, or no buffer to
  // read into) goes back to the server: over its limit, that idle keep-alive connection may be what turns the
  // waiting request away, and the request may be the one the in-order delivery waits for.
  void release_idle() {
    bool waiting = false;
    for (const auto& t : slots_) waiting = waiting || (t->busy && t->turned_away > 0);
    if (!waiting) return;
    for (auto& t : slots_)
      if (!t->busy && t->connected) close_slot(*t);
  }

  error status_error(const slot& s, unsigned status, std::string_view reason) const {
    const std::string msg = url_of(s.file) + ": the file server answered " + std::to_string(status) + " " +
                            std::string(reason) + retries_text(s);
    return error(status == 404 ? errc::not_found : errc::upstream_error, msg);
  }

  void on_head(slot& s) {
    auto& res = s.head->get();
    const bool keep = res.keep_alive();
    if (busy_answer(s, true, res.result_int(), res)) return;
    if (res.result_int() != 200) return reply_error(s, status_error(s, res.result_int(), res.reason()));
    auto len = s.head->content_length();
    if (!len) return reply_error(s, error(errc::upstream_error, url_of(s.file) + ": HEAD answer without Content-Length"));
    if (*len > what_.max_file_bytes)
      return reply_error(s, error(errc::limit_exceeded, url_of(s.file) + " holds " + std::to_string(*len) +
                                                           " bytes; the limit is " + std::to_string(what_.max_file_bytes)));
    sizes_[s.file] = *len;
    ++heads_done_;
    if (!keep) close_slot(s);
    slot_idle(s);
  }

  void reply_error(slot& s, error e) {
    close_slot(s);
    s.busy = false;
    s.buffer.reset();
    fail(std::move(e));
  }

  void close_slot(slot& s) {
    beast::error_code ignored;
    s.stream.socket().close(ignored);
    s.connected = false;
  }

  // Checks that the answer carries exactly the range asked for, then reads its body into the buffer.
  void on_get_header(slot& s) {
    auto& res = s.get->get();
    const unsigned code = res.result_int();
    const piece_plan& p = s.piece;
    const uint64_t size = sizes_[p.file];
    const bool whole = p.offset == 0 && p.bytes == size;
    if (busy_answer(s, false, code, res)) return;
    if (code != 206 && !(code == 200 && whole)) return reply_error(s, status_error(s, code, res.reason()));
    const std::string where = url_of(p.file) + " (range " + std::to_string(p.offset) + "-" +
                              std::to_string(p.offset + p.bytes - 1) + "): ";
    auto len = s.get->content_length();
    if (!len || *len != p.bytes)
      return reply_error(s, error(errc::upstream_error, where + "Content-Length " + (len ? std::to_string(*len) : "absent") +
                                                            ", expected " + std::to_string(p.bytes)));
    if (code == 206) {
      const std::string want = "bytes " + std::to_string(p.offset) + "-" + std::to_string(p.offset + p.bytes - 1) + "/" +
                               std::to_string(size);
      auto it = res.find(bhttp::field::content_range);
      const std::string got = it == res.end() ? std::string("absent") : std::string(it->value());
      if (got != want)
        return reply_error(s, error(errc::upstream_error, where + "Content-Range " + got + ", expected " + want +
                                                              " (did the file change since HEAD?)"));
    }
    auto& body = s.get->get().body();
    body.data = s.buffer.data();
    body.size = p.bytes;
    body.more = true;
    auto self = shared_from_this();
    s.stream.expires_after(std::chrono::milliseconds(options_.timeout_ms));
    bhttp::async_read(s.stream, s.buf, *s.get, [self, &s](beast::error_code ec, size_t) {
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) return self->slot_error(s, false, "read body", ec, false);
      self->on_get_body(s);
    });
  }

  void on_get_body(slot& s) {
    const piece_plan p = s.piece;
    const size_t got = p.bytes - s.get->get().body().size;
    if (!s.get->is_done() || got != p.bytes)
      return reply_error(s, error(errc::upstream_error, url_of(p.file) + ": body ended after " + std::to_string(got) +
                                                            " of " + std::to_string(p.bytes) + " bytes"));
    if (!s.get->keep_alive()) close_slot(s);
    io::read_piece piece;
    piece.file_index = p.file;
    piece.offset = p.offset;
    piece.bytes = byte_span(s.buffer.data(), p.bytes);
    piece.buffer = std::move(s.buffer);
    piece.last_in_file = p.offset + p.bytes == sizes_[p.file];
    s.busy = false;
    s.retried = false;
    ready_[p.file].emplace(p.offset, std::move(piece));
    deliver(p.file);
    pump_gets();
  }

  void deliver(size_t file) {
    auto& m = ready_[file];
    while (!stopping_ && !m.empty() && m.begin()->first == next_deliver_[file]) {
      io::read_piece piece = std::move(m.begin()->second);
      m.erase(m.begin());
      next_deliver_[file] += piece.bytes.size();
      ++delivered_;
      on_piece_(std::move(piece));
    }
  }

  asio::io_context& ctx_;
  io::buffer_pool& pool_;
  url_parts url_;
  remote_fetch what_;
  pull_options options_;
  tcp::resolver resolver_;
  tcp::resolver::results_type endpoints_;
  std::vector<std::unique_ptr<slot>> slots_;
  std::vector<std::string> targets_;
  std::vector<uint64_t> sizes_;
  size_t next_head_ = 0, heads_done_ = 0;
  std::function<void(result<remote_files>)> open_done_;
  // GET phase
  std::vector<piece_plan> plan_;
  size_t next_plan_ = 0, delivered_ = 0;
  std::vector<uint64_t> next_deliver_;
  std::vector<std::map<uint64_t, io::read_piece>> ready_;
  std::vector<io::read_piece> pending_empty_;
  std::function<void(io::read_piece)> on_piece_;
  std::function<void(status)> on_done_;
  bool getting_ = false, stopping_ = false, finished_ = false, waiting_ = false;
  uint64_t ticket_ = 0;
  std::minstd_rand jitter_{std::random_device{}()};
  io::buffer_handle spare_;
  std::optional<error> failure_;
};

class pull_file_source final : public file_source {
 public:
  explicit pull_file_source(std::shared_ptr<pull_job> job) : job_(std::move(job)) {}
  ~pull_file_source() override { job_->close_all(); }
  void start(std::function<void(io::read_piece)> on_piece, std::function<void(status)> on_done) override {
    job_->start_get(std::move(on_piece), std::move(on_done));
  }
  void cancel() override { job_->cancel(); }

 private:
  std::shared_ptr<pull_job> job_;
};

}  // namespace

pull_opener::pull_opener(io::event_loop& loop, pull_options options) : loop_(loop), options_(std::move(options)) {
  DS_CHECK(options_.timeout_ms > 0, "pull timeout must be positive");
}

void pull_opener::open(const remote_fetch& what, io::buffer_pool& pool, std::function<void(result<remote_files>)> done) {
  auto url = parse_http_url(what.base_url);
  if (auto allowed = options_.allow.check(what.base_url); !url || !allowed) {
    auto e = !url ? std::move(url).err() : allowed.err();
    return loop_.post([done = std::move(done), e] { done(e); });
  }
  auto job = std::make_shared<pull_job>(io::asio_context(loop_), pool, std::move(url).value(), what, options_);
  job->start_open([job, done = std::move(done)](result<remote_files> r) {
    if (!r) return done(std::move(r).err());
    remote_files out;
    out.sizes = job->sizes();
    out.urls = job->urls();
    out.source = std::make_unique<pull_file_source>(job);
    done(std::move(out));
  });
}

}  // namespace deltasync::http
