// soak_driver: the trainer side of the soak (bench/soak.sh). A small model whose tensors span BF16, F16, F32,
// F8_E4M3 and F8_E5M2 (shapes from 1 element to above 2^16, so both position widths occur), synced N times in a
// row through the Sender library to a running `deltasync serve --base <the same model>`.
//
//   soak_driver write-base --out base.safetensors [--seed S]
//   soak_driver run --url http://127.0.0.1:P --delta-dir D [--syncs N] [--seed S] [--server-pid PID] [--csv F]
//
// Each sync draws a density (0%, 100%, log-uniform 1e-5..1e-1, or uniform 0..1); about one sync in three also
// draws a new encoding (indices, deltas, deltas_zstd), wire format (native, slime) and bucket size (64 KiB: many
// files; 1 MiB; 512 MiB: one file per dtype), for which a fresh Sender is seeded with the current weights.
// It flips the bits of that fraction of every tensor's elements (random bit patterns: NaN payloads,
// infinities and subnormals included), pushes one sync and then compares the receiver's GET /checksums
// (version and the XXH3-128 of every tensor) with the driver's own digests. Any refused sync or any
// difference ends the run with exit status 1. After each sync it samples the receiver's VmRSS.
// At the end it prints syncs/min, p50/p99/max sync latency (begin() to finish(): diff, write, push, receiver
// read+decode+apply), and the receiver's RSS over time and VmHWM.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "codec/delta_format.h"
#include "codec/digest.h"
#include "codec/safetensors.h"
#include "http/push_client.h"
#include "io/event_loop.h"
#include "sync/sender.h"

