// `deltasync inspect FILE|DIR [--json]`: validates delta files and reports, per file, what it carries.
// A plain safetensors checkpoint is summarised too. Exit status 1 when any file is invalid.
#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <cinttypes>
#include <cstdio>
#include <memory>

#include "base/text_escape.h"
#include "cli/commands.h"
#include "cli/file_util.h"
#include "codec/delta_format.h"
#include "codec/safetensors.h"
#include "codec/zstd_frame.h"
#include "io/sync_io.h"

namespace deltasync::cli {
namespace {

struct inspect_options {
  std::string path;
  bool json = false;
  uint64_t max_file_bytes = 16ull << 30;
};

struct file_report {
  std::string path;
  bool valid = false;
  std::string reason;
  std::string kind;  // "delta" | "checkpoint"
  uint64_t file_bytes = 0;
  bool zstd = false;
  std::string enc;
  uint64_t version = 0;
  uint64_t params = 0, changed = 0, tensors = 0;
  std::string values_dtype;
  bool checksum_ok = false;
  std::string checksum;
};

// Full validation of one delta file: container, manifest, every param's positions (bounds and order),
// and the checksum, reported separately so a mismatch still shows the rest.
file_report inspect_file(const std::string& path, uint64_t max_bytes) {
  file_report r;
  r.path = path;
  auto bytes = io::read_file_all(path, max_bytes);
  if (!bytes) {
    r.reason = bytes.err().describe();
    return r;
  }
  r.file_bytes = bytes->size();
  r.zstd = is_zstd_frame(*bytes);
  if (!r.zstd) {
    auto st = parse_safetensors(*bytes);
    if (!st) {
      r.reason = st.err().describe();
      return r;
    }
    if (!st->header.find("__positions__") && !st->header.find("__compact__")) {
      r.kind = "checkpoint";
      r.tensors = st->header.tensors.size();
      r.valid = true;
      return r;
    }
  }
  r.kind = "delta";
  delta_read_limits limits;
  limits.verify_checksum = false;
  limits.max_decompressed_bytes = max_bytes;
  auto f = parse_delta_file(*bytes, limits);
  if (!f) {
    r.reason = f.err().describe();
    return r;
  }
  r.enc = std::string(encoding_name(f->manifest.enc));
  r.version = f->manifest.current_version;
  r.params = f->manifest.params.size();
  r.values_dtype = f->manifest.enc == encoding::compact ? std::string("-") : std::string(name(f->values_type));  // compact: differences in each param's dtype
  checksum128 got = delta_checksum(f->positions, f->values_type, f->values);
  r.checksum = checksum_to_decimal(f->manifest.checksum);
  r.checksum_ok = got == f->manifest.checksum;
  if (!r.checksum_ok)
    r.reason = "checksum mismatch: metadata says " + r.checksum + ", payload hashes to " + checksum_to_decimal(got);
  std::vector<uint32_t> scratch;
  for (const auto& p : f->manifest.params) {
    r.changed += p.changed();
    auto s = decode_positions(f->manifest.enc, p.pos_width,
                              f->positions.subspan(p.pos_start, p.pos_end - p.pos_start), p.numel(), scratch);
    if (!s) {
      r.reason = "param '" + p.name + "': " + s.err().describe();
      return r;
    }
  }
  if (!r.checksum_ok) return r;
  r.valid = true;
  return r;
}

boost::json::object to_json(const file_report& r) {
  boost::json::object o;
  o["path"] = r.path;
  o["valid"] = r.valid;
  if (!r.reason.empty()) o["error"] = r.reason;
  o["file_bytes"] = r.file_bytes;
  if (r.kind == "checkpoint") {
    o["kind"] = "checkpoint";
    o["tensors"] = r.tensors;
  } else if (r.kind == "delta") {
    o["kind"] = "delta";
    o["zstd_frame"] = r.zstd;
    o["encoding"] = r.enc;
    o["version"] = r.version;
    o["params"] = r.params;
    o["changed_elements"] = r.changed;
    o["values_dtype"] = r.values_dtype;
    o["bytes_per_changed_element"] = r.changed ? static_cast<double>(r.file_bytes) / static_cast<double>(r.changed) : 0.0;
    o["checksum"] = r.checksum;
    o["checksum_ok"] = r.checksum_ok;
  }
  return o;
}

int run_inspect(const inspect_options& opt) {
  auto files = list_files(opt.path, ".safetensors");
  if (!files) {
    std::fprintf(stderr, "deltasync inspect: %s\n", files.err().describe().c_str());
    return 1;
  }
  if (files->empty()) {
    std::fprintf(stderr, "deltasync inspect: no .safetensors files under %s\n", opt.path.c_str());
    return 1;
  }
  std::vector<file_report> reports;
  for (const auto& f : *files) reports.push_back(inspect_file(f, opt.max_file_bytes));
  size_t invalid = 0;
  for (const auto& r : reports) invalid += r.valid ? 0 : 1;

  if (opt.json) {
    boost::json::array arr;
    for (const auto& r : reports) arr.push_back(to_json(r));
    boost::json::object top;
    top["files"] = std::move(arr);
    top["invalid"] = invalid;
    std::printf("%s\n", boost::json::serialize(top).c_str());
  } else {
    std::printf("%-60s %-12s %8s %7s %12s %12s %8s %s\n", "file", "encoding", "version", "params", "changed",
                "file bytes", "B/chg", "checksum");
    for (const auto& r : reports) {
      std::string shown = r.path.size() > 60 ? "..." + r.path.substr(r.path.size() - 57) : r.path;
      if (r.kind == "checkpoint") {
        std::printf("%-60s %-12s %8s %7" PRIu64 " %12s %12" PRIu64 " %8s %s\n", shown.c_str(), "checkpoint", "-",
                    r.tensors, "-", r.file_bytes, "-", "-");
      } else if (!r.enc.empty()) {
        double bpc = r.changed ? static_cast<double>(r.file_bytes) / static_cast<double>(r.changed) : 0.0;
        std::printf("%-60s %-12s %8" PRIu64 " %7" PRIu64 " %12" PRIu64 " %12" PRIu64 " %8.2f %s\n", shown.c_str(),
                    r.enc.c_str(), r.version, r.params, r.changed, r.file_bytes, bpc,
                    r.checksum_ok ? "ok" : "MISMATCH");
      }
      if (!r.valid) std::printf("  INVALID %s: %s\n", escape_control(r.path).c_str(), escape_control(r.reason).c_str());
    }
    std::printf("%zu file(s), %zu invalid\n", reports.size(), invalid);
  }
  return invalid == 0 ? 0 : 1;
}

}  // namespace

void register_inspect(CLI::App& app, int& exit_status) {
  auto opt = std::make_shared<inspect_options>();
  auto* cmd = app.add_subcommand("inspect", "Validate delta files (or a directory of them) and report their contents");
  cmd->add_option("path", opt->path, "A .safetensors file or a directory searched recursively")->required();
  cmd->add_flag("--json", opt->json, "Print one JSON document instead of a table");
  cmd->add_option("--max-file-bytes", opt->max_file_bytes, "Refuse files (or decompressed payloads) larger than this")
      ->capture_default_str();
  cmd->callback([opt, &exit_status] { exit_status = run_inspect(*opt); });
}

}  // namespace deltasync::cli
