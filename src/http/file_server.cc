// The file server: an acceptor and one session per connection (read request -> resolve -> answer -> loop).
// A body is a range of an open file, sent by a Beast body writer that preads io_bytes at a time.
#include "http/file_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <list>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/optional.hpp>

#include "base/log.h"
#include "http/pull_url.h"
#include "io/asio_context.h"
#include "io/event_loop.h"

namespace deltasync::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

struct open_file {
  int fd = -1;
  explicit open_file(int f) : fd(f) {}
  ~open_file() {
    if (fd >= 0) ::close(fd);
  }
};

// A byte range of an open file as a Beast body (writer side only: answers, never requests).
struct range_body {
  struct value_type {
    std::shared_ptr<open_file> file;
    uint64_t offset = 0, size = 0;
    size_t io_bytes = 1 << 20;
  };
  static uint64_t size(const value_type& v) { return v.size; }

  class writer {
   public:
    using const_buffers_type = asio::const_buffer;
    template <bool isRequest, class Fields>
    writer(const bhttp::header<isRequest, Fields>&, const value_type& v) : v_(v) {}
    void init(beast::error_code& ec) {
      buf_.resize(static_cast<size_t>(std::min<uint64_t>(std::max<size_t>(v_.io_bytes, 4096), std::max<uint64_t>(v_.size, 1))));
      ec = {};
    }
    boost::optional<std::pair<const_buffers_type, bool>> get(beast::error_code& ec) {
      const uint64_t left = v_.size - pos_;
      if (left == 0) {
        ec = {};
        return boost::none;
      }
      const size_t want = static_cast<size_t>(std::min<uint64_t>(left, buf_.size()));
      ssize_t n;
      do n = ::pread(v_.file->fd, buf_.data(), want, static_cast<off_t>(v_.offset + pos_));
      while (n < 0 && errno == EINTR);
      if (n <= 0) {  // the file shrank or failed under us: abort the connection (the client sees a short body)
        ec = n == 0 ? beast::error_code(bhttp::error::partial_message) : beast::error_code(errno, beast::system_category());
        return boost::none;
      }
      pos_ += static_cast<uint64_t>(n);
      ec = {};
      return {{asio::const_buffer(buf_.data(), static_cast<size_t>(n)), pos_ < v_.size}};
    }

   private:
    const value_type& v_;
    std::vector<char> buf_;
    uint64_t pos_ = 0;
  };
};

struct range_spec {
  bool present = false, valid = true;
  uint64_t first = 0, last = 0;  // inclusive
};

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  out = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<uint64_t>(c - '0');
  }
  return true;
}

// One "bytes=" range against a file of `size` bytes; multi-range and unparsable headers are ignored (a
// full 200 answer, as RFC 9110 allows); a syntactically valid but unsatisfiable range is !valid (416).
range_spec parse_range(std::string_view h, uint64_t size) {
  range_spec r;
  if (h.empty() || h.substr(0, 6) != "bytes=" || h.find(',') != std::string_view::npos) return r;
  h.remove_prefix(6);
  const size_t dash = h.find('-');
  if (dash == std::string_view::npos) return r;
  const std::string_view a = h.substr(0, dash), b = h.substr(dash + 1);
  uint64_t x = 0, y = 0;
  if (a.empty()) {  // suffix: the last y bytes
    if (!parse_u64(b, y)) return r;
    r.present = true;
    if (y == 0 || size == 0) return r.valid = false, r;
    r.first = size - std::min(y, size);
    r.last = size - 1;
    return r;
  }
  if (!parse_u64(a, x) || (!b.empty() && !parse_u64(b, y)) || (!b.empty() && y < x)) return r;
  r.present = true;
  if (x >= size) return r.valid = false, r;
  r.first = x;
  r.last = b.empty() ? size - 1 : std::min(y, size - 1);
  return r;
}

}  // namespace

struct file_server::impl : std::enable_shared_from_this<file_server::impl> {
  impl(io::event_loop& l, file_server_options o)
      : loop(l), ctx(io::asio_context(l)), options(std::move(o)), acceptor(ctx) {}

  class session : public std::enable_shared_from_this<session> {
   public:
    session(std::shared_ptr<impl> owner, tcp::socket s) : owner_(std::move(owner)), stream_(std::move(s)) {}
    void start() { read(); }
    void close() {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream_.socket().close(ignored);
    }
    std::list<std::weak_ptr<session>>::iterator self_it;

