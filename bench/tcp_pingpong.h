// The floor: a raw TCP ping-pong of fixed-size messages between two processes (over loopback, or
// between two network namespaces for two_hosts_bench), TCP_NODELAY, blocking sockets, no framing
// beyond the fixed size. Nothing mrpc does per call can be cheaper than this on the same path.
#pragma once

#include <cstdint>
#include <string>

#include "latency_recorder.h"
#include "mrpc/base/expected.h"

namespace mrpc::bench {

// Serves on `address`:`port` (IPv4) until the client disconnects: echoes every `payload` bytes it
// reads.
int run_tcp_echo_server(uint16_t port, uint32_t payload, const std::string& address = "127.0.0.1");

struct TcpRunOptions {
  uint16_t port = 0;
  std::string address = "127.0.0.1";  // the server's (IPv4)
  uint32_t payload = 64;
  uint32_t calls = 20000;
  uint32_t window = 1;  // messages in flight (pipelined on the one connection)
};
// Connects and runs the calls; fills latency (window 1) or throughput (window > 1) into `row`.
Status run_tcp_client(const TcpRunOptions& options, LatencyRecorder& latencies, double& seconds);

}  // namespace mrpc::bench
