// `deltasync bench`: medians, the table and recommendation, the JSON file and the SVG chart (hand-written SVG).
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include <boost/json.hpp>

#include "cli/bench.h"

namespace deltasync::cli {
namespace {

namespace json = boost::json;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string group_key(const std::string& model, double lr, const std::string& path) {
  char lr_text[32];
  std::snprintf(lr_text, sizeof(lr_text), "%.3g", lr);
  return model + "|" + lr_text + "|" + path;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

}  // namespace

std::vector<bench_summary_row> summarize(const std::vector<bench_sample>& samples) {
  std::vector<bench_summary_row> rows;
  std::vector<std::string> keys;
  std::map<std::string, std::vector<const bench_sample*>> groups;
  for (const auto& s : samples) {
    const std::string k = group_key(s.model, s.lr, s.path) + "|" + s.enc;
    if (!groups.count(k)) keys.push_back(k);
    groups[k].push_back(&s);
  }
  for (const auto& k : keys) {
    const auto& g = groups[k];
    auto med = [&](auto field) {
      std::vector<double> v;
      for (const auto* s : g) v.push_back(field(*s));
      return median(v);
    };
    bench_summary_row r;
    r.model = g[0]->model;
    r.path = g[0]->path;
    r.enc = g[0]->enc;
    r.lr = g[0]->lr;
    r.reps = static_cast<int>(g.size());
    r.density = med([](const bench_sample& s) { return s.density; });
    r.link_bps = med([](const bench_sample& s) { return s.link_bps; });
    r.wire_bytes = static_cast<uint64_t>(med([](const bench_sample& s) { return static_cast<double>(s.wire_bytes); }));
    r.files = static_cast<uint64_t>(med([](const bench_sample& s) { return static_cast<double>(s.files); }));
    r.diff_encode_s = med([](const bench_sample& s) { return s.diff_encode_s; });
    r.write_s = med([](const bench_sample& s) { return s.write_s; });
    r.sync_s = med([](const bench_sample& s) { return s.sync_s; });
    r.read_s = med([](const bench_sample& s) { return s.read_s; });
    r.decode_s = med([](const bench_sample& s) { return s.decode_s; });
    r.apply_s = med([](const bench_sample& s) { return s.apply_s; });
    r.verify_s = med([](const bench_sample& s) { return s.verify_s; });
    r.total_s = med([](const bench_sample& s) { return s.total_s(); });
    r.limit_s = med([](const bench_sample& s) { return s.limit_s(); });
    r.sync_min_s = r.sync_max_s = g[0]->sync_s;
    for (const auto* s : g) r.sync_min_s = std::min(r.sync_min_s, s->sync_s), r.sync_max_s = std::max(r.sync_max_s, s->sync_s);
    rows.push_back(r);
  }
  return rows;
}

std::map<std::string, std::string> recommendations(const std::vector<bench_summary_row>& rows) {
  std::map<std::string, std::pair<double, std::string>> best;
  for (const auto& r : rows) {
    const std::string k = group_key(r.model, r.lr, r.path);
    auto it = best.find(k);
    if (it == best.end() || r.total_s < it->second.first) best[k] = {r.total_s, r.enc};
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : best) out[k] = v.second;
  return out;
}

void print_report(const std::vector<bench_summary_row>& rows) {
  std::printf("\n%-14s %-7s %-11s %-11s %7s %9s %5s %9s %7s %7s %7s %7s %7s %7s %8s %7s %6s %7s\n", "model", "lr", "path",
              "encoding", "density", "wire MB", "files", "link MB/s", "diff s", "write s", "sync s", "read s", "decode",
              "apply", "verify", "limit s", "ratio", "target");
  for (const auto& r : rows) {
    std::printf("%-14s %-7.1e %-11s %-11s %6.3f%% %9.1f %5" PRIu64 " %9.1f %7.3f %7.3f %7.3f %7.3f %7.3f %7.3f %8.3f %7.3f %6.2f %7s\n",
                r.model.c_str(), r.lr, r.path.c_str(), r.enc.c_str(), r.density * 100, static_cast<double>(r.wire_bytes) / 1e6,
                r.files, r.link_bps / 1e6, r.diff_encode_s, r.write_s, r.sync_s, r.read_s, r.decode_s, r.apply_s, r.verify_s,
                r.limit_s, r.ratio(), r.within_target() ? "met" : "MISSED");
  }
  std::printf("\nsync s = POST /sync -> commit (median); limit s = wire bytes / the path's link throughput measured in this "
              "run; ratio = sync / limit; target: sync <= 1.15 x limit + 0.3 s. decode/apply are worker time.\n");
  std::map<std::string, std::vector<const bench_summary_row*>> groups;
  for (const auto& r : rows) groups[group_key(r.model, r.lr, r.path)].push_back(&r);
  auto rec = recommendations(rows);
  for (const auto& [k, g] : groups) {
    std::string fastest_sync;
    double best_sync = 1e300;
    for (const auto* r : g)
      if (r->sync_s < best_sync) best_sync = r->sync_s, fastest_sync = r->enc;
    std::printf("recommended for %s (%s, lr %.1e, link %.0f MB/s): %s (fastest sender+sync; fastest sync alone: %s)\n",
                g[0]->path.c_str(), g[0]->model.c_str(), g[0]->lr, g[0]->link_bps / 1e6, rec[k].c_str(), fastest_sync.c_str());
  }
}

result<bool> write_json(const std::string& path, const std::vector<bench_sample>& samples,
                        const std::vector<bench_summary_row>& rows, const std::string& machine_note) {
  json::array s_arr, r_arr;
  for (const auto& s : samples) {
    s_arr.push_back(json::object{{"model", s.model}, {"lr", s.lr}, {"path", s.path}, {"encoding", s.enc},
                                 {"density", s.density}, {"params", s.params}, {"changed", s.changed},
                                 {"wire_bytes", s.wire_bytes}, {"files", s.files}, {"diff_encode_s", s.diff_encode_s},
                                 {"write_s", s.write_s}, {"sync_s", s.sync_s}, {"read_s", s.read_s},
                                 {"decode_s", s.decode_s}, {"apply_s", s.apply_s}, {"verify_s", s.verify_s},
                                 {"link_bytes_per_s", s.link_bps}, {"limit_s", s.limit_s()}});
  }
  auto rec = recommendations(rows);
  for (const auto& r : rows) {
    r_arr.push_back(json::object{{"model", r.model}, {"lr", r.lr}, {"path", r.path}, {"encoding", r.enc},
                                 {"reps", r.reps}, {"density", r.density}, {"wire_bytes", r.wire_bytes},
                                 {"files", r.files}, {"link_bytes_per_s", r.link_bps},
                                 {"diff_encode_s", r.diff_encode_s}, {"write_s", r.write_s}, {"sync_s", r.sync_s},
                                 {"sync_min_s", r.sync_min_s}, {"sync_max_s", r.sync_max_s}, {"read_s", r.read_s},
                                 {"decode_s", r.decode_s}, {"apply_s", r.apply_s}, {"verify_s", r.verify_s},
                                 {"total_s", r.total_s}, {"limit_s", r.limit_s}, {"ratio", r.ratio()},
                                 {"within_target", r.within_target()},
                                 {"recommended", rec[group_key(r.model, r.lr, r.path)] == r.enc}});
  }
  json::object doc{{"machine", machine_note}, {"samples", std::move(s_arr)}, {"summary", std::move(r_arr)}};
  std::ofstream out(path);
  if (!out) return errno_error(errno, "open " + path);
  out << json::serialize(doc) << "\n";
  if (!out) return errno_error(errno, "write " + path);
  return true;
}

result<bool> write_svg(const std::string& path, const std::vector<bench_summary_row>& rows) {
  // One panel per (model, lr); per encoding, the fixed (non-link) time is the median over paths of sync minus
  // the path's link time, plus the sender's diff+encode; the curve adds wire / bandwidth.
  std::vector<std::string> panels;
  std::map<std::string, std::vector<const bench_summary_row*>> by_panel;
  for (const auto& r : rows) {
    char title[160];
    std::snprintf(title, sizeof(title), "%s, lr %.1e, density %.2f%%", r.model.c_str(), r.lr, r.density * 100);
    const std::string k = r.model + "|" + std::to_string(r.lr);
    if (!by_panel.count(k)) panels.push_back(k);
    by_panel[k].push_back(&r);
  }
  const double w = 640, h = 400, ml = 70, mr = 150, mt = 40, mb = 50;
  const double bw_lo = 50e6, bw_hi = 10e9;
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='" << h * static_cast<double>(panels.size())
      << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n";
  for (size_t p = 0; p < panels.size(); ++p) {
    const auto& g = by_panel[panels[p]];
    const double y0 = h * static_cast<double>(p);
    std::map<std::string, std::pair<double, double>> model;  // enc -> (fixed s, wire bytes)
    std::map<std::string, std::vector<std::pair<double, double>>> points;  // enc -> (bw, total sender+sync)
    std::map<std::string, std::vector<double>> fixed;
    for (const auto* r : g) {
      const double link_s = r->link_bps > 0 ? static_cast<double>(r->wire_bytes) / r->link_bps : 0;
      fixed[r->enc].push_back(std::max(0.0, r->sync_s - link_s) + r->diff_encode_s);
      model[r->enc].second = static_cast<double>(r->wire_bytes);
      if (r->link_bps > 0) points[r->enc].push_back({r->link_bps, r->diff_encode_s + r->sync_s});
    }
    double t_max = 0;
    for (auto& [enc, m] : model) {
      m.first = median(fixed[enc]);
      t_max = std::max(t_max, m.first + m.second / bw_lo);
    }
    for (const auto& [enc, pts] : points)
      for (const auto& pt : pts) t_max = std::max(t_max, pt.second);
    t_max = t_max > 0 ? t_max * 1.1 : 1;
    auto X = [&](double bw) { return ml + (std::log10(bw) - std::log10(bw_lo)) / (std::log10(bw_hi) - std::log10(bw_lo)) * (w - ml - mr); };
    auto Y = [&](double t) { return y0 + mt + (1 - t / t_max) * (h - mt - mb); };
    const auto& r0 = *g[0];
    char title[200];
    std::snprintf(title, sizeof(title), "%s: diff+encode + sync time vs link bandwidth (lr %.1e, density %.2f%%)", r0.model.c_str(),
                  r0.lr, r0.density * 100);
    svg << "<text x='" << ml << "' y='" << y0 + 20 << "' font-size='14'>" << xml_escape(title) << "</text>\n";
    svg << "<rect x='" << ml << "' y='" << y0 + mt << "' width='" << w - ml - mr << "' height='" << h - mt - mb
        << "' fill='none' stroke='#444'/>\n";
    for (double bw : {50e6, 100e6, 300e6, 1e9, 3e9, 10e9}) {
      svg << "<line x1='" << X(bw) << "' x2='" << X(bw) << "' y1='" << y0 + mt << "' y2='" << y0 + h - mb
          << "' stroke='#ddd'/><text x='" << X(bw) << "' y='" << y0 + h - mb + 15 << "' text-anchor='middle'>"
          << (bw >= 1e9 ? std::to_string(static_cast<int>(bw / 1e9)) + " GB/s" : std::to_string(static_cast<int>(bw / 1e6)) + " MB/s")
          << "</text>\n";
    }
    for (int i = 0; i <= 4; ++i) {
      const double t = t_max * i / 4;
      char lbl[32];
      std::snprintf(lbl, sizeof(lbl), "%.2f s", t);
      svg << "<text x='" << ml - 5 << "' y='" << Y(t) + 4 << "' text-anchor='end'>" << lbl << "</text>\n";
    }
    svg << "<text x='" << (ml + w - mr) / 2 << "' y='" << y0 + h - 10 << "' text-anchor='middle'>link bandwidth (log)</text>\n";
    size_t c = 0;
    for (const auto& [enc, m] : model) {
      const char* color = colors[c % 5];
      svg << "<polyline fill='none' stroke='" << color << "' stroke-width='2' points='";
      for (int i = 0; i <= 60; ++i) {
        const double bw = bw_lo * std::pow(bw_hi / bw_lo, i / 60.0);
        svg << X(bw) << "," << Y(m.first + m.second / bw) << " ";
      }
      svg << "'/>\n";
      for (const auto& pt : points[enc])
        svg << "<circle cx='" << X(std::clamp(pt.first, bw_lo, bw_hi)) << "' cy='" << Y(pt.second) << "' r='4' fill='" << color
            << "'/>\n";
      char lbl[96];
      std::snprintf(lbl, sizeof(lbl), "%s (%.1f MB)", enc.c_str(), m.second / 1e6);
      svg << "<line x1='" << w - mr + 10 << "' x2='" << w - mr + 30 << "' y1='" << y0 + mt + 15 + 18.0 * static_cast<double>(c)
          << "' y2='" << y0 + mt + 15 + 18.0 * static_cast<double>(c) << "' stroke='" << color << "' stroke-width='2'/><text x='"
          << w - mr + 35 << "' y='" << y0 + mt + 19 + 18.0 * static_cast<double>(c) << "'>" << xml_escape(lbl) << "</text>\n";
      ++c;
    }
    svg << "<text x='" << w - mr + 10 << "' y='" << y0 + mt + 30 + 18.0 * static_cast<double>(c)
        << "' font-size='10'>lines: model, dots: measured</text>\n";
  }
  svg << "</svg>\n";
  std::ofstream out(path);
  if (!out) return errno_error(errno, "open " + path);
  out << svg.str();
  if (!out) return errno_error(errno, "write " + path);
  return true;
}

}  // namespace deltasync::cli
