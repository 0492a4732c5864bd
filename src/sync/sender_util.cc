// Helpers of the Sender: see sender_util.h.
#include "sync/sender_util.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <future>
#include <thread>

#include "codec/diff.h"

extern char** environ;  // NOLINT: POSIX declares it nowhere in a header

namespace deltasync {

std::string version_dir_name(uint64_t version, bool anchor) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%06" PRIu64, version);
  return std::string(anchor ? kAnchorDirPrefix : kVersionDirPrefix) + buf;
}

std::string file_name(uint32_t rank, uint32_t flush) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank%04" PRIu32 "_flush%06" PRIu32 ".safetensors", rank, flush);
  return buf;
}

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

result<int> run_hook(const std::string& command, const std::vector<std::string>& extra_env) {
  std::vector<std::string> env_store;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool replaced = false;
    for (const auto& x : extra_env)
      if (entry.substr(0, x.find('=') + 1) == std::string_view(x).substr(0, x.find('=') + 1)) replaced = true;
    if (!replaced) env_store.emplace_back(entry);
  }
  for (const auto& x : extra_env) env_store.push_back(x);
  std::vector<char*> envp;
  envp.reserve(env_store.size() + 1);
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);

  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv, envp.data());
  if (rc != 0) return errno_error(rc, "pre-push hook: spawn /bin/sh");
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return errno_error(errno, "pre-push hook: waitpid");
  }
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return 255;
}

void parallel_diff(byte_span before, byte_span now, uint32_t eb, std::vector<uint32_t>& positions, byte_buffer& values) {
  constexpr size_t kMinChunkBytes = size_t{8} << 20;
  const size_t threads = std::min<size_t>(8, std::max(1u, std::thread::hardware_concurrency()));
  const size_t chunks = std::min(threads, now.size() / kMinChunkBytes);
  if (chunks <= 1) {
    diff_tensor(before, now, eb, positions, values);
    return;
  }
  // Chunk boundaries on 64-byte multiples (a multiple of every element size), so block skipping still applies.
  const size_t step = (now.size() / chunks) & ~size_t{63};
  struct part {
    std::vector<uint32_t> pos;
    byte_buffer vals;
  };
  std::vector<part> parts(chunks);
  auto run = [&](size_t c) {
    const size_t begin = c * step;
    const size_t end = c + 1 == chunks ? now.size() : begin + step;
    diff_tensor(before.subspan(begin, end - begin), now.subspan(begin, end - begin), eb, parts[c].pos, parts[c].vals);
    const auto offset = static_cast<uint32_t>(begin / eb);
    for (auto& p : parts[c].pos) p += offset;
  };
  std::vector<std::future<void>> pending;
  for (size_t c = 1; c < chunks; ++c) pending.push_back(std::async(std::launch::async, run, c));
  run(0);
  for (auto& f : pending) f.get();
  for (auto& p : parts) {
    positions.insert(positions.end(), p.pos.begin(), p.pos.end());
    values.insert(values.end(), p.vals.begin(), p.vals.end());
  }
}

}  // namespace deltasync
