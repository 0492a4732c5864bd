// Serialization of the publish marker (see publish_marker.h).
#include "sync/publish_marker.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <set>

#include <boost/json.hpp>

namespace deltasync {
namespace {

namespace json = boost::json;

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

result<uint64_t> u64_field(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v && v->is_uint64()) return v->as_uint64();
  if (v && v->is_int64() && v->as_int64() >= 0) return static_cast<uint64_t>(v->as_int64());
  return error(errc::invalid_argument, "publish marker: field '" + std::string(key) + "' missing or not an unsigned integer");
}

result<std::string> string_field(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v && v->is_string()) return std::string(v->as_string());
  return error(errc::invalid_argument, "publish marker: field '" + std::string(key) + "' missing or not a string");
}

}  // namespace

std::string serialize_publish_marker(const publish_marker& m) {
  json::object o;
  o["format"] = kPublishMarkerFormat;
  o["version"] = m.version;
  o["base_version"] = m.base_version;
  o["wire_format"] = m.wire_format;
  o["encoding"] = m.encoding;
  json::array files;
  for (const auto& f : m.files)
    files.push_back(json::object{{"name", f.name}, {"bytes", f.bytes}, {"xxh3_64", hex64(f.xxh3_64)}});
  o["files"] = std::move(files);
  if (m.anchor) o["anchor"] = true;
  return json::serialize(o) + "\n";
}

result<publish_marker> parse_publish_marker(std::string_view text, size_t max_files) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return error(errc::invalid_argument, "publish marker is not valid JSON: " + ec.message());
  if (!v.is_object()) return error(errc::invalid_argument, "publish marker is not a JSON object");
  const auto& o = v.as_object();
  publish_marker m;
  DS_ASSIGN_OR_RETURN(std::string format, string_field(o, "format"));
  if (format != kPublishMarkerFormat)
    return error(errc::invalid_argument, "publish marker format '" + format + "' (expected " +
                                             std::string(kPublishMarkerFormat) + ")");
  DS_ASSIGN_OR_RETURN(m.version, u64_field(o, "version"));
  DS_ASSIGN_OR_RETURN(m.base_version, u64_field(o, "base_version"));
  if (m.base_version >= m.version)
    return error(errc::invalid_argument, "publish marker: base_version " + std::to_string(m.base_version) +
                                             " is not below version " + std::to_string(m.version));
  if (const json::value* a = o.if_contains("anchor")) {
    if (!a->is_bool()) return error(errc::invalid_argument, "publish marker: field 'anchor' is not a boolean");
    m.anchor = a->as_bool();
  }
  DS_ASSIGN_OR_RETURN(m.wire_format, string_field(o, "wire_format"));
  DS_ASSIGN_OR_RETURN(m.encoding, string_field(o, "encoding"));
  const json::value* files = o.if_contains("files");
  if (!files || !files->is_array() || files->as_array().empty())
    return error(errc::invalid_argument, "publish marker: 'files' missing or empty");
  if (files->as_array().size() > max_files)
    return error(errc::limit_exceeded, "publish marker lists " + std::to_string(files->as_array().size()) +
                                           " files; the limit is " + std::to_string(max_files));
  std::set<std::string> seen;
  for (const auto& fv : files->as_array()) {
    if (!fv.is_object()) return error(errc::invalid_argument, "publish marker: a 'files' entry is not an object");
    publish_marker::file f;
    DS_ASSIGN_OR_RETURN(f.name, string_field(fv.as_object(), "name"));
    if (f.name.empty() || f.name == "." || f.name == ".." || f.name.find('/') != std::string::npos ||
        f.name.find('\0') != std::string::npos || f.name == kPublishMarkerName)
      return error(errc::invalid_argument, "publish marker: file name '" + f.name + "' is not a plain file name");
    if (!seen.insert(f.name).second)
      return error(errc::invalid_argument, "publish marker: file '" + f.name + "' listed twice");
    DS_ASSIGN_OR_RETURN(f.bytes, u64_field(fv.as_object(), "bytes"));
    DS_ASSIGN_OR_RETURN(std::string hash, string_field(fv.as_object(), "xxh3_64"));
    if (hash.size() != 16 || hash.find_first_not_of("0123456789abcdef") != std::string::npos)
      return error(errc::invalid_argument, "publish marker: file '" + f.name + "': xxh3_64 is not 16 lowercase hex digits");
    f.xxh3_64 = std::strtoull(hash.c_str(), nullptr, 16);
    m.files.push_back(std::move(f));
  }
  return m;
}

}  // namespace deltasync
