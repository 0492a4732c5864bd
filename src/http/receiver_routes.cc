// Route handlers: parse, hand to the receiver, map results and errors to the documented JSON and status.
#include "http/receiver_routes.h"

#include <boost/json.hpp>
#include <chrono>
#include <optional>

#include "base/features.h"
#include "base/log.h"
#include "base/text_escape.h"
#include "codec/digest.h"
#include "io/worker_pool.h"
#include "sync/catch_up.h"
#include "sync/nccl_member.h"

namespace deltasync::http {
namespace {

namespace json = boost::json;

response json_ok(const json::value& v) {
  response r;
  r.body = json::serialize(v);
  return r;
}

response sync_error(const error& e, uint64_t current_version) {
  json::object o;
  o["error"] = escape_control(e.describe());  // names from requests and files (base/text_escape.h)
  o["code"] = std::string(e.code.category() == deltasync_category() ? errc_name(static_cast<errc>(e.code.value()))
                                                                     : std::string_view("system"));
  o["current_version"] = current_version;
  response r;
  r.status = http_status_for(e);
  r.body = json::serialize(o);
  if (e.is(errc::busy)) r.retry_after_s = 1;  // a sync, a catch-up or a recovery ends by itself
  return r;
}

json::object stats_json(const sync_stats& s) {
  json::object o;
  o["version"] = s.version;
  o["base_version"] = s.base_version;
  o["files"] = s.files;
  o["params"] = s.params;
  o["changed_elements"] = s.changed_elements;
  o["bytes_read"] = s.bytes_read;
  o["format"] = s.native ? "native" : "slime";
  json::object t;
  t["read"] = s.read_ms;
  t["decode"] = s.decode_ms;
  t["apply"] = s.apply_ms;
  t["verify"] = s.verify_ms;
  t["total"] = s.total_ms;
  o["timings_ms"] = std::move(t);
  return o;
}

// Shared state of the routes.
struct route_state {
  receiver& rx;
  io::worker_pool& workers;
  metrics_registry& metrics;
  nccl_member* nccl = nullptr;
  io::event_loop* loop = nullptr;  // set: online catch-up
  bool catching_up = false;
  bool recovering = false;                      // serve --recover replaying the kept chain (pushes: 503)
  std::optional<recovery_report> recovered = std::nullopt;  // what that recovery replayed, once done
  bool sglang_allow_version_gap = false;
  std::optional<recovery_report> last_catch_up = std::nullopt;
  std::optional<std::chrono::steady_clock::time_point> last_sync_at = std::nullopt;  // last sync committed via a route
};

json::object recovery_json(const recovery_report& rep) {
  json::array replayed, skipped;
  for (const auto& s : rep.replayed)
    replayed.push_back(json::object{{"dir", s.dir},
                                    {"base_version", s.base_version},
                                    {"version", s.version},
                                    {"files", s.files},
                                    {"changed_elements", s.changed_elements},
                                    {"ms", s.ms},
                                    {"anchor", s.anchor}});
  for (const auto& s : rep.skipped) skipped.push_back(json::object{{"dir", escape_control(s.dir)}, {"reason", escape_control(s.reason)}});
  return json::object{{"from_version", rep.from_version},
                      {"to_version", rep.to_version},
                      {"replayed", std::move(replayed)},
                      {"skipped", std::move(skipped)}};
}

response route_error(receiver& rx, const error& e, bool sglang) {
    if (!sglang) return sync_error(e, rx.store().version());
    json::object o;
    o["success"] = false;
    o["message"] = escape_control(e.describe());
    o["num_paused_requests"] = 0;
    response r;
    r.status = 400;
    r.body = json::serialize(o);
    return r;
}

void run_sync(const std::shared_ptr<route_state>& st, sync_request req, responder respond,
              std::optional<recovery_report> caught, bool sglang = false);

void start_sync_route(const std::shared_ptr<route_state>& st, result<sync_request> req, responder respond,
                      bool sglang) {
  receiver& rx = st->rx;
  auto answer_error = [&rx, sglang](const error& e) { return route_error(rx, e, sglang); };
  if (!req) return respond(answer_error(req.err()));
  if (st->recovering)
    return respond(answer_error(error(errc::busy, "recovering: replaying the kept chain after a restart; retry shortly")));
  if (st->catching_up) return respond(answer_error(error(errc::busy, "catching up on the kept chain; retry shortly")));
  const uint64_t cur = rx.store().version();
  if (sglang && !st->sglang_allow_version_gap && req->version != cur + 1)
    return respond(answer_error(error(
        errc::version_conflict, "weight_version " + std::to_string(req->version) + " is not the store's version " +
                                    std::to_string(cur) + " + 1: slime files are deltas against the previous "
                                    "version, so applying them across a gap would corrupt the weights; refused, "
                                    "the store is unchanged (serve --sglang-allow-version-gap accepts it)")));
  if (sglang || st->loop == nullptr) return run_sync(st, std::move(req).value(), std::move(respond), std::nullopt, sglang);
  if (req->version == cur) {
    // A retry of the version held: idempotent when its marker matches, else refused as not newer by run_sync.
    st->catching_up = true;  // the marker check may go out to the file server: nothing else starts meanwhile
    auto held = std::make_shared<sync_request>(std::move(req).value());
    return check_idempotent(rx, *held, [st, held, respond, cur](bool same) mutable {
      st->catching_up = false;
      if (!same) return run_sync(st, std::move(*held), std::move(respond), std::nullopt);
      respond(json_ok(json::object{{"version", cur}, {"idempotent", true},
                                   {"message", "version " + std::to_string(cur) + " already applied (marker matches)"}}));
    });
  }
  if (needs_catch_up(rx, *req)) {
    st->catching_up = true;
    const sync_request push = *req;
    return start_catch_up(rx, *st->loop, push,
                          [st, req = std::move(req).value(), respond](recovery_report rep, std::optional<error> gap) mutable {
                            st->catching_up = false;
                            st->last_catch_up = rep;
                            if (gap) {
                              response out = sync_error(*gap, st->rx.store().version());
                              auto body = json::parse(out.body).as_object();
                              body["caught_up"] = recovery_json(rep);
                              out.body = json::serialize(body);
                              return respond(std::move(out));
                            }
                            run_sync(st, std::move(req), std::move(respond), std::move(rep));
                          });
  }
  run_sync(st, std::move(req).value(), std::move(respond), std::nullopt);
}

void run_sync(const std::shared_ptr<route_state>& st, sync_request req, responder respond,
              std::optional<recovery_report> caught, bool sglang) {
  receiver& rx = st->rx;
  auto answer_error = [&rx, sglang](const error& e) { return route_error(rx, e, sglang); };
  rx.start_sync(std::move(req), [st, respond, answer_error, sglang, caught = std::move(caught)](result<sync_stats> r) {
    if (!r) {
      response out = answer_error(r.err());
      if (caught) {
        auto body = json::parse(out.body).as_object();
        body["caught_up"] = recovery_json(*caught);
        out.body = json::serialize(body);
      }
      return respond(std::move(out));
    }
    st->last_sync_at = std::chrono::steady_clock::now();
    if (!sglang) {
      json::object o = stats_json(*r);
      if (caught) o["caught_up"] = recovery_json(*caught);
      return respond(json_ok(o));
    }
    json::object o;
    o["success"] = true;
    o["message"] = "applied version " + std::to_string(r->version) + ": " + std::to_string(r->changed_elements) +
                   " changed elements from " + std::to_string(r->files) + " files";
    o["num_paused_requests"] = 0;
    respond(json_ok(o));
  });
}

json::object nccl_json(const nccl_member_info& i) {
  json::object o;
  o["state"] = std::string(nccl_state_name(i.state));
  o["group"] = i.group;
  o["rank"] = i.rank;
  o["nranks"] = i.nranks;
  o["device"] = i.device;
  o["syncs_received"] = i.syncs_received;
  o["bytes_received"] = i.bytes_received;
  if (!i.last_error.empty()) o["last_error"] = escape_control(i.last_error);
  return o;
}

// POST /nccl/init joins the sender's group (answered once this rank is in: the sender joins rank 0 at the
// same time, so the call cannot deadlock); DELETE /nccl/init leaves it. The join runs on the group's own
// thread, never on the loop.
void add_nccl_routes(router& r, const std::shared_ptr<route_state>& st) {
  r.add("POST", "/nccl/init", [st](const request& req, responder respond) {
    const uint64_t cur = st->rx.store().version();
    if (!st->nccl) return respond(sync_error(error(errc::unsupported, "NCCL transport not built"), cur));
    auto join = parse_nccl_join(req.body);
    if (!join) return respond(sync_error(join.err(), cur));
    if (st->rx.busy()) return respond(sync_error(error(errc::busy, "a sync is in progress"), cur));
    st->nccl->join(std::move(join).value(), [st, respond](status s) {
      if (!s) return respond(sync_error(s.err(), st->rx.store().version()));
      respond(json_ok(json::object{{"ok", true}, {"nccl", nccl_json(st->nccl->info())}}));
    });
  });
  r.add("DELETE", "/nccl/init", [st](const request&, responder respond) {
    const uint64_t cur = st->rx.store().version();
    if (!st->nccl) return respond(sync_error(error(errc::unsupported, "NCCL transport not built"), cur));
    st->nccl->leave([st, respond](status s) {
      if (!s) return respond(sync_error(s.err(), st->rx.store().version()));
      respond(json_ok(json::object{{"ok", true}, {"nccl", nccl_json(st->nccl->info())}}));
    });
  });
}

}  // namespace

router make_receiver_routes(receiver& rx, io::worker_pool& workers, metrics_registry& metrics, nccl_member* nccl) {
  route_options o;
  o.nccl = nccl;
  return make_receiver_routes(rx, workers, metrics, o);
}

router make_receiver_routes(receiver& rx, io::worker_pool& workers, metrics_registry& metrics,
                            const route_options& options) {
  auto st = std::make_shared<route_state>(route_state{rx, workers, metrics});
  st->nccl = options.nccl;
  st->loop = options.loop;
  st->sglang_allow_version_gap = options.sglang_allow_version_gap;
  if (options.start_recovery) {
    st->recovering = true;
    options.start_recovery([st](recovery_report rep) {
      st->recovered = std::move(rep);
      st->recovering = false;
    });
  }
  router r;
  add_nccl_routes(r, st);
  r.add("POST", "/sync", [st](const request& req, responder respond) {
    start_sync_route(st, parse_sync_request(req.body, st->rx.options().limits), std::move(respond), false);
  });
  r.add("POST", "/update_weights_from_disk", [st](const request& req, responder respond) {
    start_sync_route(st, parse_sglang_request(req.body, st->rx.options().delta_dir, st->rx.options().limits),
                     std::move(respond), true);
  });
  r.add("GET", "/healthz", [](const request&, responder respond) { respond(json_ok(json::object{{"ok", true}})); });
  r.add("GET", "/status", [st](const request&, responder respond) {
    weight_store& store = st->rx.store();
    json::object o;
    o["version"] = store.version();
    o["deltasync_version"] = DELTASYNC_VERSION;
    o["sync_in_flight"] = st->rx.busy();
    o["store"] = json::object{{"kind", std::string(store.kind())}, {"tensors", store.size()}, {"bytes", store.total_bytes()}};
    if (st->rx.last_sync()) o["last_sync"] = stats_json(*st->rx.last_sync());
    if (st->last_sync_at)
      o["last_sync_age_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - *st->last_sync_at).count();
    if (st->rx.last_error()) o["last_error"] = escape_control(st->rx.last_error()->describe());
    if (st->nccl) o["nccl"] = nccl_json(st->nccl->info());
    if (st->recovered) o["recovery"] = recovery_json(*st->recovered);
    if (st->recovering || st->recovered) o["recovering"] = st->recovering;
    if (st->loop) o["catching_up"] = st->catching_up;
    if (st->last_catch_up) o["last_catch_up"] = recovery_json(*st->last_catch_up);
    respond(json_ok(o));
  });
  r.add("GET", "/metrics", [st](const request&, responder respond) {
    response out;
    out.content_type = "text/plain; version=0.0.4";
    out.body = st->metrics.render();
    // The build, as Prometheus' *_build_info convention has it: a gauge of 1 whose labels carry the facts.
    out.body += "# HELP deltasync_build_info The running deltasync build (always 1): version and compiled-in features.\n"
                "# TYPE deltasync_build_info gauge\n"
                "deltasync_build_info{version=\"" DELTASYNC_VERSION "\",cuda=\"" +
                std::string(DELTASYNC_HAVE_CUDA ? "yes" : "no") + "\",nccl=\"" +
                std::string(DELTASYNC_HAVE_NCCL ? "yes" : "no") + "\"} 1\n";
    respond(std::move(out));
  });
  r.add("GET", "/checksums", [st](const request&, responder respond) {
    // Computed by the receiver between syncs (receiver::checksums): a sync in flight is waited for, and a
    // sync that arrives meanwhile is never refused for it.
    if (st->catching_up || st->recovering)
      return respond(sync_error(error(errc::busy, "catching up on the kept chain; ask again after it commits"),
                                st->rx.store().version()));
    st->rx.checksums([st, respond](result<receiver::checksums_result> got) {
      if (!got) return respond(sync_error(got.err(), st->rx.store().version()));
      weight_store& store = st->rx.store();
      json::object tensors;
      for (size_t i = 0; i < store.size(); ++i) {
        const store_tensor& t = store.tensor(i);
        json::array shape;
        for (uint64_t d : t.shape) shape.push_back(d);
        tensors[t.name] = json::object{{"dtype", std::string(name(t.type))},
                                       {"shape", std::move(shape)},
                                       {"xxh3_128", to_hex(got->digests[i])}};
      }
      response out;
      out.body = json::serialize(json::object{{"version", got->version}, {"tensors", std::move(tensors)}});
      respond(std::move(out));
    });
  });
  return r;
}

}  // namespace deltasync::http
