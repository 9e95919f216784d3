// PolicySet: see mrpc/dataflow/policy_set.h.
#include "mrpc/dataflow/policy_set.h"

#include <algorithm>

#include "mrpc/base/check.h"

namespace mrpc {

namespace {
const char* side_name(GraphSide side) {
  return side == GraphSide::kEgress ? "egress (at caller)" : "ingress (at callee)";
}
bool relative(const Placement& placement) {
  return placement.anchor == Placement::Anchor::kBefore ||
         placement.anchor == Placement::Anchor::kAfter;
}
}  // namespace

const PolicyEntry* PolicySet::find(std::string_view name) const {
  for (const auto& entry : entries_)
    if (entry.name == name) return &entry;
  return nullptr;
}

Status PolicySet::attach(PolicyEntry entry) {
  MRPC_REQUIRE(!entry.name.empty(), StatusCode::kInvalidArgument, "a policy needs a name");
  MRPC_REQUIRE(entry.make != nullptr, StatusCode::kInvalidArgument, "policy '{}' has no operator",
               entry.name);
  MRPC_REQUIRE(find(entry.name) == nullptr, StatusCode::kAlreadyExists,
               "policy '{}' is already attached (upgrade it, or detach it first)", entry.name);
  const Placement& placement = entry.placement;
  if (relative(placement)) {
    const PolicyEntry* anchor = find(placement.relative_to);
    MRPC_REQUIRE(anchor != nullptr && anchor->placement.side == placement.side,
                 StatusCode::kNotFound,
                 "policy '{}' is placed {} '{}', which is not attached in the {} graph: it would "
                 "sit where no call reaches it",
                 entry.name, placement.anchor == Placement::Anchor::kBefore ? "before" : "after",
                 placement.relative_to, side_name(placement.side));
    MRPC_REQUIRE(
        anchor->placement.app_name.empty() || anchor->placement.app_name == placement.app_name,
        StatusCode::kFailedPrecondition,
        "policy '{}' (apps: '{}') is placed relative to '{}', which only applies to app "
        "'{}': in other apps' graphs it would have no place",
        entry.name, placement.app_name.empty() ? "every app" : placement.app_name,
        placement.relative_to, anchor->placement.app_name);
  }
  entries_.push_back(std::move(entry));
  ++generation_;
  return {};
}

Status PolicySet::detach(std::string_view name) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const PolicyEntry& entry) { return entry.name == name; });
  MRPC_REQUIRE(it != entries_.end(), StatusCode::kNotFound, "no policy '{}' is attached", name);
  for (const auto& other : entries_)
    MRPC_REQUIRE(!relative(other.placement) || other.placement.relative_to != name,
                 StatusCode::kFailedPrecondition,
                 "policy '{}' is placed relative to '{}': detach it first", other.name, name);
  entries_.erase(it);
  ++generation_;
  return {};
}

Expected<const PolicyEntry*> PolicySet::upgrade(std::string_view name, OperatorFactory make) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const PolicyEntry& entry) { return entry.name == name; });
  MRPC_REQUIRE(it != entries_.end(), StatusCode::kNotFound, "no policy '{}' is attached", name);
  MRPC_REQUIRE(make != nullptr, StatusCode::kInvalidArgument, "policy '{}' has no operator", name);
  it->make = std::move(make);
  ++it->version;
  ++generation_;
  return &*it;
}

size_t PolicySet::position_in(const Graph& graph, const Placement& placement) {
  switch (placement.anchor) {
    case Placement::Anchor::kFirst:
      return 0;
    case Placement::Anchor::kLast:
      return graph.size();
    case Placement::Anchor::kBefore:
      return graph.position_of_label(placement.relative_to);
    case Placement::Anchor::kAfter: {
      size_t at = graph.position_of_label(placement.relative_to);
      return at == Graph::kNone ? Graph::kNone : at + 1;
    }
  }
  return Graph::kNone;
}

void PolicySet::build(Graph& graph, GraphSide side, const CallerIdentity& app) const {
  for (const auto& entry : entries_) {
    if (entry.placement.side != side || !entry.placement.applies_to(app)) continue;
    const size_t at = position_in(graph, entry.placement);
    // attach() checked that a relative anchor covers every app this policy covers.
    MRPC_ASSERT(at != Graph::kNone, "policy '{}' has no place in app '{}''s graph", entry.name,
                app.app_name);
    auto inserted = graph.insert(at, entry.make(app), entry.name);
    MRPC_ASSERT(inserted.ok(), "{}", inserted.status().to_string());
  }
}

}  // namespace mrpc
