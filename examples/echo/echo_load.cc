#include "echo_load.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include <fmt/format.h>

#include "echo.mrpc.h"
#include "mrpc/base/clock.h"

namespace echo {
namespace {

std::string payload_for(uint32_t call, uint32_t bytes) {
  std::string payload(bytes, '\0');
  for (uint32_t i = 0; i < bytes; ++i) payload[i] = static_cast<char>((call * 31 + i) & 0xff);
  return payload;
}

// Everything the completions of one run share.
struct LoadState {
  std::mutex mutex;
  std::condition_variable changed;
  uint32_t outstanding = 0;
  EchoLoadResult result;

  void record(uint32_t call, uint32_t payload_bytes, const std::string* same_payload,
              int64_t latency, const mrpc::CallResult<EchoReply>& reply) {
    std::lock_guard lock(mutex);
    if (!reply.ok()) {
      ++result.errors[reply.status().code()];
      if (result.first_error.ok()) result.first_error = reply.status();
    } else if (reply->text() != fmt::format("echo {}", call) ||
               (same_payload != nullptr ? reply->payload() != *same_payload
                                        : reply->payload() != payload_for(call, payload_bytes))) {
      ++result.mismatched;
    } else {
      ++result.answered;
      result.latencies_ns.push_back(latency);
    }
  }
};

}  // namespace

uint64_t EchoLoadResult::failed() const {
  uint64_t n = mismatched;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

double EchoLoadResult::latency_percentile_us(double p) const {
  if (latencies_ns.empty()) return 0;
  std::vector<int64_t> sorted = latencies_ns;
  std::sort(sorted.begin(), sorted.end());
  auto index = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[std::min(index, sorted.size() - 1)]) / 1000.0;
}

std::string EchoLoadResult::summary() const {
  std::string text = fmt::format(
      "{} answered correctly, {} wrong replies, {} errors; p50 {:.1f} us, p99 {:.1f} us, {:.0f} "
      "calls/s",
      answered, mismatched, failed() - mismatched, latency_percentile_us(50),
      latency_percentile_us(99), seconds > 0 ? static_cast<double>(answered) / seconds : 0.0);
  for (const auto& [code, count] : errors)
    text += fmt::format("\n  {} x {}", count, mrpc::status_code_name(code));
  if (!first_error.ok()) text += fmt::format("\n  first error: {}", first_error.to_string());
  return text;
}

EchoLoadResult run_echo_load(const std::shared_ptr<mrpc::Channel>& channel,
                             const EchoLoadOptions& options) {
  EchoService::Client client(channel);
  const auto& clock = mrpc::MonotonicClock::instance();
  LoadState state;
  state.result.latencies_ns.reserve(options.calls);
  mrpc::CallOptions call_options;
  call_options.timeout = options.timeout;
  const std::string same = options.same_payload ? payload_for(0, options.payload_bytes) : "";
  const std::string* same_payload = options.same_payload ? &same : nullptr;
  const mrpc::MonoTime start = clock.now();
  for (uint32_t call = 0; call < options.calls; ++call) {
    auto request = EchoRequest::create(channel->heap());
    request.set_text(fmt::format("echo {}", call));
    request.set_payload(same_payload != nullptr ? same : payload_for(call, options.payload_bytes));
    const mrpc::MonoTime sent = clock.now();
    if (options.in_flight <= 1) {
      auto reply = client.Echo(std::move(request), call_options);
      state.record(call, options.payload_bytes, same_payload, clock.now() - sent, reply);
      continue;
    }
    {
      std::unique_lock lock(state.mutex);
      state.changed.wait(lock, [&] { return state.outstanding < options.in_flight; });
      ++state.outstanding;
    }
    client.Echo(
        std::move(request), call_options,
        [&state, &clock, call, sent, &options, same_payload](mrpc::CallResult<EchoReply> reply) {
          state.record(call, options.payload_bytes, same_payload, clock.now() - sent, reply);
          std::lock_guard lock(state.mutex);
          --state.outstanding;
          state.changed.notify_all();
        });
  }
  std::unique_lock lock(state.mutex);
  state.changed.wait(lock, [&] { return state.outstanding == 0; });
  state.result.seconds = static_cast<double>(clock.now() - start) / 1e9;
  return std::move(state.result);
}

}  // namespace echo
