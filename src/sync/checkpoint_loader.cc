// Checkpoint loading: resolves the checkpoint form into a list of files, checks their sizes against the
// limits, reads them whole into page blocks through src/io (io::whole_file_reader, on a private engine),
// and, as each file arrives, validates its safetensors container and the shard index against it and
// records its tensors as views into the block.
#include "sync/checkpoint_loader.h"

#include <sys/stat.h>

#include <boost/json.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "base/check.h"
#include "codec/safetensors.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "io/whole_file_reader.h"

namespace deltasync {

// ---- loaded_tensors ----

void loaded_tensors::add(store_tensor desc, byte_buffer bytes) {
  DS_CHECK(bytes.size() == desc.nbytes, "loaded_tensors::add: buffer size differs from nbytes");
  buffers_.push_back(std::move(bytes));
  // A moved vector keeps its heap array, so this span survives later growth of buffers_.
  tensors_.push_back({std::move(desc), mutable_byte_span(buffers_.back().data(), buffers_.back().size())});
}

void loaded_tensors::add_block(page_block block) { blocks_.push_back(std::move(block)); }

void loaded_tensors::add_view(store_tensor desc, mutable_byte_span bytes) {
  DS_CHECK(bytes.size() == desc.nbytes, "loaded_tensors::add_view: span size differs from nbytes");
  DS_CHECK(!blocks_.empty(), "loaded_tensors::add_view before add_block");
  const page_block& b = blocks_.back();
  DS_CHECK(bytes.empty() || (bytes.data() >= b.data() && bytes.data() + bytes.size() <= b.data() + b.size()),
           "loaded_tensors::add_view: span outside the last block");
  tensors_.push_back({std::move(desc), bytes});
}

uint64_t loaded_tensors::held_bytes() const noexcept {
  uint64_t n = 0;
  for (const page_block& b : blocks_) n += b.size();
  for (const byte_buffer& b : buffers_) n += b.size();
  return n;
}

void loaded_tensors::clear() noexcept {
  tensors_.clear();
  tensors_.shrink_to_fit();
  blocks_.clear();
  buffers_.clear();
}

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSingleName = "model.safetensors";
constexpr std::string_view kIndexName = "model.safetensors.index.json";
// A file with at least this share of its pages cached is read from the page cache; any other with O_DIRECT.
constexpr double kBufferedWhenCached = 0.5;

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// A shard name from the index must stay inside the checkpoint directory.
bool safe_shard_name(std::string_view name) {
  if (name.empty()) return false;
  const fs::path p(name);
  if (p.is_absolute()) return false;
  for (const auto& part : p) {
    if (part == "..") return false;
  }
  return true;
}

// What to read, and for a sharded checkpoint what the index says each shard holds.
struct load_plan {
  struct file {
    std::string path;
    std::string shard;  // the name in the index; empty for a single file
    uint64_t bytes = 0;
  };
  std::vector<file> files;
  bool sharded = false;
  std::string where;                                      // "checkpoint index PATH"
  std::unordered_map<std::string, std::string> shard_of;  // tensor -> shard
  std::vector<std::pair<std::string, std::string>> listed;  // (tensor, shard), in index order
};

status plan_index(const std::string& index_file, const checkpoint_limits& limits, load_plan& plan) {
  plan.sharded = true;
  plan.where = "checkpoint index " + index_file;
  const std::string& where = plan.where;
  DS_ASSIGN_OR_RETURN(byte_buffer text, io::read_file_all(index_file, static_cast<size_t>(limits.max_index_bytes)));
  boost::system::error_code ec;
  boost::json::value doc = boost::json::parse(as_chars(text), ec);
  if (ec) return error(errc::invalid_argument, where + ": not valid JSON: " + ec.message());
  const boost::json::object* root = doc.if_object();
  if (root == nullptr) return error(errc::invalid_argument, where + ": not a JSON object");
  const boost::json::value* map_value = root->if_contains("weight_map");
  const boost::json::object* weight_map = map_value != nullptr ? map_value->if_object() : nullptr;
  if (weight_map == nullptr) return error(errc::invalid_argument, where + ": no \"weight_map\" object");
  if (weight_map->size() > limits.max_tensors) {
    return error(errc::limit_exceeded, where + ": " + std::to_string(weight_map->size()) + " tensors exceed the limit of " +
                                           std::to_string(limits.max_tensors));
  }

  // Shard -> its first tensor (for messages); std::map so shards load in name order.
  std::map<std::string, std::string> shards;
  for (const auto& [key, value] : *weight_map) {
    const boost::json::string* shard = value.if_string();
    if (shard == nullptr) {
      return error(errc::invalid_argument, where + ": tensor " + in_quotes(key) + " maps to a non-string shard");
    }
    if (!safe_shard_name(*shard)) {
      return error(errc::invalid_argument, where + ": tensor " + in_quotes(key) + " names shard " + in_quotes(*shard) +
                                               ", which leaves the checkpoint directory");
    }
    plan.shard_of.emplace(std::string(key), std::string(*shard));  // JSON objects here hold unique keys
    plan.listed.emplace_back(std::string(key), std::string(*shard));
    shards.emplace(std::string(*shard), std::string(key));
  }

  // Every shard must exist before gigabytes are read from the others.
  const fs::path dir = fs::path(index_file).parent_path();
  for (const auto& [shard, first_tensor] : shards) {
    const std::string file = (dir / shard).string();
    if (!is_file(file)) {
      return error(errc::not_found, where + ": shard " + file + " (holding tensor " + in_quotes(first_tensor) +
                                        ") does not exist");
    }
    plan.files.push_back({file, shard, 0});
  }
  return {};
}

// Sizes every file and checks the limits: nothing is allocated for a checkpoint that would pass them.
status size_files(load_plan& plan, const checkpoint_limits& limits) {
  uint64_t total = 0;
  for (load_plan::file& f : plan.files) {
    struct stat st;
    if (::stat(f.path.c_str(), &st) != 0) return io::io_errno_error(errno, "stat " + f.path);
    f.bytes = static_cast<uint64_t>(st.st_size);
    if (f.bytes > limits.max_file_bytes) {
      return error(errc::limit_exceeded, "checkpoint file " + f.path + ": " + std::to_string(f.bytes) +
                                             " bytes exceed the limit of " + std::to_string(limits.max_file_bytes) +
                                             " bytes per file");
    }
    if (f.bytes > limits.max_total_bytes - total) {
      return error(errc::limit_exceeded, "checkpoint file " + f.path + ": the checkpoint exceeds the limit of " +
                                             std::to_string(limits.max_total_bytes) + " bytes");
    }
    total += f.bytes;
  }
  return {};
}

// A private engine running one whole_file_reader; the calling thread waits for files one by one.
class file_feed {
 public:
  file_feed() = default;
  file_feed(const file_feed&) = delete;
  file_feed& operator=(const file_feed&) = delete;
  ~file_feed() {
    if (reader_ != nullptr) {
      loop_.post([this] { reader_->cancel(); });  // no-op once finished
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return finished_; });
      lk.unlock();
      loop_.run_sync([this] { reader_.reset(); });
    }
    backend_.reset();  // before the loop
  }

  status start(std::vector<io::whole_file_spec> specs) {
    io::io_backend_options opts;
    opts.quiet = true;
    DS_ASSIGN_OR_RETURN(backend_, io::make_io_backend(loop_, opts));
    ready_.assign(specs.size(), false);
    loop_.run_sync([&] {
      reader_ = std::make_unique<io::whole_file_reader>(*backend_, std::move(specs), io::whole_file_reader_options{});
      reader_->start(
          [this](size_t i) {
            std::lock_guard lk(mu_);
            ready_[i] = true;
            cv_.notify_all();
          },
          [this](status st) {
            std::lock_guard lk(mu_);
            finished_ = true;
            result_ = std::move(st);
            cv_.notify_all();
          });
    });
    return {};
  }

  // Blocks until file i is wholly read, or the reader failed.
  status wait(size_t i) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return ready_[i] || finished_; });
    if (ready_[i]) return {};
    DS_CHECK(!result_.ok(), "whole_file_reader finished without file");
    return result_;
  }

 private:
  io::event_loop loop_;
  std::unique_ptr<io::io_backend> backend_;
  std::unique_ptr<io::whole_file_reader> reader_;  // created, started and destroyed on the loop thread
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bool> ready_;  // guarded by mu_
  bool finished_ = false;    // guarded by mu_
  status result_;            // guarded by mu_
};

