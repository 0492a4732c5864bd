// libFuzzer target: the `params` manifest JSON of a slime delta file. Whatever parses must serialise and parse
// back to the same entries. pos_width is 1 (compact), 2 or 4.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "codec/delta_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltasync;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = parse_params_json(text);
  if (!parsed.ok()) return 0;
  auto again = parse_params_json(params_to_json(*parsed));
  if (!again.ok() || again->size() != parsed->size()) __builtin_trap();
  for (size_t i = 0; i < parsed->size(); ++i) {
    const param_entry& a = (*parsed)[i];
    const param_entry& b = (*again)[i];
    if (a.name != b.name || a.type != b.type || a.shape != b.shape || a.pos_start != b.pos_start ||
        a.pos_end != b.pos_end || a.pos_width != b.pos_width || a.val_start != b.val_start ||
        a.val_end != b.val_end)
      __builtin_trap();
    if (a.pos_start > a.pos_end || a.val_start > a.val_end || (a.pos_width != 1 && a.pos_width != 2 && a.pos_width != 4) ||
        (a.pos_end - a.pos_start) % a.pos_width != 0)
      __builtin_trap();
  }
  return 0;
}
