// EchoLoad: drives echo.EchoService calls through a Channel, keeping a number of calls in flight,
// and checks every reply against its request. Shared by the echo_client app, the integration
// tests and echo_bench. Runs on the calling thread; completions arrive on the library's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mrpc/base/status.h"
#include "mrpc/client/channel.h"

namespace echo {

struct EchoLoadOptions {
  uint32_t calls = 1000;
  uint32_t in_flight = 1;       // 1: blocking calls; more: callbacks with a window
  uint32_t payload_bytes = 64;  // bytes field; the text field carries the call's number
  // Every call carries the same payload bytes, built once (replies are still compared with it):
  // for benchmarks of big messages, where building a distinct payload per call would cost the
  // client more than the transport under test. Default: each call's payload differs.
  bool same_payload = false;
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
};

struct EchoLoadResult {
  uint64_t answered = 0;    // replies equal to their requests
  uint64_t mismatched = 0;  // replies that differ from their request
  std::map<mrpc::StatusCode, uint64_t> errors;
  mrpc::Status first_error;
  std::vector<int64_t> latencies_ns;  // of answered calls, in completion order
  double seconds = 0;

  uint64_t failed() const;
  // p in [0, 100]
  double latency_percentile_us(double p) const;
  std::string summary() const;
};

EchoLoadResult run_echo_load(const std::shared_ptr<mrpc::Channel>& channel,
                             const EchoLoadOptions& options);

}  // namespace echo
