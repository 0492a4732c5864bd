// `deltasync serve`: the receiver service. Loads the base weights into a store, then serves the HTTP API on
// one event loop until SIGINT/SIGTERM. Every flag can also come from the [serve] section of --config.
#include <CLI/CLI.hpp>
#include <sys/resource.h>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/file_util.h"
#include "cli/serve_signals.h"
#include "gpu/gpu.h"
#include "gpu/nccl_channel.h"
#include "http/pull_source.h"
#include "http/receiver_routes.h"
#include "http/server.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/worker_pool.h"
#include "sync/nccl_member.h"
#include "sync/receiver.h"
#include "sync/cuda_weight_store.h"
#include "sync/catch_up.h"
#include "sync/recovery.h"
#include "sync/weight_store.h"

namespace deltasync::cli {
namespace {

struct serve_options {
  std::string listen = "127.0.0.1:30000";
  std::string delta_dir;
  std::string base;
  std::string model;  // synthetic model instead of --base
  uint64_t seed = 1;
  uint64_t base_version = 0;
  std::string store = "host";
  std::string token_file;
  uint64_t chunk_bytes = 4ull << 20;
  uint32_t read_workers = 8;
  uint32_t workers = 0;  // 0: one per core
  std::string io_backend = "auto";
  uint64_t max_body_bytes = 1ull << 20;
  uint32_t read_timeout_ms = 30'000;
  uint64_t max_file_bytes = 8ull << 30;
  std::string port_file;
  std::string log_level = "info";
  int device = 0;                   // CUDA device (NCCL transport; the device store)
  uint32_t nccl_timeout_ms = 60'000;
  // Crash recovery and request limits (docs/reliability.md).
  bool recover = false;
  std::string recover_from;  // a file server: recover from the chain published there (pull-only receivers)
  bool catch_up = true;
  bool sglang_allow_version_gap = false;
  uint64_t max_header_bytes = 16ull << 10;
  uint64_t max_files_per_sync = 4096;
  uint64_t max_tensors_per_file = 1u << 20;
  uint64_t max_manifest_bytes = 64ull << 20;
  uint64_t max_decompressed_bytes = 8ull << 30;
  uint64_t max_sync_bytes = 64ull << 30;
  uint32_t write_timeout_ms = 30'000;
  uint32_t max_connections = 256;                  // open HTTP connections (idle ones are shed first)
  uint64_t max_sync_memory_bytes = 16ull << 30;    // one sync's read buffers + decompressed payloads + undo log
  // The HTTP pull transport's allow list (http/pull_allow.h): URL prefixes a sync's base_url must lie under.
  std::vector<std::string> pull_allow;
};

result<std::pair<std::string, uint16_t>> split_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return error(errc::invalid_argument, "--listen must be HOST:PORT, got '" + listen + "'");
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long port = 0;
  try {
    port = std::stoul(listen.substr(colon + 1));
  } catch (...) {
    return error(errc::invalid_argument, "--listen port is not a number: '" + listen + "'");
  }
  if (port > 65535) return error(errc::invalid_argument, "--listen port out of range: " + listen);
  return std::make_pair(host, static_cast<uint16_t>(port));
}

int fail(const error& e) {
  std::fprintf(stderr, "deltasync serve: %s\n", e.describe().c_str());
  return 1;
}

int run_serve(const serve_options& opt) {
  log_level level;
  if (!parse_log_level(opt.log_level, level)) return fail(error(errc::invalid_argument, "unknown --log-level " + opt.log_level));
  set_log_level(level);
  if (opt.store == "cuda") {
    if (auto s = gpu::available(); !s) return fail(s.err());
  } else if (opt.store != "host") {
    return fail(error(errc::invalid_argument, "--store must be host or cuda, got '" + opt.store + "'"));
  }
  if (opt.base.empty() == opt.model.empty())
    return fail(error(errc::invalid_argument, "give exactly one of --base PATH or --model NAME (a built-in synthetic model)"));
  auto listen = split_listen(opt.listen);
  if (!listen) return fail(listen.err());
  // --recover-from names a server the operator trusts: it is allowed for pulls like a pull-allow entry.
  std::vector<std::string> allowed = opt.pull_allow;
  if (!opt.recover_from.empty()) allowed.push_back(opt.recover_from);
  auto pull_allow = http::pull_allowlist::parse(allowed);
  if (!pull_allow) return fail(pull_allow.err());
  std::string token;
  if (!opt.token_file.empty()) {
    auto t = read_token_file(opt.token_file);
    if (!t) return fail(t.err());
    token = *t;
  }

  // The delta dir, resolved once (absolute, symlinks resolved): every path check compares against this form,
  // whatever form --delta-dir was given in (a relative path, a symlinked parent).
  std::error_code dir_ec;
  const std::string delta_dir = std::filesystem::weakly_canonical(std::filesystem::absolute(opt.delta_dir), dir_ec).string();
  if (dir_ec) return fail(error(errc::invalid_argument, "--delta-dir " + opt.delta_dir + ": " + dir_ec.message()));
  if (opt.max_connections == 0) return fail(error(errc::invalid_argument, "--max-connections must be at least 1"));

  // A sync holds its files open (O_PATH) while it runs: up to max-files-per-sync fds besides sockets and
  // reads. Raise the soft fd limit to the hard one, as servers do.
  if (struct rlimit fds {}; ::getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
    fds.rlim_cur = fds.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &fds);
  }

