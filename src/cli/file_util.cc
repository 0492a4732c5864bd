// Recursive, sorted directory listing for the offline commands.
#include "cli/file_util.h"

#include <algorithm>
#include <filesystem>

namespace deltasync::cli {

result<std::vector<std::string>> list_files(const std::string& path, const std::string& suffix) {
  std::error_code ec;
  std::vector<std::string> out;
  if (!std::filesystem::exists(path, ec)) return error(errc::not_found, path + ": no such file or directory");
  if (!std::filesystem::is_directory(path, ec)) {
    out.push_back(path);
    return out;
  }
  for (auto it = std::filesystem::recursive_directory_iterator(path, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && it->path().string().ends_with(suffix)) out.push_back(it->path().string());
  }
  if (ec) return error(errc::io_error, "list " + path + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace deltasync::cli
