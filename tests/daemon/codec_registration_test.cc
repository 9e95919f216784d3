// Registration compiles a service's codecs on mrpcd's compile thread: once per schema (a second
// app pays nothing), never holding the runtime (other apps' calls go on while a schema compiles),
// within a compile budget (past it the registration fails, not the daemon), with an on-disk object
// cache in a directory mrpcd owns; transports reach the codecs through TransportCodecs, whose
// fast first-tier code is swapped for optimized code in the background.
#include <doctest/doctest.h>
#include <google/protobuf/descriptor.pb.h>
#include <sys/stat.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "../../daemon/control_server.h"
#include "../codec/codec_test_support.h"
#include "embedded_daemon.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/transports/codec.h"

using namespace mrpc;
using namespace mrpc::testing;
namespace pb = google::protobuf;

namespace {

codec_testing::ProtoLibrary& protos() {
  static codec_testing::ProtoLibrary library;
  return library;
}

// The serialized FileDescriptorSet of `file` and everything it imports.
std::string file_descriptor_set(const std::string& path, const std::string& any_type) {
  const pb::FileDescriptor* root = protos().message(path, any_type).file();
  pb::FileDescriptorSet set;
  std::set<std::string> added;
  std::vector<const pb::FileDescriptor*> stack{root};
  std::vector<const pb::FileDescriptor*> order;
  while (!stack.empty()) {
    const pb::FileDescriptor* file = stack.back();
    stack.pop_back();
    if (!added.insert(file->name()).second) continue;
    order.push_back(file);
    for (int i = 0; i < file->dependency_count(); ++i) stack.push_back(file->dependency(i));
  }
  for (const pb::FileDescriptor* file : order) file->CopyTo(set.add_file());
  return set.SerializeAsString();
}

const std::string& hotel_profile_set() {
  static const std::string bytes =
      file_descriptor_set("examples/protos/hotel/profile.proto", "hotel.ProfileResult");
  return bytes;
}

// A gate on mrpcd's compile thread (DaemonConfig::codec_compile_hook): while closed, the next
// registration waits at it.
struct CompileGate {
  std::mutex mutex;
  std::condition_variable changed;
  bool closed = false;
  int waiting = 0;

  void pass() {
    std::unique_lock lock(mutex);
    ++waiting;
    changed.notify_all();
    changed.wait(lock, [this] { return !closed; });
    --waiting;
  }
  void set_closed(bool value) {
    std::lock_guard lock(mutex);
    closed = value;
    changed.notify_all();
  }
  int waiting_now() {
    std::lock_guard lock(mutex);
    return waiting;
  }
};

// TransportCodecs as a test sees it: through Daemon::service_codecs (the daemon's transports use
// the registry directly, on the runtime thread).
struct DaemonCodecs final : TransportCodecs {
  explicit DaemonCodecs(Daemon& embedded) : daemon(embedded) {}
  std::shared_ptr<const ServiceCodecs> service(uint32_t service_id) const override {
    return daemon.service_codecs(service_id);
  }
  Daemon& daemon;
};

nlohmann::json codec_stats_json(EmbeddedDaemon& daemon) {
  auto reply = ControlServer::request(daemon.control_socket(), "stats");
  REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
  return nlohmann::json::parse(*reply).at("codecs");
}

}  // namespace

TEST_CASE("a schema is compiled once: a second app registering it is a cache hit") {
  EmbeddedDaemon daemon;
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  auto registration = client->register_service(kEchoService, false);
  REQUIRE(registration.status == StatusCode::kOk);
  CHECK(registration.service_id == server.service_id());
  check_echo_works(*client, registration.service_id, 1);

  const CodecStats stats = daemon.daemon.codec_stats();
  CHECK(stats.compiles == 1);
  CHECK(stats.cache_hits == 1);
  CHECK(stats.failures == 0);
  CHECK(stats.registrations_pending == 0);
  REQUIRE(stats.schemas.size() == 1);
  const CodecSchemaStats& schema = stats.schemas[0];
  CHECK(schema.first_service == kEchoService);
  CHECK(schema.registrations == 2);
  CHECK(schema.functions == 8);  // four codecs each of EchoRequest and EchoReply
  CHECK(schema.instructions > 0);
  CHECK(schema.compile_nanoseconds > 0);
  CHECK(stats.compile_nanoseconds == schema.generate_nanoseconds + schema.compile_nanoseconds);

  // The same in the stats JSON of the control socket.
  const nlohmann::json codecs = codec_stats_json(daemon);
  CHECK(codecs.at("compiles") == 1);
  CHECK(codecs.at("cache_hits") == 1);
  REQUIRE(codecs.at("schemas").size() == 1);
  CHECK(codecs.at("schemas")[0].at("first_service") == std::string(kEchoService));
  CHECK(codecs.at("schemas")[0].at("compile_ms").get<double>() > 0);
  CHECK(codecs.at("schemas")[0].at("registrations") == 2);
}