   private:
    void read() {
      parser_.emplace();
      parser_->header_limit(16 << 10);
      parser_->body_limit(0);
      stream_.expires_after(std::chrono::milliseconds(owner_->options.timeout_ms));
      bhttp::async_read(stream_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
        if (ec == bhttp::error::end_of_stream || ec == asio::error::operation_aborted || ec == beast::error::timeout ||
            ec == asio::error::connection_reset)
          return self->done();
        if (ec) return self->send_text(bhttp::status::bad_request, "bad request: " + ec.message(), false, false);
        self->handle();
      });
    }

    void handle() {
      const auto& req = parser_->get();
      const bool keep = req.keep_alive();
      const bool head = req.method() == bhttp::verb::head;
      if (req.method() != bhttp::verb::get && !head)
        return send_text(bhttp::status::method_not_allowed, "only GET and HEAD are served", keep, head);
      std::string_view target = req.target();
      target = target.substr(0, target.find('?'));
      auto path = pct_decode(target);
      if (!path || path->empty() || (*path)[0] != '/') return send_text(bhttp::status::bad_request, "bad path", false, head);
      for (size_t start = 1; start <= path->size();) {
        size_t end = path->find('/', start);
        if (end == std::string::npos) end = path->size();
        if (std::string_view(*path).substr(start, end - start) == "..")
          return send_text(bhttp::status::bad_request, "'..' in path", false, head);
        start = end + 1;
      }
      const std::string full = owner_->root + *path;
      char buf[PATH_MAX];
      if (!::realpath(full.c_str(), buf)) return send_text(bhttp::status::not_found, "not found: " + *path, keep, head);
      const std::string resolved(buf);
      if (resolved.compare(0, owner_->root.size() + 1, owner_->root + "/") != 0)
        return send_text(bhttp::status::forbidden, "outside the served directory: " + *path, keep, head);
      const int fd = ::open(resolved.c_str(), O_RDONLY | O_CLOEXEC);
      struct stat st {};
      if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) ::close(fd);
        return send_text(bhttp::status::not_found, "not a file: " + *path, keep, head);
      }
      auto file = std::make_shared<open_file>(fd);
      const auto size = static_cast<uint64_t>(st.st_size);
      auto range = parse_range(req[bhttp::field::range], size);
      if (range.present && !range.valid) {
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>(bhttp::status::range_not_satisfiable, 11);
        res->set(bhttp::field::content_range, "bytes */" + std::to_string(size));
        res->keep_alive(keep);
        res->prepare_payload();
        return write(res, keep);
      }
      const uint64_t first = range.present ? range.first : 0;
      const uint64_t length = range.present ? range.last - range.first + 1 : size;
      const auto code = range.present ? bhttp::status::partial_content : bhttp::status::ok;
      if (head) {
        auto res = std::make_shared<bhttp::response<bhttp::empty_body>>(code, 11);
        res->set(bhttp::field::accept_ranges, "bytes");
        res->content_length(length);
        res->keep_alive(keep);
        return write(res, keep);
      }
      auto res = std::make_shared<bhttp::response<range_body>>(code, 11);
      res->set(bhttp::field::accept_ranges, "bytes");
      res->set(bhttp::field::content_type, "application/octet-stream");
      if (range.present)
        res->set(bhttp::field::content_range, "bytes " + std::to_string(range.first) + "-" +
                                                  std::to_string(range.last) + "/" + std::to_string(size));
      res->body() = {std::move(file), first, length, owner_->options.io_bytes};
      res->content_length(length);
      res->keep_alive(keep);
      write(res, keep);
    }

    void send_text(bhttp::status code, const std::string& text, bool keep, bool head) {
      auto res = std::make_shared<bhttp::response<bhttp::string_body>>(code, 11);
      res->set(bhttp::field::content_type, "text/plain");
      if (!head) res->body() = text + "\n";
      res->keep_alive(keep);
      res->prepare_payload();
      if (head) res->content_length(text.size() + 1);
      write(res, keep);
    }

    template <class Body>
    void write(std::shared_ptr<bhttp::response<Body>> res, bool keep) {
      stream_.expires_after(std::chrono::milliseconds(owner_->options.timeout_ms));
      auto sr = std::make_shared<bhttp::response_serializer<Body>>(*res);
      const bool head = parser_->get().method() == bhttp::verb::head;
      auto on_written = [self = shared_from_this(), res, sr, keep](beast::error_code ec, size_t n) {
        self->owner_->bytes_sent.fetch_add(n, std::memory_order_relaxed);
        if (ec || !keep) return self->done();
        self->read();
      };
      if (head)
        bhttp::async_write_header(stream_, *sr, std::move(on_written));
      else
        bhttp::async_write(stream_, *sr, std::move(on_written));
    }

    void done() {
      if (finished_) return;
      finished_ = true;
      close();
      owner_->forget(self_it);
    }

    std::shared_ptr<impl> owner_;
    beast::tcp_stream stream_;
    beast::flat_buffer buf_;
    std::optional<bhttp::request_parser<bhttp::empty_body>> parser_;
    bool finished_ = false;
  };

  void accept() {
    acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
      if (!ec) {
        if (self->sessions.size() >= self->options.max_connections) {
          turn_away(std::move(s));
        } else {
          auto sess = std::make_shared<session>(self, std::move(s));
          self->sessions.push_front(sess);
          sess->self_it = self->sessions.begin();
          sess->start();
        }
      }
      self->accept();
    });
  }

  // Over max_connections: "503 Service Unavailable" with Retry-After and Connection: close, so that a client
  // backs off and comes back (the pull client does: pull_source.h) instead of seeing a reset. The request is
  // read and dropped after the answer (until the client closes, or 1 s) so that closing never resets an
  // answer the client has not read yet.
  static void turn_away(tcp::socket s) {
    static const std::string k_body = "over the connection limit; retry later\n";
    static const std::string k_answer =
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\n"
        "Content-Length: " + std::to_string(k_body.size()) + "\r\n\r\n" + k_body;
    struct away {
      explicit away(tcp::socket sock) : stream(std::move(sock)) {}
      beast::tcp_stream stream;
      std::array<char, 4096> sink{};
    };
    auto a = std::make_shared<away>(std::move(s));
    a->stream.expires_after(std::chrono::seconds(1));
    asio::async_write(a->stream, asio::buffer(k_answer), [a](beast::error_code ec, size_t) {
      if (ec) return;
      beast::error_code ignored;
      a->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      drain(a);
    });
  }
  template <class Away>
  static void drain(std::shared_ptr<Away> a) {
    a->stream.async_read_some(asio::buffer(a->sink), [a](beast::error_code ec, size_t) {
      if (!ec) drain(a);  // on EOF, error or the 1 s expiry the stream is dropped, which closes it
    });
  }

  void forget(std::list<std::weak_ptr<session>>::iterator it) {
    if (it != std::list<std::weak_ptr<session>>::iterator{}) sessions.erase(it);
  }

  io::event_loop& loop;
  asio::io_context& ctx;
  file_server_options options;
  std::string root;  // realpath of options.root
  tcp::acceptor acceptor;
  std::list<std::weak_ptr<session>> sessions;
  std::atomic<uint64_t> bytes_sent{0};
  uint16_t port = 0;
};

