// parse_params_json (codec/delta_format.h), streamed: a Boost.JSON basic_parser handler builds each param_entry
// as its object ends, instead of a DOM of the whole list first. A manifest of tens of MB therefore costs its
// entries, not a JSON tree several times its size; and with a name check (params_limits::known) the parse
// stores nothing past the first name the receiver does not hold, so a huge manifest of unknown names costs
// almost nothing beyond its own bytes before it is refused.
#include <cstddef>
#include <optional>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>  // basic_parser is a template: a custom handler needs its body

#include "codec/delta_format.h"
#include "codec/params_parser.h"
#include "codec/quote.h"

namespace deltasync {
namespace detail {

std::string param_label(size_t i, std::string_view name) {
  std::string s = "param #" + std::to_string(i);
  if (!name.empty()) s += " " + quoted(name);
  return s;
}

status check_param_shape(const param_entry& p, const std::string& label) {
  if (element_bytes(p.type) == 0)
    return error(errc::delta_dtype_mismatch,
                 "params: " + label + " has sub-byte dtype " + std::string(torch_name(p.type)) +
                     ", which has no per-element positions");
  uint64_t numel = 1, bytes = 0;
  for (uint64_t d : p.shape)
    if (!checked_mul(numel, d, numel))
      return error(errc::delta_bad_manifest, "params: " + label + " shape overflows 64 bits");
  if (!tensor_bytes(p.type, numel, bytes))
    return error(errc::delta_bad_manifest, "params: " + label + " byte size overflows 64 bits");
  return {};
}

}  // namespace detail

namespace {

using detail::param_label;
using detail::quoted;

// One value as the object spelled it, before validation (the last of duplicate keys wins, as in a DOM).
enum class kind : uint8_t { absent, uint, string, array, other };
struct field {
  kind k = kind::absent;
  uint64_t u = 0;
  std::string s;
};
enum slot : size_t { k_name, k_dtype, k_shape, k_pos_start, k_pos_end, k_pos_width, k_val_start, k_val_end, k_slots };
constexpr std::string_view k_keys[k_slots] = {"name", "dtype", "shape", "pos_start", "pos_end", "pos_width",
                                              "val_start", "val_end"};

class params_handler {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  using ec_t = boost::json::error_code;
  using sv_t = boost::json::string_view;

  explicit params_handler(const params_limits& limits) : limits_(limits) {}

  std::vector<param_entry> out;
  std::optional<error> first_error;

  bool on_document_begin(ec_t&) { return true; }
  bool on_document_end(ec_t&) { return true; }
  bool on_comment_part(sv_t, ec_t&) { return true; }
  bool on_comment(sv_t, ec_t&) { return true; }
  bool on_number_part(sv_t, ec_t&) { return true; }

