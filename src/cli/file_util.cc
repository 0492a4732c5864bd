// POSIX whole-file reads and replace-by-rename writes for the offline commands.
#include "cli/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

namespace deltasync::cli {

result<byte_buffer> read_whole_file(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return errno_error(e, "stat " + path);
  }
  auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    ::close(fd);
    return error(errc::limit_exceeded, path + ": " + std::to_string(size) + " bytes exceeds the limit of " +
                                           std::to_string(max_bytes));
  }
  byte_buffer buf(size);
  uint64_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, buf.data() + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      ::close(fd);
      return errno_error(e, "read " + path);
    }
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return buf;
}

status write_file_replace(const std::string& path, byte_span data) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_error(errno, "create " + tmp);
  uint64_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      ::close(fd);
      ::unlink(tmp.c_str());
      return e == ENOSPC ? error(errc::no_space, "write " + tmp + ": no space left on device")
                         : errno_error(e, "write " + tmp);
    }
    done += static_cast<uint64_t>(n);
  }
  if (::fdatasync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return errno_error(e, "sync " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return errno_error(e, "rename " + tmp);
  }
  return {};
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
