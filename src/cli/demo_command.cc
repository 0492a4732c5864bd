// `deltasync demo`: the whole system on loopback. Starts `deltasync serve` (a child process) holding a
// built-in synthetic model, then runs a simulated RL trainer (fp32 master weights, AdamW-sized steps, bf16
// view; ~1% of elements change per step) whose Sender writes each sync's delta files and pushes them over
// the disk transport. After every sync it compares GET /checksums with the trainer's own digests, and it
// ends with one table row per sync. `--offline` runs the codec alone instead (demo_offline.cc).
#include <CLI/CLI.hpp>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "base/clock.h"
#include "cli/commands.h"
#include "cli/demo.h"
#include "codec/digest.h"
#include "gpu/nccl_channel.h"
#include "http/push_client.h"
#include "io/event_loop.h"
#include "sync/sender.h"
#include "sync/synthetic_model.h"

extern char** environ;

namespace deltasync::cli {
namespace {

namespace json = boost::json;

// The receiver as a child process; killed (SIGTERM, then waited for) when this goes out of scope.
class child_server {
 public:
  ~child_server() { stop(); }
  result<std::string> start(const demo_options& opt, const std::string& delta_dir, const std::string& port_file) {
    std::vector<std::string> args{"/proc/self/exe", "serve",      "--model",     opt.model,
                                  "--seed",         std::to_string(opt.seed), "--delta-dir", delta_dir,
                                  "--listen",       "127.0.0.1:0", "--port-file", port_file,
                                  "--log-level",    "warn"};
    if (opt.transport == "nccl") args.insert(args.end(), {"--device", "1"});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (int rc = posix_spawn(&pid_, "/proc/self/exe", nullptr, nullptr, argv.data(), environ); rc != 0)
      return errno_error(rc, "start deltasync serve");
    for (int i = 0; i < 3000; ++i) {  // loading a large synthetic model takes a few seconds
      std::ifstream in(port_file);
      unsigned port = 0;
      if (in >> port && port != 0) return "http://127.0.0.1:" + std::to_string(port);
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return error(errc::internal, "deltasync serve exited during start-up (status " + std::to_string(status) + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return error(errc::timeout, "deltasync serve did not start listening within 300 s");
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

struct demo_row {
  uint64_t version = 0;
  double density = 0;
  uint64_t changed = 0, wire_bytes = 0, files = 0;
  double diff_s = 0, write_s = 0, push_s = 0;
  double read_ms = 0, decode_ms = 0, apply_ms = 0, total_ms = 0;
  std::string outcome;  // "bit-exact", "MISMATCH", "refused: ..."
};

// Compares the receiver's /checksums with the trainer's digests; "" when equal, else what differs.
std::string verify(http::push_client& client, const std::string& url, const rl_trainer_sim& sim, uint64_t version) {
  push_outcome got = client.get(url, "/checksums");
  if (!got.ok()) return "GET /checksums failed: " + std::to_string(got.http_status) + " " + got.transport_error + got.body;
  boost::system::error_code ec;
  json::value doc = json::parse(got.body, ec);
  if (ec || !doc.is_object()) return "GET /checksums: not JSON";
  const auto& o = doc.as_object();
  if (!o.contains("version") || o.at("version").to_number<uint64_t>() != version)
    return "receiver is at version " + json::serialize(o.at("version")) + ", expected " + std::to_string(version);
  const auto& tensors = o.at("tensors").as_object();
  if (tensors.size() != sim.tensor_count()) return "receiver holds another tensor count";
  for (size_t i = 0; i < sim.tensor_count(); ++i) {
    const auto& name = sim.layout().tensors[i].name;
    auto it = tensors.find(name);
    if (it == tensors.end()) return "receiver lacks " + name;
    if (it->value().as_object().at("xxh3_128").as_string() != to_hex(xxh3_128(sim.bf16(i)))) return "tensor " + name + " differs";
  }
  return "";
}

void take_timings(const push_outcome& o, demo_row& row) {
  boost::system::error_code ec;
  json::value doc = json::parse(o.body, ec);
  if (ec || !doc.is_object() || !doc.as_object().contains("timings_ms")) return;
  const auto& t = doc.as_object().at("timings_ms").as_object();
  auto get = [&](const char* k) { return t.contains(k) ? t.at(k).to_number<double>() : 0.0; };
  row.read_ms = get("read");
  row.decode_ms = get("decode");
  row.apply_ms = get("apply");
  row.total_ms = get("total");
}

}  // namespace

int run_service_demo(const demo_options& opt) {
  auto layout = synthetic_model(opt.model);
  if (!layout) {
    std::fprintf(stderr, "deltasync demo: %s\n", layout.err().describe().c_str());
    return 2;
  }
  auto enc = encoding_from_name(opt.encoding);
  if (!enc || (opt.format != "native" && opt.format != "slime")) {
    std::fprintf(stderr, "deltasync demo: unknown encoding or format\n");
    return 2;
  }
  if (opt.transport == "nccl") {
    // The NCCL variant needs two GPUs (the trainer's and the receiver's); anything less is a visible skip.
    auto gpus = gpu::cuda_device_count();
    if (!gpus || *gpus < 2) {
      std::printf("deltasync demo (nccl): SKIP: needs two CUDA devices and NCCL (%s)\n",
                  gpus ? ("found " + std::to_string(*gpus) + " device(s)").c_str() : gpus.err().describe().c_str());
      return demo_skipped;
    }
  } else if (opt.transport != "disk") {
    std::fprintf(stderr, "deltasync demo: unknown transport '%s' (disk, nccl)\n", opt.transport.c_str());
    return 2;
  }
  std::string root = !opt.keep.empty() ? opt.keep : opt.dir;
  const bool temp_root = root.empty();
  if (temp_root) root = (std::filesystem::temp_directory_path() / ("deltasync-demo-" + std::to_string(::getpid()))).string();
  const std::string delta_dir = root + "/deltas";
  std::filesystem::create_directories(delta_dir);
  std::filesystem::remove(root + "/port");

  std::printf("deltasync demo: model %s (%zu tensors, %.1fM bf16 parameters, %.2f GB), lr %.1e, %d syncs, %s/%s, transport %s\n",
              layout->name.c_str(), layout->tensors.size(), static_cast<double>(layout->parameters()) / 1e6,
              static_cast<double>(layout->parameters()) * 2 / 1e9, opt.lr, opt.steps,
              std::string(encoding_name(*enc)).c_str(), opt.format.c_str(), opt.transport.c_str());
  std::printf("[1/3] starting deltasync serve (receiver) on loopback, delta dir %s\n", delta_dir.c_str());
  std::fflush(stdout);
  child_server server;
  auto url = server.start(opt, delta_dir, root + "/port");
  if (!url) {
    std::fprintf(stderr, "deltasync demo: %s\n", url.err().describe().c_str());
    return 1;
  }
  std::printf("      receiver listening on %s\n[2/3] starting the trainer (same seed: it starts from the receiver's weights)\n",
              url->c_str());
  std::fflush(stdout);
  rl_trainer_sim sim(*layout, opt.seed, opt.threads);
  io::event_loop loop;
  http::push_client client(loop, {});
  sender_options so;
  so.enc = *enc;
  so.format = opt.format == "slime" ? wire_format::slime : wire_format::native;
  so.delta_dir = delta_dir;
  so.receivers = {*url};
  so.buffer_bytes = opt.bucket_bytes;
  so.keep_files = !opt.keep.empty();
  so.pre_push_hook = opt.pre_push_hook;
  so.transport = opt.transport;
  so.nccl.device = 0;  // the receiver serves with --device 1
  sender snd(so, &client);
  for (size_t i = 0; i < sim.tensor_count(); ++i) {
    const auto& t = layout->tensors[i];
    if (auto s = snd.seed(t.name, {sim.bf16(i).data(), t.type, t.shape, "cpu"}); !s) {
      std::fprintf(stderr, "deltasync demo: %s\n", s.err().describe().c_str());
      return 1;
    }
  }
  std::printf("[3/3] training and syncing\n");
  std::fflush(stdout);
  std::vector<demo_row> rows;
  bool final_ok = false;
  for (int step = 1; step <= opt.steps; ++step) {
    stopwatch st;
    sim.step(opt.lr);
    const auto version = static_cast<uint64_t>(step);
    demo_row row;
    row.version = version;
    status s = snd.begin(version);
    for (size_t i = 0; s && i < sim.tensor_count(); ++i) {
      const auto& t = layout->tensors[i];
      s = snd.add(t.name, {sim.bf16(i).data(), t.type, t.shape, "cpu"});
    }
    result<sync_report> rep = s ? snd.finish() : result<sync_report>(s.err());
    const sync_report& r = snd.last_report();
    row.changed = r.changed_elements;
    row.density = r.dense_bytes ? static_cast<double>(r.changed_elements) * 2 / static_cast<double>(r.dense_bytes) : 0;
    row.wire_bytes = r.wire_bytes;
    row.files = r.files.size();
    row.diff_s = r.diff_encode_s;
    row.write_s = r.write_s;
    row.push_s = r.push_s;
    if (!r.receivers.empty()) take_timings(r.receivers.front(), row);
    if (!rep) {
      row.outcome = "refused (store kept v" + std::to_string(snd.snapshot_version()) + "; changes carried to the next sync)";
      std::printf("  sync v%" PRIu64 ": %s\n", version, rep.err().describe().c_str());
      final_ok = false;
    } else {
      std::string diff = verify(client, *url, sim, version);
      row.outcome = diff.empty() ? "bit-exact" : "MISMATCH: " + diff;
      final_ok = diff.empty();
    }
    std::printf("  step %d/%d: trainer %.2f s, sync v%" PRIu64 " %.3f%% changed, %.1f MB on the wire -> %s\n", step,
                opt.steps, st.elapsed_s() - r.diff_encode_s - r.write_s - r.push_s, version, row.density * 100,
                static_cast<double>(row.wire_bytes) / 1e6, row.outcome.c_str());
    std::fflush(stdout);
    rows.push_back(row);
  }
  server.stop();

  std::printf("\n%-7s %8s %11s %12s %5s %8s %8s %8s %8s %8s %8s  %s\n", "version", "density", "changed", "wire bytes",
              "files", "diff s", "write s", "read s", "decode s", "apply s", "recv s", "verified");
  for (const auto& r : rows) {
    std::printf("%-7" PRIu64 " %7.3f%% %11" PRIu64 " %12" PRIu64 " %5" PRIu64 " %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f  %s\n",
                r.version, r.density * 100, r.changed, r.wire_bytes, r.files, r.diff_s, r.write_s, r.read_ms / 1e3,
                r.decode_ms / 1e3, r.apply_ms / 1e3, r.total_ms / 1e3, r.outcome.c_str());
  }
  if (temp_root) std::filesystem::remove_all(root);
  std::printf("\n%s\n", final_ok ? "demo: the receiver is bit-identical to the trainer after the last sync"
                                 : "demo: FAILED: the receiver does not match the trainer after the last sync");
  return final_ok ? 0 : 1;
}

void register_demo(CLI::App& app, int& exit_status) {
  auto opt = std::make_shared<demo_options>();
  auto* cmd = app.add_subcommand("demo", "Run trainer -> deltasync -> receiver end to end on a synthetic model");
  std::string models;
  for (auto n : synthetic_model_names()) models += (models.empty() ? "" : ", ") + std::string(n);
  cmd->add_option("--model", opt->model, "Synthetic model: " + models)->capture_default_str();
  cmd->add_option("--steps", opt->steps, "Trainer steps (one sync each)")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_option("--lr", opt->lr, "Learning rate of the simulated AdamW step")->capture_default_str();
  cmd->add_flag("--offline", opt->offline, "Run the codec alone (no service): every encoding, written, read back, applied");
  cmd->add_option("--encoding,--update-weight-encoding", opt->encoding, "Encoding of the service demo's syncs")
      ->capture_default_str();
  cmd->add_option("--encodings", opt->encodings, "Encodings the offline demo runs, each in turn")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--format", opt->format, "Service demo wire format: native or slime")->capture_default_str();
  cmd->add_option("--update-weight-buffer-size", opt->bucket_bytes, "Bucket size in bytes")->capture_default_str();
  cmd->add_option("--dir", opt->dir, "Directory for the delta files (default: a temporary one, removed after)");
  cmd->add_option("--keep", opt->keep, "Keep every file here (offline: plus base.safetensors and new.safetensors)");
  cmd->add_option("--pre-push-hook", opt->pre_push_hook, "Service demo: shell command run before each push");
  cmd->add_option("--seed", opt->seed, "Seed of the synthetic model")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "Threads for the trainer simulation")->capture_default_str();
  cmd->add_option("--update-weight-transport", opt->transport,
                  "Service demo transport: disk, or nccl (trainer on GPU 0, receiver on GPU 1; skips without two GPUs)")
      ->capture_default_str();
  cmd->callback([opt, &exit_status] { exit_status = opt->offline ? run_offline_demo(*opt) : run_service_demo(*opt); });
}

}  // namespace deltasync::cli