TEST_CASE("a schema whose services were all dropped is unloaded at the next registration") {
  // No grace period: the registration goes with its last app (else its owner's uid keeps it).
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.service_grace_period = std::chrono::nanoseconds(0);
  EmbeddedDaemon daemon(config);
  auto hotel = TestApp::connect(daemon.app_socket(), "hotel");
  auto registration = hotel->register_service("hotel.Profile", true, hotel_profile_set());
  REQUIRE(registration.status == StatusCode::kOk);
  CHECK(daemon.daemon.codec_stats().cached_schemas == 1);
  hotel->disconnect();
  REQUIRE(eventually([&] { return daemon.daemon.stats().services == 0; }));

  EchoServer server(daemon.app_socket());
  const CodecStats stats = daemon.daemon.codec_stats();
  CHECK(stats.compiles == 2);
  CHECK(stats.cached_schemas == 1);
  REQUIRE(stats.schemas.size() == 1);
  CHECK(stats.schemas[0].first_service == kEchoService);
}

TEST_CASE("another app's calls complete while a schema compiles, and the registration waits") {
  CompileGate gate;
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.codec_compile_hook = [&gate] { gate.pass(); };
  EmbeddedDaemon daemon(config);
  EchoServer server(daemon.app_socket());
  auto client = TestApp::connect(daemon.app_socket(), "client");
  auto registration = client->register_service(kEchoService, false);
  REQUIRE(registration.status == StatusCode::kOk);

  // The hotel schema's registration is held on the compile thread...
  gate.set_closed(true);
  auto hotel = TestApp::connect(daemon.app_socket(), "hotel");
  const uint64_t request = hotel->send_register_service("hotel.Profile", true, hotel_profile_set());
  REQUIRE(eventually([&] { return gate.waiting_now() == 1; }));
  CHECK(daemon.daemon.codec_stats().registrations_pending == 1);

  // ... while the other app's calls go through the runtime, one after another.
  for (uint64_t call = 1; call <= 200; ++call)
    check_echo_works(*client, registration.service_id, call);
  // Its answer has not come: it waits for its codecs (and mrpcd still answers stats).
  CHECK_FALSE(hotel->control_message_waiting());
  CHECK(codec_stats_json(daemon).at("registrations_pending") == 1);

  gate.set_closed(false);
  auto hotel_registration = hotel->receive_registration(request);
  CHECK_MESSAGE(hotel_registration.status == StatusCode::kOk, hotel->registration_detail());
  const CodecStats stats = daemon.daemon.codec_stats();
  CHECK(stats.compiles == 2);
  CHECK(stats.registrations_pending == 0);
  REQUIRE(stats.schemas.size() == 2);
  CHECK(stats.schemas[1].first_service == "hotel.Profile");
  check_echo_works(*client, registration.service_id, 1000);
}