  // Block the shutdown and reload signals before any thread starts, so only sigwait below sees them.
  sigset_t sigs = serve_signal_set();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  result<std::unique_ptr<weight_store>> store = error(errc::internal, "no store");
  if (opt.store == "cuda") {
    auto s = opt.model.empty() ? cuda_weight_store::load(opt.base, opt.device)
                               : cuda_weight_store::synthetic(opt.model, opt.seed, opt.device);
    if (!s) return fail(s.err());
    store = std::unique_ptr<weight_store>(std::move(s).value());
  } else {
    auto s = opt.model.empty() ? host_weight_store::load(opt.base) : host_weight_store::synthetic(opt.model, opt.seed);
    if (!s) return fail(s.err());
    store = std::unique_ptr<weight_store>(std::move(s).value());
  }
  (*store)->set_version(opt.base_version);

  io::event_loop loop;
  io::io_backend_options bopts;
  bopts.backend = opt.io_backend;
  auto backend = io::make_io_backend(loop, bopts);
  if (!backend) return fail(backend.err());
  io::buffer_pool_options popts;
  popts.buffer_bytes = opt.chunk_bytes;
  popts.max_total_bytes = std::max<uint64_t>(opt.chunk_bytes * opt.read_workers * 2, 64ull << 20);
  // The NCCL transport copies received bytes from the GPU straight into these buffers: page-lock them.
  const bool nccl_built = gpu::nccl_available().ok();
  auto gpus = gpu::cuda_device_count();
  if (nccl_built && gpus && *gpus > 0) {
    popts.pin = [device = opt.device](void* addr, size_t bytes) { return gpu::cuda_host_register(addr, bytes, device); };
    popts.unpin = [](void* addr, size_t) { gpu::cuda_host_unregister(addr); };
  }
  auto pool = io::buffer_pool::create(loop, backend->get(), popts);
  if (!pool) return fail(pool.err());
  unsigned threads = opt.workers ? opt.workers : std::max(1u, std::thread::hardware_concurrency());
  auto workers = std::make_unique<io::worker_pool>(loop, threads, 1024);
  metrics_registry metrics;
  receiver_options ropts;
  ropts.delta_dir = delta_dir;
  ropts.max_sync_memory_bytes = opt.max_sync_memory_bytes;
  ropts.chunk_bytes = opt.chunk_bytes;
  ropts.read_workers = opt.read_workers;
  ropts.max_file_bytes = opt.max_file_bytes;
  ropts.max_sync_bytes = opt.max_sync_bytes;
  ropts.max_decompressed_bytes = opt.max_decompressed_bytes;
  ropts.max_params_per_file = opt.max_tensors_per_file;
  ropts.max_manifest_bytes = opt.max_manifest_bytes;
  ropts.limits.max_files = opt.max_files_per_sync;
  if (const char* delay = std::getenv("DELTASYNC_TEST_APPLY_DELAY_MS")) {
    ropts.test_apply_delay_ms = static_cast<uint32_t>(std::strtoul(delay, nullptr, 10));
    DS_LOG(warn, "serve", "test fault injection: every apply waits %u ms (DELTASYNC_TEST_APPLY_DELAY_MS)",
           ropts.test_apply_delay_ms);
  }
  auto rx = std::make_unique<receiver>(loop, **backend, **pool, *workers, **store, ropts, &metrics);
  // The NCCL transport: the group membership (POST /nccl/init) and its sync source (docs/nccl.md).
  std::unique_ptr<nccl_member> nccl;
  if (nccl_built) {
    nccl_member_options nopts;
    nopts.device = opt.device;
    nopts.timeout_ms = opt.nccl_timeout_ms;
    if (const char* delay = std::getenv("DELTASYNC_TEST_NCCL_RECEIVE_DELAY_MS")) {
      nopts.test_receive_delay_ms = static_cast<uint32_t>(std::strtoul(delay, nullptr, 10));
      DS_LOG(warn, "serve", "test fault injection: each NCCL file receive waits %u ms", nopts.test_receive_delay_ms);
    }
    nccl = std::make_unique<nccl_member>(loop, nopts);
    rx->set_transport("nccl", [m = nccl.get()](const sync_request& req, io::buffer_pool& p) { return m->source(req, p); });
  }
  // --recover: the kept chain is replayed on a thread of its own, started with the routes just before the
  // server listens; meanwhile GET /status serves ("recovering": true) and pushes get 503 busy with
  // Retry-After (docs/reliability.md).
  std::thread recovery_thread;
  // "transport": "http" syncs (docs/service.md), from the servers pull-allow names only (none by default).
  http::pull_options pull_opts;
  pull_opts.allow = std::move(pull_allow).value();
  if (pull_opts.allow.empty()) {
    DS_LOG(info, "serve", "pull transport: no pull-allow entry, every \"transport\": \"http\" sync is refused (403)");
  } else {
    for (const auto& a : pull_opts.allow.describe()) DS_LOG(info, "serve", "pull transport: allowed from %s", a.c_str());
  }
  http::pull_opener puller(loop, std::move(pull_opts));
  rx->set_remote_opener(&puller);

