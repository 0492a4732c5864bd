// The one escaping rule for untrusted text (tensor names, file names, request paths, anything a client or a
// delta file supplied) on its way into a log line or an error message: nothing it holds can start a new line
// or drive a terminal. Every log line goes through it (log.cc), and so does every error message an HTTP answer
// carries (http/server.cc json_error, http/receiver_routes.cc), so one forged name cannot forge a line such as
// "info sync: committed version=999" in the log or in a client's log of our answer.
//
// What is escaped: C0 controls and DEL (\n, \r, \t, else \xNN), C1 controls written as UTF-8 (U+0080..U+009F),
// U+2028 / U+2029 (line and paragraph separators) and U+FEFF (\u0085, \u2028, ...), and every byte that is not
// part of valid UTF-8 (\xNN). Everything else passes unchanged, backslashes included, so escaping is
// idempotent: escape_control(escape_control(s)) == escape_control(s), and text escaped once (an error message
// that quoted a name) is not mangled when the log escapes it again.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace deltasync {

std::string escape_control(std::string_view text);

// The same into a fixed buffer (for the logger, which must not allocate): writes at most `cap` bytes and
// returns how many; an escape that does not fit whole is left out, and so is everything after it.
size_t escape_control_to(std::string_view text, char* out, size_t cap) noexcept;

// True when escape_control would change `text`.
bool needs_escape(std::string_view text) noexcept;

}  // namespace deltasync
