// Checkpoint loading: resolves the checkpoint form, reads each file through src/io, validates the
// safetensors containers and the shard index against each other, and copies tensors out.
#include "sync/checkpoint_loader.h"

#include <boost/json.hpp>
#include <filesystem>
#include <map>
#include <string_view>
#include <system_error>
#include <unordered_map>

#include "codec/safetensors.h"
#include "io/sync_io.h"

namespace deltasync {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSingleName = "model.safetensors";
constexpr std::string_view kIndexName = "model.safetensors.index.json";

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// Tracks totals across the files of one load, so a checkpoint of many small files is bounded too.
struct load_budget {
  const checkpoint_limits& limits;
  uint64_t bytes = 0;
  size_t tensors = 0;
};

// Reads and validates one safetensors file; `on_tensor` sees each tensor in data-offset order and may refuse
// it (an index cross-check) before its bytes are copied.
template <typename OnTensor>
status load_file(const std::string& file, load_budget& budget, loaded_tensors& out, OnTensor&& on_tensor) {
  DS_ASSIGN_OR_RETURN(byte_buffer bytes, io::read_file_all(file, static_cast<size_t>(budget.limits.max_file_bytes)));
  if (bytes.size() > budget.limits.max_total_bytes - budget.bytes) {
    return error(errc::limit_exceeded, "checkpoint file " + file + ": the checkpoint exceeds the limit of " +
                                           std::to_string(budget.limits.max_total_bytes) + " bytes");
  }
  budget.bytes += bytes.size();
  auto view = parse_safetensors(bytes);
  if (!view.ok()) {
    const error& e = view.err();
    return error(e.code, "checkpoint file " + file + ": " + e.message);
  }
  for (const tensor_info& t : view->header.tensors) {
    if (budget.tensors >= budget.limits.max_tensors) {
      return error(errc::limit_exceeded, "checkpoint file " + file + ": more than " +
                                             std::to_string(budget.limits.max_tensors) + " tensors");
    }
    DS_TRY_STATUS(on_tensor(t));
    ++budget.tensors;
    const byte_span data = view->data(t);
    out.emplace_back(store_tensor{t.name, t.type, t.shape, t.numel(), t.nbytes()},
                     byte_buffer(data.begin(), data.end()));
  }
  return {};
}

status load_single(const std::string& file, load_budget& budget, loaded_tensors& out) {
  return load_file(file, budget, out, [](const tensor_info&) -> status { return {}; });
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

status load_index(const std::string& index_file, load_budget& budget, loaded_tensors& out) {
  const std::string where = "checkpoint index " + index_file;
  DS_ASSIGN_OR_RETURN(byte_buffer text, io::read_file_all(index_file, static_cast<size_t>(budget.limits.max_index_bytes)));
  boost::system::error_code ec;
  boost::json::value doc = boost::json::parse(as_chars(text), ec);
  if (ec) return error(errc::invalid_argument, where + ": not valid JSON: " + ec.message());
  const boost::json::object* root = doc.if_object();
  if (root == nullptr) return error(errc::invalid_argument, where + ": not a JSON object");
  const boost::json::value* map_value = root->if_contains("weight_map");
  const boost::json::object* weight_map = map_value != nullptr ? map_value->if_object() : nullptr;
  if (weight_map == nullptr) return error(errc::invalid_argument, where + ": no \"weight_map\" object");
  if (weight_map->size() > budget.limits.max_tensors) {
    return error(errc::limit_exceeded, where + ": " + std::to_string(weight_map->size()) + " tensors exceed the limit of " +
                                           std::to_string(budget.limits.max_tensors));
  }

  // Tensor -> shard, and shard -> its first tensor (for messages); std::map so shards load in name order.
  std::unordered_map<std::string, std::string> shard_of;
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
    shard_of.emplace(std::string(key), std::string(*shard));  // JSON objects here hold unique keys
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
  }

  std::unordered_map<std::string, std::string> found_in;  // tensor -> the shard it was read from
  for (const auto& [shard, first_tensor] : shards) {
    const std::string file = (dir / shard).string();
    DS_TRY_STATUS(load_file(file, budget, out, [&](const tensor_info& t) -> status {
      auto seen = found_in.find(t.name);
      if (seen != found_in.end()) {
        return error(errc::invalid_argument, where + ": tensor " + in_quotes(t.name) + " appears in shard " +
                                                 seen->second + " and again in shard " + shard);
      }
      auto mapped = shard_of.find(t.name);
      if (mapped == shard_of.end()) {
        return error(errc::invalid_argument,
                     where + ": tensor " + in_quotes(t.name) + " in shard " + shard + " is not listed in the index");
      }
      if (mapped->second != shard) {
        return error(errc::invalid_argument, where + ": tensor " + in_quotes(t.name) + " appears in shard " + shard +
                                                 " but the index maps it to shard " + mapped->second);
      }
      found_in.emplace(t.name, shard);
      return {};
    }));
  }
  for (const auto& [key, value] : *weight_map) {
    if (found_in.find(std::string(key)) == found_in.end()) {
      return error(errc::invalid_argument, where + ": tensor " + in_quotes(key) + " is listed for shard " +
                                               std::string(value.get_string()) + " but missing from it");
    }
  }
  return {};
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

result<loaded_tensors> load_checkpoint(const std::string& path, const checkpoint_limits& limits) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) return error(errc::not_found, "checkpoint " + path + ": no such file or directory");
  loaded_tensors out;
  load_budget budget{limits};
  if (fs::is_directory(st)) {
    const fs::path dir(path);
    if (is_file(dir / kSingleName)) {
      DS_TRY_STATUS(load_single((dir / kSingleName).string(), budget, out));
    } else if (is_file(dir / kIndexName)) {
      DS_TRY_STATUS(load_index((dir / kIndexName).string(), budget, out));
    } else {
      return error(errc::not_found, "checkpoint directory " + path + " holds neither " + std::string(kSingleName) +
                                        " nor " + std::string(kIndexName));
    }
  } else if (ends_with(path, ".index.json")) {
    DS_TRY_STATUS(load_index(path, budget, out));
  } else {
    DS_TRY_STATUS(load_single(path, budget, out));
  }
  return out;
}

}  // namespace deltasync