  http::server_options sopts;
  sopts.host = listen->first;
  sopts.port = listen->second;
  sopts.bearer_token = token;
  sopts.max_body_bytes = opt.max_body_bytes;
  sopts.read_timeout_ms = opt.read_timeout_ms;
  sopts.max_header_bytes = opt.max_header_bytes;
  sopts.write_timeout_ms = opt.write_timeout_ms;
  sopts.max_connections = opt.max_connections;
  sopts.reserved_routes = {"/sync", "/update_weights_from_disk"};  // past the limit: health and syncs only
  http::route_options routes;
  routes.nccl = nccl.get();
  if (opt.recover || !opt.recover_from.empty()) {
    recovery_options rec;
    rec.delta_dir = delta_dir;
    rec.max_file_bytes = opt.max_file_bytes;
    routes.start_recovery = [&recovery_thread, &loop, rx = rx.get(), rec,
                             from = opt.recover_from](std::function<void(recovery_report)> done) {
      recovery_thread = std::thread([&loop, rx, rec, from, done = std::move(done)]() mutable {
        recovery_report rep = from.empty() ? recover(*rx, loop, rec) : recover_remote(*rx, loop, from);
        loop.post([rep = std::move(rep), done = std::move(done)]() mutable { done(std::move(rep)); });
      });
    };
  }
  routes.loop = opt.catch_up ? &loop : nullptr;
  routes.sglang_allow_version_gap = opt.sglang_allow_version_gap;
  // Read on this thread only before the server starts: from then on the loop thread owns the store (a sync can
  // commit at any moment), so the version is not read here again.
  const unsigned long long start_version = (*store)->version();
  auto server = http::http_server::start(loop, sopts, http::make_receiver_routes(*rx, *workers, metrics, routes));
  if (!server) {
    if (recovery_thread.joinable()) recovery_thread.join();
    return fail(server.err());
  }
  const uint16_t port = (*server)->port();
  if (!opt.port_file.empty()) {
    std::ofstream pf(opt.port_file + ".tmp");
    pf << port << "\n";
    pf.close();
    std::rename((opt.port_file + ".tmp").c_str(), opt.port_file.c_str());
  }
  DS_LOG(info, "serve", "listening on http://%s:%u (store %s: %zu tensors, %.2f GB, version %llu; delta dir %s%s)",
         listen->first.c_str(), port, std::string((*store)->kind()).c_str(), (*store)->size(),
         static_cast<double>((*store)->total_bytes()) / 1e9, start_version,
         delta_dir.c_str(), token.empty() ? "" : ", bearer token required");

