// The mrpc rows of the echo benches: a ClientRun (bench_measure.h) that drives the echo example's
// load (examples/echo/echo_load.h) through one channel; a failed call fails the row.
#pragma once

#include <memory>
#include <utility>

#include "bench_measure.h"
#include "echo_load.h"

namespace mrpc::bench {

inline ClientRun echo_load_run(std::shared_ptr<Channel> channel, echo::EchoLoadOptions load) {
  return [channel = std::move(channel), load](LatencyRecorder& latencies, double& seconds) {
    echo::EchoLoadResult result = echo::run_echo_load(channel, load);
    for (int64_t sample : result.latencies_ns) latencies.add(sample);
    seconds = result.seconds;
    if (result.failed() > 0) return Status(StatusCode::kInternal, result.summary());
    return Status();
  };
}

}  // namespace mrpc::bench
