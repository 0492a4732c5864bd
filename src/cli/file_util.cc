// Recursive, sorted directory listing for the offline commands.
#include "cli/file_util.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace deltasync::cli {

result<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return error(errc::not_found, "cannot read --token-file " + path);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return error(errc::invalid_argument, "--token-file " + path + " is empty");
  return token;
}

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
