// The Boost.JSON basic_parser handler behind parse_raw_header: the safetensors header grammar, streamed.
#include "codec/safetensors_header_parser.h"

#include <cstddef>
#include <optional>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>  // basic_parser is a template: a custom handler needs its body

#include "codec/quote.h"

namespace deltasync::detail {
namespace {

// A boost::json::basic_parser handler for the header grammar:
//   { "__metadata__": { str: str, ... }, name: { "dtype": str, "shape": [uint...], "data_offsets": [uint, uint] } }
// It records the first grammar violation and keeps consuming, so that a syntax error anywhere in the document
// still wins (the reference parses the whole JSON before it looks at the structure).
class header_handler {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  std::vector<raw_entry> entries;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::optional<error> first_error;

  using ec_t = boost::json::error_code;
  using sv_t = boost::json::string_view;

  bool on_document_begin(ec_t&) { return true; }
  bool on_document_end(ec_t&) { return true; }
  bool on_comment_part(sv_t, ec_t&) { return true; }
  bool on_comment(sv_t, ec_t&) { return true; }
  bool on_number_part(sv_t, ec_t&) { return true; }

  bool on_object_begin(ec_t&) {
    if (first_error) return true;
    if (depth_ == 0) {
      depth_ = 1;
    } else if (depth_ == 1) {
      in_metadata_ = key_ == kMetadataKey;
      if (!in_metadata_) {
        entries.emplace_back();
        entries.back().name = key_;
      }
      depth_ = 2;
    } else {
      wrong_type("an object");
    }
    return true;
  }

  bool on_object_end(std::size_t, ec_t&) {
    if (first_error) return true;
    if (depth_ == 2 && !in_metadata_) finish_entry();
    --depth_;
    return true;
  }

  bool on_array_begin(ec_t&) {
    if (first_error) return true;
    if (depth_ == 2 && !in_metadata_) {
      raw_entry& e = entries.back();
      if (key_ == "shape") {
        array_ = &e.shape;
      } else if (key_ == "data_offsets") {
        array_ = &e.offsets;
      } else {
        return wrong_type("an array");
      }
      depth_ = 3;
      return true;
    }
    return wrong_type("an array");
  }

  bool on_array_end(std::size_t, ec_t&) {
    if (first_error) return true;
    array_ = nullptr;
    --depth_;
    return true;
  }

  bool on_key_part(sv_t s, std::size_t, ec_t&) {
    if (!first_error) part_.append(s.data(), s.size());
    return true;
  }

  bool on_key(sv_t s, std::size_t, ec_t&) {
    if (first_error) return true;
    part_.append(s.data(), s.size());
    key_.swap(part_);
    part_.clear();
    if (depth_ == 1 && key_ == kMetadataKey) {
      if (seen_metadata_) fail(errc::st_duplicate_tensor, "the header holds __metadata__ twice");
      seen_metadata_ = true;
    } else if (depth_ == 2 && !in_metadata_) {
      raw_entry& e = entries.back();
      bool* seen = key_ == "dtype" ? &e.has_dtype
                   : key_ == "shape" ? &e.has_shape
                   : key_ == "data_offsets" ? &e.has_offsets
                   : nullptr;
      if (seen == nullptr) {
        fail(errc::st_bad_tensor_entry, "tensor " + quoted(e.name) + " has an unknown field " + quoted(key_));
      } else if (*seen) {
        fail(errc::st_bad_tensor_entry, "tensor " + quoted(e.name) + " has field " + quoted(key_) + " twice");
      } else {
        *seen = true;
      }
    }
    return true;
  }

  bool on_string_part(sv_t s, std::size_t, ec_t&) {
    if (!first_error) part_.append(s.data(), s.size());
    return true;
  }

  bool on_string(sv_t s, std::size_t, ec_t&) {
    if (first_error) return true;
    part_.append(s.data(), s.size());
    if (depth_ == 2 && in_metadata_) {
      metadata.emplace_back(key_, std::move(part_));
    } else if (depth_ == 2 && key_ == "dtype") {
      entries.back().dtype_name = std::move(part_);
    } else {
      wrong_type("a string");
    }
    part_.clear();
    return true;
  }

