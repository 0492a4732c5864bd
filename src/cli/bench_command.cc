// `deltasync bench`: how long does a sync take over a given link, for a given model and density, and which
// encoding should it use? For each model x learning rate x encoding, a simulated AdamW trainer (the realistic
// corpus: density emerges from bf16 rounding) takes a step, a Sender diffs and writes the delta files, and a
// `deltasync serve` child receives the sync over each path:
//   local   the disk transport, files on local disk (the work dir);
//   shared  the disk transport through a user-given shared-filesystem directory (--shared-dir);
//   http    the HTTP pull transport from `deltasync serve-files` (in --sender-netns when given, e.g. the
//           shaped link of scripts/netns-link.sh; else loopback).
// Every path's raw throughput (a large sequential read / HTTP GET) is measured in the same run and is the
// limit: wire bytes / throughput. Prints a table with medians and ratios and a recommendation per path;
// writes JSON (--json) and an SVG chart of time vs link bandwidth (--svg); progress goes to stderr.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <boost/json.hpp>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <thread>

#include "base/clock.h"
#include "cli/bench.h"
#include "cli/commands.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "http/pull_source.h"
#include "http/push_client.h"
#include "io/event_loop.h"
#include "sync/sender.h"
#include "sync/synthetic_model.h"

namespace deltasync::cli {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

struct bench_options {
  std::vector<std::string> models{"tiny"};
  std::vector<double> lrs{1e-6};
  std::vector<std::string> encodings{"indices", "deltas", "deltas_zstd", "compact"};
  std::vector<std::string> paths{"local", "http"};
  std::string shared_dir;
  std::string work_dir;
  std::string sender_netns;
  std::string sender_addr = "127.0.0.1";
  int reps = 3;
  int warmup_steps = 3;
  uint64_t bucket_bytes = 16ull << 20;
  uint64_t chunk_bytes = 4ull << 20;
  uint32_t read_workers = 8;
  uint32_t workers = 0;
  std::string state_dtype = "auto";
  uint64_t link_bytes = 512ull << 20;
  std::string json_path, svg_path;
  bool smoke = false;
  bool corpus_only = false;
  unsigned threads = 0;
  uint64_t seed = 1;
};

void progress(const char* fmt, auto... args) {
  std::fprintf(stderr, "bench: ");
  std::fprintf(stderr, fmt, args...);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

trainer_options trainer_for(const bench_options& opt, const model_layout& layout) {
  trainer_options t;
  t.optimizer = sim_optimizer::adamw;
  // fp32 moments need 14 bytes per parameter; above ~300M parameters keep them in bf16 (10 bytes) so the
  // trainer, the sender's snapshot and the receiver fit in memory together.
  const bool bf16 = opt.state_dtype == "bf16" || (opt.state_dtype == "auto" && layout.parameters() > 300'000'000);
  t.adamw.state = bf16 ? sim_state_dtype::bf16 : sim_state_dtype::fp32;
  return t;
}

// Density per learning rate of the AdamW corpus, no sync: --corpus-only.
int run_corpus(const bench_options& opt, unsigned threads) {
  std::printf("%-16s %-8s %5s %10s %10s %9s\n", "model", "lr", "step", "changed", "density", "step s");
  for (const auto& name : opt.models) {
    auto layout = synthetic_model(name);
    if (!layout) return std::fprintf(stderr, "deltasync bench: %s\n", layout.err().describe().c_str()), 2;
    for (double lr : opt.lrs) {
      rl_trainer_sim sim(*layout, opt.seed, threads, trainer_for(opt, *layout));
      for (int s = 1; s <= opt.warmup_steps + opt.reps; ++s) {
        std::vector<byte_buffer> before;
        for (size_t i = 0; i < sim.tensor_count(); ++i) before.emplace_back(sim.bf16(i).begin(), sim.bf16(i).end());
        stopwatch sw;
        sim.step(lr);
        const double step_s = sw.elapsed_s();
        uint64_t changed = 0;
        std::vector<uint32_t> pos;
        byte_buffer vals;
        for (size_t i = 0; i < sim.tensor_count(); ++i) {
          pos.clear();
          vals.clear();
          changed += diff_tensor(before[i], sim.bf16(i), 2, pos, vals);
        }
        std::printf("%-16s %-8.1e %5d %10" PRIu64 " %9.3f%% %9.3f\n", name.c_str(), lr, s, changed,
                    100.0 * static_cast<double>(changed) / static_cast<double>(layout->parameters()), step_s);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

// The receiver's /checksums against the trainer's bf16 view: "" when bit-identical.
std::string verify(http::push_client& client, const std::string& url, const rl_trainer_sim& sim) {
  push_outcome got = client.get(url, "/checksums");
  if (!got.ok()) return "GET /checksums: " + std::to_string(got.http_status) + " " + got.transport_error;
  boost::system::error_code ec;
  json::value doc = json::parse(got.body, ec);
  if (ec || !doc.is_object()) return "GET /checksums: not JSON";
  const auto& tensors = doc.as_object().at("tensors").as_object();
  for (size_t i = 0; i < sim.tensor_count(); ++i) {
    const auto& name = sim.layout().tensors[i].name;
    auto it = tensors.find(name);
    if (it == tensors.end()) return "receiver lacks " + name;
    if (it->value().as_object().at("xxh3_128").as_string() != to_hex(xxh3_128(sim.bf16(i)))) return "tensor " + name + " differs";
  }
  return "";
}

struct path_setup {
  std::string name;       // local | shared | http
  std::string delta_dir;  // where the sender writes and the receiver (disk transport) reads
  double link_bps = 0;
};

// One sync: a fresh sender seeded with what the receiver holds, one trainer step, the files, the POST.
result<bench_sample> one_sync(const bench_options& opt, rl_trainer_sim& sim, const path_setup& path, encoding enc,
                              double lr, uint64_t version, http::push_client& client, const std::string& rx_url,
                              const std::string& files_url, bool step) {
  sender_options so;
  so.enc = enc;
  so.delta_dir = path.delta_dir;
  so.buffer_bytes = opt.bucket_bytes;
  so.keep_files = true;
  sender snd(so, nullptr);
  snd.set_snapshot_version(version - 1);
  const auto& layout = sim.layout();
  for (size_t i = 0; i < sim.tensor_count(); ++i)
    DS_TRY_STATUS(snd.seed(layout.tensors[i].name, {sim.bf16(i).data(), layout.tensors[i].type, layout.tensors[i].shape, "cpu"}));
  if (step) sim.step(lr);
  DS_TRY_STATUS(snd.begin(version));
  for (size_t i = 0; i < sim.tensor_count(); ++i)
    DS_TRY_STATUS(snd.add(layout.tensors[i].name, {sim.bf16(i).data(), layout.tensors[i].type, layout.tensors[i].shape, "cpu"}));
  DS_ASSIGN_OR_RETURN(sync_report rep, snd.finish());
  char dir[32];
  std::snprintf(dir, sizeof(dir), "weight_v%06" PRIu64, version);
  json::array files;
  for (const auto& f : rep.files) files.push_back(json::string(f));
  json::object body{{"version", version}, {"base_version", version - 1}, {"dir", dir}, {"files", std::move(files)}};
  if (path.name == "http") {
    body["transport"] = "http";
    body["base_url"] = files_url;
  } else {
    body["transport"] = "disk";
  }
  stopwatch sw;
  auto outcome = client.post_all({rx_url}, "/sync", json::serialize(body)).front();
  const double sync_s = sw.elapsed_s();
  std::error_code ignored;
  fs::remove_all(fs::path(path.delta_dir) / dir, ignored);
  if (!outcome.ok())
    return error(errc::receiver_failed, "sync v" + std::to_string(version) + " over " + path.name + ": " +
                                            std::to_string(outcome.http_status) + " " + outcome.transport_error + outcome.body);
  bench_sample s;
  s.model = layout.name;
  s.path = path.name;
  s.enc = std::string(encoding_name(enc));
  s.lr = lr;
  s.params = layout.parameters();
  s.changed = rep.changed_elements;
  s.density = static_cast<double>(rep.changed_elements) / static_cast<double>(layout.parameters());
  s.wire_bytes = rep.wire_bytes;
  s.files = rep.files.size();
  s.diff_encode_s = rep.diff_encode_s;
  s.write_s = rep.write_s;
  s.sync_s = sync_s;
  s.link_bps = path.link_bps;
  boost::system::error_code ec;
  json::value doc = json::parse(outcome.body, ec);
  if (!ec && doc.is_object() && doc.as_object().contains("timings_ms")) {
    const auto& t = doc.as_object().at("timings_ms").as_object();
    auto get = [&](const char* k) { return t.contains(k) ? t.at(k).to_number<double>() / 1e3 : 0.0; };
    s.read_s = get("read");
    s.decode_s = get("decode");
    s.apply_s = get("apply");
    s.verify_s = get("verify");
  }
  return s;
}

int fail(const std::string& what) {
  std::fprintf(stderr, "deltasync bench: %s\n", what.c_str());
  return 1;
}

int run_bench(bench_options opt) {
  if (opt.smoke) {
    opt.models = {"tiny"};
    opt.reps = 1;
    opt.warmup_steps = 1;
    opt.link_bytes = 8ull << 20;
    opt.bucket_bytes = 64ull << 10;
  }
  const unsigned threads = opt.threads ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<encoding> encs;
  for (const auto& e : opt.encodings) {
    auto enc = encoding_from_name(e);
    if (!enc) return fail("unknown encoding '" + e + "' (indices, deltas, deltas_zstd, compact)");
    encs.push_back(*enc);
  }
  for (const auto& m : opt.models)
    if (auto l = synthetic_model(m); !l) return fail(l.err().describe());
  if (opt.state_dtype != "auto" && !sim_state_dtype_from_name(opt.state_dtype)) return fail("--state-dtype: auto, fp32 or bf16");
  if (opt.corpus_only) return run_corpus(opt, threads);
  for (const auto& p : opt.paths)
    if (p != "local" && p != "shared" && p != "http") return fail("unknown path '" + p + "' (local, shared, http)");
  if (std::find(opt.paths.begin(), opt.paths.end(), "shared") == opt.paths.end() && !opt.shared_dir.empty())
    opt.paths.push_back("shared");
  if (std::find(opt.paths.begin(), opt.paths.end(), "shared") != opt.paths.end() && opt.shared_dir.empty())
    return fail("path 'shared' needs --shared-dir DIR (a directory on the shared filesystem)");

  const std::string tag = "deltasync-bench-" + std::to_string(::getpid());
  const std::string work = opt.work_dir.empty() ? (fs::path("/var/tmp") / tag).string() : opt.work_dir;
  std::error_code ec;
  fs::create_directories(work + "/local", ec);
  if (ec) return fail("create " + work + ": " + ec.message());
  struct cleanup_dirs {
    std::vector<std::string> dirs;
    ~cleanup_dirs() {
      std::error_code e;
      for (const auto& d : dirs) fs::remove_all(d, e);
    }
  } cleanup;
  if (opt.work_dir.empty()) cleanup.dirs.push_back(work);

  io::event_loop loop;
  http::push_client client(loop, {});
  std::vector<path_setup> paths;
  bench_child files_server;
  std::string files_url;
  for (const auto& p : opt.paths) {
    path_setup ps{p, work + "/local", 0};
    if (p == "shared") {
      ps.delta_dir = (fs::path(opt.shared_dir) / tag).string();
      fs::create_directories(ps.delta_dir, ec);
      if (ec) return fail("create " + ps.delta_dir + ": " + ec.message());
      cleanup.dirs.push_back(ps.delta_dir);
    }
    const std::string link_file = ps.delta_dir + "/link.bin";
    progress("measuring the %s path's raw throughput (%.0f MB sequential)", p.c_str(), static_cast<double>(opt.link_bytes) / 1e6);
    auto wbps = disk_write_bps(link_file, opt.link_bytes);
    if (!wbps) return fail(wbps.err().describe());
    if (p != "http") {
      auto rbps = disk_read_bps(link_file);
      if (!rbps) return fail(rbps.err().describe());
      ps.link_bps = *rbps;
      progress("  %s: read %.0f MB/s (O_DIRECT when allowed), write %.0f MB/s", p.c_str(), *rbps / 1e6, *wbps / 1e6);
    } else {
      auto port = files_server.start({"serve-files", "--dir", ps.delta_dir, "--listen", opt.sender_addr + ":0", "--log-level", "warn"},
                                     work + "/files.port", opt.sender_netns, 60);
      if (!port) return fail(port.err().describe());
      files_url = "http://" + opt.sender_addr + ":" + std::to_string(*port);
      std::vector<double> bps;
      for (int i = 0; i < 3; ++i) {
        auto got = http::fetch_discard(loop, files_url + "/link.bin");
        if (!got) return fail("link measurement: " + got.err().describe());
        if (got->bytes != opt.link_bytes) return fail("link measurement: short body");
        bps.push_back(static_cast<double>(got->bytes) / got->seconds);
      }
      std::sort(bps.begin(), bps.end());
      ps.link_bps = bps[1];
      progress("  http: %s%s -> %.0f MB/s (median of 3 GETs of %.0f MB; %.0f..%.0f)", files_url.c_str(),
               opt.sender_netns.empty() ? " (loopback)" : (" in netns " + opt.sender_netns).c_str(), ps.link_bps / 1e6,
               static_cast<double>(opt.link_bytes) / 1e6, bps[0] / 1e6, bps[2] / 1e6);
    }
    fs::remove(link_file, ec);
    paths.push_back(ps);
  }

  std::vector<bench_sample> samples;
  const size_t total = opt.models.size() * paths.size() * static_cast<size_t>(opt.reps) * opt.lrs.size() * encs.size();
  size_t done = 0;
  bool all_verified = true;
  for (const auto& name : opt.models) {
    const model_layout layout = *synthetic_model(name);
    for (const auto& path : paths) {
      progress("%s over %s: starting the receiver (%.2f B parameters) and the trainer", name.c_str(), path.name.c_str(),
               static_cast<double>(layout.parameters()) / 1e9);
      bench_child rx;
      std::vector<std::string> args{"serve", "--model", name, "--seed", std::to_string(opt.seed), "--delta-dir", path.delta_dir,
                                    "--listen", "127.0.0.1:0", "--log-level", "warn",
                                    "--update-weight-delta-chunk-bytes", std::to_string(opt.chunk_bytes),
                                    "--update-weight-delta-read-workers", std::to_string(opt.read_workers)};
      if (opt.workers) args.insert(args.end(), {"--workers", std::to_string(opt.workers)});
      if (path.name == "http") args.insert(args.end(), {"--pull-allow", files_url});  // the only server it pulls from
      auto port = rx.start(args, work + "/rx.port", "", 900);
      if (!port) return fail(port.err().describe());
      const std::string rx_url = "http://127.0.0.1:" + std::to_string(*port);
      rl_trainer_sim sim(layout, opt.seed, threads, trainer_for(opt, layout));
      // The receiver holds the initial weights; warm-up steps settle Adam's moments, then one unmeasured sync
      // brings the receiver to the trainer's weights.
      uint64_t version = 1;
      {
        sender_options so;
        so.delta_dir = path.delta_dir;
        so.buffer_bytes = opt.bucket_bytes;
        so.keep_files = true;
        // The catch-up sync diffs against the initial weights: a sender seeded with them (its snapshot is the
        // only copy kept: memory is tight with a 1B trainer next to a receiver).
        sender snd(so, nullptr);
        for (size_t i = 0; i < sim.tensor_count(); ++i)
          if (auto st = snd.seed(layout.tensors[i].name, {sim.bf16(i).data(), layout.tensors[i].type, layout.tensors[i].shape, "cpu"}); !st)
            return fail(st.err().describe());
        for (int s = 0; s < opt.warmup_steps; ++s) sim.step(opt.lrs.front());
        if (auto st = snd.begin(version); !st) return fail(st.err().describe());
        for (size_t i = 0; i < sim.tensor_count(); ++i)
          if (auto st = snd.add(layout.tensors[i].name, {sim.bf16(i).data(), layout.tensors[i].type, layout.tensors[i].shape, "cpu"}); !st)
            return fail(st.err().describe());
        auto rep = snd.finish();
        if (!rep) return fail(rep.err().describe());
        json::array files;
        for (const auto& f : rep->files) files.push_back(json::string(f));
        json::object body{{"version", version}, {"base_version", 0}, {"dir", "weight_v000001"}, {"files", std::move(files)},
                          {"transport", "disk"}};
        auto outcome = client.post_all({rx_url}, "/sync", json::serialize(body)).front();
        fs::remove_all(fs::path(path.delta_dir) / "weight_v000001", ec);
        if (!outcome.ok()) return fail("catch-up sync: " + std::to_string(outcome.http_status) + " " + outcome.transport_error + outcome.body);
        ++version;
      }
      for (int rep = 0; rep < opt.reps; ++rep) {
        for (double lr : opt.lrs) {
          for (encoding enc : encs) {
            auto s = one_sync(opt, sim, path, enc, lr, version, client, rx_url, files_url, true);
            if (!s) return fail(s.err().describe());
            ++version;
            ++done;
            progress("[%zu/%zu] %s %s lr %.1e %-11s density %.3f%% wire %.1f MB: diff+encode %.3f s, write %.3f s, sync %.3f s "
                     "(limit %.3f s)",
                     done, total, name.c_str(), path.name.c_str(), lr, s->enc.c_str(), s->density * 100,
                     static_cast<double>(s->wire_bytes) / 1e6, s->diff_encode_s, s->write_s, s->sync_s, s->limit_s());
            samples.push_back(*s);
          }
        }
      }
      const std::string diff = verify(client, rx_url, sim);
      progress("%s over %s: receiver %s", name.c_str(), path.name.c_str(),
               diff.empty() ? "bit-identical to the trainer" : ("MISMATCH: " + diff).c_str());
      all_verified = all_verified && diff.empty();
    }
  }
  files_server.stop();

  auto rows = summarize(samples);
  print_report(rows);
  char host[256] = "?";
  ::gethostname(host, sizeof(host) - 1);
  const std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const std::string note = std::string(host) + ", " + std::to_string(std::thread::hardware_concurrency()) + " CPUs, " + when +
                           (opt.sender_netns.empty() ? "" : ", sender in netns " + opt.sender_netns);
  if (!opt.json_path.empty())
    if (auto r = write_json(opt.json_path, samples, rows, note); !r) return fail(r.err().describe());
  if (!opt.svg_path.empty())
    if (auto r = write_svg(opt.svg_path, rows); !r) return fail(r.err().describe());
  std::printf("%s\n", all_verified ? "bench: every receiver is bit-identical to the trainer"
                                   : "bench: FAILED: a receiver differs from the trainer");
  return all_verified ? 0 : 1;
}

}  // namespace

void register_bench(CLI::App& app, int& exit_status) {
  auto opt = std::make_shared<bench_options>();
  auto* cmd = app.add_subcommand("bench", "Measure syncs per model x density x encoding over local disk, a shared fs and HTTP pull");
  cmd->add_option("--models", opt->models, "Synthetic models (NAME or NAME@FRACTION)")->delimiter(',')->capture_default_str();
  cmd->add_option("--lrs", opt->lrs, "Learning rates of the AdamW trainer (density follows)")->delimiter(',')->capture_default_str();
  cmd->add_option("--encodings", opt->encodings, "Encodings to compare")->delimiter(',')->capture_default_str();
  cmd->add_option("--paths", opt->paths, "local, shared (needs --shared-dir), http")->delimiter(',')->capture_default_str();
  cmd->add_option("--shared-dir", opt->shared_dir, "A directory on the shared filesystem (adds the 'shared' path)");
  cmd->add_option("--work-dir", opt->work_dir, "Local delta dir (default: a temporary one under /var/tmp, removed after)");
  cmd->add_option("--sender-netns", opt->sender_netns, "Run the file server in this network namespace (scripts/netns-link.sh)");
  cmd->add_option("--sender-addr", opt->sender_addr, "Address the file server listens on (the sender's side of the link)")
      ->capture_default_str();
  cmd->add_option("--reps", opt->reps, "Measured syncs per cell (medians are reported)")->capture_default_str()->check(CLI::Range(1, 100));
  cmd->add_option("--warmup-steps", opt->warmup_steps, "AdamW steps before measuring")->capture_default_str();
  cmd->add_option("--update-weight-buffer-size", opt->bucket_bytes, "Sender bucket size in bytes")->capture_default_str();
  cmd->add_option("--update-weight-delta-chunk-bytes", opt->chunk_bytes, "Receiver read / Range request size")->capture_default_str();
  cmd->add_option("--update-weight-delta-read-workers", opt->read_workers, "Receiver reads / requests in flight")->capture_default_str();
  cmd->add_option("--workers", opt->workers, "Receiver worker threads (0: one per core)")->capture_default_str();
  cmd->add_option("--state-dtype", opt->state_dtype, "AdamW moments: auto (bf16 above 300M parameters), fp32, bf16")->capture_default_str();
  cmd->add_option("--link-bytes", opt->link_bytes, "Size of the raw throughput transfer")->capture_default_str();
  cmd->add_option("--json", opt->json_path, "Write every sample and the medians here");
  cmd->add_option("--svg", opt->svg_path, "Write the chart (time vs link bandwidth per encoding) here");
  cmd->add_option("--threads", opt->threads, "Trainer simulation threads (0: one per core)")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Seed of the synthetic model")->capture_default_str();
  cmd->add_flag("--smoke", opt->smoke, "Tiny model, one rep, small transfers (CTest)");
  cmd->add_flag("--corpus-only", opt->corpus_only, "Only report the AdamW corpus' density per learning rate and step");
  cmd->callback([opt, &exit_status] { exit_status = run_bench(*opt); });
}

}  // namespace deltasync::cli
