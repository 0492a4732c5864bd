// docs/openapi.json against the server it documents: walks the receiver's route table (http::router::routes())
// and fails on any route the document lacks or documents without serving; requires every status a route can
// answer to be documented for it: the server's own (400, 401, 413, 500), every status the error mapping
// (http_status_for) gives for a /sync refusal, and every status seen when a real server on loopback is
// probed with missing tokens, bad bodies, oversize bodies and refused syncs. Also checks that the document
// is OpenAPI 3, every response has a description and every $ref resolves.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "http/receiver_routes.h"
#include "http/server.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/worker_pool.h"
#include "sync/receiver.h"
#include "sync/weight_store.h"

namespace deltasync::http {
namespace {

namespace json = boost::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

json::object load_document() {
  const std::string path = std::string(DS_TEST_DATA_DIR) + "/../../docs/openapi.json";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  json::error_code ec;
  json::value v = json::parse(ss.str(), ec);
  EXPECT_FALSE(ec) << path << " is not JSON: " << ec.message();
  EXPECT_TRUE(v.is_object());
  return v.is_object() ? v.as_object() : json::object{};
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The documented statuses of (method, path); empty when the operation is not documented.
std::set<unsigned> documented(const json::object& doc, const std::string& method, const std::string& path) {
  std::set<unsigned> out;
  const json::value* paths = doc.if_contains("paths");
  if (!paths || !paths->is_object()) return out;
  const json::value* item = paths->as_object().if_contains(path);
  if (!item || !item->is_object()) return out;
  const json::value* op = item->as_object().if_contains(lower(method));
  if (!op || !op->is_object()) return out;
  const json::value* responses = op->as_object().if_contains("responses");
  if (!responses || !responses->is_object()) return out;
  for (const auto& kv : responses->as_object()) out.insert(static_cast<unsigned>(std::stoul(std::string(kv.key()))));
  return out;
}

// A receiver with a one-tensor host store behind the real routes and server (token "s3cret", 4 KiB bodies).
struct served_receiver {
  io::event_loop loop;
  std::filesystem::path delta_dir;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<host_weight_store> store;
  std::unique_ptr<receiver> rx;
  metrics_registry metrics;
  std::unique_ptr<http_server> server;

  served_receiver() {
    delta_dir = std::filesystem::temp_directory_path() / ("ds_openapi_" + std::to_string(::getpid()));
    std::filesystem::create_directories(delta_dir / "weight_v000001");
    io::io_backend_options bo;
    bo.backend = "threads";
    backend = std::move(io::make_io_backend(loop, bo)).value();
    io::buffer_pool_options po;
    po.buffer_bytes = 4096;
    po.max_total_bytes = 256 << 10;
    po.lock_memory = false;
    pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
    workers = std::make_unique<io::worker_pool>(loop, 1, 16);
    std::vector<std::pair<store_tensor, byte_buffer>> t;
    t.push_back({store_tensor{"w", dtype::BF16, {4, 4}, 16, 32}, byte_buffer(32)});
    store = host_weight_store::from_tensors(std::move(t));
    receiver_options ro;
    ro.delta_dir = delta_dir.string();
    rx = std::make_unique<receiver>(loop, *backend, *pool, *workers, *store, ro, &metrics);
  }
  router routes() { return make_receiver_routes(*rx, *workers, metrics); }
  void start() {
    server_options so;
    so.bearer_token = "s3cret";
    so.max_body_bytes = 4096;
    server = std::move(http_server::start(loop, so, routes())).value();
  }
  ~served_receiver() {
    server.reset();
    rx.reset();
    workers.reset();
    pool.reset();
    backend.reset();
    std::error_code ec;
    std::filesystem::remove_all(delta_dir, ec);
  }
};

// One request on its own connection; the status, or 0 when no answer came.
unsigned call(uint16_t port, const std::string& method, const std::string& path, const std::string& body,
              bool token) {
  asio::io_context ctx;
  beast::tcp_stream stream(ctx);
  stream.expires_after(std::chrono::seconds(10));
  beast::error_code ec;
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return 0;
  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), path, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::content_type, "application/json");
  if (token) req.set(bhttp::field::authorization, "Bearer s3cret");
  req.body() = body;
  req.prepare_payload();
  bhttp::write(stream, req, ec);
  if (ec) return 0;
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(stream, buf, res, ec);
  if (ec) return 0;
  return res.result_int();
}

TEST(openapi_test, document_is_openapi_3_with_described_responses_and_resolvable_refs) {
  const json::object doc = load_document();
  ASSERT_TRUE(doc.contains("openapi"));
  EXPECT_EQ(std::string(doc.at("openapi").as_string()).substr(0, 2), "3.");
  ASSERT_TRUE(doc.contains("components"));
  const json::object& schemas = doc.at("components").at("schemas").as_object();
  // Every $ref anywhere in the document names an existing schema.
  std::vector<const json::value*> stack{&doc.at("paths"), &doc.at("components")};
  size_t refs = 0;
  while (!stack.empty()) {
    const json::value* v = stack.back();
    stack.pop_back();
    if (v->is_object()) {
      for (const auto& kv : v->as_object()) {
        if (kv.key() == "$ref") {
          ++refs;
          const std::string r(kv.value().as_string());
          const std::string prefix = "#/components/schemas/";
          ASSERT_EQ(r.rfind(prefix, 0), 0u) << r;
          EXPECT_TRUE(schemas.contains(r.substr(prefix.size()))) << "unresolved " << r;
        } else {
          stack.push_back(&kv.value());
        }
      }
    } else if (v->is_array()) {
      for (const auto& e : v->as_array()) stack.push_back(&e);
    }
  }
  EXPECT_GT(refs, 10u);
  for (const auto& p : doc.at("paths").as_object())
    for (const auto& op : p.value().as_object())
      for (const auto& r : op.value().at("responses").as_object())
        EXPECT_TRUE(r.value().as_object().contains("description")) << p.key() << " " << op.key() << " " << r.key();
}

TEST(openapi_test, every_route_is_documented_and_every_documented_route_is_served) {
  const json::object doc = load_document();
  served_receiver s;
  const router r = s.routes();
  std::set<std::pair<std::string, std::string>> served;
  for (const auto& route : r.routes()) {
    served.insert({lower(route.method), route.path});
    EXPECT_FALSE(documented(doc, route.method, route.path).empty())
        << route.method << " " << route.path << " is served but docs/openapi.json does not document it";
  }
  EXPECT_GE(served.size(), 8u);
  for (const auto& p : doc.at("paths").as_object())
    for (const auto& op : p.value().as_object())
      EXPECT_TRUE(served.count({std::string(op.key()), std::string(p.key())}))
          << op.key() << " " << p.key() << " is documented but not served";
}

TEST(openapi_test, every_status_a_route_can_answer_is_documented) {
  const json::object doc = load_document();
  served_receiver s;
  const router r = s.routes();
  // The server's own answers, for every route (no 401 for GET /healthz: it needs no token).
  for (const auto& route : r.routes()) {
    const auto doc_statuses = documented(doc, route.method, route.path);
    std::set<unsigned> required{200, 400, 413, 500};
    if (!(route.method == "GET" && route.path == "/healthz")) required.insert(401);
    for (unsigned st : required)
      EXPECT_TRUE(doc_statuses.count(st)) << route.method << " " << route.path << ": status " << st << " undocumented";
  }
  // Every status the error mapping gives a /sync refusal (every error code the project has).
  const auto sync_doc = documented(doc, "POST", "/sync");
  for (auto [lo, hi] : {std::pair{1, 20}, {100, 130}, {200, 220}, {300, 340}, {400, 430}}) {
    for (int v = lo; v < hi; ++v) {
      const auto e = static_cast<errc>(v);
      if (errc_name(e) == "unknown_error") continue;
      const unsigned st = http_status_for(error(e, "probe"));
      EXPECT_TRUE(sync_doc.count(st)) << "POST /sync: " << errc_name(e) << " answers " << st << ", undocumented";
    }
  }
  // What a real server answers to probes on every route.
  s.start();
  const uint16_t port = s.server->port();
  const std::string big(8192, 'x');
  const std::vector<std::string> sync_bodies = {
      R"({"version": 1, "base_version": 0, "dir": "weight_v000001", "files": ["missing.safetensors"]})",
      R"({"version": 2, "base_version": 7, "dir": "weight_v000001", "files": ["a.safetensors"]})",
      R"({"version": 1, "base_version": 0, "dir": "../etc", "files": ["passwd"]})",
      R"({"version": 1, "base_version": 0, "transport": "http", "base_url": "http://127.0.0.1:1/", "dir": "weight_v000001", "files": ["a.safetensors"]})",
      R"({"model_path": "weight_v000001", "load_format": "delta", "weight_version": "1", "files": ["missing.safetensors"]})",
      R"({"unique_id": "AAAA", "nranks": 2, "rank": 1})"};
  size_t probes = 0;
  for (const auto& route : r.routes()) {
    const auto doc_statuses = documented(doc, route.method, route.path);
    std::vector<std::pair<std::string, bool>> tries = {{"", false}, {"", true}, {"not json", true}, {"{}", true}, {big, true}};
    for (const auto& b : sync_bodies) tries.push_back({b, true});
    for (const auto& [body, token] : tries) {
      const unsigned st = call(port, route.method, route.path, body, token);
      ASSERT_NE(st, 0u) << route.method << " " << route.path << ": no answer";
      ++probes;
      EXPECT_TRUE(doc_statuses.count(st)) << route.method << " " << route.path << " answered " << st
                                          << " (body '" << body.substr(0, 60) << "'), undocumented";
    }
  }
  EXPECT_GE(probes, 8u * 11u);
}

}  // namespace
}  // namespace deltasync::http
