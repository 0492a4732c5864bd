// page_block: one owned block of host memory from an anonymous mapping, for buffers that are about to be
// overwritten whole (a checkpoint file read straight into memory). Unlike std::vector<std::byte>(n) nothing
// is zero-filled in user space: the kernel supplies each page on first touch (a read into the block is that
// touch), or ahead of it through prefault(). Blocks of 2 MiB and more start on a 2 MiB boundary, so a
// system whose THP policy is "always" can back them with huge pages; the block does not ask for them
// (MADV_HUGEPAGE): on the VM these benchmarks run on, which hands freed memory back to its host, huge-page
// faults on such memory made loads 3-4x slower (bench/RESULTS.md, "Checkpoint loading").
//
// Contract
// * Ownership: move-only; the memory is unmapped when the block is destroyed or reset(). Moving a block does
//   not move its memory, so spans into it stay valid across moves.
// * Address: aligned to the page size (4096) at least, so the block can take O_DIRECT reads; size() is the
//   requested size, capacity() that size rounded up to the page size (reads may fill up to capacity()).
// * Errors: errc::no_space when the mapping is refused (ENOMEM), naming `what` and the size.
#pragma once

#include <cstddef>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync {

class page_block {
 public:
  page_block() = default;
  page_block(page_block&& other) noexcept { *this = std::move(other); }
  page_block& operator=(page_block&& other) noexcept;
  page_block(const page_block&) = delete;
  page_block& operator=(const page_block&) = delete;
  ~page_block() { reset(); }

  // A block of `bytes` (0 gives an empty block without a mapping). `what` names the use in errors.
  static result<page_block> allocate(size_t bytes, std::string_view what);

  std::byte* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  size_t capacity() const noexcept { return capacity_; }
  mutable_byte_span span() const noexcept { return {data_, size_}; }
  mutable_byte_span capacity_span() const noexcept { return {data_, capacity_}; }
  void reset() noexcept;
  // Asks the kernel to back `range` (inside a live block's capacity; page-aligned at its start) with
  // writable pages now (MADV_POPULATE_WRITE), without changing any byte, so a later read into it takes no
  // page faults; safe while other threads read into the same pages. False when the kernel cannot (before
  // Linux 5.14, or no memory at this moment): the pages then fault in on first touch, as they would anyway.
  static bool prefault(mutable_byte_span range) noexcept;

 private:
  std::byte* data_ = nullptr;  // inside the mapping
  size_t size_ = 0;
  size_t capacity_ = 0;
  void* map_ = nullptr;  // the whole mapping (data_ may start later, for 2 MiB alignment)
  size_t map_bytes_ = 0;
};

}  // namespace deltasync
