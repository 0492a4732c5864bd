// `deltasync demo --offline`: the codec end to end on a built-in synthetic model, no service. A simulated RL trainer (fp32
// master weights, AdamW-sized steps, bf16 view) takes a few steps; after each, every encoding diffs the
// bf16 view against the last synced snapshot, encodes slime #1806 files bucket by bucket, writes them,
// reads them back, applies them to its own receiver copy and verifies it bit for bit against the trainer.
#include <CLI/CLI.hpp>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <unordered_map>

#include "base/clock.h"
#include "cli/demo.h"
#include "cli/file_util.h"
#include "codec/compact.h"
#include "codec/delta_format.h"
#include "codec/digest.h"
#include "codec/diff.h"
#include "codec/safetensors.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "sync/synthetic_model.h"

namespace deltasync::cli {
namespace {

using store = std::vector<byte_buffer>;  // one bf16 buffer per tensor, layout order

// One event loop, I/O backend and pinned buffer pool for every file the demo writes and reads.
struct io_engine {
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  ~io_engine() {
    pool.reset();
    backend.reset();
  }
  status write(const std::string& path, byte_span data) { return io::write_file_atomic(*backend, *pool, path, data); }
  result<byte_buffer> read(const std::string& path) { return io::read_file_all(*backend, *pool, path, 16ull << 30); }
};

result<std::unique_ptr<io_engine>> make_io_engine() {
  auto e = std::make_unique<io_engine>();
  DS_ASSIGN_OR_RETURN(e->backend, io::make_io_backend(e->loop, io::io_backend_options{}));
  io::buffer_pool_options popts;
  popts.max_total_bytes = 64ull << 20;
  DS_ASSIGN_OR_RETURN(e->pool, io::buffer_pool::create(e->loop, e->backend.get(), popts));
  return e;
}

// Copies the trainer's bf16 view into `s`, reusing its buffers (no page faults after the first sync).
void copy_view(const rl_trainer_sim& sim, store& s) {
  s.resize(sim.tensor_count());
  for (size_t i = 0; i < s.size(); ++i) s[i].assign(sim.bf16(i).begin(), sim.bf16(i).end());
}

status save_checkpoint(io_engine& io, const std::string& path, const model_layout& layout, const store& s) {
  std::vector<tensor_data> t;
  for (size_t i = 0; i < s.size(); ++i)
    t.push_back({{layout.tensors[i].name, dtype::BF16, layout.tensors[i].shape, s[i].size()}, s[i]});
  DS_ASSIGN_OR_RETURN(byte_buffer bytes, write_safetensors(t, {{"format", "pt"}}));
  return io.write(path, bytes);
}

struct sync_row {
  int step;
  std::string enc;
  uint64_t changed = 0, dense_bytes = 0, wire_bytes = 0, files = 0;
  double position_entropy_bits = 0, value_entropy_bits = 0;  // compact rows: the information in the change set
  double encode_s = 0, write_s = 0, read_s = 0, apply_s = 0;
  bool verified = false;
};

std::string version_dir(const std::string& root, const std::string& enc, uint64_t version) {
  char name[32];
  std::snprintf(name, sizeof name, "weight_v%06" PRIu64, version);
  return root + "/" + enc + "/" + name;
}

// Sender side for one encoding: diff every tensor against the snapshot, bucket, write files.
result<sync_row> send(io_engine& io, const rl_trainer_sim& sim, const store& snapshot, encoding enc, uint64_t version,
                      const std::string& root, const demo_options& opt) {
  sync_row row;
  row.enc = std::string(encoding_name(enc));
  std::string dir = version_dir(root, row.enc, version);
  std::filesystem::create_directories(dir);
  delta_bucket_builder bucket(enc);
  std::vector<uint32_t> positions;
  byte_buffer values, old_values, diffs;
  uint64_t flush = 0;
  // compact is a native-only encoding (its values are differences against the base version): its files carry
  // base_version and the new tensors' digests (the map may name more tensors than a bucket holds).
  const bool compact = enc == encoding::compact;
  native_fields native;
  native.base_version = version - 1;
  auto flush_bucket = [&]() -> status {
    if (bucket.empty()) return {};
    stopwatch enc_sw;
    DS_ASSIGN_OR_RETURN(byte_buffer file, bucket.finish(version, 8, compact ? &native : nullptr));
    row.encode_s += enc_sw.elapsed_s();
    char name[48];
    std::snprintf(name, sizeof name, "/rank0000_flush%06" PRIu64 ".safetensors", flush++);
    stopwatch w;
    DS_TRY_STATUS(io.write(dir + name, file));
    row.write_s += w.elapsed_s();
    row.wire_bytes += file.size();
    ++row.files;
    return {};
  };
  for (size_t i = 0; i < sim.tensor_count(); ++i) {
    const auto& t = sim.layout().tensors[i];
    stopwatch sw;
    positions.clear();
    values.clear();
    row.changed += diff_tensor(snapshot[i], sim.bf16(i), 2, positions, values);
    row.dense_bytes += snapshot[i].size();
    if (compact && !positions.empty()) {
      old_values.resize(positions.size() * 2);
      for (size_t k = 0; k < positions.size(); ++k)
        std::memcpy(old_values.data() + 2 * k, snapshot[i].data() + 2 * uint64_t{positions[k]}, 2);
    }
    const param_delta change{t.name, t.type, t.shape, positions, values};
    auto add = [&] { compact ? bucket.add_compact(change, old_values) : bucket.add(change); };
    bool fits = positions.empty() || bucket.can_add(t.type);
    if (fits && !positions.empty()) add();
    row.encode_s += sw.elapsed_s();
    if (compact && !positions.empty()) {
      native.tensor_digests[t.name] = xxh3_128(sim.bf16(i));  // the receiver verifies these; not encode time
      // The information content, for the report: positions (log2 C(numel, n)) and the order-0 entropy of the
      // raw-bit differences against the base.
      row.position_entropy_bits += compact::position_entropy_bits(snapshot[i].size() / 2, positions.size());
      diffs.resize(values.size());
      for (size_t k = 0; k < positions.size(); ++k)
        store_le<uint16_t>(diffs.data() + 2 * k, static_cast<uint16_t>(load_le<uint16_t>(values.data() + 2 * k) -
                                                                      load_le<uint16_t>(old_values.data() + 2 * k)));
      row.value_entropy_bits += compact::value_entropy_bits(diffs, 2);
    }
    if (!fits || bucket.payload_bytes() >= opt.bucket_bytes) DS_TRY_STATUS(flush_bucket());
    if (!fits) add();
  }
  DS_TRY_STATUS(flush_bucket());
  return row;
}

// Receiver side for one encoding: read every file of the version, validate, apply to `recv`.
status receive(io_engine& io, const std::string& dir, const std::unordered_map<std::string, size_t>& index, store& recv,
               sync_row& row) {
  DS_ASSIGN_OR_RETURN(auto files, list_files(dir, ".safetensors"));
  for (const auto& path : files) {
    stopwatch r;
    DS_ASSIGN_OR_RETURN(byte_buffer bytes, io.read(path));
    row.read_s += r.elapsed_s();
    stopwatch a;
    DS_ASSIGN_OR_RETURN(delta_file f, parse_delta_file(bytes));
    for (const auto& p : f.manifest.params) {
      auto it = index.find(p.name);
      if (it == index.end()) return error(errc::delta_unknown_tensor, path + ": unknown tensor '" + p.name + "'");
      DS_TRY_STATUS(apply_param(f, p, recv[it->second]));
    }
    row.apply_s += a.elapsed_s();
  }
  return {};
}

double gbps(uint64_t bytes, double s) { return s > 0 ? static_cast<double>(bytes) / s / 1e9 : 0.0; }

}  // namespace

int run_offline_demo(const demo_options& opt) {
  auto layout = synthetic_model(opt.model);
  if (!layout) {
    std::fprintf(stderr, "deltasync demo: %s\n", layout.err().describe().c_str());
    return 2;
  }
  std::vector<encoding> encs;
  for (const auto& e : opt.encodings) {
    auto parsed = encoding_from_name(e);
    if (!parsed) {
      std::fprintf(stderr, "deltasync demo: unknown encoding '%s' (indices, deltas, deltas_zstd, compact)\n", e.c_str());
      return 2;
    }
    encs.push_back(*parsed);
  }
  std::string root = !opt.keep.empty() ? opt.keep : opt.dir;
  bool temp_root = root.empty();
  if (temp_root) root = (std::filesystem::temp_directory_path() / ("deltasync-demo-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(root);
  auto io = make_io_engine();
  if (!io) {
    std::fprintf(stderr, "deltasync demo: %s\n", io.err().describe().c_str());
    return 1;
  }

  std::printf("deltasync demo: model %s (%zu tensors, %.1fM bf16 parameters, %.2f GB), lr %.1e, %d steps\n",
              layout->name.c_str(), layout->tensors.size(), static_cast<double>(layout->parameters()) / 1e6,
              static_cast<double>(layout->parameters()) * 2 / 1e9, opt.lr, opt.steps);
  std::printf("files under %s\n", root.c_str());
  std::fflush(stdout);
  stopwatch init;
  rl_trainer_sim sim(*layout, opt.seed, opt.threads);
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < layout->tensors.size(); ++i) index[layout->tensors[i].name] = i;
  store snapshot;
  copy_view(sim, snapshot);
  std::vector<store> receivers(encs.size(), snapshot);
  if (!opt.keep.empty()) {
    if (auto s = save_checkpoint(**io, root + "/base.safetensors", *layout, snapshot); !s) {
      std::fprintf(stderr, "deltasync demo: %s\n", s.err().describe().c_str());
      return 1;
    }
  }
  std::printf("initialised trainer and %zu receivers in %.1f s\n", encs.size(), init.elapsed_s());

  std::vector<sync_row> rows;
  bool all_ok = true;
  for (int step = 1; step <= opt.steps; ++step) {
    stopwatch st;
    sim.step(opt.lr);
    std::printf("[step %d/%d] trainer step %.2f s; syncing", step, opt.steps, st.elapsed_s());
    std::fflush(stdout);
    for (size_t e = 0; e < encs.size(); ++e) {
      auto row = send(**io, sim, snapshot, encs[e], static_cast<uint64_t>(step), root, opt);
      if (!row) {
        std::fprintf(stderr, "\ndeltasync demo: send failed: %s\n", row.err().describe().c_str());
        return 1;
      }
      row->step = step;
      auto s = receive(**io, version_dir(root, row->enc, static_cast<uint64_t>(step)), index, receivers[e], *row);
      if (!s) {
        std::fprintf(stderr, "\ndeltasync demo: receive failed: %s\n", s.err().describe().c_str());
        return 1;
      }
      row->verified = true;
      for (size_t i = 0; i < receivers[e].size(); ++i) {
        auto now = sim.bf16(i);
        if (receivers[e][i].size() != now.size() || std::memcmp(receivers[e][i].data(), now.data(), now.size()) != 0)
          row->verified = false;
      }
      all_ok = all_ok && row->verified;
      rows.push_back(*row);
      std::printf(" %s%s", row->enc.c_str(), row->verified ? "" : "(MISMATCH)");
      std::fflush(stdout);
    }
    std::printf("\n");
    // Every receiver acknowledged: only now does the sender's snapshot advance.
    if (all_ok) copy_view(sim, snapshot);
  }
  if (!opt.keep.empty()) {
    if (auto s = save_checkpoint(**io, root + "/new.safetensors", *layout, snapshot); !s) {
      std::fprintf(stderr, "deltasync demo: %s\n", s.err().describe().c_str());
      return 1;
    }
  }

  std::printf("\n%-4s %-12s %8s %12s %6s %12s %7s %10s %8s %8s %10s %s\n", "step", "encoding", "density",
              "changed", "files", "wire bytes", "B/chg", "enc GB/s", "write s", "read s", "apply GB/s", "verified");
  std::printf("%-4s %-12s %8s %12s %6s %12s %7s %10s %8s %8s %10s %s\n", "", "", "", "", "", "", "", "(dense)", "",
              "", "(wire)", "");
  for (const auto& r : rows) {
    double density = r.dense_bytes ? static_cast<double>(r.changed) * 2 / static_cast<double>(r.dense_bytes) : 0;
    double bpc = r.changed ? static_cast<double>(r.wire_bytes) / static_cast<double>(r.changed) : 0;
    std::printf("%-4d %-12s %7.3f%% %12" PRIu64 " %6" PRIu64 " %12" PRIu64 " %7.2f %10.2f %8.3f %8.3f %10.2f %s\n",
                r.step, r.enc.c_str(), density * 100, r.changed, r.files, r.wire_bytes, bpc,
                gbps(r.dense_bytes, r.encode_s), r.write_s, r.read_s, gbps(r.wire_bytes, r.apply_s),
                r.verified ? "bit-exact" : "MISMATCH");
  }
  for (const auto& r : rows) {
    if (r.enc != "compact" || r.changed == 0) continue;
    const double n = static_cast<double>(r.changed);
    std::printf("step %d: empirical entropy %.3f B/changed (positions %.3f, values %.3f); compact %.3f B/changed "
                "(%.3fx the entropy)\n",
                r.step, (r.position_entropy_bits + r.value_entropy_bits) / 8 / n, r.position_entropy_bits / 8 / n,
                r.value_entropy_bits / 8 / n, static_cast<double>(r.wire_bytes) / n,
                static_cast<double>(r.wire_bytes) * 8 / (r.position_entropy_bits + r.value_entropy_bits));
  }
  if (temp_root) std::filesystem::remove_all(root);
  std::printf("\n%s\n", all_ok ? "demo: every receiver is bit-identical to the trainer after every step"
                                : "demo: FAILED: a receiver differs from the trainer");
  return all_ok ? 0 : 1;
}

}  // namespace deltasync::cli
