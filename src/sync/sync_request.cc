// JSON parsing of both sync routes and the confinement of file paths to the delta dir.
#include "sync/sync_request.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <unordered_map>

#include <boost/json.hpp>

#include "io/raw_syscall.h"

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
    return error(errc::limit_exceeded, "'files' lists " + std::to_string(arr.size()) +
                                           " files, over max-files-per-sync = " + std::to_string(limits.max_files));
  std::vector<std::string> out;
  for (const auto& f : arr) {
    if (!f.is_string()) return error(errc::bad_request, "'files' must hold strings");
    if (f.as_string().size() > limits.max_name_bytes) return error(errc::bad_request, "a file name is too long");
    out.emplace_back(f.as_string());
  }
  // A file listed twice would be read, held and applied twice: refused before anything is opened or read.
  // Names are plain (no '/', checked when opened), so equal strings are the only way to name one file twice.
  std::unordered_map<std::string_view, size_t> seen;
  seen.reserve(out.size());
  for (size_t i = 0; i < out.size(); ++i)
    if (auto [it, fresh] = seen.emplace(out[i], i); !fresh)
      return error(errc::bad_request, "'files' lists '" + out[i] + "' twice (entries " + std::to_string(it->second) +
                                          " and " + std::to_string(i) + "); each file may appear once");
  return out;
}

// The NCCL transport's announcement: the byte size of every file (the receiver posts matching broadcasts).
status get_nccl_fields(const json::object& o, sync_request& r) {
  const json::value* v = o.if_contains("sizes");
  if (!v || !v->is_array()) return error(errc::bad_request, "transport nccl needs 'sizes' (bytes of each file)");
  const auto& arr = v->as_array();
  if (arr.size() != r.files.size())
    return error(errc::bad_request, "'sizes' lists " + std::to_string(arr.size()) + " sizes for " +
                                        std::to_string(r.files.size()) + " files");
  for (const auto& x : arr) {
    if (!x.is_uint64() && !(x.is_int64() && x.as_int64() >= 0))
      return error(errc::bad_request, "'sizes' must hold non-negative integers");
    r.sizes.push_back(x.is_uint64() ? x.as_uint64() : static_cast<uint64_t>(x.as_int64()));
  }
  if (const json::value* g = o.if_contains("group")) {
    if (!g->is_string()) return error(errc::bad_request, "'group' must be a string");
    r.group = std::string(g->as_string());
  }
  return {};
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
    if (!t->is_string()) return error(errc::bad_request, "'transport' must be \"disk\", \"nccl\" or \"http\"");
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
  if (r.transport == "nccl") DS_TRY_STATUS(get_nccl_fields(o, r));
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
    // Express it relative to the delta dir, both canonical (serve resolves the delta dir once at start-up), so
    // that "/data/deltas/weight_v1" matches a delta dir given as "deltas" or reached through a symlinked
    // parent. open_sync_files then refuses anything below the delta dir that is a symlink.
    std::error_code ec;
    std::filesystem::path canon = std::filesystem::weakly_canonical(model_path, ec);
    if (ec) canon = model_path.lexically_normal();
    std::filesystem::path rel = canon.lexically_relative(std::filesystem::path(delta_dir));
    if (rel.empty() || *rel.begin() == "..")
      return error(errc::forbidden_path, "model_path " + model_path.string() + " is outside the delta dir " + delta_dir);
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

sync_files& sync_files::operator=(sync_files&& o) noexcept {
  if (this != &o) {
    for (auto& f : files_)
      if (f.fd >= 0) ::close(f.fd);
    files_ = std::move(o.files_);
    o.files_.clear();
  }
  return *this;
}

sync_files::~sync_files() {
  for (auto& f : files_)
    if (f.fd >= 0) ::close(f.fd);
}

namespace {

bool bad_component(const std::string& s) {
  std::filesystem::path p(s);
  if (s.empty() || p.is_absolute() || s.find('\0') != std::string::npos) return true;
  for (const auto& c : p)
    if (c == "..") return true;
  return false;
}

// The fallback of open_sync_files where openat2 is missing: realpath must land exactly where the names say.
int open_checked_realpath(const std::string& root_real, const std::string& joined, const std::string& rel) {
  char buf[PATH_MAX];
  if (!::realpath(joined.c_str(), buf)) return -errno;
  const std::string want = (std::filesystem::path(root_real) / std::filesystem::path(rel).lexically_normal()).string();
  if (std::string(buf) != want) return -ELOOP;  // a symlink (inside or outside) somewhere on the way
  const int fd = ::open(buf, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

}  // namespace

result<sync_files> open_sync_files(const std::string& delta_dir, const sync_request& req, bool use_openat2) {
  if (bad_component(req.dir)) return error(errc::forbidden_path, "dir '" + req.dir + "' escapes the delta dir");
  const int root = ::open(delta_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return errno_error(errno, "delta dir " + delta_dir);
  char root_buf[PATH_MAX];
  std::string root_real;
  if (::realpath(delta_dir.c_str(), root_buf)) root_real = root_buf;
  static const bool have_proc_fd = ::access("/proc/self/fd", X_OK) == 0;
  sync_files out;
  bool openat2_ok = use_openat2;
  auto fail = [&](error e) -> result<sync_files> {
    ::close(root);
    return e;
  };
  for (const auto& f : req.files) {
    if (bad_component(f) || f.find('/') != std::string::npos)
      return fail(error(errc::forbidden_path, "file '" + f + "' must be a plain name inside the version dir"));
    const std::string rel = req.dir + "/" + f;
    const std::string shown = delta_dir + "/" + rel;
    int fd = -ENOSYS;
    if (openat2_ok) {
      fd = io::open_beneath(root, rel.c_str(), O_PATH);
      if (fd == -ENOSYS) openat2_ok = false;
    }
    if (fd == -ENOSYS) {
      if (root_real.empty()) return fail(errno_error(errno, "realpath of the delta dir " + delta_dir));
      fd = open_checked_realpath(root_real, shown, rel);
    }
    if (fd < 0) {
      const int err = -fd;
      if (err == ENOENT || err == ENOTDIR) return fail(error(errc::not_found, "missing file " + rel));
      if (err == ELOOP)
        return fail(error(errc::forbidden_path, "file " + rel + " crosses a symlink below the delta dir (refused)"));
      if (err == EXDEV) return fail(error(errc::forbidden_path, "file " + rel + " resolves outside the delta dir"));
      return fail(errno_error(err, "open " + shown));
    }
    sync_file sf;
    sf.path = shown;
    sf.fd = fd;
    out.files().push_back(sf);  // owned from here on
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fail(errno_error(errno, "stat " + shown));
    if (!S_ISREG(st.st_mode)) return fail(error(errc::bad_request, rel + " is not a regular file"));
    out.files().back().bytes = static_cast<uint64_t>(st.st_size);
    out.files().back().open_path = have_proc_fd ? "/proc/self/fd/" + std::to_string(fd) : shown;
  }
  ::close(root);
  return out;
}

}  // namespace deltasync