TEST_CASE("a schema past the compile budget fails its registration and the daemon serves on") {
  // Learn the echo schema's size, then give a daemon exactly that budget.
  uint64_t echo_instructions = 0;
  {
    EmbeddedDaemon probe;
    EchoServer server(probe.app_socket());
    const CodecStats stats = probe.daemon.codec_stats();
    REQUIRE(stats.schemas.size() == 1);
    echo_instructions = stats.schemas[0].instructions;
  }
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.codec_max_instructions = echo_instructions;
  EmbeddedDaemon daemon(config);
  EchoServer server(daemon.app_socket());  // fits
  auto hotel = TestApp::connect(daemon.app_socket(), "hotel");
  auto refused = hotel->register_service("hotel.Profile", true, hotel_profile_set());
  CHECK(refused.status == StatusCode::kResourceExhausted);
  const std::string detail = hotel->registration_detail();
  CHECK_MESSAGE(detail.find("hotel.Profile") != std::string::npos, detail);
  CHECK_MESSAGE(
      detail.find("compile budget of " + std::to_string(echo_instructions)) != std::string::npos,
      detail);
  CHECK(daemon.daemon.codec_stats().failures == 1);
  CHECK(daemon.daemon.stats().services == 1);

  // The refused app is still connected and may register what fits; calls go on.
  auto again = hotel->register_service(kEchoService, false);
  CHECK(again.status == StatusCode::kOk);
  check_echo_works(*hotel, again.service_id, 1);

  // Bad schemas fail on the compile thread with the schema's own error, as before.
  auto garbage = hotel->register_service(kEchoService, false, "not a descriptor set");
  CHECK(garbage.status == StatusCode::kInvalidArgument);
  auto missing = hotel->register_service("echo.NoSuchService", false);
  CHECK(missing.status == StatusCode::kNotFound);
}

TEST_CASE("the object cache lives in a 0700 directory mrpcd owns and serves a restarted daemon") {
  TempDir dir;
  const std::string cache = dir.path("codec-cache");
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    DaemonConfig config = EmbeddedDaemon::small_config();
    config.codec_cache_dir = cache;
    EmbeddedDaemon daemon(config);
    EchoServer server(daemon.app_socket());
    const CodecStats stats = daemon.daemon.codec_stats();
    CHECK(stats.compiles == 1);
    // The second daemon loads the machine code the first one stored (the fast tier's, and the
    // optimized tier's if the first daemon's tier-up stored it and this one's has run already).
    if (round == 0) {
      CHECK(stats.object_cache_hits == 0);
    } else {
      CHECK(stats.object_cache_hits >= 1);
    }
    struct stat info {};
    REQUIRE(::stat(cache.c_str(), &info) == 0);
    CHECK((info.st_mode & 0777) == 0700);
  }

  // The default: jit-cache next to the app socket.
  {
    EmbeddedDaemon daemon;
    CHECK(std::filesystem::is_directory(daemon.dir.path("jit-cache")));
  }

  // A directory others may write is refused at start.
  const std::string open_dir = dir.path("open-cache");
  std::filesystem::create_directory(open_dir);
  REQUIRE(::chmod(open_dir.c_str(), 0777) == 0);
  DaemonConfig config = EmbeddedDaemon::small_config();
  config.codec_cache_dir = open_dir;
  config.app_socket_path = dir.path("app.sock");
  config.control_socket_path = dir.path("control.sock");
  Daemon refused(config, MonotonicClock::instance());
  const Status started = refused.start();
  CHECK(started.code() == StatusCode::kFailedPrecondition);
  CHECK_MESSAGE(started.message().find(open_dir) != std::string::npos, started.to_string());
}

