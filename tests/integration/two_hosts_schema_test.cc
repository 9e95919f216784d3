// Schemas across hosts (docs/tcp-transport.md, "Schemas"): two daemons as two hosts
// (tests/integration/two_hosts.h), the test process as the client app at A and as the server app at
// B, with schemas loaded at run time and messages built through the untyped libmrpc API.
//  - The seeded random messages of the codec differential test (tests/codec/codec_harness.h:
//    kSchemas, random_case; the same seeds) round-trip exactly across the two daemons, once with
//    the native encoding forced, once with protobuf forced, and with the handshake choosing.
//  - A caller at A and a server at B whose schemas differ compatibly (compat_v2 vs compat_v1: added
//    fields) interoperate through the protobuf fallback; each daemon logs the mismatch once.
// Registered twice: 1 and 3 runtime threads per daemon (SHARDED).
#include <doctest/doctest.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../codec/codec_harness.h"
#include "mrpc/client/channel.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/protobuf_convert.h"
#include "mrpc/message/shm_heap.h"
#include "two_hosts.h"

using namespace std::chrono_literals;
using mrpc::StatusCode;
using mrpc::testing::TwoHosts;
namespace pb = google::protobuf;
namespace ct = mrpc::codec_testing;

namespace {

// Messages per schema of kSchemas in each run: MRPC_TWO_HOSTS_DIFFERENTIAL=all sends all 10,000.
int messages_of(const ct::SchemaCase& schema, int default_count) {
  const char* value = std::getenv("MRPC_TWO_HOSTS_DIFFERENTIAL");
  if (value != nullptr && std::string(value) == "all") return schema.messages;
  return std::min(schema.messages, default_count);
}

nlohmann::json stats(mrpc::testing::LocalHost& host) {
  auto text = host.control("stats");
  REQUIRE_MESSAGE(text.ok(), text.status().to_string());
  return nlohmann::json::parse(*text);
}

std::string log_of(mrpc::testing::LocalHost& host) {
  std::ifstream log(host.directory() + "/mrpcd.log");
  return std::string((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

// A service of a .proto loaded at run time, as libmrpc registers it, with each method's request
// type, its layout (fingerprint, body size) and a prototype to make messages of it.
struct DynamicService {
  std::string full_name;
  std::string descriptor_set;  // the file and everything it imports
  std::vector<std::string> names;
  std::vector<std::string_view> name_views;
  std::vector<const pb::Descriptor*> types;  // request = response type, by method index
  std::vector<uint64_t> fingerprints;
  std::vector<uint32_t> body_sizes;
  std::vector<std::unique_ptr<pb::Message>> prototypes;
  mrpc::LayoutSet layouts;

  // `any_type` is a message type the file reaches (ProtoLibrary loads files through one).
  DynamicService(ct::ProtoLibrary& library, const std::string& file, const std::string& any_type,
                 const std::string& service_name) {
    const pb::DescriptorPool* pool = library.message(file, any_type).file()->pool();
    const pb::ServiceDescriptor* service = pool->FindServiceByName(service_name);
    REQUIRE_MESSAGE(service != nullptr, service_name << " is not in " << file);
    const pb::FileDescriptor* root = service->file();
    full_name = service->full_name();
    // Dependencies before the files that import them, the service's file last (protoc's order).
    pb::FileDescriptorSet set;
    std::set<std::string> added;
    std::function<void(const pb::FileDescriptor*)> add = [&](const pb::FileDescriptor* at) {
      if (!added.insert(at->name()).second) return;
      for (int i = 0; i < at->dependency_count(); ++i) add(at->dependency(i));
      at->CopyTo(set.add_file());
    };
    add(root);
    descriptor_set = set.SerializeAsString();
    for (int i = 0; i < service->method_count(); ++i) {
      const pb::MethodDescriptor* method = service->method(i);
      REQUIRE(method->input_type() == method->output_type());
      names.push_back(method->name());
      types.push_back(method->input_type());
      const mrpc::MessageLayout& layout = layouts.add(*method->input_type());
      fingerprints.push_back(layout.fingerprint());
      body_sizes.push_back(layout.body_size());
      prototypes.push_back(library.make(*method->input_type()));
    }
    for (const std::string& name : names) name_views.push_back(name);
  }

  mrpc::ServiceSchema schema() const { return {full_name, descriptor_set, name_views}; }
  size_t method_of(const pb::Descriptor& type) const {
    for (size_t i = 0; i < types.size(); ++i)
      if (types[i]->full_name() == type.full_name()) return i;
    FAIL("no method takes " << type.full_name());
    return 0;
  }
};

// Serves `service` on `channel`: every method answers its request converted back unchanged (as
// far as the server's schema knows its fields).
void serve_echo(const std::shared_ptr<mrpc::Channel>& channel, DynamicService& service) {
  std::vector<mrpc::UntypedMethod> methods;
  for (size_t i = 0; i < service.types.size(); ++i) {
    const uint64_t fingerprint = service.fingerprints[i];
    const uint32_t body = service.body_sizes[i];
    const pb::Message* prototype = service.prototypes[i].get();
    mrpc::UntypedMethod method;
    method.handler = [fingerprint, prototype](mrpc::ServerContext&,
                                              const mrpc::ReceivedMessage& request,
                                              mrpc::MessageRef& response) -> mrpc::Status {
      std::unique_ptr<pb::Message> message(prototype->New());
      mrpc::Status read = mrpc::to_protobuf(request.ref(), fingerprint, *message);
      if (!read.ok()) return read;
      return mrpc::from_protobuf(*message, fingerprint, response);
    };
    method.new_response = [body](mrpc::ShmHeap& heap) { return heap.new_message(body); };
    methods.push_back(std::move(method));
  }
  mrpc::Status served = channel->serve(service.schema(), std::move(methods));
  REQUIRE_MESSAGE(served.ok(), served.to_string());
}

// Calls method `index` of `service` with `message`; the response, converted back.
mrpc::Expected<std::unique_ptr<pb::Message>> call(const std::shared_ptr<mrpc::Channel>& channel,
                                                  const DynamicService& service, size_t index,
                                                  const pb::Message& message) {
  auto built = channel->heap().new_message(service.body_sizes[index]);
  if (!built.ok()) return built.status();
  mrpc::Status written = mrpc::from_protobuf(message, service.fingerprints[index], *built);
  if (!written.ok()) return written;
  mrpc::CallOptions options;
  options.timeout = 20s;
  auto [status, received] =
      channel->call(service.schema(), static_cast<uint32_t>(index), *built, options);
  if (!status.ok()) return status;
  std::unique_ptr<pb::Message> back(service.prototypes[index]->New());
  mrpc::Status read = mrpc::to_protobuf(received.ref(), service.fingerprints[index], *back);
  if (!read.ok()) return read;
  return back;
}

// Both daemons started (A routes `service` to B with `encoding`), a server channel at B and a
// client channel at A.
struct Hosts {
  TwoHosts hosts;
  std::shared_ptr<mrpc::Channel> server;
  std::vector<std::shared_ptr<mrpc::Channel>> clients;

  Hosts(const std::string& service, const std::string& encoding, int client_count = 1) {
    const std::string where =
        "hosts on " + hosts.a_address() + " and " + hosts.b_address() +
        (hosts.namespaces() ? " (network namespaces + veth)" : " (loopback addresses)") + ", " +
        service + " encoding " + encoding;
    MESSAGE(where);
    hosts.add_remote_a(service, encoding);
    mrpc::Status started = hosts.start_daemons();
    REQUIRE_MESSAGE(started.ok(), started.to_string());
    auto served = hosts.b().connect("schema_server");
    REQUIRE_MESSAGE(served.ok(), served.status().to_string());
    server = std::move(*served);
    for (int i = 0; i < client_count; ++i) {
      auto connected = hosts.a().connect("schema_client_" + std::to_string(i));
      REQUIRE_MESSAGE(connected.ok(), connected.status().to_string());
      clients.push_back(std::move(*connected));
    }
  }
};

// The differential's random messages of every schema, through `channel`; returns the calls made.
int round_trip_random_messages(const std::shared_ptr<mrpc::Channel>& channel,
                               const DynamicService& service, int per_schema) {
  int calls = 0;
  for (size_t s = 0; s < std::size(ct::kSchemas); ++s) {
    const ct::SchemaCase& schema = ct::kSchemas[s];
    const pb::Descriptor& type = ct::harness().protos.message(schema.file, schema.type);
    const size_t method = service.method_of(type);
    const int count = messages_of(schema, per_schema);
    for (int i = 0; i < count; ++i, ++calls) {
      // The seeds of tests/codec/wire_codec_test.cc.
      const uint64_t seed = 0x5eed0000ull + s * 100000 + static_cast<uint64_t>(i);
      CAPTURE(seed);
      ct::RandomCase c = ct::random_case(type, seed);
      // Its unknown fields (random_case parses a variant that has some) are not part of an mrpc
      // message: an app cannot build them, so they are not sent.
      c.message->DiscardUnknownFields();
      auto back = call(channel, service, method, *c.message);
      REQUIRE_MESSAGE(back.ok(), "seed ", seed, ": ", back.status().to_string());
      ct::check_equal(*c.message, **back, "the message after crossing two daemons", seed);
    }
  }
  return calls;
}

DynamicService& roundtrip_service() {
  static DynamicService service(ct::harness().protos, "tests/integration/protos/roundtrip.proto",
                                "nested.Document", "roundtrip.RoundTrip");
  return service;
}

// The differential's random messages (`per_schema` of each) sent from host A's client to an echo
// server on host B with the links' encoding set to `encoding`; both daemons' TCP counters after.
struct RoundTripRun {
  int calls = 0;
  nlohmann::json a, b;
  std::string log_a;
};
RoundTripRun round_trip_across_hosts(const char* encoding, int per_schema) {
  Hosts setup("roundtrip.RoundTrip", encoding);
  DynamicService& service = roundtrip_service();
  serve_echo(setup.server, service);
  RoundTripRun run;
  run.calls = round_trip_random_messages(setup.clients[0], service, per_schema);
  run.a = stats(setup.hosts.a()).at("tcp");
  run.b = stats(setup.hosts.b()).at("tcp");
  run.log_a = log_of(setup.hosts.a());
  return run;
}

}  // namespace

TEST_CASE(
    "the codec differential's random messages round-trip exactly across two daemons in the "
    "native encoding") {
  const auto [calls, a, b, log_a] = round_trip_across_hosts("native", 100);
  INFO("A: ", a.dump(), " B: ", b.dump());
  CHECK(a.at("requests_sent_native").get<int>() == calls);
  CHECK(a.at("requests_sent_protobuf").get<int>() == 0);
  CHECK(b.at("replies_sent_native").get<int>() == calls);
  CHECK(b.at("native_refused").get<int>() == 0);
  MESSAGE(calls << " messages; A sent " << a.at("send_syscalls").get<uint64_t>()
                << " sendmsg calls, copied " << a.at("gather_segments_copied").get<uint64_t>()
                << " heap spans");
}

TEST_CASE(
    "the codec differential's random messages round-trip exactly across two daemons in the "
    "protobuf encoding") {
  const auto [calls, a, b, log_a] = round_trip_across_hosts("protobuf", 100);
  INFO("A: ", a.dump(), " B: ", b.dump());
  CHECK(a.at("requests_sent_protobuf").get<int>() == calls);
  CHECK(a.at("requests_sent_native").get<int>() == 0);
  CHECK(b.at("replies_sent_native").get<int>() == 0);
  CHECK(a.at("schema_offers_sent").get<int>() == 0);
}

TEST_CASE(
    "with matching schemas the handshake switches a link to the native encoding and messages "
    "still round-trip exactly") {
  const auto [calls, a, b, log_a] = round_trip_across_hosts("auto", 20);
  INFO("A: ", a.dump());
  CHECK(a.at("schema_offers_sent").get<int>() == 1);
  CHECK(a.at("schema_mismatches").get<int>() == 0);
  // The first call goes before the answer (protobuf); the answer comes with its reply.
  CHECK(a.at("requests_sent_native").get<int>() >= calls - 1);
  CHECK(a.at("requests_sent_native").get<int>() + a.at("requests_sent_protobuf").get<int>() ==
        calls);
  CHECK(count_of(log_a, "has another schema") == 0);
}

TEST_CASE(
    "a caller and a server on two hosts with different but compatible schemas interoperate "
    "through the protobuf fallback and each daemon logs it once") {
  // Three clients: with 3 runtime threads they sit on different shards, each with its own link
  // to B, and the log still says it once.
  Hosts setup("compat.Store", "auto", 3);
  static ct::ProtoLibrary v1_library, v2_library;
  DynamicService v1(v1_library, "tests/integration/protos/compat_v1.proto", "compat.Item",
                    "compat.Store");
  DynamicService v2(v2_library, "tests/integration/protos/compat_v2.proto", "compat.Item",
                    "compat.Store");
  REQUIRE(v1.fingerprints[0] != v2.fingerprints[0]);
  serve_echo(setup.server, v1);
  const pb::Descriptor& item = *v2.types[0];
  int calls = 0;
  for (int i = 0; i < 60; ++i) {
    std::unique_ptr<pb::Message> sent(v2.prototypes[0]->New());
    const pb::Reflection& r = *sent->GetReflection();
    r.SetString(sent.get(), item.FindFieldByName("name"), "item " + std::to_string(i));
    r.SetInt64(sent.get(), item.FindFieldByName("count"), 1000 + i);
    r.SetString(sent.get(), item.FindFieldByName("note"), "only v2 knows this");
    r.AddUInt32(sent.get(), item.FindFieldByName("tags"), 7);
    pb::Message* part = r.MutableMessage(sent.get(), item.FindFieldByName("part"));
    const pb::Descriptor& part_type = *part->GetDescriptor();
    part->GetReflection()->SetString(part, part_type.FindFieldByName("label"), "label");
    part->GetReflection()->SetDouble(part, part_type.FindFieldByName("weight"), 2.5);
    // What comes back: what v1 knows of it (the added fields are unset).
    std::unique_ptr<pb::Message> expected(sent->New());
    expected->CopyFrom(*sent);
    expected->GetReflection()->ClearField(expected.get(), item.FindFieldByName("note"));
    expected->GetReflection()->ClearField(expected.get(), item.FindFieldByName("tags"));
    pb::Message* expected_part =
        expected->GetReflection()->MutableMessage(expected.get(), item.FindFieldByName("part"));
    expected_part->GetReflection()->ClearField(expected_part, part_type.FindFieldByName("weight"));
    auto back = call(setup.clients[static_cast<size_t>(i) % setup.clients.size()], v2, 0, *sent);
    REQUIRE_MESSAGE(back.ok(), "call ", i, ": ", back.status().to_string());
    ct::check_equal(*expected, **back, "a v2 item through a v1 server", static_cast<uint64_t>(i));
    ++calls;
  }
  const nlohmann::json a = stats(setup.hosts.a()).at("tcp");
  INFO("A: ", a.dump());
  CHECK(a.at("requests_sent_native").get<int>() == 0);
  CHECK(a.at("requests_sent_protobuf").get<int>() == calls);
  CHECK(a.at("schema_mismatches").get<int>() >= 1);
  const std::string a_log = log_of(setup.hosts.a());
  const std::string b_log = log_of(setup.hosts.b());
  CHECK(count_of(a_log, "compat.Store at peer") == 1);
  CHECK(count_of(a_log, "has another schema") == 1);
  CHECK(count_of(b_log, "calls compat.Store with another schema") == 1);
}

namespace {

// An Item of compat_v1 or compat_v2 with every field `service`'s schema has set.
std::unique_ptr<pb::Message> make_item(const DynamicService& service, int i) {
  const pb::Descriptor& item = *service.types[0];
  std::unique_ptr<pb::Message> message(service.prototypes[0]->New());
  const pb::Reflection& r = *message->GetReflection();
  r.SetString(message.get(), item.FindFieldByName("name"), "item " + std::to_string(i));
  r.SetInt64(message.get(), item.FindFieldByName("count"), 1000 + i);
  if (const pb::FieldDescriptor* note = item.FindFieldByName("note"))
    r.SetString(message.get(), note, "only v2 knows this");
  if (const pb::FieldDescriptor* tags = item.FindFieldByName("tags"))
    r.AddUInt32(message.get(), tags, static_cast<uint32_t>(i));
  pb::Message* part = r.MutableMessage(message.get(), item.FindFieldByName("part"));
  const pb::Descriptor& part_type = *part->GetDescriptor();
  part->GetReflection()->SetString(part, part_type.FindFieldByName("label"), "label");
  if (const pb::FieldDescriptor* weight = part_type.FindFieldByName("weight"))
    part->GetReflection()->SetDouble(part, weight, 2.5);
  return message;
}

// What of `sent` (a message of `caller`'s schema) survives a trip through a server of `server`'s
// schema: the fields the server's schema lacks are unset.
std::unique_ptr<pb::Message> surviving(const pb::Message& sent, const DynamicService& server) {
  std::unique_ptr<pb::Message> out(sent.New());
  out->CopyFrom(sent);
  std::vector<pb::Message*> pending{out.get()};
  const pb::Descriptor* server_item = server.types[0];
  while (!pending.empty()) {
    pb::Message* message = pending.back();
    pending.pop_back();
    const pb::Descriptor& type = *message->GetDescriptor();
    const pb::Descriptor* theirs =
        type.name() == "Item" ? server_item : server_item->FindFieldByName("part")->message_type();
    for (int i = 0; i < type.field_count(); ++i) {
      const pb::FieldDescriptor* field = type.field(i);
      if (theirs->FindFieldByNumber(field->number()) == nullptr) {
        message->GetReflection()->ClearField(message, field);
      } else if (field->type() == pb::FieldDescriptor::TYPE_MESSAGE && !field->is_repeated() &&
                 message->GetReflection()->HasField(*message, field)) {
        pending.push_back(message->GetReflection()->MutableMessage(message, field));
      }
    }
  }
  return out;
}

struct CompatSchemas {
  ct::ProtoLibrary v1_library, v2_library, bad_library;
  DynamicService v1{v1_library, "tests/integration/protos/compat_v1.proto", "compat.Item",
                    "compat.Store"};
  DynamicService v2{v2_library, "tests/integration/protos/compat_v2.proto", "compat.Item",
                    "compat.Store"};
  DynamicService bad{bad_library, "tests/integration/protos/compat_bad.proto", "compat.Item",
                     "compat.Store"};
};

CompatSchemas& compat() {
  static CompatSchemas schemas;
  return schemas;
}

}  // namespace

TEST_CASE(
    "a caller and a server on one host with different but compatible schemas interoperate "
    "through conversion, logged once per service") {
  CompatSchemas& schemas = compat();
  struct Order {
    DynamicService* server;
    DynamicService* caller;
  };
  for (Order order : {Order{&schemas.v1, &schemas.v2}, Order{&schemas.v2, &schemas.v1}}) {
    const bool newer_caller = order.caller == &schemas.v2;
    CAPTURE(newer_caller);
    mrpc::testing::LocalHost host;
    mrpc::Status started = host.start_daemon({"--log-level", "info"});
    REQUIRE_MESSAGE(started.ok(), started.to_string());
    auto server = host.connect("compat_server");
    REQUIRE_MESSAGE(server.ok(), server.status().to_string());
    serve_echo(*server, *order.server);
    // Two callers with the other schema (converted) and one with the server's (not).
    std::vector<std::shared_ptr<mrpc::Channel>> others;
    for (int i = 0; i < 2; ++i) {
      auto connected = host.connect("compat_caller_" + std::to_string(i));
      REQUIRE_MESSAGE(connected.ok(), connected.status().to_string());
      others.push_back(std::move(*connected));
    }
    auto same = host.connect("same_schema_caller");
    REQUIRE_MESSAGE(same.ok(), same.status().to_string());
    for (int i = 0; i < 60; ++i) {
      std::unique_ptr<pb::Message> sent = make_item(*order.caller, i);
      auto back = call(others[static_cast<size_t>(i) % others.size()], *order.caller, 0, *sent);
      REQUIRE_MESSAGE(back.ok(), "call ", i, ": ", back.status().to_string());
      ct::check_equal(*surviving(*sent, *order.server), **back, "an item through conversion",
                      static_cast<uint64_t>(i));
      std::unique_ptr<pb::Message> plain = make_item(*order.server, i);
      auto plain_back = call(*same, *order.server, 0, *plain);
      REQUIRE_MESSAGE(plain_back.ok(), "call ", i, ": ", plain_back.status().to_string());
      ct::check_equal(*plain, **plain_back, "an item of the server's schema", i);
    }
    CHECK(count_of(log_of(host), "calls it with another, compatible schema") == 1);
    CHECK(stats(host).at("calls_in_flight").get<uint64_t>() == 0);
  }
}

TEST_CASE(
    "a caller whose schema changed a field's wire type is refused with FAILED_PRECONDITION "
    "naming the field") {
  CompatSchemas& schemas = compat();
  mrpc::testing::LocalHost host;
  mrpc::Status started = host.start_daemon({"--log-level", "info"});
  REQUIRE_MESSAGE(started.ok(), started.to_string());
  auto server = host.connect("compat_server");
  REQUIRE_MESSAGE(server.ok(), server.status().to_string());
  serve_echo(*server, schemas.v1);
  auto caller = host.connect("bad_caller");
  REQUIRE_MESSAGE(caller.ok(), caller.status().to_string());
  std::unique_ptr<pb::Message> sent(schemas.bad.prototypes[0]->New());
  const pb::Descriptor& item = *schemas.bad.types[0];
  sent->GetReflection()->SetString(sent.get(), item.FindFieldByName("count"), "not a number");
  auto back = call(*caller, schemas.bad, 0, *sent);
  REQUIRE_FALSE(back.ok());
  CHECK(back.status().code() == StatusCode::kFailedPrecondition);
  const std::string text = back.status().message();  // a copy: status() returns a temporary
  CAPTURE(text);
  CHECK(text.find("compat.Item field 2 ('count')") != std::string::npos);
  CHECK(text.find("not wire-compatible") != std::string::npos);
  // The v1 server still serves callers of its schema.
  auto good = host.connect("good_caller");
  REQUIRE_MESSAGE(good.ok(), good.status().to_string());
  std::unique_ptr<pb::Message> plain = make_item(schemas.v1, 1);
  auto plain_back = call(*good, schemas.v1, 0, *plain);
  REQUIRE_MESSAGE(plain_back.ok(), plain_back.status().to_string());
}

TEST_CASE(
    "with native forced, a peer whose schema differs refuses each call with FAILED_PRECONDITION "
    "naming both fingerprints") {
  CompatSchemas& schemas = compat();
  Hosts setup("compat.Store", "native");
  serve_echo(setup.server, schemas.v1);
  for (int i = 0; i < 3; ++i) {
    std::unique_ptr<pb::Message> sent = make_item(schemas.v2, i);
    auto back = call(setup.clients[0], schemas.v2, 0, *sent);
    REQUIRE_FALSE(back.ok());
    CHECK(back.status().code() == StatusCode::kFailedPrecondition);
    CAPTURE(back.status().message());
    CHECK(back.status().message().find("with schema fingerprint") != std::string::npos);
  }
  const nlohmann::json b = stats(setup.hosts.b()).at("tcp");
  CHECK(b.at("native_refused").get<int>() == 3);
}

TEST_CASE(
    "native messages of 4 MiB cross two daemons: heap spans the socket did not take in their "
    "round are copied, and the bytes arrive intact") {
  Hosts setup("roundtrip.RoundTrip", "native");
  DynamicService& service = roundtrip_service();
  serve_echo(setup.server, service);
  const pb::Descriptor& document = ct::harness().protos.message("nested.proto", "nested.Document");
  const size_t method = service.method_of(document);
  for (int i = 0; i < 3; ++i) {
    std::unique_ptr<pb::Message> sent(service.prototypes[method]->New());
    const pb::Reflection& r = *sent->GetReflection();
    r.SetString(sent.get(), document.FindFieldByName("title"), "big " + std::to_string(i));
    r.SetString(sent.get(), document.FindFieldByName("blob"),
                std::string(4u << 20, static_cast<char>('a' + i)));
    for (int j = 0; j < 100; ++j)
      r.AddString(sent.get(), document.FindFieldByName("tags"), "tag " + std::to_string(j));
    auto back = call(setup.clients[0], service, method, *sent);
    REQUIRE_MESSAGE(back.ok(), back.status().to_string());
    ct::check_equal(*sent, **back, "a 4 MiB document, native", static_cast<uint64_t>(i));
  }
  const nlohmann::json a = stats(setup.hosts.a()).at("tcp");
  const nlohmann::json b = stats(setup.hosts.b()).at("tcp");
  INFO("A: ", a.dump(), " B: ", b.dump());
  CHECK(a.at("requests_sent_native").get<int>() == 3);
  CHECK(b.at("replies_sent_native").get<int>() == 3);
  // 4 MiB do not fit a socket's send buffer in one round: the rest of each was copied.
  CHECK(a.at("gather_segments_copied").get<uint64_t>() +
            b.at("gather_segments_copied").get<uint64_t>() >
        0);
}
