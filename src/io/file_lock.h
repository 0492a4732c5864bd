// An exclusive advisory lock on a file (flock), held by one owner until it is destroyed or released; release
// removes the file. The kernel drops the lock when the holder dies, so a crashed holder leaves at most an
// unlocked file that the next acquire() takes. Locks taken through two separate acquire() calls conflict even
// inside one process (flock locks belong to the open file).
//
// The holder's pid is written into the file, so a refused caller can say who holds it.
#pragma once

#include <string>

#include "base/result.h"

namespace deltasync::io {

class file_lock {
 public:
  file_lock() = default;
  file_lock(file_lock&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  file_lock& operator=(file_lock&& o) noexcept;
  file_lock(const file_lock&) = delete;
  file_lock& operator=(const file_lock&) = delete;
  ~file_lock() { release(); }

  // Creates `path` if needed and locks it without waiting. Errors: busy (another holder; the message names
  // the file, `what` and the holder's pid when known), io_error (open/flock failed otherwise).
  static result<file_lock> acquire(const std::string& path, const std::string& what);
  bool held() const noexcept { return fd_ >= 0; }
  void release() noexcept;

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace deltasync::io