result<std::unique_ptr<file_server>> file_server::start(io::event_loop& loop, file_server_options options) {
  char buf[PATH_MAX];
  struct stat st {};
  if (!::realpath(options.root.c_str(), buf) || ::stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
    return error(errc::invalid_argument, "serve-files: " + options.root + " is not a directory");
  auto p = std::make_shared<impl>(loop, options);
  p->root = buf;
  status outcome;
  loop.run_sync([&] {
    beast::error_code ec;
    auto addr = asio::ip::make_address(options.host, ec);
    if (ec) return void(outcome = error(errc::invalid_argument, "serve-files: bad listen address " + options.host));
    tcp::endpoint ep(addr, options.port);
    p->acceptor.open(ep.protocol(), ec);
    if (!ec) p->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) p->acceptor.bind(ep, ec);
    if (!ec) p->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      return void(outcome = error(errc::io_error, "serve-files: listen on " + options.host + ":" +
                                                      std::to_string(options.port) + ": " + ec.message()));
    p->port = p->acceptor.local_endpoint().port();
    p->accept();
  });
  if (!outcome) return std::move(outcome).err();
  DS_LOG(info, "serve-files", "serving %s on http://%s:%u", p->root.c_str(), options.host.c_str(), p->port);
  return std::unique_ptr<file_server>(new file_server(std::move(p)));
}

file_server::file_server(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

file_server::~file_server() {
  auto p = impl_;
  // Close on the loop thread: the acceptor and sockets belong to it.
  p->loop.run_sync([p] {
    beast::error_code ignored;
    p->acceptor.close(ignored);
    for (auto& w : p->sessions)
      if (auto s = w.lock()) s->close();
  });
}

uint16_t file_server::port() const noexcept { return impl_->port; }
uint64_t file_server::bytes_sent() const noexcept { return impl_->bytes_sent.load(std::memory_order_relaxed); }

}  // namespace deltasync::http