  bool on_array_begin(ec_t&) {
    if (depth_ == 0) {
      list_ = true;
    } else if (depth_ == 1) {
      not_an_object();
    } else if (depth_ == 2) {
      set(kind::array);
      in_shape_ = current_ == k_shape;
      if (in_shape_) {
        shape_.clear();
        shape_bad_ = false;
      }
    } else if (in_shape_ && depth_ == 3) {
      shape_bad_ = true;  // a nested list in 'shape'
    }
    ++depth_;
    return true;
  }
  bool on_array_end(std::size_t, ec_t&) {
    --depth_;
    if (depth_ == 2) in_shape_ = false;
    return true;
  }
  bool on_object_begin(ec_t&) {
    if (depth_ == 0) {
      not_a_list();
    } else if (depth_ == 1) {
      for (auto& f : fields_) f.k = kind::absent;
      current_ = k_slots;
      shape_.clear();
      shape_bad_ = false;
    } else if (depth_ == 2) {
      set(kind::other);
    } else if (in_shape_ && depth_ == 3) {
      shape_bad_ = true;
    }
    ++depth_;
    return true;
  }
  bool on_object_end(std::size_t, ec_t&) {
    --depth_;
    if (depth_ == 1 && list_) finish_entry();
    return true;
  }
  bool on_key_part(sv_t s, std::size_t, ec_t&) {
    if (depth_ == 2) part_.append(s.data(), s.size());
    return true;
  }
  bool on_key(sv_t s, std::size_t, ec_t&) {
    if (depth_ != 2) return true;
    part_.append(s.data(), s.size());
    current_ = k_slots;
    for (size_t i = 0; i < k_slots; ++i)
      if (part_ == k_keys[i]) current_ = static_cast<slot>(i);
    part_.clear();
    return true;
  }
  bool on_string_part(sv_t s, std::size_t, ec_t&) {
    if (depth_ == 2 && (current_ == k_name || current_ == k_dtype)) part_.append(s.data(), s.size());
    return true;
  }
  bool on_string(sv_t s, std::size_t, ec_t&) {
    if (depth_ == 1) return not_an_object();
    if (depth_ == 0) return not_a_list();
    if (depth_ == 2) {
      if (current_ == k_name || current_ == k_dtype) {
        part_.append(s.data(), s.size());
        if (current_ < k_slots) {
          fields_[current_].k = kind::string;
          fields_[current_].s.swap(part_);
        }
        part_.clear();
      } else {
        set(kind::other);
      }
    } else if (in_shape_ && depth_ == 3) {
      shape_bad_ = true;
    }
    return true;
  }
  bool on_int64(int64_t i, sv_t, ec_t&) { return i < 0 ? scalar(kind::other, 0) : scalar(kind::uint, static_cast<uint64_t>(i)); }
  bool on_uint64(uint64_t u, sv_t, ec_t&) { return scalar(kind::uint, u); }
  bool on_double(double, sv_t, ec_t&) { return scalar(kind::other, 0); }
  bool on_bool(bool, ec_t&) { return scalar(kind::other, 0); }
  bool on_null(ec_t&) { return scalar(kind::other, 0); }

  bool is_list() const noexcept { return list_; }

