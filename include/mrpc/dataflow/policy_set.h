// PolicySet: the daemon's list of attached policies, from which every app connection's graphs
// are built, including those of apps that connect later. Each policy has a name, a placement
// (which graph, where in it, which apps) and a factory that makes its operator for one app (it may
// hand every app the same shared operator). Every change bumps the set's generation; the daemon
// applies a change to every affected graph at once, between rounds, and logs the generation.
//
// Positions are named, never indices: first, last, or before/after another attached policy. A
// placement relative to a policy that is not attached on that side, or that does not apply to
// every app this one applies to, is an error: the operator would sit where no RPC reaches it.
// Threads: the control plane's (the daemon runs it on its runtime thread). Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mrpc/base/expected.h"
#include "mrpc/dataflow/graph.h"
#include "mrpc/dataflow/operator.h"
#include "mrpc/dataflow/rpc.h"

namespace mrpc {

struct Placement {
  enum class Anchor : uint8_t { kFirst, kLast, kBefore, kAfter };
  GraphSide side = GraphSide::kEgress;  // egress: `at caller`; ingress: `at callee`
  Anchor anchor = Anchor::kLast;
  std::string relative_to;  // the policy kBefore/kAfter refers to
  std::string app_name;     // only apps that call themselves this ("": every app)

  bool applies_to(const CallerIdentity& app) const {
    return app_name.empty() || app_name == app.app_name;
  }
};

using OperatorFactory = std::function<std::shared_ptr<Operator>(const CallerIdentity&)>;

struct PolicyEntry {
  std::string name;
  Placement placement;
  OperatorFactory make;
  uint64_t version = 1;  // bumped by each upgrade
};

class PolicySet {
 public:
  // ALREADY_EXISTS: the name is attached. NOT_FOUND / FAILED_PRECONDITION: the placement refers
  // to a policy not attached on that side, or one that does not cover the same apps.
  Status attach(PolicyEntry entry);
  // NOT_FOUND: no such policy. FAILED_PRECONDITION: another policy is placed relative to it.
  Status detach(std::string_view name);
  // A new version (new factory) in the same place. NOT_FOUND: no such policy.
  Expected<const PolicyEntry*> upgrade(std::string_view name, OperatorFactory make);

  const PolicyEntry* find(std::string_view name) const;
  const std::vector<PolicyEntry>& entries() const { return entries_; }
  uint64_t generation() const { return generation_; }

  // Where `entry` goes in `graph` (whose stages are labelled with policy names); kNone if its
  // anchor is not in this graph.
  static size_t position_in(const Graph& graph, const Placement& placement);
  // Inserts into an empty `graph` of one app every policy of `side` that applies to `app`, in
  // attachment order.
  void build(Graph& graph, GraphSide side, const CallerIdentity& app) const;

 private:
  std::vector<PolicyEntry> entries_;  // in attachment order
  uint64_t generation_ = 0;
};

}  // namespace mrpc