  notify_service_manager("READY=1\nSTATUS=serving version " + std::to_string(start_version) + " on port " +
                         std::to_string(port));

  int sig = 0;
  for (;;) {
    sigwait(&sigs, &sig);
    if (sig != SIGHUP) break;
    // SIGHUP (systemctl reload): re-read the token file; a file that cannot be read keeps the old token.
    if (opt.token_file.empty()) {
      DS_LOG(info, "serve", "SIGHUP: no --token-file configured, nothing to reload");
      continue;
    }
    notify_service_manager("RELOADING=1");
    if (auto t = read_token_file(opt.token_file); !t) {
      DS_LOG(error, "serve", "SIGHUP: keeping the current token: %s", t.err().describe().c_str());
    } else {
      (*server)->set_bearer_token(*t);
      DS_LOG(info, "serve", "SIGHUP: reloaded the bearer token from %s", opt.token_file.c_str());
    }
    notify_service_manager("READY=1");
  }
  // Graceful stop: accept no new connection; a sync in flight owns the store and finishes (commits, or fails
  // and rolls back) and its client gets the answer; then every connection closes and the process exits 0.
  DS_LOG(info, "serve", "signal %d (%s): shutting down", sig, sig == SIGTERM ? "SIGTERM" : "SIGINT");
  notify_service_manager("STOPPING=1");
  (*server)->stop_accepting();
  if (recovery_thread.joinable()) recovery_thread.join();  // it ends at its step in flight's commit or refusal
  auto wait_idle = [&] {
    for (int i = 0; i < 6000; ++i) {
      bool busy = false;
      loop.run_sync([&] { busy = rx->busy(); });
      if (!busy) return i > 0;
      if (i == 0) DS_LOG(info, "serve", "waiting for the sync in flight to finish");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  };
  // The answer of a sync that just finished is on its way out: give its write a moment before closing.
  if (wait_idle()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  server->reset();
  wait_idle();  // a sync begun on a kept-alive connection meanwhile
  nccl.reset();  // leaves the group (aborting a communicator still in use), joins its thread
  rx.reset();
  workers.reset();
  pool->reset();
  backend->reset();
  return 0;
}

}  // namespace

void register_serve(CLI::App& app, int& exit_status) {
  auto opt = std::make_shared<serve_options>();
  auto* cmd = app.add_subcommand("serve", "Run the receiver service: hold the weights, apply syncs pushed over HTTP");
  cmd->add_option("--listen", opt->listen, "HOST:PORT to listen on (port 0: an ephemeral port)")->capture_default_str();
  cmd->add_option("--delta-dir,--update-weight-delta-dir", opt->delta_dir, "Directory the senders write syncs into")->required();
  cmd->add_option("--base", opt->base, "Base weights: a .safetensors file or a Hugging Face checkpoint directory");
  cmd->add_option("--model", opt->model, "A built-in synthetic model instead of --base (tiny, small, qwen2.5-0.5b, ...)");
  cmd->add_option("--seed", opt->seed, "Seed of the synthetic model")->capture_default_str();
  cmd->add_option("--base-version", opt->base_version, "Version of the base weights")->capture_default_str();
  cmd->add_option("--store", opt->store, "Weight store: host or cuda")->capture_default_str();
  cmd->add_option("--device", opt->device, "CUDA device of --store cuda and of the NCCL transport")->capture_default_str();
  cmd->add_option("--token-file", opt->token_file, "Require 'Authorization: Bearer <first line of this file>'");
  cmd->add_option("--update-weight-delta-chunk-bytes", opt->chunk_bytes, "Read pieces of this many bytes")->capture_default_str();
  cmd->add_option("--update-weight-delta-read-workers", opt->read_workers, "Reads in flight")->capture_default_str();
  cmd->add_option("--workers", opt->workers, "Decode/apply worker threads (0: one per core)")->capture_default_str();
  cmd->add_option("--io-backend", opt->io_backend, "auto, uring or threads (env DELTASYNC_IO_BACKEND also forces it)")->capture_default_str();
  cmd->add_option("--max-body-bytes", opt->max_body_bytes, "Largest request body")->capture_default_str();
  cmd->add_option("--read-timeout-ms", opt->read_timeout_ms, "Disconnect a client idle this long")->capture_default_str();
  cmd->add_option("--max-file-bytes", opt->max_file_bytes, "Largest delta file (and decompressed payload)")->capture_default_str();
  cmd->add_option("--port-file", opt->port_file, "Write the bound port to this file once listening");
  cmd->add_option("--log-level", opt->log_level, "debug, info, warn, error")->capture_default_str();
  cmd->add_option("--nccl-timeout-ms", opt->nccl_timeout_ms, "NCCL transport: longest wait without progress")
      ->capture_default_str();
  cmd->add_flag("--recover", opt->recover,
                "Replay the fully published version dirs (and anchors) kept in --delta-dir from the base version, "
                "serving /status meanwhile (pushes: 503 with Retry-After)");
  cmd->add_option("--recover-from", opt->recover_from,
                  "Like --recover, from a file server instead of --delta-dir (a pull-only receiver): catch up to "
                  "the newest version published there (URL/fleet.json), walking its publish markers and pulling "
                  "each step; the URL is allowed for pulls (docs/fleet.md)");
  cmd->add_flag("--catch-up,!--no-catch-up", opt->catch_up,
                "A /sync whose base_version is ahead of this receiver's version replays the kept, marker-verified "
                "chain in --delta-dir first (docs/fleet.md); on by default")
      ->capture_default_str();
  cmd->add_flag("--sglang-allow-version-gap", opt->sglang_allow_version_gap,
                "POST /update_weights_from_disk: accept a weight_version other than the store's version + 1 "
                "(unsafe: slime files are deltas against the previous version)");
  cmd->add_option("--max-header-bytes", opt->max_header_bytes, "Largest HTTP header block")->capture_default_str();
  cmd->add_option("--max-files-per-sync", opt->max_files_per_sync, "Most files one sync may list")->capture_default_str();
  cmd->add_option("--max-tensors-per-file", opt->max_tensors_per_file, "Most params in one delta file")->capture_default_str();
  cmd->add_option("--max-manifest-bytes", opt->max_manifest_bytes, "Largest delta file header (manifest)")->capture_default_str();
  cmd->add_option("--max-decompressed-bytes", opt->max_decompressed_bytes, "Largest decompressed deltas_zstd file")->capture_default_str();
  cmd->add_option("--max-sync-bytes", opt->max_sync_bytes, "Largest total of one sync's files")->capture_default_str();
  cmd->add_option("--write-timeout-ms", opt->write_timeout_ms, "Disconnect a client that does not read an answer for this long")->capture_default_str();
  cmd->add_option("--max-connections", opt->max_connections,
                  "Most open HTTP connections; at the limit the longest-idle one is closed for a new one, and a few "
                  "more are kept for /healthz and the sync routes")->capture_default_str();
  cmd->add_option("--max-sync-memory-bytes", opt->max_sync_memory_bytes,
                  "Memory budget of one sync: read buffers, decompressed payloads and the undo log (413 past it)")
      ->capture_default_str();
  cmd->add_option("--pull-allow", opt->pull_allow,
                  "Allow \"transport\": \"http\" syncs from base URLs under this prefix (http://host:port/path/); "
                  "repeat for several. None by default: every pull is refused");
  cmd->callback([opt, &exit_status] { exit_status = run_serve(*opt); });
}

}  // namespace deltasync::cli
