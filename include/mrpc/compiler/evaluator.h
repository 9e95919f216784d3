// The IR evaluator: a tree-walking interpreter of a verified policy (ir.h) over the plain-data
// RPC view (dataflow/rpc_view.h). It is the reference the JIT is checked against (same verdicts,
// writes, state and metrics), so it defines, with ir_ops, what every construct and every
// run-time fault does (docs/mpol-design.md, "Run-time faults").
//
// A PolicyInstance is one attachment of one policy: its params (defaults, or values given at
// attach time) and its state. It reads the time and random numbers only through the Clock and
// RandomSource it is given (tests use ManualClock and SeededRandom). Single-threaded: one
// instance is run by one thread at a time. It borrows the ir::Policy (and its Unit), which must
// outlive it.
//
// What it does not do yet: string, bytes and map-entry writes into a message need the daemon's
// allocator, so they are recorded in Verdict::writes and not applied (scalar writes, `clear` and
// element writes are applied in place, bounds-checked); `respond` hands back the stored bytes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/expected.h"
#include "mrpc/base/random.h"
#include "mrpc/base/status.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/policy_runner.h"
#include "mrpc/dataflow/rpc_view.h"

namespace mrpc::compiler {

struct LogRecord {
  std::string event;
  std::vector<std::pair<std::string, ir::Value>> fields;
};

// A message write the handler made: where (the field path as written in the dump) and what.
struct FieldWrite {
  std::string path;
  ir::Value value;       // kVoid for `clear`
  bool applied = false;  // written into the message bytes (false: recorded only, or no effect)
  // Where it was written (`step` null: nowhere, the path does not exist or its message is not
  // there). A string or bytes value cannot be written in place (it needs room the message's
  // region does not have): whoever owns a copy it can grow places it there after the handler and
  // sets `applied` (the daemon's policy operator, in its private copy).
  int region = -1;    // 0: the view's request, 1: its response
  uint64_t body = 0;  // the body holding the field, in that region
  const ir::FieldStep* step = nullptr;
};

// Sets (or clears) the presence bit and oneof case of `step`'s field in the body at `body` of
// `region`: what a write of that field also does. The body must lie in the region.
void set_field_presence(uint8_t* region, uint64_t body, const ir::FieldStep& step, bool on);

struct Verdict {
  enum class Outcome { kContinue, kReject, kDrop, kRespond };
  Outcome outcome = Outcome::kContinue;
  StatusCode status = StatusCode::kOk;  // kReject (also after a fault)
  std::string message;
  // The handler stopped on a run-time fault that has no value to go on with (a loop over a
  // too-long collection, a string past its limit, a message of another schema); the call is
  // rejected (outcome kReject) with the status and message saying which.
  bool aborted = false;
  // Faults with a defined result that let the handler go on (x / 0, overflow, an index past
  // the end, int("x"), ...): how many happened.
  uint32_t defined_faults = 0;
  int64_t delay_ns = 0;
  std::optional<std::string> route;
  std::vector<std::pair<std::string, double>> mirrors;
  std::optional<int64_t> retry_after_ns;
  std::string response_bytes;         // kRespond: the stored response (its region's bytes)
  uint64_t response_body_offset = 0;  // kRespond: where its body starts in response_bytes
  std::vector<LogRecord> logs;
  std::vector<FieldWrite> writes;
  uint32_t refused_inserts = 0;  // `evict reject` containers that were full

  // Back to a fresh verdict's values, keeping the strings' and vectors' buffers. A member added
  // above is reset here too.
  void reset() {
    outcome = Outcome::kContinue;
    status = StatusCode::kOk;
    message.clear();
    aborted = false;
    defined_faults = 0;
    delay_ns = 0;
    route.reset();
    mirrors.clear();
    retry_after_ns.reset();
    response_bytes.clear();
    response_body_offset = 0;
    logs.clear();
    writes.clear();
    refused_inserts = 0;
  }
};

class PolicyInstance final : public PolicyRunner {
 public:
  PolicyInstance(const ir::Policy& policy, const Clock& clock, RandomSource& random);

  // Sets a param to the value an operator gave at attach time (type and limits checked).
  Status set_param(const std::string& name, ir::Value value) override;
  // Runs the handler for `event` (nothing happens without one). The view's priority and
  // deadline may change (on request).
  void run_into(ir::Event event, mrpc_rpc_view& rpc, Verdict& verdict) override;

  // State, for tests and for carrying state across an upgrade: a scalar or counter value, a
  // container as a value (set: items; map: key, value, ...), a histogram as a list of counts
  // (one per bucket, then the overflow bucket).
  ir::Value state(const std::string& name) const override;
  // The inverse of state(): a value of the state's type (container capacity applies; entries past
  // it are dropped, oldest first by the given order).
  Status set_state(const std::string& name, const ir::Value& value) override;

  struct Container {
    std::map<ir::Value, std::pair<ir::Value, uint64_t>> entries;  // key -> value, order stamp
    uint64_t stamp = 0;
  };
  // A labelled counter or histogram: its counts per label-value combination (values as text, in
  // the order State::labels declares them; counter: one count; histogram: one per bucket, then
  // the overflow bucket). At most limits::kMaxMetricLabelSets combinations; later new ones (and
  // values past limits::kMaxMetricLabelValueBytes) are counted in `overflow`.
  struct LabelledMetric {
    std::map<std::vector<std::string>, std::vector<int64_t>> series;
    std::vector<int64_t> overflow;  // empty until something overflows
  };
  // The label value of the overflow series.
  static constexpr const char* kOverflowLabel = "_other";

 private:
  friend class Evaluation;
  friend class EvalSession;  // the JIT's runtime (compiler/eval_session.h)
  const ir::Policy& policy_;
  const Clock& clock_;
  RandomSource& random_;
  std::vector<ir::Value> params_;
  std::vector<ir::Value> scalars_;     // scalar and counter state (by state slot)
  std::vector<Container> containers_;  // map and set state (by state slot)
  std::vector<std::vector<int64_t>> histograms_;
  std::vector<LabelledMetric> labelled_;  // by state slot (empty for an unlabelled one)
  Status set_labelled(size_t slot, const ir::Value& value);
  // Per-call variables of a run whose view has no call record (reset for each run).
  std::vector<ir::Value> call_scratch_;
};

// The text a label value is exported as: a string as it is, an int in decimal, a bool as
// true/false, a status by its name (PERMISSION_DENIED).
std::string label_text(const ir::Value& value);

// The encoded metadata block of rpc_view.h (key, value, key, value, ...) and the endpoint list.
std::string encode_metadata(const std::vector<std::pair<std::string, std::string>>& entries);
std::string encode_strings(const std::vector<std::string>& strings);
// Ops that look metadata up in the view's encoded block (metadata_set refuses: the block is
// read-only to them).
const mrpc_rpc_view_ops* encoded_block_ops();

}  // namespace mrpc::compiler
