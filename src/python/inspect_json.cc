// inspect_json: see inspect_json.h.
#include "python/inspect_json.h"

#include <boost/json.hpp>

#include "codec/delta_format.h"
#include "codec/digest.h"
#include "codec/safetensors.h"
#include "codec/tensor_hash.h"
#include "codec/zstd_frame.h"
#include "io/sync_io.h"
namespace json = boost::json;

namespace deltasync::python {

namespace {

json::array shape_json(const std::vector<uint64_t>& shape) {
  json::array a;
  for (uint64_t d : shape) a.push_back(d);
  return a;
}

}  // namespace

result<std::string> inspect_json(const std::string& path, uint64_t max_bytes) {
  DS_ASSIGN_OR_RETURN(byte_buffer bytes, io::read_file_all(path, max_bytes));
  json::object o;
  o["path"] = path;
  o["file_bytes"] = bytes.size();
  const bool zstd = is_zstd_frame(bytes);
  if (!zstd) {
    DS_ASSIGN_OR_RETURN(auto st, parse_safetensors(bytes));
    if (!st.header.find("__positions__") && !st.header.find("__records__")) {  // records: deltasync-native/2
      o["kind"] = "checkpoint";
      json::object tensors;
      for (const auto& t : st.header.tensors)
        tensors[t.name] = json::object{{"dtype", std::string(name(t.type))}, {"shape", shape_json(t.shape)}};
      o["tensors"] = std::move(tensors);
      return json::serialize(o);
    }
  }
  delta_read_limits limits;
  limits.max_decompressed_bytes = max_bytes;
  DS_ASSIGN_OR_RETURN(delta_file f, parse_delta_file(bytes, limits));
  o["kind"] = "delta";
  o["zstd_frame"] = zstd;
  o["format"] = f.native ? "native" : "slime";
  o["encoding"] = std::string(encoding_name(f.manifest.enc));
  o["version"] = f.manifest.current_version;
  if (const native_info* c = f.claims()) o["base_version"] = c->base_version;
  o["values_dtype"] = std::string(name(f.values_type));
  o["checksum"] = checksum_to_decimal(f.manifest.checksum);
  uint64_t changed = 0;
  json::array params;
  std::vector<uint32_t> scratch;
  for (const param_entry& p : f.manifest.params) {
    if (auto s = decode_positions(f.manifest.enc, p.pos_width, f.positions.subspan(p.pos_start, p.pos_end - p.pos_start),
                                  p.numel(), scratch);
        !s)
      return error(s.err().code, path + ": param '" + p.name + "': " + s.err().message);
    changed += p.changed();
    json::object e{{"name", p.name},           {"dtype", std::string(torch_name(p.type))},
                   {"shape", shape_json(p.shape)}, {"changed", p.changed()},
                   {"pos_width", p.pos_width}, {"pos_start", p.pos_start},
                   {"pos_end", p.pos_end},     {"val_start", p.val_start},
                   {"val_end", p.val_end}};
    if (const native_info* c = f.claims()) {
      auto it = c->tensor_digests.find(p.name);
      if (it != c->tensor_digests.end()) e["xxh3_128"] = to_hex(it->second);
    }
    params.push_back(std::move(e));
  }
  o["params"] = std::move(params);
  o["changed_elements"] = changed;
  o["bytes_per_changed_element"] = changed ? static_cast<double>(bytes.size()) / static_cast<double>(changed) : 0.0;
  json::object meta;
  for (const auto& [k, v] : f.metadata)
    if (k != "params") meta[k] = v;
  o["metadata"] = std::move(meta);
  return json::serialize(o);
}

}  // namespace deltasync::python
