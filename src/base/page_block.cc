// page_block: mmap (2 MiB-aligned for large blocks), prefault with MADV_POPULATE_WRITE; munmap on release.
#include "base/page_block.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

namespace deltasync {

namespace {
constexpr size_t kPage = 4096;
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

page_block& page_block::operator=(page_block&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
  }
  return *this;
}

void page_block::reset() noexcept {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  data_ = nullptr;
  size_ = capacity_ = map_bytes_ = 0;
  map_ = nullptr;
}

result<page_block> page_block::allocate(size_t bytes, std::string_view what) {
  page_block b;
  if (bytes == 0) return b;
  if (bytes > SIZE_MAX - kHugePage) {
    return error(errc::no_space, std::string(what) + ": " + std::to_string(bytes) + " bytes cannot be mapped");
  }
  const size_t capacity = (bytes + kPage - 1) / kPage * kPage;
  // A huge page only backs a 2 MiB-aligned range: map 2 MiB more and start at the first boundary.
  const bool huge = capacity >= kHugePage;
  const size_t map_bytes = huge ? capacity + kHugePage : capacity;
  void* map = ::mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) {
    const int err = errno;
    return error(err == ENOMEM ? errc::no_space : errc::io_error,
                 std::string(what) + ": mapping " + std::to_string(bytes) + " bytes failed: " + std::strerror(err));
  }
  auto* start = static_cast<std::byte*>(map);
  if (huge) {
    const auto addr = reinterpret_cast<uintptr_t>(start);
    start += (kHugePage - addr % kHugePage) % kHugePage;
  }
  b.map_ = map;
  b.map_bytes_ = map_bytes;
  b.data_ = start;
  b.size_ = bytes;
  b.capacity_ = capacity;
  return b;
}

bool page_block::prefault(mutable_byte_span range) noexcept {
  if (range.empty()) return true;
  return ::madvise(range.data(), range.size(), MADV_POPULATE_WRITE) == 0;
}

}  // namespace deltasync
