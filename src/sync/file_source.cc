// The disk file_source: a thin adapter over io::chunked_reader.
#include "sync/file_source.h"

#include <string_view>

namespace deltasync {
namespace {

class disk_file_source final : public file_source {
 public:
  disk_file_source(io::io_backend& backend, io::buffer_pool& pool, std::vector<io::read_file_spec> files,
                   const io::chunked_reader_options& options)
      : reader_(backend, pool, std::move(files), options) {}
  void start(std::function<void(io::read_piece)> on_piece, std::function<void(status)> on_done) override {
    reader_.start(std::move(on_piece), std::move(on_done));
  }
  void cancel() override { reader_.cancel(); }

 private:
  io::chunked_reader reader_;
};

bool bad_component(const std::string& s) {
  if (s.empty() || s.front() == '/') return true;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('/', start);
    if (end == std::string::npos) end = s.size();
    const std::string_view part(s.data() + start, end - start);
    if (part == "..") return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

status check_remote_names(const std::string& dir, const std::vector<std::string>& files, bool root_ok) {
  if (!(root_ok && dir.empty()) && bad_component(dir)) return error(errc::forbidden_path, "dir '" + dir + "' escapes the served directory");
  for (const auto& f : files)
    if (bad_component(f) || f.find('/') != std::string::npos)
      return error(errc::forbidden_path, "file '" + f + "' must be a plain name inside the version dir");
  return {};
}

std::unique_ptr<file_source> make_disk_file_source(io::io_backend& backend, io::buffer_pool& pool,
                                                   std::vector<io::read_file_spec> files,
                                                   const io::chunked_reader_options& options) {
  return std::make_unique<disk_file_source>(backend, pool, std::move(files), options);
}

}  // namespace deltasync
