// LoopbackTransport: a transport that wraps another (local delivery) and injects the faults of a
// network link on request, through an API tests and operators drive (eRPC's fault_inject_*, the
// error injector of Seastar's loopback socket). It behaves like a connection to a peer:
//   drop       a request is lost on the way: its call ends at its deadline
//   delay      requests arrive `delay` later (with `jitter`, in another order)
//   duplicate  each request arrives twice: the callee sees two attempts, the caller one outcome
//   corrupt    a request's frame fails the receiver's check: the connection resets, and every
//              call in flight on it ends UNAVAILABLE (later calls go through a new connection)
//   refuse     connecting fails: new calls end UNAVAILABLE at once
//   die        the link dies mid-call: every call in flight on it ends UNAVAILABLE now; replies
//              that still come are late; until revive(), new calls end UNAVAILABLE
// Randomness comes from a seeded source, time from the daemon's clock: runs repeat.
//
// Threads: the fault settings are thread-safe (set from any thread, read on the runtime thread);
// everything else runs on the runtime thread that owns the daemon's connections. It is a Task of
// that runtime (it releases delayed requests when due).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/random.h"
#include "mrpc/dataflow/runtime.h"
#include "mrpc/transports/transport.h"

namespace mrpc {

struct LoopbackFaults {
  double drop = 0;       // probability a request is lost
  double duplicate = 0;  // probability a request is delivered twice
  double corrupt = 0;    // probability a request's frame is corrupt (the connection resets)
  Nanos delay{0};        // every request arrives this much later...
  Nanos jitter{0};       // ...plus a random part of this (reorders requests)
  bool refuse = false;   // connecting fails
};

struct LoopbackStats {
  uint64_t sent = 0;
  uint64_t dropped = 0;
  uint64_t duplicated = 0;
  uint64_t corrupted = 0;
  uint64_t refused = 0;
  uint64_t failed_by_death = 0;  // calls in flight ended because the link died or reset
  uint64_t in_flight = 0;        // requests delivered whose replies have not come back
};

class LoopbackTransport final : public Transport, public Task {
 public:
  // `inner` delivers (the daemon's local transport); `seed` drives every random choice.
  LoopbackTransport(Transport& inner, const Clock& clock, uint64_t seed);

  // ---- fault injection (any thread) ----
  void set_faults(const LoopbackFaults& faults);
  void die();
  void revive();
  LoopbackStats stats() const;

  // ---- Transport (runtime thread) ----
  void send_request(RpcPtr rpc) override;
  void send_reply(RpcPtr rpc) override;
  void cancel(ConnectionId callee, uint64_t delivery) override;

  // ---- Task ----
  bool run() override;
  MonoTime next_timer() const override;

 private:
  // What the link remembers of a call in flight on it, to fail it if the link dies.
  struct InFlight {
    uint64_t call_id;
    ConnectionId caller;
    uint32_t service_id;
    uint16_t method_index;
    uint16_t attempt;
    AttemptKind kind;
  };
  struct Delayed {
    MonoTime due;
    uint64_t order;
    mutable RpcPtr rpc;
    bool operator>(const Delayed& other) const {
      return due != other.due ? due > other.due : order > other.order;
    }
  };
  static uint64_t key(const Rpc& rpc) { return rpc.call_id ^ (uint64_t{rpc.attempt} << 48); }
  bool chance(double probability);
  void deliver(RpcPtr rpc);
  // The link resets or dies: every call in flight on it ends with `why`.
  void fail_in_flight(const char* why);

  Transport& inner_;
  const Clock& clock_;
  SeededRandom random_;

  mutable std::mutex settings_mutex_;
  LoopbackFaults faults_;
  std::atomic<bool> settings_changed_{true};
  std::atomic<bool> die_requested_{false};
  std::atomic<bool> dead_{false};
  LoopbackFaults active_;  // runtime thread's copy

  std::unordered_map<uint64_t, InFlight> in_flight_;  // by key(); a test component, not lean
  std::priority_queue<Delayed, std::vector<Delayed>, std::greater<>> delayed_;
  uint64_t next_order_ = 0;

  std::atomic<uint64_t> sent_{0}, dropped_{0}, duplicated_{0}, corrupted_{0}, refused_{0},
      failed_by_death_{0}, in_flight_count_{0};
};

}  // namespace mrpc
