// Helpers shared by the manifest parser (params_parser.cc) and the delta file reader (delta_format.cc).
// Internal to src/codec.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/result.h"
#include "codec/delta_format.h"

namespace deltasync::detail {

// "param #3 'name'" (the name quoted and cut, see quote.h), or "param #3" without a name.
std::string param_label(size_t i, std::string_view name);
// product(shape) and its byte size fit 64 bits, and the dtype has whole-byte elements.
status check_param_shape(const param_entry& p, const std::string& label);

}  // namespace deltasync::detail
