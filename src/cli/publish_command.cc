// `deltasync publish --from OLD --to NEW --delta-dir DIR ...`: diffs two checkpoints through the Sender
// (seeded with OLD at --base-version, one sync of NEW at --version), writes the delta files, optionally runs
// the pre-push hook and pushes one /sync to every --push receiver. Exit status 0 only when every receiver
// acknowledged (or nothing was pushed); 1 on any failure (a receiver that did not acknowledge included,
// though the version is then published all the same: "published": true, and it catches up at the next
// push, docs/fleet.md); 2 for a refused flag combination.
#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "cli/commands.h"
#include "cli/file_util.h"
#include "codec/delta_format.h"
#include "http/push_client.h"
#include "io/event_loop.h"
#include "sync/checkpoint_loader.h"
#include "sync/sender.h"
#include "sync/sender_util.h"

namespace deltasync::cli {
namespace {

struct publish_options {
  std::string from, to, delta_dir;
  uint64_t version = 0;  // 0: base_version + 1
  uint64_t base_version = 0;
  std::string enc = "deltas";
  std::string format = "native";
  bool slime_plain = false;
  std::vector<std::string> push;
  std::string pull_base_url;
  std::string token_file;
  bool keep_files = false;
  uint64_t anchor_every = 0;
  bool anchor = false;
  std::string pre_push_hook;
  uint64_t buffer_bytes = 512ull << 20;
  std::string mode = "delta";
  std::string transport = "disk";
  uint32_t rank = 0;
  uint32_t push_timeout_ms = 0;  // sized to the sync (http::push_timeout_ms_for)
  bool json = false;
  bool colocate = false;
  nccl_sender_options nccl;  // --update-weight-transport nccl
};

using steady = std::chrono::steady_clock;

double seconds_since(steady::time_point t0) { return std::chrono::duration<double>(steady::now() - t0).count(); }

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// OLD and NEW must describe the same model: same tensor names, dtypes and shapes.
status check_same_layout(const loaded_tensors& old_t, const loaded_tensors& new_t) {
  std::unordered_map<std::string, const store_tensor*> old_by_name;
  for (const auto& [t, bytes] : old_t) old_by_name.emplace(t.name, &t);
  for (const auto& [t, bytes] : new_t) {
    auto it = old_by_name.find(t.name);
    if (it == old_by_name.end())
      return error(errc::invalid_argument, "tensor '" + t.name + "' is in --to but not in --from");
    const store_tensor& o = *it->second;
    if (o.type != t.type || o.shape != t.shape)
      return error(errc::invalid_argument, "tensor '" + t.name + "' is " + std::string(name(o.type)) + " " +
                                               shape_text(o.shape) + " in --from but " + std::string(name(t.type)) +
                                               " " + shape_text(t.shape) + " in --to");
  }
  if (old_t.size() != new_t.size()) {
    std::unordered_map<std::string, bool> in_new;
    for (const auto& [t, bytes] : new_t) in_new.emplace(t.name, true);
    for (const auto& [t, bytes] : old_t)
      if (!in_new.contains(t.name))
        return error(errc::invalid_argument, "tensor '" + t.name + "' is in --from but not in --to");
  }
  return {};
}

struct run_facts {
  double load_s = 0, total_s = 0;
  uint64_t total_elements = 0;
  std::string dir;
};

void print_table(const publish_options& opt, const run_facts& facts, const sync_report& r, const status& st) {
  std::printf("publish v%" PRIu64 " (base v%" PRIu64 ") into %s: format %s, encoding %s, mode %s\n", r.version,
              r.base_version, facts.dir.c_str(), opt.format.c_str(), opt.enc.c_str(), opt.mode.c_str());
  std::printf("  %-16s %zu\n", "files", r.files.size());
  const double density = facts.total_elements
                             ? 100.0 * static_cast<double>(r.changed_elements) / static_cast<double>(facts.total_elements)
                             : 0.0;
  std::printf("  %-16s %" PRIu64 " of %" PRIu64 " elements (%.3f%%)\n", "changed", r.changed_elements,
              facts.total_elements, density);
  std::printf("  %-16s %" PRIu64 " (dense %" PRIu64 ", %.2f%%)\n", "wire bytes", r.wire_bytes, r.dense_bytes,
              r.dense_bytes ? 100.0 * static_cast<double>(r.wire_bytes) / static_cast<double>(r.dense_bytes) : 0.0);
  std::printf("  %-16s load %.3f s, diff+encode %.3f s, write %.3f s, hook %.3f s, push %.3f s, total %.3f s\n",
              "timings", facts.load_s, r.diff_encode_s, r.write_s, r.hook_s, r.push_s, facts.total_s);
  if (r.anchor_version)
    std::printf("  %-16s %s/%s\n", "anchor", opt.delta_dir.c_str(), version_dir_name(r.anchor_version, true).c_str());
  else if (!r.anchor_error.empty())
    std::printf("  %-16s not written: %s\n", "anchor", r.anchor_error.c_str());
  if (!r.receivers.empty()) {
    std::printf("  %-40s %6s %9s  %s\n", "receiver", "status", "time s", "answer");
    for (const auto& o : r.receivers) {
      const std::string answer = o.http_status == 0 ? o.transport_error : o.body;
      std::printf("  %-40s %6u %9.3f  %s\n", o.url.c_str(), o.http_status, o.elapsed_s, answer.c_str());
    }
  }
  if (st.ok())
    std::printf("ok: %s\n", r.receivers.empty() ? "files written, nothing pushed" : "every receiver acknowledged");
  else
    std::printf("FAILED: %s\n", st.err().describe().c_str());
}

void print_json(const run_facts& facts, const sync_report& r, const status& st) {
  namespace json = boost::json;
  json::object o;
  o["ok"] = st.ok();
  if (!st.ok()) o["error"] = st.err().describe();
  o["version"] = r.version;
  o["base_version"] = r.base_version;
  o["dir"] = facts.dir;
  json::array files;
  for (const auto& f : r.files) files.emplace_back(f);
  o["files"] = std::move(files);
  o["changed_elements"] = r.changed_elements;
  o["total_elements"] = facts.total_elements;
  o["dense_bytes"] = r.dense_bytes;
  o["wire_bytes"] = r.wire_bytes;
  o["snapshot_advanced"] = r.snapshot_advanced;
  o["timings_s"] = {{"load", facts.load_s}, {"diff_encode", r.diff_encode_s}, {"write", r.write_s},
                    {"hook", r.hook_s},     {"push", r.push_s},               {"total", facts.total_s}};
  json::array receivers;
  for (const auto& rc : r.receivers) {
    json::object x;
    x["url"] = rc.url;
    x["status"] = rc.http_status;
    x["ok"] = rc.ok();
    x["elapsed_s"] = rc.elapsed_s;
    if (auto a = r.acked.find(rc.url); a != r.acked.end()) x["acked_version"] = a->second;
    if (rc.http_status == 0) {
      x["error"] = rc.transport_error;
    } else {
      // The receiver's answer is JSON; keep it structured when it parses, as text otherwise.
      boost::system::error_code ec;
      json::value body = json::parse(rc.body, ec);
      x["body"] = ec ? json::value(rc.body) : std::move(body);
    }
    receivers.push_back(std::move(x));
  }
  o["receivers"] = std::move(receivers);
  // Every receiver this delta dir knows (fleet.json), with the version it last acknowledged (docs/fleet.md).
  json::object acked;
  for (const auto& [url, v] : r.acked) acked[url] = v;
  o["acked"] = std::move(acked);
  o["published"] = r.snapshot_advanced;
  json::array pruned;
  for (uint64_t v : r.pruned) pruned.push_back(v);
  o["pruned"] = std::move(pruned);
  if (r.anchor_version) o["anchor"] = r.anchor_version;
  if (!r.anchor_error.empty()) o["anchor_error"] = r.anchor_error;
  std::printf("%s\n", json::serialize(o).c_str());
}

int fail(const std::string& what) {
  std::fprintf(stderr, "deltasync publish: %s\n", what.c_str());
  return 1;
}

int run_publish(const publish_options& opt, bool version_given, bool base_given) {
  if (opt.colocate && opt.mode == "delta") {
    std::fprintf(stderr,
                 "deltasync publish: --update-weight-mode delta with --colocate is refused: a colocated trainer "
                 "hands weights to its engines in GPU memory, where a delta snapshot only costs memory; use "
                 "--update-weight-mode full\n");
    return 2;
  }
  const auto t_start = steady::now();

  sender_options so;
  so.transport = opt.transport;
  so.mode = opt.mode == "full" ? update_mode::full : update_mode::delta;
  so.enc = *encoding_from_name(opt.enc);  // CLI::IsMember checked the name
  so.format = opt.format == "slime" ? wire_format::slime : wire_format::native;
  so.slime_digests = !opt.slime_plain;
  so.delta_dir = opt.delta_dir;
  so.receivers = opt.push;
  so.pull_base_url = opt.pull_base_url;
  so.buffer_bytes = opt.buffer_bytes;
  so.keep_files = opt.keep_files;
  so.anchor_every = opt.anchor ? 1 : opt.anchor_every;
  so.pre_push_hook = opt.pre_push_hook;
  so.rank = opt.rank;
  so.nccl = opt.nccl;
  if (const char* delay = std::getenv("DELTASYNC_TEST_FLUSH_DELAY_MS")) {
    so.test_flush_delay_ms = static_cast<uint32_t>(std::strtoul(delay, nullptr, 10));
    std::fprintf(stderr, "deltasync publish: test fault injection: each file write is followed by a %u ms pause "
                 "(DELTASYNC_TEST_FLUSH_DELAY_MS)\n", so.test_flush_delay_ms);
  }

  // The loop and the client exist only when pushing; the client is destroyed before the loop.
  std::unique_ptr<io::event_loop> loop;
  std::unique_ptr<http::push_client> client;
  if (!opt.push.empty()) {
    http::push_client_options po;
    po.timeout_ms = opt.push_timeout_ms;
    if (!opt.token_file.empty()) {
      auto token = read_token_file(opt.token_file);
      if (!token) return fail(token.err().describe());
      po.bearer_token = *token;
    }
    loop = std::make_unique<io::event_loop>();
    client = std::make_unique<http::push_client>(*loop, po);
  }

  run_facts facts;

  auto t0 = steady::now();
  auto old_t = load_checkpoint(opt.from);
  if (!old_t) return fail("--from " + opt.from + ": " + old_t.err().describe());
  auto new_t = load_checkpoint(opt.to);
  if (!new_t) return fail("--to " + opt.to + ": " + new_t.err().describe());
  facts.load_s = seconds_since(t0);
  if (auto st = check_same_layout(*old_t, *new_t); !st) return fail(st.err().describe());

  sender s(so, client.get());
  for (const auto& [t, bytes] : *old_t) {
    auto st = s.seed(t.name, tensor_view{bytes.data(), t.type, t.shape, "cpu"});
    if (!st) return fail("seed: " + st.err().describe());
  }
  // The sender holds its own copy of OLD now.
  old_t->clear();
  // Without --base-version, a restarted publish continues the delta dir's chain: the base is its newest
  // published version (0 when none), and --from is checked against that version's digests (nccl writes no
  // files: base 0).
  const bool from_dir = !base_given && so.transport != "nccl";
  auto base = s.resume(from_dir ? std::nullopt : std::optional<uint64_t>(opt.base_version));
  if (!base) return fail("--from " + opt.from + ": " + base.err().describe());
  const uint64_t version = version_given ? opt.version : *base + 1;
  if (version <= *base) {
    std::fprintf(stderr, "deltasync publish: --version %" PRIu64 " must be above the base version %" PRIu64 "%s\n",
                 version, *base, from_dir ? " (the delta dir's newest published version)" : "");
    return 2;
  }
  facts.dir = opt.delta_dir + "/" + version_dir_name(version);

  if (auto st = s.begin(version); !st) return fail(st.err().describe());
  for (const auto& [t, bytes] : *new_t) {
    facts.total_elements += t.numel;
    auto st = s.add(t.name, tensor_view{bytes.data(), t.type, t.shape, "cpu"});
    if (!st) {
      s.abort();
      return fail(st.err().describe());
    }
  }
  auto finished = s.finish();
  facts.total_s = seconds_since(t_start);
  const status st = finished.ok() ? status{} : status{finished.err()};
  if (opt.json)
    print_json(facts, s.last_report(), st);
  else
    print_table(opt, facts, s.last_report(), st);
  return st.ok() ? 0 : 1;
}

}  // namespace

void register_publish(CLI::App& app, int& exit_status) {
  auto opt = std::make_shared<publish_options>();
  auto* cmd = app.add_subcommand("publish", "Diff two checkpoints, write the delta files and push one sync");
  cmd->add_option("--from", opt->from, "The checkpoint receivers hold (.safetensors file or HF directory)")
      ->required();
  cmd->add_option("--to", opt->to, "The new checkpoint")->required();
  cmd->add_option("--delta-dir,--update-weight-delta-dir", opt->delta_dir,
                  "Directory under which weight_v{N:06d}/ is written")
      ->required();
  auto* version = cmd->add_option("--version", opt->version, "The sync's version (default: base version + 1)");
  auto* base = cmd->add_option("--base-version", opt->base_version,
                               "The version receivers hold (the --from checkpoint; default: the delta dir's newest "
                               "published version, 0 when none)");
  cmd->add_option("--encoding,--update-weight-encoding", opt->enc, "Position encoding")
      ->check(CLI::IsMember({"indices", "deltas", "deltas_zstd", "compact"}))
      ->capture_default_str();
  cmd->add_option("--format", opt->format, "Wire format")
      ->check(CLI::IsMember({"native", "slime"}))
      ->capture_default_str();
  cmd->add_flag("--slime-plain", opt->slime_plain,
                "With --format slime: write slime's metadata keys only, without the base version and tensor "
                "digests (deltasync_*) that deltasync receivers verify and slime ignores");
  cmd->add_option("--push", opt->push, "Receiver base URL (http://host:port); repeat for several");
  cmd->add_option("--token-file", opt->token_file, "File holding the receivers' bearer token");
  cmd->add_option("--pull-base-url", opt->pull_base_url,
                  "Receivers pull the files over HTTP from this file server (deltasync serve-files, nginx) "
                  "serving --delta-dir; each receiver must allow it (serve --pull-allow); docs/bench.md");
  cmd->add_option("--push-timeout-ms", opt->push_timeout_ms,
                  "Per-receiver limit for one /sync; 0: 15 s + 1 s per 50 MB of the sync's files")
      ->capture_default_str();
  cmd->add_option("--anchor-every", opt->anchor_every,
                  "Also write a full-model anchor (anchor_vN/) when the version is a multiple of this (0: never); "
                  "receivers below it catch up from it, and the chain below it is pruned")
      ->capture_default_str();
  cmd->add_flag("--anchor", opt->anchor, "Write a full-model anchor of this version");
  cmd->add_flag("--keep-files,--update-weight-delta-keep-files", opt->keep_files,
                "Keep the version directory after the push (it is always kept when nothing is pushed)");
  cmd->add_option("--pre-push-hook", opt->pre_push_hook,
                  "Shell command run before the push (env DELTASYNC_VERSION, DELTASYNC_DIR); non-zero aborts it");
  cmd->add_option("--update-weight-buffer-size", opt->buffer_bytes, "Bucket size (bytes; KiB/MiB/GiB suffixes)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  cmd->add_option("--update-weight-mode", opt->mode, "delta: changed elements only; full: every element")
      ->check(CLI::IsMember({"delta", "full"}))
      ->capture_default_str();
  cmd->add_option("--nccl-device", opt->nccl.device, "nccl transport: this sender's CUDA device (rank 0)")
      ->capture_default_str();
  cmd->add_option("--nccl-receiver-device", opt->nccl.receiver_devices,
                  "nccl transport: each --push receiver's CUDA device, in order (default: its serve --device)");
  cmd->add_option("--nccl-group", opt->nccl.group, "nccl transport: the group's name")->capture_default_str();
  cmd->add_option("--nccl-chunk-bytes", opt->nccl.chunk_bytes, "nccl transport: largest ncclBroadcast")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  cmd->add_option("--nccl-timeout-ms", opt->nccl.timeout_ms, "nccl transport: longest wait without progress")
      ->capture_default_str();
  cmd->add_option("--update-weight-transport", opt->transport,
                  "disk (files + one POST /sync) or nccl (each flush broadcast to receivers: docs/nccl.md)")
      ->check(CLI::IsMember({"disk", "nccl"}))
      ->capture_default_str();
  cmd->add_option("--rank", opt->rank, "Source rank in the file names")->capture_default_str();
  cmd->add_flag("--colocate", opt->colocate, "Trainer and rollout share GPUs (refused with delta mode)");
  cmd->add_flag("--json", opt->json, "Print one JSON document instead of a table");
  cmd->callback([opt, version, base, &exit_status] { exit_status = run_publish(*opt, version->count() > 0, base->count() > 0);
  });
}

}  // namespace deltasync::cli