TEST_CASE("transport codecs round-trip a registered app's message through libprotobuf") {
  EmbeddedDaemon daemon;
  auto app = TestApp::connect(daemon.app_socket(), "server");
  auto registration = app->register_service(kEchoService, true);
  REQUIRE(registration.status == StatusCode::kOk);
  DaemonCodecs codecs(daemon.daemon);
  auto service = codecs.service(registration.service_id);
  REQUIRE(service != nullptr);
  REQUIRE(service->methods.size() == 1);
  CHECK(service->methods[0].request->layout().full_name() == "echo.EchoRequest");
  CHECK(service->methods[0].response->layout().full_name() == "echo.EchoReply");

  // The app builds a request in its heap; the codec encodes it, scattered over small buffers.
  const std::string text = "a request built by a registered app, encoded by mrpcd's codecs";
  const uint64_t request = app->build_echo(text);
  std::vector<std::vector<std::byte>> buffers(8, std::vector<std::byte>(11));
  std::vector<std::span<std::byte>> spans(buffers.begin(), buffers.end());
  const ConstRegion heap{app->heap_region().data(), app->heap_region().size()};
  auto wire = codecs.encode(registration.service_id, 0, MessageSide::kRequest, heap, request, spans,
                            codec::CodecLimits{});
  REQUIRE_MESSAGE(wire.ok(), wire.status().to_string());
  std::string bytes;
  for (auto piece : wire->pieces(buffers))
    bytes.append(reinterpret_cast<const char*>(piece.data()), piece.size());
  CHECK(wire->pieces(buffers).size() > 1);
  auto parsed = protos().make(protos().message("examples/echo/echo.proto", "echo.EchoRequest"));
  REQUIRE(parsed->ParseFromString(bytes));
  const pb::FieldDescriptor* text_field = parsed->GetDescriptor()->FindFieldByName("text");
  CHECK(parsed->GetReflection()->GetString(*parsed, text_field) == text);

  // libprotobuf's bytes of a reply decode into a receive region.
  auto reply = protos().make(protos().message("examples/echo/echo.proto", "echo.EchoReply"));
  reply->GetReflection()->SetString(reply.get(), reply->GetDescriptor()->FindFieldByName("text"),
                                    "the reply, from the wire");
  const std::string reply_bytes = reply->SerializeAsString();
  codec_testing::Region receive(1 << 20);
  RegionAllocator allocator(1 << 20);
  auto decoded =
      codecs.decode(registration.service_id, 0, MessageSide::kResponse,
                    {reinterpret_cast<const std::byte*>(reply_bytes.data()), reply_bytes.size()},
                    receive.mutable_view(), allocator, codec::CodecLimits{});
  REQUIRE_MESSAGE(decoded.ok(), decoded.status().to_string());
  auto read_back = protos().make(*reply->GetDescriptor());
  codec_testing::read(service->methods[0].response->layout(), receive.base(), *decoded, *read_back);
  CHECK(read_back->GetReflection()->GetString(
            *read_back, read_back->GetDescriptor()->FindFieldByName("text")) ==
        "the reply, from the wire");
  CHECK(allocator.free(*decoded).ok());

  // Unknown services and methods are errors, not crashes.
  auto unknown = codecs.codec(registration.service_id + 1, 0, MessageSide::kRequest);
  CHECK(unknown.status().code() == StatusCode::kNotFound);
  auto no_method = codecs.codec(registration.service_id, 1, MessageSide::kRequest);
  CHECK(no_method.status().code() == StatusCode::kNotFound);
  CHECK_MESSAGE(no_method.status().message().find("1 methods") != std::string::npos,
                no_method.status().to_string());
}

TEST_CASE("a registration gets fast codecs and the optimized ones are swapped in behind it") {
  EmbeddedDaemon daemon;
  auto app = TestApp::connect(daemon.app_socket(), "server");
  auto registration = app->register_service(kEchoService, true);
  REQUIRE(registration.status == StatusCode::kOk);
  DaemonCodecs codecs(daemon.daemon);
  std::shared_ptr<const ServiceCodecs> service = codecs.service(registration.service_id);
  REQUIRE(service != nullptr);
  const codec::MessageCodec* request = service->methods[0].request;
  // The compile thread compiled it at the fast tier; the cache's tier-up thread swaps in the
  // optimized code (the schema and codec objects stay the same).
  REQUIRE(eventually([&] { return service->schema->tier() == jit::CodegenTier::kOptimized; }));
  CHECK(service->schema->tier_up_nanoseconds() > 0);
  CHECK(codecs.service(registration.service_id)->methods[0].request == request);
  // Counted in the daemon's stats (once the tier-up thread has let go of it).
  REQUIRE(eventually([&] { return daemon.daemon.codec_stats().tier_ups == 1; }));
  const nlohmann::json stats = codec_stats_json(daemon);
  CHECK(stats.at("tier_ups") == 1);
  CHECK(stats.at("tier_up_failures") == 0);
  CHECK(stats.at("tier_ups_pending") == 0);
  CHECK(stats.at("tier_up_ms_total").get<double>() > 0);
  const uint64_t message = app->build_echo("encoded by the optimized tier");
  std::vector<std::byte> out(256);
  const ConstRegion heap{app->heap_region().data(), app->heap_region().size()};
  auto wire = request->encode_wire(heap, message, out, codec::CodecLimits{});
  REQUIRE_MESSAGE(wire.ok(), wire.status().to_string());
  auto parsed = protos().make(protos().message("examples/echo/echo.proto", "echo.EchoRequest"));
  REQUIRE(parsed->ParseFromArray(wire->data(), static_cast<int>(wire->size())));
  CHECK(parsed->GetReflection()->GetString(*parsed,
                                           parsed->GetDescriptor()->FindFieldByName("text")) ==
        "encoded by the optimized tier");
}