// Faults the blocks' pages in on a thread of its own, in read order and ahead of the reads, so the reads
// (O_DIRECT pinning, or the io_uring workers' copies) mostly find their pages mapped. On a VM that hands freed
// memory back to its host, each first touch costs a trip to the host: this runs those trips on a second core
// instead of inside the reads. Page contents are never changed, so racing with a read is harmless. Stops
// early and joins on destruction, before any block may be freed.
class prefaulter {
 public:
  explicit prefaulter(std::vector<mutable_byte_span> ranges)
      : thread_([this, ranges = std::move(ranges)] {
          constexpr size_t step = size_t{32} << 20;
          for (const mutable_byte_span r : ranges) {
            for (size_t off = 0; off < r.size() && !stop_.load(std::memory_order_relaxed); off += step) {
              if (!page_block::prefault(r.subspan(off, std::min(step, r.size() - off)))) return;
            }
          }
        }) {}
  ~prefaulter() {
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
  }
  prefaulter(const prefaulter&) = delete;
  prefaulter& operator=(const prefaulter&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts after stop_ exists
};

// Validates one file's container (and, when sharded, its tensors against the index) and records its tensors
// as views into its block.
status add_file(const load_plan& plan, const load_plan::file& f, page_block block, const checkpoint_limits& limits,
                std::unordered_map<std::string, std::string>& found_in, loaded_tensors& out) {
  auto view = parse_safetensors(byte_span(block.data(), block.size()));
  if (!view.ok()) {
    const error& e = view.err();
    return error(e.code, "checkpoint file " + f.path + ": " + e.message);
  }
  const std::string& where = plan.where;
  size_t count = out.size();
  for (const tensor_info& t : view->header.tensors) {
    if (count++ >= limits.max_tensors) {
      return error(errc::limit_exceeded, "checkpoint file " + f.path + ": more than " +
                                             std::to_string(limits.max_tensors) + " tensors");
    }
    if (plan.sharded) {
      auto seen = found_in.find(t.name);
      if (seen != found_in.end()) {
        return error(errc::invalid_argument, where + ": tensor " + in_quotes(t.name) + " appears in shard " +
                                                 seen->second + " and again in shard " + f.shard);
      }
      auto mapped = plan.shard_of.find(t.name);
      if (mapped == plan.shard_of.end()) {
        return error(errc::invalid_argument,
                     where + ": tensor " + in_quotes(t.name) + " in shard " + f.shard + " is not listed in the index");
      }
      if (mapped->second != f.shard) {
        return error(errc::invalid_argument, where + ": tensor " + in_quotes(t.name) + " appears in shard " + f.shard +
                                                 " but the index maps it to shard " + mapped->second);
      }
      found_in.emplace(t.name, f.shard);
    }
  }
  // Only a file that passed every check becomes part of the result.
  std::vector<std::pair<store_tensor, mutable_byte_span>> views;
  views.reserve(view->header.tensors.size());
  for (const tensor_info& t : view->header.tensors) {
    const byte_span data = view->data(t);
    // data lies inside the block; the writable span is the same bytes.
    views.emplace_back(store_tensor{t.name, t.type, t.shape, t.numel(), t.nbytes()},
                       mutable_byte_span(block.data() + (data.data() - block.data()), data.size()));
  }
  out.add_block(std::move(block));
  for (auto& [desc, bytes] : views) out.add_view(std::move(desc), bytes);
  return {};
}

result<loaded_tensors> read_plan(load_plan& plan, const checkpoint_limits& limits) {
  DS_TRY_STATUS(size_files(plan, limits));
  std::vector<page_block> blocks;
  std::vector<io::whole_file_spec> specs;
  for (const load_plan::file& f : plan.files) {
    DS_ASSIGN_OR_RETURN(page_block b, page_block::allocate(static_cast<size_t>(f.bytes), "checkpoint file " + f.path));
    const bool cached = io::page_cache_share(f.path) >= kBufferedWhenCached;
    specs.push_back({f.path, f.bytes, b.capacity_span(), !cached});
    blocks.push_back(std::move(b));
  }

  loaded_tensors out;
  std::unordered_map<std::string, std::string> found_in;  // tensor -> the shard it was read from
  {
    std::vector<mutable_byte_span> ranges;
    for (const page_block& b : blocks) ranges.push_back(b.capacity_span());
    prefaulter ahead(std::move(ranges));  // joined before `out` or `blocks` could free a block
    file_feed feed;
    DS_TRY_STATUS(feed.start(std::move(specs)));
    for (size_t i = 0; i < plan.files.size(); ++i) {
      DS_TRY_STATUS(feed.wait(i));
      DS_TRY_STATUS(add_file(plan, plan.files[i], std::move(blocks[i]), limits, found_in, out));
    }
  }
  if (plan.sharded) {
    for (const auto& [tensor, shard] : plan.listed) {
      if (found_in.find(tensor) == found_in.end()) {
        return error(errc::invalid_argument, plan.where + ": tensor " + in_quotes(tensor) + " is listed for shard " +
                                                 shard + " but missing from it");
      }
    }
  }
  return out;
}

}  // namespace

result<loaded_tensors> load_checkpoint(const std::string& path, const checkpoint_limits& limits) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) return error(errc::not_found, "checkpoint " + path + ": no such file or directory");
  load_plan plan;
  if (fs::is_directory(st)) {
    const fs::path dir(path);
    if (is_file(dir / kSingleName)) {
      plan.files.push_back({(dir / kSingleName).string(), "", 0});
    } else if (is_file(dir / kIndexName)) {
      DS_TRY_STATUS(plan_index((dir / kIndexName).string(), limits, plan));
    } else {
      return error(errc::not_found, "checkpoint directory " + path + " holds neither " + std::string(kSingleName) +
                                        " nor " + std::string(kIndexName));
    }
  } else if (ends_with(path, ".index.json")) {
    DS_TRY_STATUS(plan_index(path, limits, plan));
  } else {
    plan.files.push_back({path, "", 0});
  }
  return read_plan(plan, limits);
}

}  // namespace deltasync