namespace {

using namespace deltasync;
namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

struct soak_tensor {
  std::string name;
  dtype type;
  std::vector<uint64_t> shape;
  byte_buffer bytes;
  uint64_t numel() const {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// The model: per dtype a 320x256 matrix (81920 elements: 4-byte positions), a 48x96 matrix, a 1000-vector
// and a single element. Initial bytes are random (seeded), like the changes.
std::vector<soak_tensor> make_model(uint64_t seed) {
  constexpr dtype kTypes[] = {dtype::BF16, dtype::F16, dtype::F32, dtype::F8_E4M3, dtype::F8_E5M2};
  const std::vector<std::pair<std::string, std::vector<uint64_t>>> kShapes{
      {"big", {320, 256}}, {"mid", {48, 96}}, {"vec", {1000}}, {"one", {1}}};
  std::mt19937_64 rng(seed);
  std::vector<soak_tensor> model;
  for (dtype t : kTypes) {
    for (const auto& [suffix, shape] : kShapes) {
      soak_tensor x{"layers." + std::string(name(t)) + "." + suffix, t, shape, {}};
      x.bytes.resize(x.numel() * element_bytes(t));
      for (auto& b : x.bytes) b = static_cast<std::byte>(rng());
      model.push_back(std::move(x));
    }
  }
  return model;
}

// Changes about density x numel elements of t: each chosen element gets its bits XORed with a non-zero random
// pattern, so it differs bitwise. Returns how many changed.
uint64_t mutate(soak_tensor& t, double density, std::mt19937_64& rng) {
  if (density <= 0) return 0;
  const uint32_t eb = element_bytes(t.type);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  uint64_t changed = 0;
  for (uint64_t i = 0; i < t.numel(); ++i) {
    if (density < 1 && u(rng) >= density) continue;
    uint64_t flip = 0;
    while ((flip & ((eb == 8 ? 0 : (1ull << (eb * 8))) - 1)) == 0) flip = rng();
    for (uint32_t b = 0; b < eb; ++b) t.bytes[i * eb + b] ^= static_cast<std::byte>(flip >> (8 * b));
    ++changed;
  }
  return changed;
}

double draw_density(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double k = u(rng);
  if (k < 0.05) return 0.0;
  if (k < 0.10) return 1.0;
  if (k < 0.40) return std::pow(10.0, -5.0 + 4.0 * u(rng));  // 1e-5 .. 1e-1, the RL range
  return u(rng);
}

std::optional<uint64_t> read_status_kb(int pid, const char* key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.rfind(k, 0) == 0) return std::stoull(line.substr(k.size()));
  return std::nullopt;
}

// "" when the receiver holds exactly `model` at `version`, else what differs.
std::string verify(http::push_client& client, const std::string& url, const std::vector<soak_tensor>& model,
                   uint64_t version) {
  push_outcome got = client.get(url, "/checksums");
  if (!got.ok()) return "GET /checksums: " + std::to_string(got.http_status) + " " + got.transport_error + got.body;
  boost::system::error_code ec;
  json::value doc = json::parse(got.body, ec);
  if (ec || !doc.is_object() || !doc.as_object().contains("tensors")) return "GET /checksums: not the expected JSON";
  const auto& o = doc.as_object();
  if (!o.contains("version") || o.at("version").to_number<uint64_t>() != version)
    return "receiver at version " + (o.contains("version") ? json::serialize(o.at("version")) : "?") + ", expected " +
           std::to_string(version);
  const auto& tensors = o.at("tensors").as_object();
  if (tensors.size() != model.size()) return "receiver holds " + std::to_string(tensors.size()) + " tensors";
  for (const auto& t : model) {
    auto it = tensors.find(t.name);
    if (it == tensors.end()) return "receiver lacks " + t.name;
    const auto& e = it->value().as_object();
    if (!e.contains("xxh3_128") || e.at("xxh3_128").as_string() != to_hex(xxh3_128(t.bytes)))
      return "tensor " + t.name + " differs";
  }
  return "";
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

int write_base(const std::string& out, uint64_t seed) {
  const auto model = make_model(seed);
  std::vector<tensor_data> data;
  for (const auto& t : model) data.push_back({{t.name, t.type, t.shape, t.bytes.size()}, t.bytes});
  auto file = write_safetensors(data, {{"format", "pt"}});
  if (!file) {
    std::fprintf(stderr, "soak_driver: %s\n", file.err().describe().c_str());
    return 1;
  }
  std::ofstream f(out, std::ios::binary);
  f.write(reinterpret_cast<const char*>(file->data()), static_cast<std::streamsize>(file->size()));
  if (!f) {
    std::fprintf(stderr, "soak_driver: cannot write %s\n", out.c_str());
    return 1;
  }
  uint64_t bytes = 0;
  for (const auto& t : model) bytes += t.bytes.size();
  std::printf("soak_driver: wrote %s (%zu tensors, %" PRIu64 " bytes of weights)\n", out.c_str(), model.size(), bytes);
  return 0;
}

struct run_options {
  std::string url, delta_dir, csv;
  uint64_t syncs = 1000, seed = 1;
  int server_pid = 0;
};

struct sync_plan {
  encoding enc = encoding::deltas;
  wire_format format = wire_format::native;
  uint64_t bucket = 0;
  bool operator==(const sync_plan&) const = default;
};

int run_soak(const run_options& opt) {
  auto model = make_model(opt.seed);
  std::mt19937_64 rng(opt.seed * 0x9E3779B97F4A7C15ull + 17);
  io::event_loop loop;
  http::push_client client(loop, {});
  if (std::string d = verify(client, opt.url, model, 0); !d.empty()) {
    std::fprintf(stderr, "soak_driver: receiver does not hold the base model: %s\n", d.c_str());
    return 1;
  }
  std::FILE* csv = opt.csv.empty() ? nullptr : std::fopen(opt.csv.c_str(), "w");
  if (csv)
    std::fprintf(csv,
                 "sync,density,encoding,format,bucket,files,changed,wire_bytes,latency_ms,diff_ms,write_ms,push_ms,"
                 "receiver_ms,rss_kb\n");

  constexpr encoding kEncodings[] = {encoding::indices, encoding::deltas, encoding::deltas_zstd};
  constexpr uint64_t kBuckets[] = {64ull << 10, 1ull << 20, 512ull << 20};
  std::unique_ptr<sender> snd;
  std::optional<sync_plan> current;
  std::vector<double> latencies_ms, diff_ms, write_ms, push_ms, receiver_total_ms;
  std::vector<uint64_t> rss_kb;
  uint64_t changed_total = 0, wire_total = 0, dense_total = 0;
  const auto t0 = clock_type::now();
  for (uint64_t v = 1; v <= opt.syncs; ++v) {
    // A new plan (encoding, format, bucket) for about one sync in three, so a Sender also runs several syncs in
    // a row (its snapshot advancing after each) before it is replaced.
    sync_plan plan = current.value_or(sync_plan{});
    if (!current || rng() % 3 == 0)
      plan = {kEncodings[rng() % 3], rng() % 2 ? wire_format::slime : wire_format::native, kBuckets[rng() % 3]};
    if (!current || !(*current == plan)) {
      // A fresh Sender whose snapshot is what the receiver holds now (the model before this sync's changes).
      sender_options so;
      so.enc = plan.enc;
      so.format = plan.format;
      so.buffer_bytes = plan.bucket;
      so.delta_dir = opt.delta_dir;
      so.receivers = {opt.url};
      snd = std::make_unique<sender>(so, &client);
      snd->set_snapshot_version(v - 1);
      for (const auto& t : model) {
        if (auto s = snd->seed(t.name, {t.bytes.data(), t.type, t.shape, "cpu"}); !s) {
          std::fprintf(stderr, "soak_driver: seed %s: %s\n", t.name.c_str(), s.err().describe().c_str());
          return 1;
        }
      }
      current = plan;
    }
    const double density = draw_density(rng);
    uint64_t changed = 0;
    for (auto& t : model) changed += mutate(t, density, rng);

    const auto s0 = clock_type::now();
    status s = snd->begin(v);
    for (size_t i = 0; s && i < model.size(); ++i)
      s = snd->add(model[i].name, {model[i].bytes.data(), model[i].type, model[i].shape, "cpu"});
    result<sync_report> rep = s ? snd->finish() : result<sync_report>(s.err());
    const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - s0).count();
    if (!rep) {
      std::fprintf(stderr, "soak_driver: sync %" PRIu64 " (%s/%s, density %.6f) refused: %s\n", v,
                   std::string(encoding_name(plan.enc)).c_str(), plan.format == wire_format::slime ? "slime" : "native",
                   density, rep.err().describe().c_str());
      return 1;
    }
    if (rep->changed_elements != changed) {
      std::fprintf(stderr,
                   "soak_driver: sync %" PRIu64 ": sender reports %" PRIu64 " changed, driver changed %" PRIu64 "\n", v,
                   rep->changed_elements, changed);
      return 1;
    }
    if (std::string d = verify(client, opt.url, model, v); !d.empty()) {
      std::fprintf(stderr, "soak_driver: sync %" PRIu64 " (%s/%s, density %.6f): store differs from the trainer: %s\n",
                   v, std::string(encoding_name(plan.enc)).c_str(),
                   plan.format == wire_format::slime ? "slime" : "native", density, d.c_str());
      return 1;
    }
    latencies_ms.push_back(ms);
    diff_ms.push_back(rep->diff_encode_s * 1e3);
    write_ms.push_back(rep->write_s * 1e3);
    push_ms.push_back(rep->push_s * 1e3);
    changed_total += changed;
    wire_total += rep->wire_bytes;
    dense_total += rep->dense_bytes;
    double receiver_ms = 0;
    if (!rep->receivers.empty()) {
      boost::system::error_code ec;
      json::value doc = json::parse(rep->receivers.front().body, ec);
      if (!ec && doc.is_object() && doc.as_object().contains("timings_ms")) {
        const auto& tm = doc.as_object().at("timings_ms").as_object();
        if (tm.contains("total")) receiver_ms = tm.at("total").to_number<double>();
      }
    }
    receiver_total_ms.push_back(receiver_ms);
    const uint64_t rss = opt.server_pid ? read_status_kb(opt.server_pid, "VmRSS").value_or(0) : 0;
    rss_kb.push_back(rss);
    if (csv)
      std::fprintf(
          csv, "%" PRIu64 ",%.6f,%s,%s,%" PRIu64 ",%zu,%" PRIu64 ",%" PRIu64 ",%.3f,%.3f,%.3f,%.3f,%.3f,%" PRIu64 "\n",
          v, density, std::string(encoding_name(plan.enc)).c_str(),
          plan.format == wire_format::slime ? "slime" : "native", plan.bucket, rep->files.size(), changed,
          rep->wire_bytes, ms, rep->diff_encode_s * 1e3, rep->write_s * 1e3, rep->push_s * 1e3, receiver_ms, rss);
    if (v % 100 == 0 || v == opt.syncs)
      std::printf("soak: %" PRIu64 "/%" PRIu64 " syncs verified, p50 %.1f ms, receiver RSS %" PRIu64 " KiB\n", v,
                  opt.syncs, percentile(latencies_ms, 0.5), rss);
    std::fflush(stdout);
  }
  if (csv) std::fclose(csv);
  const double wall_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::printf("soak: %" PRIu64
              " syncs, every one byte-identical after apply (GET /checksums vs the trainer's XXH3-128)\n",
              opt.syncs);
  std::printf("soak: wall %.1f s, %.1f syncs/min (incl. verification), changed %" PRIu64
              " elements, wire %.1f MB for %.1f MB dense\n",
              wall_s, static_cast<double>(opt.syncs) * 60.0 / wall_s, changed_total,
              static_cast<double>(wire_total) / 1e6, static_cast<double>(dense_total) / 1e6);
  std::printf("soak: sync latency p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", percentile(latencies_ms, 0.5),
              percentile(latencies_ms, 0.99), percentile(latencies_ms, 1.0));
  std::printf(
      "soak: p50 of its parts: diff+encode %.1f ms, write %.1f ms, push %.1f ms (receiver's own total %.1f ms)\n",
      percentile(diff_ms, 0.5), percentile(write_ms, 0.5), percentile(push_ms, 0.5),
      percentile(receiver_total_ms, 0.5));
  if (opt.server_pid && !rss_kb.empty()) {
    // RSS over time: the median of each tenth of the run, then early (2nd tenth) vs late (last tenth).
    std::ostringstream deciles;
    std::vector<double> tenth_medians;
    for (int d = 0; d < 10; ++d) {
      const size_t b = rss_kb.size() * d / 10, e = std::max(b + 1, rss_kb.size() * (d + 1) / 10);
      std::vector<double> part;
      for (size_t i = b; i < std::min(e, rss_kb.size()); ++i) part.push_back(static_cast<double>(rss_kb[i]));
      tenth_medians.push_back(percentile(part, 0.5));
      deciles << (d ? " " : "") << static_cast<uint64_t>(tenth_medians.back());
    }
    const auto hwm = read_status_kb(opt.server_pid, "VmHWM").value_or(0);
    std::printf("soak: receiver VmRSS KiB, median per tenth of the run: %s\n", deciles.str().c_str());
    std::printf("soak: receiver VmRSS first %" PRIu64 " KiB, last %" PRIu64 " KiB, max %" PRIu64 " KiB; VmHWM %" PRIu64
                " KiB; growth 2nd->last tenth %+.0f KiB\n",
                rss_kb.front(), rss_kb.back(), *std::max_element(rss_kb.begin(), rss_kb.end()), hwm,
                tenth_medians.back() - tenth_medians[1]);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"deltasync soak driver (bench/soak.sh)"};
  app.require_subcommand(1);
  std::string out;
  uint64_t seed = 1;
  auto* wb = app.add_subcommand("write-base", "Write the soak model as a safetensors file (the receiver's --base)");
  wb->add_option("--out", out, "Output file")->required();
  wb->add_option("--seed", seed, "Model seed")->capture_default_str();
  run_options ro;
  auto* run = app.add_subcommand("run", "Run the syncs against a receiver serving the same model");
  run->add_option("--url", ro.url, "Receiver, http://host:port")->required();
  run->add_option("--delta-dir", ro.delta_dir, "The receiver's --delta-dir")->required();
  run->add_option("--syncs", ro.syncs, "Consecutive syncs")->capture_default_str();
  run->add_option("--seed", ro.seed, "Model seed (as write-base) and seed of the random draws")->capture_default_str();
  run->add_option("--server-pid", ro.server_pid, "Receiver pid, to sample its VmRSS / VmHWM");
  run->add_option("--csv", ro.csv, "Write one row per sync here");
  CLI11_PARSE(app, argc, argv);
  if (wb->parsed()) return write_base(out, seed);
  return run_soak(ro);
}
