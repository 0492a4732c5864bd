// The in-process receiver service: see receiver_service.h. Wires the same parts as `deltasync serve`
// (src/cli/serve_command.cc) around a store given by the caller, and wraps the sync routes with the hooks.
#include "python/receiver_service.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "base/log.h"
#include "base/metrics.h"
#include "http/pull_source.h"
#include "http/receiver_routes.h"
#include "http/server.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/worker_pool.h"
#include "sync/receiver.h"
#include "sync/sync_request.h"

namespace deltasync::python {

struct receiver_service::impl {
  receiver_service_options options;
  receiver_hooks hooks;
  std::unique_ptr<weight_store> store;
  std::unique_ptr<io::event_loop> loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<metrics_registry> metrics;
  std::unique_ptr<receiver> rx;
  std::unique_ptr<http::pull_opener> puller;
  http::router routes;  // the wrapped routes, as the server serves them
  std::unique_ptr<http::http_server> server;
  uint16_t port = 0;
  bool closed = false;
};

namespace {

// The sglang route answers 200 with "success": false on a refusal.
bool committed(const http::response& r, bool sglang) {
  if (r.status != 200) return false;
  return !sglang || r.body.find("\"success\":true") != std::string::npos;
}

http::handler with_hooks(http::handler inner, const receiver_hooks& hooks, const std::string& delta_dir, bool sglang) {
  return [inner = std::move(inner), hooks, delta_dir, sglang](const http::request& req, http::responder respond) {
    auto parsed = sglang ? parse_sglang_request(req.body, delta_dir) : parse_sync_request(req.body);
    if (!parsed) return inner(req, std::move(respond));  // answered 400 by the route itself, no hook runs
    const uint64_t version = parsed->version;
    if (hooks.before_apply) {
      if (auto st = hooks.before_apply(version); !st) {
        http::response r = http::json_error(500, "before_apply hook failed: " + st.err().describe(),
                                            "\"code\": \"cancelled\"");
        if (hooks.after_refuse) hooks.after_refuse(version, r.body);
        return respond(std::move(r));
      }
    }
    inner(req, [respond = std::move(respond), hooks, version, sglang](http::response r) {
      if (committed(r, sglang)) {
        if (hooks.after_commit) hooks.after_commit(version, r.body);
      } else if (hooks.after_refuse) {
        hooks.after_refuse(version, r.body);
      }
      respond(std::move(r));
    });
  };
}

}  // namespace

receiver_service::receiver_service(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
receiver_service::~receiver_service() { (void)close(); }

result<std::unique_ptr<receiver_service>> receiver_service::start(std::unique_ptr<weight_store> store,
                                                                  receiver_service_options options,
                                                                  receiver_hooks hooks) {
  auto p = std::make_unique<impl>();
  auto allow = http::pull_allowlist::parse(options.pull_allow);
  if (!allow) return allow.err();
  p->options = std::move(options);
  p->hooks = std::move(hooks);
  p->store = std::move(store);
  p->store->set_version(p->options.version);
  const receiver_service_options& o = p->options;
  p->loop = std::make_unique<io::event_loop>();
  io::io_backend_options bopts;
  bopts.backend = o.io_backend;
  DS_ASSIGN_OR_RETURN(p->backend, io::make_io_backend(*p->loop, bopts));
  io::buffer_pool_options popts;
  popts.buffer_bytes = o.chunk_bytes;
  popts.max_total_bytes = std::max<uint64_t>(o.chunk_bytes * o.read_workers * 2, 64ull << 20);
  DS_ASSIGN_OR_RETURN(p->pool, io::buffer_pool::create(*p->loop, p->backend.get(), popts));
  const unsigned threads = o.workers ? o.workers : std::max(1u, std::thread::hardware_concurrency());
  p->workers = std::make_unique<io::worker_pool>(*p->loop, threads, 1024);
  p->metrics = std::make_unique<metrics_registry>();
  // The delta dir, resolved once (absolute, symlinks resolved), as serve does: path checks compare canonical forms.
  std::error_code dir_ec;
  const std::string delta_dir = std::filesystem::weakly_canonical(std::filesystem::absolute(o.delta_dir), dir_ec).string();
  if (dir_ec) return error(errc::invalid_argument, "delta_dir " + o.delta_dir + ": " + dir_ec.message());
  receiver_options ropts;
  ropts.delta_dir = delta_dir;
  ropts.chunk_bytes = o.chunk_bytes;
  ropts.read_workers = o.read_workers;
  ropts.max_file_bytes = o.max_file_bytes;
  p->rx = std::make_unique<receiver>(*p->loop, *p->backend, *p->pool, *p->workers, *p->store, ropts, p->metrics.get());
  http::pull_options pull;
  pull.allow = std::move(allow).value();
  p->puller = std::make_unique<http::pull_opener>(*p->loop, std::move(pull));
  p->rx->set_remote_opener(p->puller.get());

  // Online catch-up (docs/fleet.md): a push whose base is ahead replays the kept chain inside the /sync
  // route, so after before_apply(version of the push) and before after_commit of that push.
  http::route_options routes;
  routes.loop = p->loop.get();
  http::router inner = http::make_receiver_routes(*p->rx, *p->workers, *p->metrics, routes);
  for (const auto& r : inner.routes()) {
    const bool sync = r.method == "POST" && r.path == "/sync";
    const bool sglang = r.method == "POST" && r.path == "/update_weights_from_disk";
    p->routes.add(r.method, r.path, sync || sglang ? with_hooks(r.h, p->hooks, delta_dir, sglang) : r.h);
  }
  http::server_options sopts;
  sopts.host = o.host;
  sopts.port = o.port;
  sopts.bearer_token = o.token;
  sopts.max_body_bytes = o.max_body_bytes;
  sopts.reserved_routes = {"/sync", "/update_weights_from_disk"};  // past max-connections: health and syncs only
  DS_ASSIGN_OR_RETURN(p->server, http::http_server::start(*p->loop, sopts, p->routes));
  p->port = p->server->port();
  DS_LOG(info, "python", "receiver listening on http://%s:%u (store %s: %zu tensors, %.3f GB, version %llu)",
         o.host.c_str(), p->port, std::string(p->store->kind()).c_str(), p->store->size(),
         static_cast<double>(p->store->total_bytes()) / 1e9, static_cast<unsigned long long>(o.version));
  return std::unique_ptr<receiver_service>(new receiver_service(std::move(p)));
}

uint16_t receiver_service::port() const noexcept { return impl_->port; }
bool receiver_service::closed() const noexcept { return impl_->closed; }
weight_store& receiver_service::store() noexcept { return *impl_->store; }

uint64_t receiver_service::version() {
  if (impl_->closed) return impl_->store ? impl_->store->version() : 0;
  uint64_t v = 0;
  impl_->loop->run_sync([&] { v = impl_->store->version(); });
  return v;
}

result<call_answer> receiver_service::call(const std::string& method, const std::string& path, const std::string& body) {
  if (impl_->closed) return error(errc::invalid_argument, "the receiver is closed");
  if (impl_->loop->in_loop_thread())
    return error(errc::invalid_argument, "called from a hook: the receiver would wait for itself");
  const http::handler* h = nullptr;
  for (const auto& r : impl_->routes.routes())
    if (r.method == method && r.path == path) h = &r.h;
  if (h == nullptr) return error(errc::not_found, "no route " + method + " " + path);
  auto answer = std::make_shared<std::promise<call_answer>>();
  auto fut = answer->get_future();
  http::request req;
  req.method = method;
  req.path = path;
  req.body = body;
  req.content_type = "application/json";
  req.remote = "in-process";
  impl_->loop->post([h, req = std::move(req), answer] {
    auto once = std::make_shared<bool>(false);
    (*h)(req, [answer, once](http::response r) {
      if (std::exchange(*once, true)) return;
      answer->set_value(call_answer{r.status, std::move(r.body)});
    });
  });
  return fut.get();
}

status receiver_service::close() {
  impl& p = *impl_;
  if (p.closed) return {};
  if (p.loop->in_loop_thread()) return error(errc::invalid_argument, "close() called from a hook");
  p.server.reset();
  // A sync still in flight owns the store; let it finish before tearing down.
  for (int i = 0; i < 6000; ++i) {
    bool busy = false;
    p.loop->run_sync([&] { busy = p.rx->busy(); });
    if (!busy) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const uint64_t v = p.store->version();
  p.rx.reset();
  p.puller.reset();
  p.workers.reset();
  p.pool.reset();
  p.backend.reset();
  p.loop.reset();
  p.routes = http::router();
  p.store->set_version(v);
  p.closed = true;
  return {};
}

}  // namespace deltasync::python
