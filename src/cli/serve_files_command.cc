// `deltasync serve-files`: the pull transport's sender side. Serves a delta dir read-only over HTTP (GET and
// HEAD with byte ranges) until SIGINT/SIGTERM, so receivers can fetch syncs with "transport": "http".
// nginx serving the same directory works as well (docs/bench.md).
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>

#include "base/log.h"
#include "cli/commands.h"
#include "http/file_server.h"
#include "io/event_loop.h"

namespace deltasync::cli {
namespace {

struct serve_files_options {
  std::string dir;
  std::string listen = "127.0.0.1:8080";
  std::string port_file;
  std::string log_level = "info";
  uint32_t max_connections = 256;
};

int run_serve_files(const serve_files_options& opt) {
  log_level level;
  if (!parse_log_level(opt.log_level, level)) {
    std::fprintf(stderr, "deltasync serve-files: unknown --log-level %s\n", opt.log_level.c_str());
    return 2;
  }
  set_log_level(level);
  const auto colon = opt.listen.rfind(':');
  unsigned long port = 0;
  if (colon == std::string::npos || colon + 1 == opt.listen.size() ||
      opt.listen.find_first_not_of("0123456789", colon + 1) != std::string::npos ||
      (port = std::stoul(opt.listen.substr(colon + 1))) > 65535) {
    std::fprintf(stderr, "deltasync serve-files: --listen must be HOST:PORT, got '%s'\n", opt.listen.c_str());
    return 2;
  }
  std::string host = opt.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  io::event_loop loop;
  http::file_server_options o;
  o.root = opt.dir;
  o.host = host;
  o.port = static_cast<uint16_t>(port);
  o.max_connections = opt.max_connections;
  auto server = http::file_server::start(loop, o);
  if (!server) {
    std::fprintf(stderr, "deltasync serve-files: %s\n", server.err().describe().c_str());
    return 1;
  }
  if (!opt.port_file.empty()) {
    std::ofstream pf(opt.port_file + ".tmp");
    pf << (*server)->port() << "\n";
    pf.close();
    std::rename((opt.port_file + ".tmp").c_str(), opt.port_file.c_str());
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  DS_LOG(info, "serve-files", "signal %d: shutting down (%llu bytes sent)", sig,
         static_cast<unsigned long long>((*server)->bytes_sent()));
  server->reset();
  return 0;
}

}  // namespace

void register_serve_files(CLI::App& app, int& exit_status) {
  auto opt = std::make_shared<serve_files_options>();
  auto* cmd = app.add_subcommand("serve-files", "Serve a delta dir over HTTP (Range requests) for receivers that pull");
  cmd->add_option("--dir,--update-weight-delta-dir", opt->dir, "Directory to serve (the senders' delta dir)")->required();
  cmd->add_option("--listen", opt->listen, "HOST:PORT to listen on (port 0: an ephemeral port)")->capture_default_str();
  cmd->add_option("--port-file", opt->port_file, "Write the bound port to this file once listening");
  cmd->add_option("--max-connections", opt->max_connections, "Open connections at most (one more is answered 503 with Retry-After: 1)")->capture_default_str();
  cmd->add_option("--log-level", opt->log_level, "debug, info, warn, error")->capture_default_str();
  cmd->callback([opt, &exit_status] { exit_status = run_serve_files(*opt); });
}

}  // namespace deltasync::cli
