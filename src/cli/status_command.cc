// `deltasync status URL... [--watch [SECONDS]] [--json]`: the fleet view. Asks every receiver's GET /status at
// once and prints one line per receiver: its version, how far it lags behind the newest version in the
// fleet, its deltasync version, the last sync (age, files, changed elements, read/decode/apply/verify/total
// ms) and whether a sync is in flight; an unreachable receiver is a DOWN line with the reason. --json prints
// the same as one JSON object ({"newest_version", "receivers": [...]}) per refresh, one per line. Exit status
// 0 when every receiver answered, 1 otherwise (of the last refresh), 2 for bad arguments.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "base/log.h"
#include "cli/file_util.h"
#include "http/push_client.h"
#include "io/event_loop.h"

namespace deltasync::cli {
namespace {

namespace json = boost::json;

struct status_options {
  std::vector<std::string> urls;
  bool json = false;
  double watch_s = 0;       // 0: once
  uint64_t iterations = 0;  // with --watch: stop after this many refreshes (0: until interrupted)
  uint32_t timeout_ms = 2000;
  std::string token_file;
};

struct receiver_view {
  std::string url;
  bool up = false;
  std::string error;  // when !up
  json::object status;
};

uint64_t u64_at(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<uint64_t>(v->as_int64());
  return 0;
}

double f64_at(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_double()) return v->as_double();
  if (v->is_uint64()) return static_cast<double>(v->as_uint64());
  if (v->is_int64()) return static_cast<double>(v->as_int64());
  return 0;
}

std::string str_at(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::vector<receiver_view> poll(http::push_client& client, const std::vector<std::string>& urls) {
  std::vector<std::future<push_outcome>> pending;
  for (const auto& u : urls) pending.push_back(std::async(std::launch::async, [&client, u] { return client.get(u, "/status"); }));
  std::vector<receiver_view> out;
  for (size_t i = 0; i < urls.size(); ++i) {
    push_outcome r = pending[i].get();
    receiver_view v;
    v.url = urls[i];
    if (r.http_status == 0) {
      v.error = r.transport_error;
    } else if (r.http_status != 200) {
      v.error = "HTTP " + std::to_string(r.http_status) + ": " + r.body.substr(0, 200);
    } else {
      json::error_code ec;
      json::value doc = json::parse(r.body, ec);
      if (ec || !doc.is_object()) {
        v.error = "GET /status answered something that is not a JSON object";
      } else {
        v.up = true;
        v.status = std::move(doc.as_object());
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

json::object render_json(const std::vector<receiver_view>& views, uint64_t newest) {
  json::array receivers;
  for (const auto& v : views) {
    json::object o{{"url", v.url}, {"up", v.up}};
    if (!v.up) {
      o["error"] = v.error;
    } else {
      const uint64_t ver = u64_at(v.status, "version");
      o["version"] = ver;
      o["lag"] = newest - ver;
      o["deltasync_version"] = str_at(v.status, "deltasync_version");
      o["sync_in_flight"] = v.status.contains("sync_in_flight") && v.status.at("sync_in_flight").is_bool() &&
                            v.status.at("sync_in_flight").as_bool();
      if (const json::value* ls = v.status.if_contains("last_sync"); ls && ls->is_object()) o["last_sync"] = *ls;
      if (const json::value* age = v.status.if_contains("last_sync_age_s")) o["last_sync_age_s"] = *age;
      if (const json::value* e = v.status.if_contains("last_error")) o["last_error"] = *e;
    }
    receivers.push_back(std::move(o));
  }
  return json::object{{"newest_version", newest}, {"receivers", std::move(receivers)}};
}

std::string render_text(const std::vector<receiver_view>& views, uint64_t newest) {
  size_t width = 8;
  for (const auto& v : views) width = std::max(width, v.url.size());
  std::string out;
  char line[1024];
  std::snprintf(line, sizeof line, "%-*s  %8s  %4s  %-10s  %s\n", static_cast<int>(width), "RECEIVER", "VERSION", "LAG",
                "DELTASYNC", "LAST SYNC");
  out += line;
  for (const auto& v : views) {
    if (!v.up) {
      std::snprintf(line, sizeof line, "%-*s  DOWN: %s\n", static_cast<int>(width), v.url.c_str(), v.error.c_str());
      out += line;
      continue;
    }
    const uint64_t ver = u64_at(v.status, "version");
    std::string last = "none";
    if (const json::value* ls = v.status.if_contains("last_sync"); ls && ls->is_object()) {
      const json::object& s = ls->as_object();
      json::object t;
      if (const json::value* tv = s.if_contains("timings_ms"); tv && tv->is_object()) t = tv->as_object();
      char buf[512];
      std::string age = "";
      if (const json::value* a = v.status.if_contains("last_sync_age_s"); a && a->is_number())
        age = " " + std::to_string(static_cast<long long>(f64_at(v.status, "last_sync_age_s"))) + "s ago";
      std::snprintf(buf, sizeof buf,
                    "v%llu%s: %llu files, %llu changed; ms read %.1f decode %.1f apply %.1f verify %.1f total %.1f",
                    static_cast<unsigned long long>(u64_at(s, "version")), age.c_str(),
                    static_cast<unsigned long long>(u64_at(s, "files")),
                    static_cast<unsigned long long>(u64_at(s, "changed_elements")), f64_at(t, "read"),
                    f64_at(t, "decode"), f64_at(t, "apply"), f64_at(t, "verify"), f64_at(t, "total"));
      last = buf;
    }
    const bool in_flight = v.status.contains("sync_in_flight") && v.status.at("sync_in_flight").is_bool() &&
                           v.status.at("sync_in_flight").as_bool();
    if (in_flight) last += " [sync in flight]";
    if (v.status.contains("last_error")) last += " [last error: " + str_at(v.status, "last_error") + "]";
    std::string dsv = str_at(v.status, "deltasync_version");
    std::snprintf(line, sizeof line, "%-*s  %8llu  %4llu  %-10s  %s\n", static_cast<int>(width), v.url.c_str(),
                  static_cast<unsigned long long>(ver), static_cast<unsigned long long>(newest - ver),
                  dsv.empty() ? "?" : dsv.c_str(), last.c_str());
    out += line;
  }
  return out;
}

int run_status(const status_options& opt) {
  // A receiver that is down is reported on its line; the push client's own warning would only repeat it.
  set_log_level(log_level::error);
  if (opt.watch_s < 0) {
    std::fprintf(stderr, "deltasync status: --watch must be a positive number of seconds\n");
    return 2;
  }
  http::push_client_options copt;
  copt.timeout_ms = opt.timeout_ms;
  if (!opt.token_file.empty()) {
    auto t = read_token_file(opt.token_file);
    if (!t) {
      std::fprintf(stderr, "deltasync status: %s\n", t.err().describe().c_str());
      return 2;
    }
    copt.bearer_token = *t;
  }
  io::event_loop loop;
  http::push_client client(loop, copt);
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  int rc = 0;
  for (uint64_t round = 1;; ++round) {
    auto views = poll(client, opt.urls);
    uint64_t newest = 0;
    rc = 0;
    for (const auto& v : views) {
      if (v.up) newest = std::max(newest, u64_at(v.status, "version"));
      else rc = 1;
    }
    std::string text = opt.json ? json::serialize(render_json(views, newest)) + "\n" : render_text(views, newest);
    if (opt.watch_s > 0 && tty && !opt.json) text = "\x1b[H\x1b[2J" + text;  // redraw in place
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    if (opt.watch_s <= 0 || (opt.iterations && round >= opt.iterations)) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(opt.watch_s));
  }
  return rc;
}

}  // namespace

void register_status(CLI::App& app, int& exit_status) {
  auto opt = std::make_shared<status_options>();
  auto* cmd = app.add_subcommand("status", "Show every receiver's version, last sync, timings and lag behind the newest");
  cmd->add_option("urls", opt->urls, "Receivers: http://host:port ...")->required();
  cmd->add_flag("--json", opt->json, "One JSON object per refresh, for scripts");
  cmd->add_option("--watch", opt->watch_s, "Refresh every SECONDS (default 2) until interrupted")
      ->expected(0, 1)
      ->default_str("2");
  cmd->add_option("--iterations", opt->iterations, "With --watch: stop after this many refreshes (0: never)")
      ->capture_default_str();
  cmd->add_option("--timeout-ms", opt->timeout_ms, "Per-receiver request timeout")->capture_default_str();
  cmd->add_option("--token-file", opt->token_file, "Send 'Authorization: Bearer <first line of this file>'");
  cmd->callback([opt, &exit_status, cmd] {
    if (cmd->count("--watch") && opt->watch_s == 0) opt->watch_s = 2;
    exit_status = run_status(*opt);
  });
}

}  // namespace deltasync::cli
