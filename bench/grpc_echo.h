// gRPC unary echo for echo_bench: a server (sync API, its default thread pool) and a client that
// measures latency with one call in flight (blocking stub) and throughput with a window of calls
// in flight (async CompletionQueue). Used directly and behind a proxy sidecar (nginx).
#pragma once

#include <cstdint>
#include <string>

#include "latency_recorder.h"
#include "mrpc/base/status.h"

namespace mrpc::bench {

// Serves on `address`:`port` until killed.
int run_grpc_echo_server(uint16_t port, const std::string& address = "127.0.0.1");

struct GrpcRunOptions {
  std::string target;  // "127.0.0.1:port"
  uint32_t payload = 64;
  uint32_t calls = 20000;
  uint32_t window = 1;
};
Status run_grpc_client(const GrpcRunOptions& options, LatencyRecorder& latencies, double& seconds);

}  // namespace mrpc::bench
