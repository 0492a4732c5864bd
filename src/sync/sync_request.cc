// JSON parsing of both sync routes and the confinement of file paths to the delta dir.
#include "sync/sync_request.h"

#include <climits>
#include <cstdlib>
#include <filesystem>

#include <boost/json.hpp>

namespace deltasync {
namespace {

namespace json = boost::json;

result<json::object> parse_object(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return error(errc::bad_request, "request body is not valid JSON: " + ec.message());
  if (!v.is_object()) return error(errc::bad_request, "request body must be a JSON object");
  return std::move(v.as_object());
}

result<uint64_t> get_u64(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v) return error(errc::bad_request, "missing field '" + std::string(key) + "'");
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<uint64_t>(v->as_int64());
  if (v->is_string()) {  // slime sends weight_version as a decimal string
    const auto& s = v->as_string();
    if (s.empty() || s.size() > 19) return error(errc::bad_request, "field '" + std::string(key) + "' is not a version");
    uint64_t n = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return error(errc::bad_request, "field '" + std::string(key) + "' is not a version");
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    return n;
  }
  return error(errc::bad_request, "field '" + std::string(key) + "' must be a non-negative integer");
}

result<std::vector<std::string>> get_files(const json::object& o, const request_limits& limits) {
  const json::value* v = o.if_contains("files");
  if (!v || !v->is_array()) return error(errc::bad_request, "missing field 'files' (a list of file names)");
  const auto& arr = v->as_array();
  if (arr.empty()) return error(errc::bad_request, "'files' is empty");
  if (arr.size() > limits.max_files)
    return error(errc::bad_request, "'files' lists " + std::to_string(arr.size()) + " files; the limit is " +
                                        std::to_string(limits.max_files));
  std::vector<std::string> out;
  for (const auto& f : arr) {
    if (!f.is_string()) return error(errc::bad_request, "'files' must hold strings");
    if (f.as_string().size() > limits.max_name_bytes) return error(errc::bad_request, "a file name is too long");
    out.emplace_back(f.as_string());
  }
  return out;
}

}  // namespace

result<sync_request> parse_sync_request(std::string_view text, const request_limits& limits) {
  DS_ASSIGN_OR_RETURN(json::object o, parse_object(text));
  sync_request r;
  DS_ASSIGN_OR_RETURN(r.version, get_u64(o, "version"));
  if (o.contains("base_version")) {
    DS_ASSIGN_OR_RETURN(uint64_t b, get_u64(o, "base_version"));
    r.base_version = b;
  }
  if (const json::value* t = o.if_contains("transport")) {
    if (!t->is_string()) return error(errc::bad_request, "'transport' must be \"disk\" or \"nccl\"");
    r.transport = std::string(t->as_string());
    if (r.transport != "disk" && r.transport != "nccl" && r.transport != "http")
      return error(errc::bad_request, "unknown transport '" + r.transport + "' (disk, nccl, http)");
  }
  if (r.transport == "http") {
    const json::value* u = o.if_contains("base_url");
    if (!u || !u->is_string() || u->as_string().empty())
      return error(errc::bad_request, "transport \"http\" needs 'base_url' (the file server's http://host:port)");
    r.base_url = std::string(u->as_string());
  }
  const json::value* d = o.if_contains("dir");
  if (!d || !d->is_string()) return error(errc::bad_request, "missing field 'dir' (the version directory)");
  r.dir = std::string(d->as_string());
  DS_ASSIGN_OR_RETURN(r.files, get_files(o, limits));
  return r;
}

result<sync_request> parse_sglang_request(std::string_view text, const std::string& delta_dir,
                                          const request_limits& limits) {
  DS_ASSIGN_OR_RETURN(json::object o, parse_object(text));
  sync_request r;
  const json::value* fmt = o.if_contains("load_format");
  if (!fmt || !fmt->is_string() || fmt->as_string() != "delta")
    return error(errc::bad_request, "load_format must be \"delta\" (full checkpoint loads are not served here)");
  DS_ASSIGN_OR_RETURN(r.version, get_u64(o, "weight_version"));
  const json::value* mp = o.if_contains("model_path");
  if (!mp || !mp->is_string()) return error(errc::bad_request, "missing field 'model_path'");
  std::filesystem::path model_path(std::string(mp->as_string()));
  if (model_path.is_absolute()) {
    // Express it relative to the delta dir; resolve_sync_files checks it stays inside.
    std::filesystem::path rel = model_path.lexically_relative(std::filesystem::path(delta_dir));
    if (rel.empty() || *rel.begin() == "..")
      return error(errc::forbidden_path, "model_path " + model_path.string() + " is outside the delta dir");
    r.dir = rel.string();
  } else {
    r.dir = model_path.string();
  }
  DS_ASSIGN_OR_RETURN(r.files, get_files(o, limits));
  return r;
}

result<std::vector<std::string>> resolve_sync_files(const std::string& delta_dir, const sync_request& req) {
  auto bad_component = [](const std::string& s) {
    std::filesystem::path p(s);
    if (s.empty() || p.is_absolute()) return true;
    for (const auto& c : p)
      if (c == "..") return true;
    return false;
  };
  if (bad_component(req.dir)) return error(errc::forbidden_path, "dir '" + req.dir + "' escapes the delta dir");
  char root_buf[PATH_MAX];
  if (!::realpath(delta_dir.c_str(), root_buf)) return errno_error(errno, "delta dir " + delta_dir);
  const std::string root = std::string(root_buf) + "/";
  std::vector<std::string> out;
  for (const auto& f : req.files) {
    if (bad_component(f) || f.find('/') != std::string::npos)
      return error(errc::forbidden_path, "file '" + f + "' must be a plain name inside the version dir");
    std::string joined = delta_dir + "/" + req.dir + "/" + f;
    char buf[PATH_MAX];
    if (!::realpath(joined.c_str(), buf)) {
      if (errno == ENOENT) return error(errc::not_found, "missing file " + req.dir + "/" + f);
      return errno_error(errno, "resolve " + joined);
    }
    std::string resolved(buf);
    if (resolved.compare(0, root.size(), root) != 0)
      return error(errc::forbidden_path, "file " + req.dir + "/" + f + " resolves outside the delta dir (symlink?)");
    out.push_back(std::move(resolved));
  }
  return out;
}

}  // namespace deltasync