 private:
  void set(kind k) {
    if (current_ < k_slots) fields_[current_].k = k;
  }
  bool scalar(kind k, uint64_t u) {
    if (depth_ == 0) return not_a_list();
    if (depth_ == 1) return not_an_object();
    if (depth_ == 2) {
      set(k);
      if (current_ < k_slots) fields_[current_].u = u;
    } else if (in_shape_ && depth_ == 3) {
      if (k == kind::uint)
        shape_.push_back(u);
      else
        shape_bad_ = true;
    }
    return true;
  }
  bool fail(error e) {
    if (!first_error) first_error.emplace(std::move(e));
    out.clear();  // nothing more is kept: a later syntax error still wins, at no memory cost
    out.shrink_to_fit();
    return true;
  }
  bool not_a_list() { return fail(error(errc::delta_bad_manifest, "params: not a JSON list")); }
  bool not_an_object() {
    const bool r = fail(error(errc::delta_bad_manifest, "params: " + param_label(index_, {}) + " is not an object"));
    ++index_;
    return r;
  }
  result<uint64_t> required_u64(slot s, const std::string& label) const {
    if (fields_[s].k == kind::absent)
      return error(errc::delta_bad_manifest, "params: " + label + " has no '" + std::string(k_keys[s]) + "'");
    if (fields_[s].k != kind::uint)
      return error(errc::delta_bad_manifest,
                   "params: " + label + " '" + std::string(k_keys[s]) + "' is not a non-negative integer");
    return fields_[s].u;
  }
  result<param_entry> build() {
    const size_t i = index_;
    param_entry p;
    const field& name = fields_[k_name];
    if (name.k == kind::absent) return error(errc::delta_bad_manifest, "params: " + param_label(i, {}) + " has no 'name'");
    if (name.k != kind::string || name.s.empty())
      return error(errc::delta_bad_manifest, "params: " + param_label(i, {}) + " 'name' is not a non-empty string");
    p.name = name.s;
    const std::string label = param_label(i, p.name);
    const field& dt = fields_[k_dtype];
    if (dt.k == kind::absent) return error(errc::delta_bad_manifest, "params: " + label + " has no 'dtype'");
    if (dt.k != kind::string) return error(errc::delta_bad_manifest, "params: " + label + " 'dtype' is not a string");
    auto type = dtype_from_torch_name(dt.s);
    if (!type) return error(errc::delta_bad_manifest, "params: " + label + " has unknown dtype " + quoted(dt.s));
    p.type = *type;
    const field& shape = fields_[k_shape];
    if (shape.k == kind::absent) return error(errc::delta_bad_manifest, "params: " + label + " has no 'shape'");
    if (shape.k != kind::array) return error(errc::delta_bad_manifest, "params: " + label + " 'shape' is not a list");
    if (shape_bad_)
      return error(errc::delta_bad_manifest,
                   "params: " + label + " 'shape' holds something other than a non-negative integer");
    p.shape = shape_;
    DS_TRY_STATUS(detail::check_param_shape(p, label));
    DS_ASSIGN_OR_RETURN(p.pos_start, required_u64(k_pos_start, label));
    DS_ASSIGN_OR_RETURN(p.pos_end, required_u64(k_pos_end, label));
    DS_ASSIGN_OR_RETURN(uint64_t width, required_u64(k_pos_width, label));
    DS_ASSIGN_OR_RETURN(p.val_start, required_u64(k_val_start, label));
    DS_ASSIGN_OR_RETURN(p.val_end, required_u64(k_val_end, label));
    if (width != 1 && width != 2 && width != 4)
      return error(errc::delta_bad_pos_width,
                   "params: " + label + " pos_width " + std::to_string(width) + " is not 1, 2 or 4");
    p.pos_width = static_cast<uint32_t>(width);
    if (p.pos_start > p.pos_end) return error(errc::delta_bad_manifest, "params: " + label + " pos_start > pos_end");
    if (p.val_start > p.val_end) return error(errc::delta_bad_manifest, "params: " + label + " val_start > val_end");
    if ((p.pos_end - p.pos_start) % p.pos_width != 0)
      return error(errc::delta_bad_manifest, "params: " + label + " positions range is not a multiple of pos_width");
    if (limits_.known && !limits_.known(p.name))
      return error(errc::delta_unknown_tensor, "unknown tensor " + quoted(p.name) + " (" + label + ")");
    return p;
  }
  void finish_entry() {
    if (!first_error) {
      if (out.size() >= limits_.max_params) {
        fail(error(errc::limit_exceeded, "delta file: more than " + std::to_string(limits_.max_params) +
                                             " params (the limit)"));
      } else if (auto p = build(); !p) {
        fail(std::move(p).err());
      } else {
        out.push_back(std::move(p).value());
      }
    }
    ++index_;
  }

  const params_limits& limits_;
  int depth_ = 0;  // open containers: 1 = the list, 2 = a param object, 3+ = inside one of its values
  bool list_ = false;
  size_t index_ = 0;
  slot current_ = k_slots;
  field fields_[k_slots];
  std::vector<uint64_t> shape_;
  bool shape_bad_ = false, in_shape_ = false;
  std::string part_;
};

}  // namespace

result<std::vector<param_entry>> parse_params_json(std::string_view text, const params_limits& limits) {
  boost::json::parse_options opts;
  boost::json::basic_parser<params_handler> parser(opts, limits);
  boost::json::error_code ec;
  const size_t consumed = parser.write_some(false, text.data(), text.size(), ec);
  if (ec) return error(errc::delta_bad_manifest, "params: not valid JSON: " + ec.message());
  if (consumed != text.size()) return error(errc::delta_bad_manifest, "params: not valid JSON: extra data after the list");
  params_handler& h = parser.handler();
  if (h.first_error) return std::move(*h.first_error);
  if (!h.is_list()) return error(errc::delta_bad_manifest, "params: not a JSON list");
  return std::move(h.out);
}

}  // namespace deltasync
