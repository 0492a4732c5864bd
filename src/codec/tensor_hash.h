// torch.hash_tensor over a little-endian tensor's bytes, and the slime #1806 delta file checksum built on it
// (a 65-bit value carried in the file's metadata as a decimal string). Pure: no I/O, no allocation but the
// decimal string.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "codec/dtype.h"

namespace deltasync {

__extension__ typedef unsigned __int128 checksum128;
std::string checksum_to_decimal(checksum128 v);
std::optional<checksum128> checksum_from_decimal(std::string_view text) noexcept;

// torch.hash_tensor(t) (mode xor_sum): every element upcast to its 64-bit equivalent (floats to float64,
// signed ints sign-extended, unsigned ints and bool zero-extended), bit-cast to uint64, XOR-reduced.
// Empty -> 0. `bytes` holds `bytes.size() / element_bytes(type)` elements.
// Floats convert by value, as torch does: bf16/f16/fp8 -> float (keeping NaN payloads) -> double the way the
// hardware does it (x86 cvtss2sd / CUDA cvt.f64.f32), which quiets a signalling NaN by setting the quiet bit.
// fp8 NaNs take the float bits c10's decoders give them (E4M3FN: sign|0x7FF00000; E5M2: as the f16 with the
// same top byte; FNUZ and E8M0: 0x7F800001), then the same float -> double step.
// Sub-byte dtypes and C64 are not supported (torch has no such hash): they hash to 0, and neither the writer
// nor the reader accepts them.
uint64_t hash_tensor(dtype type, byte_span bytes) noexcept;

// checksum = H(__positions__) XOR (H(__values__) << 1), 65 bits wide.
checksum128 delta_checksum(byte_span positions_u8, dtype values_type, byte_span values) noexcept;

}  // namespace deltasync
