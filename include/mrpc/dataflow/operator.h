// Operator: one step of a connection's dataflow graph (frontend, a policy, marshalling, router).
// Runs on the runtime thread that owns its graph; never called concurrently with itself.
//
// An operator sees RPCs in batches, twice: on the request path (caller -> callee, in graph order)
// and on the reply path (back, in reverse order). For each RPC of a batch it decides one outcome,
// through the Output it is given:
//   pass      the RPC continues in the same direction (also what happens to entries it leaves in
//             the batch untouched)
//   hold      the operator moves the RpcPtr out of the batch and keeps it; it hands it on later
//             from poll() or detach()
//   delay     the graph keeps it and continues it in the same direction at a given time
//   drop      the call ends with an error status; the RPC turns around onto the reply path
//   answer    the operator answers by itself (response/status set); the RPC turns around
//   fork      a new attempt of the same call (a retry, a mirror, a fan-out) goes down the request
//             path from here; its reply comes back through this operator's on_replies, where it
//             can recognise it (Rpc::attempt, attempt_kind) and let it pass or end it
//   end       this attempt ends here, absorbed (a mirror's reply, a failed attempt that is being
//             retried): nothing more comes of it and what its reply holds is freed
// On the reply path, drop replaces the status and continues upstream; answer is the same as pass.
// Whichever attempt of a call reaches the caller first ends the call (see rpc.h).
// A dropped RPC keeps its response reference (if it had one) so that whoever owns that memory can
// release it; a response with an error status is never delivered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>

#include "mrpc/base/clock.h"
#include "mrpc/base/status.h"
#include "mrpc/dataflow/rpc.h"

namespace mrpc {

// An operator's state as named, typed values: what an upgrade carries from the old version of a
// policy to the new one (a value the new version does not know, or knows with another type, is
// left out by its import_state).
using StateValue = std::variant<int64_t, double, std::string>;
using OperatorState = std::map<std::string, StateValue, std::less<>>;

class Output {
 public:
  virtual ~Output() = default;
  virtual void pass(RpcPtr rpc) = 0;
  virtual void delay(RpcPtr rpc, MonoTime until) = 0;
  virtual void drop(RpcPtr rpc, Status status) = 0;
  virtual void answer(RpcPtr rpc) = 0;
  // Returns the new attempt's number. `original` may be on either path (a retry forks from the
  // failed reply); the copy keeps its call, request, metadata and deadline, with a fresh status
  // and no response, and goes to `endpoint` if that is routed (else the router chooses).
  virtual uint16_t fork(Rpc& original, AttemptKind kind, Endpoint endpoint = {}) = 0;
  virtual void end(RpcPtr attempt) = 0;
  // The graph's clock, for deadlines and rate computations.
  virtual MonoTime now() const = 0;
};

class Operator {
 public:
  virtual ~Operator() = default;
  virtual std::string_view name() const = 0;

  // Request path. Entries left non-null in `batch` pass.
  virtual void on_requests(RpcBatch& batch, Output& out) = 0;
  // Reply path. Entries left non-null in `batch` pass.
  virtual void on_replies(RpcBatch& batch, Output& out) = 0;

  // Called once per round of the graph, before the batches: release what is held and due, or
  // bring RPCs in from outside (the frontend drains its app's ring here). Returns whether it did
  // anything, so the runtime knows whether to keep polling.
  virtual bool poll(Output& requests, Output& replies) {
    (void)requests;
    (void)replies;
    return false;
  }
  // Whether poll() can ever have something to do (true unless overridden). An operator that does
  // not override poll() should say false, so that a graph with nothing queued is skipped in a
  // round (Graph::idle).
  virtual bool polls() const { return true; }
  // The earliest time poll() has something to do by the clock alone (kNoDeadline: none).
  virtual MonoTime next_timer() const { return kNoDeadline; }

  // The runtime wants to sleep. Return false if work has appeared meanwhile (the frontend arms
  // its doorbell here and re-checks its ring). woke() follows every sleep.
  virtual bool prepare_to_sleep() { return true; }
  virtual void woke() {}

  // The operator is about to leave the graph (removed or replaced): it must hand on everything it
  // holds, through these outputs, which lead to its neighbours. After detach it is never called.
  virtual void detach(Output& requests, Output& replies) {
    (void)requests;
    (void)replies;
  }
  // How many RPCs it holds now (for stats and for checking that nothing is lost).
  virtual size_t held() const { return 0; }

  // Its state by name, for an upgrade (control plane, runtime thread, between rounds).
  virtual OperatorState export_state() const { return {}; }
  // Takes what it knows of an older version's state; ignores the rest.
  virtual void import_state(const OperatorState& state) { (void)state; }
};

}  // namespace mrpc
