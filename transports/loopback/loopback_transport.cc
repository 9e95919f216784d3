// LoopbackTransport: see mrpc/transports/loopback.h.
#include "mrpc/transports/loopback.h"

#include <spdlog/spdlog.h>

namespace mrpc {

LoopbackTransport::LoopbackTransport(Transport& inner, const Clock& clock, uint64_t seed)
    : inner_(inner), clock_(clock), random_(seed) {}

void LoopbackTransport::set_faults(const LoopbackFaults& faults) {
  std::lock_guard lock(settings_mutex_);
  faults_ = faults;
  settings_changed_.store(true, std::memory_order_release);
  wake_runtime();
}

void LoopbackTransport::die() {
  die_requested_.store(true, std::memory_order_release);
  dead_.store(true, std::memory_order_release);
  wake_runtime();
}

void LoopbackTransport::revive() {
  dead_.store(false, std::memory_order_release);
  wake_runtime();
}

LoopbackStats LoopbackTransport::stats() const {
  return {sent_.load(),    dropped_.load(),         duplicated_.load(),     corrupted_.load(),
          refused_.load(), failed_by_death_.load(), in_flight_count_.load()};
}

bool LoopbackTransport::chance(double probability) {
  if (probability <= 0) return false;
  if (probability >= 1) return true;
  return static_cast<double>(random_.next_u64() >> 11) * 0x1.0p-53 < probability;
}

void LoopbackTransport::send_request(RpcPtr rpc) {
  run();  // settings and a pending death first
  sent_.fetch_add(1, std::memory_order_relaxed);
  auto refuse = [&](const char* why) {
    rpc->status = Status(StatusCode::kUnavailable, why);
    inner_.send_reply(std::move(rpc));
  };
  if (dead_.load(std::memory_order_acquire)) return refuse("the link to the peer is down");
  if (active_.refuse) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return refuse("connecting to the peer failed (loopback fault: refuse)");
  }
  if (chance(active_.drop)) {  // lost: nothing ever comes back; the deadline ends the call
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (chance(active_.corrupt)) {
    corrupted_.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("loopback: a corrupt frame reset the connection");
    fail_in_flight("the connection to the peer was reset: it received a corrupt frame");
    return refuse("the connection to the peer was reset: it received a corrupt frame");
  }
  in_flight_[key(*rpc)] = InFlight{rpc->call_id,      rpc->connection, rpc->service_id,
                                   rpc->method_index, rpc->attempt,    rpc->attempt_kind};
  in_flight_count_.store(in_flight_.size(), std::memory_order_relaxed);
  if (chance(active_.duplicate)) {
    duplicated_.fetch_add(1, std::memory_order_relaxed);
    RpcPtr twin = make_rpc(*rpc);
    twin->attempt_kind = AttemptKind::kFanOut;  // a copy the peer cannot tell from the original
    deliver(std::move(twin));
  }
  deliver(std::move(rpc));
}

void LoopbackTransport::deliver(RpcPtr rpc) {
  Nanos wait = active_.delay;
  if (active_.jitter.count() > 0)
    wait += Nanos(
        static_cast<int64_t>(random_.next_u64() % static_cast<uint64_t>(active_.jitter.count())));
  if (wait.count() <= 0) {
    inner_.send_request(std::move(rpc));
    return;
  }
  delayed_.push(Delayed{clock_.now() + wait.count(), next_order_++, std::move(rpc)});
  wake_runtime();
}

void LoopbackTransport::send_reply(RpcPtr rpc) {
  auto it = in_flight_.find(key(*rpc));
  if (it == in_flight_.end() && rpc->attempt_kind != AttemptKind::kFanOut) {
    // The link died or reset while the callee worked: the caller already has its error. The inner
    // transport finds the call ended and discards the reply.
    rpc->status = Status(StatusCode::kUnavailable, "the link to the peer died during the call");
  }
  if (it != in_flight_.end() && rpc->attempt_kind != AttemptKind::kFanOut) {
    in_flight_.erase(it);
    in_flight_count_.store(in_flight_.size(), std::memory_order_relaxed);
  }
  inner_.send_reply(std::move(rpc));
}

void LoopbackTransport::cancel(ConnectionId callee, uint64_t delivery) {
  inner_.cancel(callee, delivery);
}

void LoopbackTransport::fail_in_flight(const char* why) {
  for (const auto& [k, call] : in_flight_) {
    RpcPtr failed = make_rpc();
    failed->call_id = call.call_id;
    failed->connection = call.caller;
    failed->service_id = call.service_id;
    failed->method_index = call.method_index;
    failed->attempt = call.attempt;
    failed->attempt_kind = call.kind;
    failed->status = Status(StatusCode::kUnavailable, why);
    failed_by_death_.fetch_add(1, std::memory_order_relaxed);
    inner_.send_reply(std::move(failed));
  }
  in_flight_.clear();
  in_flight_count_.store(0, std::memory_order_relaxed);
}

bool LoopbackTransport::run() {
  bool did_work = false;
  if (settings_changed_.exchange(false, std::memory_order_acq_rel)) {
    std::lock_guard lock(settings_mutex_);
    active_ = faults_;
    did_work = true;
  }
  if (die_requested_.exchange(false, std::memory_order_acq_rel)) {
    spdlog::info("loopback: the link died with {} calls in flight", in_flight_.size());
    fail_in_flight("the link to the peer died");
    while (!delayed_.empty()) {  // lost with the link
      RpcPtr rpc = std::move(delayed_.top().rpc);
      delayed_.pop();
      rpc->status = Status(StatusCode::kUnavailable, "the link to the peer died");
      inner_.send_reply(std::move(rpc));
    }
    did_work = true;
  }
  const MonoTime now = clock_.now();
  while (!delayed_.empty() && delayed_.top().due <= now) {
    RpcPtr rpc = std::move(delayed_.top().rpc);
    delayed_.pop();
    inner_.send_request(std::move(rpc));
    did_work = true;
  }
  return did_work;
}

MonoTime LoopbackTransport::next_timer() const {
  return delayed_.empty() ? kNoDeadline : delayed_.top().due;
}

}  // namespace mrpc