  bool on_int64(int64_t i, sv_t, ec_t&) {
    if (first_error) return true;
    if (i < 0) return wrong_type("a negative integer");
    return push_integer(static_cast<uint64_t>(i));
  }
  bool on_uint64(uint64_t u, sv_t, ec_t&) {
    if (first_error) return true;
    return push_integer(u);
  }
  // Fractions, exponents and integers past 2^64 - 1 all arrive here; none is a valid size or offset.
  bool on_double(double, sv_t, ec_t&) { return first_error ? true : wrong_type("a non-integer number"); }
  bool on_bool(bool, ec_t&) { return first_error ? true : wrong_type("a boolean"); }
  bool on_null(ec_t&) { return first_error ? true : wrong_type("null"); }

 private:
  bool fail(errc code, std::string message) {
    if (!first_error) first_error.emplace(code, std::move(message));
    return true;  // keep parsing: a later JSON syntax error takes precedence
  }

  bool push_integer(uint64_t u) {
    if (depth_ == 3) {
      array_->push_back(u);
      return true;
    }
    return wrong_type("an integer");
  }

  // A value of the wrong kind at the current position; the code depends on where it is.
  bool wrong_type(const char* what) {
    std::string w = what;
    switch (depth_) {
      case 0:
        return fail(errc::st_header_not_object, "the header JSON is " + w + ", not an object");
      case 1:
        if (key_ == kMetadataKey) return fail(errc::st_metadata_not_strings, "__metadata__ is " + w + ", not an object");
        return fail(errc::st_header_not_object, "the entry for tensor " + quoted(key_) + " is " + w + ", not an object");
      case 2:
        if (in_metadata_)
          return fail(errc::st_metadata_not_strings, "metadata key " + quoted(key_) + " maps to " + w + ", not a string");
        return fail(errc::st_bad_tensor_entry,
                    "field " + quoted(key_) + " of tensor " + quoted(entries.back().name) + " is " + w);
      default:
        return fail(errc::st_bad_tensor_entry, "field " + quoted(key_) + " of tensor " + quoted(entries.back().name) +
                                                   " holds " + w + " instead of a non-negative integer");
    }
  }

  void finish_entry() {
    const raw_entry& e = entries.back();
    const char* missing = !e.has_dtype ? "dtype" : !e.has_shape ? "shape" : !e.has_offsets ? "data_offsets" : nullptr;
    if (missing != nullptr) {
      fail(errc::st_bad_tensor_entry, "tensor " + quoted(e.name) + " has no " + missing);
    } else if (e.offsets.size() != 2) {
      fail(errc::st_bad_tensor_entry, "data_offsets of tensor " + quoted(e.name) + " has " +
                                          std::to_string(e.offsets.size()) + " elements, not 2");
    }
  }

  int depth_ = 0;  // open containers: 1 = the root object, 2 = an entry or __metadata__, 3 = an array in an entry
  bool in_metadata_ = false;
  bool seen_metadata_ = false;
  std::string key_;   // the last complete key at the current depth
  std::string part_;  // a key or string being assembled from parts
  std::vector<uint64_t>* array_ = nullptr;
};

}  // namespace

result<raw_header> parse_raw_header(std::string_view text, uint64_t text_offset) {
  boost::json::parse_options opts;
  opts.max_depth = 128;  // serde_json's recursion limit, so the same documents count as JSON
  boost::json::basic_parser<header_handler> parser(opts);
  boost::json::error_code ec;
  const size_t consumed = parser.write_some(false, text.data(), text.size(), ec);
  if (ec)
    return error(errc::st_header_not_json, "header is not valid JSON near file offset " +
                                               std::to_string(text_offset + consumed) + ": " + ec.message());
  // write_some stops after one complete value (and the whitespace after it); anything left is not JSON.
  if (consumed != text.size())
    return error(errc::st_header_not_json, "unexpected bytes after the header's JSON object at file offset " +
                                               std::to_string(text_offset + consumed));
  header_handler& h = parser.handler();
  if (h.first_error) return std::move(*h.first_error);
  return raw_header{std::move(h.entries), std::move(h.metadata)};
}

}  // namespace deltasync::detail
