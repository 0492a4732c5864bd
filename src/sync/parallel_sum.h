// The additive digests (codec/sum_digest.h) of whole tensors on every core: the host store's one pass over
// the model when it is made, and the Sender's first digest of each snapshot tensor. Each range is cut into
// slices of whole elements; a slice's digest is a partial sum, and the lanes of a range's slices add up.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/bytes.h"
#include "codec/digest.h"

namespace deltasync {

struct sum_input {
  byte_span bytes;
  uint32_t elem_bytes = 2;  // 1, 2, 4 or 8; any other size gets the digest {0, 0} (never delta-applied)
};

// One digest per input, in order, from 1 MiB slices; on the calling thread alone below 4 MiB in all.
std::vector<digest128> parallel_sum_digests(std::span<const sum_input> inputs);

}  // namespace deltasync
