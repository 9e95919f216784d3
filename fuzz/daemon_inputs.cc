#include "daemon_inputs.h"

#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "daemon/control_server.h"
#include "embedded_daemon.h"
#include "mrpc/base/check.h"
#include "mrpc/transports/shm/app_socket.h"
#include "transports/shm/app_protocol.pb.h"

namespace mrpc::fuzz {

namespace {

struct FuzzDaemon {
  testing::EmbeddedDaemon daemon{config()};
  testing::EchoServer server{daemon.app_socket()};

  static DaemonConfig config() {
    DaemonConfig config = testing::EmbeddedDaemon::small_config();
    config.heap_bytes = 1 << 20;
    config.receive_bytes = 1 << 20;
    config.handshake_timeout = std::chrono::milliseconds(200);
    return config;
  }
  // The oracle: the connection the input opened was accepted and is gone again (the daemon
  // handled all it was sent, then the close), and the control socket answers on the runtime
  // thread. `accepted` and `open` are the counts from before the input.
  void check_alive(uint64_t accepted, uint64_t open) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      const DaemonStats stats = daemon.daemon.stats();
      if (stats.connections_accepted > accepted && stats.connections_open <= open) break;
      if (std::chrono::steady_clock::now() >= give_up) {
        std::fprintf(stderr,
                     "fuzz connection kept: %llu accepted (%llu before), %llu open (%llu before)\n",
                     static_cast<unsigned long long>(stats.connections_accepted),
                     static_cast<unsigned long long>(accepted),
                     static_cast<unsigned long long>(stats.connections_open),
                     static_cast<unsigned long long>(open));
      }
      MRPC_ASSERT(std::chrono::steady_clock::now() < give_up,
                  "the daemon kept a fuzz connection: {} accepted ({} before), {} open ({} before)",
                  stats.connections_accepted, accepted, stats.connections_open, open);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    auto stats = ControlServer::request(daemon.control_socket(), "stats");
    if (!stats.ok())
      std::fprintf(stderr, "control socket: %s\n", stats.status().to_string().c_str());
    MRPC_ASSERT(stats.ok(), "control socket: {}", stats.status().to_string());
    MRPC_ASSERT(nlohmann::json::parse(*stats, nullptr, false).is_object(), "stats: {}", *stats);
  }
};

FuzzDaemon& fuzz_daemon() {
  static FuzzDaemon* daemon = new FuzzDaemon();  // lives until the process ends
  return *daemon;
}

std::string frame(const std::string& bytes) {
  std::string out(2, '\0');
  out[0] = static_cast<char>(bytes.size() & 0xff);
  out[1] = static_cast<char>((bytes.size() >> 8) & 0xff);
  return out + bytes;
}

std::string hello(uint32_t version, const std::string& name) {
  wire::AppMessage message;
  message.mutable_hello()->set_protocol_version(version);
  message.mutable_hello()->set_app_name(name);
  return message.SerializeAsString();
}

std::string registration(bool serve) {
  wire::AppMessage message;
  auto* body = message.mutable_register_service();
  body->set_request_id(1);
  body->set_file_descriptor_set(testing::echo_file_descriptor_set());
  body->set_service(std::string(testing::kEchoService));
  body->set_serve(serve);
  return message.SerializeAsString();
}

std::string entry_bytes(shm::RingEntry entry) {
  std::string out(sizeof entry, '\0');
  std::memcpy(out.data(), &entry, sizeof entry);
  return out;
}

}  // namespace

void app_socket_frames(std::string_view input) {
  FuzzDaemon& fuzz = fuzz_daemon();
  const DaemonStats before = fuzz.daemon.daemon.stats();
  {
    auto socket = shm::connect_app_socket(fuzz.daemon.app_socket());
    MRPC_ASSERT(socket.ok(), "{}", socket.status().to_string());
    size_t at = 0;
    while (at < input.size()) {
      size_t length = static_cast<unsigned char>(input[at]);
      if (at + 1 < input.size()) length |= size_t{static_cast<unsigned char>(input[at + 1])} << 8;
      at += 2;
      const std::string_view packet = input.substr(std::min(at, input.size()), length);
      at += packet.size();
      if (!packet.empty() && !shm::send_packet(socket->get(), packet).ok()) break;
    }
    // Let the daemon read what it was sent before the close: it answers each frame or closes.
    ::shutdown(socket->get(), SHUT_WR);
  }
  fuzz.check_alive(before.connections_accepted, before.connections_open);
}

void ring_entries(std::string_view input) {
  FuzzDaemon& fuzz = fuzz_daemon();
  const DaemonStats before = fuzz.daemon.daemon.stats();
  {
    auto app = testing::TestApp::connect(fuzz.daemon.app_socket(), "fuzz-ring");
    auto registration = app->register_service(testing::kEchoService, false);
    MRPC_ASSERT(registration.status == StatusCode::kOk);
    const uint64_t request = app->build_echo("fuzz");
    constexpr shm::EntryKind kKinds[] = {shm::EntryKind::kCall, shm::EntryKind::kReply,
                                         shm::EntryKind::kCancel, shm::EntryKind::kRelease};
    for (size_t at = 0; at + sizeof(shm::RingEntry) <= input.size(); at += sizeof(shm::RingEntry)) {
      shm::RingEntry entry;
      std::memcpy(&entry, input.data() + at, sizeof entry);
      entry.kind = kKinds[static_cast<uint8_t>(entry.kind) % 4];
      if ((entry.flags & 0x80) != 0) {
        entry.flags &= 0x7f;
        entry.service_id = registration.service_id;
        entry.message_offset = request;
      }
      if (!app->try_submit(entry)) break;
    }
    app->wake_daemon();
    // Some of what it started may end while it is still there; then it dies, as apps do.
    (void)app->next_completion(std::chrono::milliseconds(1));
    app->disconnect();
  }
  fuzz.check_alive(before.connections_accepted, before.connections_open);
}

std::vector<std::string> frame_seeds() {
  return {
      frame(hello(shm::kProtocolVersion, "seed")),
      frame(hello(shm::kProtocolVersion, "seed")) + frame(registration(true)) +
          frame(registration(false)),
      frame(registration(false)),                         // before Hello
      frame(hello(shm::kProtocolVersion + 1, "future")),  // another version
      frame(hello(shm::kProtocolVersion, "seed")) + frame("\xff\xff\xff garbage"),
      frame(hello(shm::kProtocolVersion, "seed")) + frame(hello(shm::kProtocolVersion, "twice")),
      std::string("\x05\x00\x08\x01\x12\x01x", 7),  // a short Hello
  };
}

std::vector<std::string> ring_seeds() {
  shm::RingEntry call = shm::make_ring_entry(shm::EntryKind::kCall, 1);
  call.flags = 0x80;
  call.deadline = INT64_MAX;
  shm::RingEntry cancel = shm::make_ring_entry(shm::EntryKind::kCancel, 1);
  shm::RingEntry release = shm::make_ring_entry(shm::EntryKind::kRelease, 0);
  release.message_offset = 4096;
  shm::RingEntry reply = shm::make_ring_entry(shm::EntryKind::kReply, 77);
  reply.status = 2;
  reply.detail_offset = 0;
  reply.detail_length = 1000;
  shm::RingEntry metadata = call;
  metadata.metadata_offset = 0;
  metadata.metadata_length = 1 << 20;
  return {entry_bytes(call), entry_bytes(call) + entry_bytes(cancel),
          entry_bytes(release) + entry_bytes(reply), entry_bytes(metadata),
          entry_bytes(call) + entry_bytes(call) + entry_bytes(call)};
}

}  // namespace mrpc::fuzz
