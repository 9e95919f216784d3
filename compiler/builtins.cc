// The builtin and action table (builtins.h).
#include "mrpc/compiler/builtins.h"

#include <array>

namespace mrpc::compiler {

namespace {

constexpr std::array kBuiltins = {
    BuiltinInfo{Builtin::kNow, "now", 0, true},
    BuiltinInfo{Builtin::kRandom, "random", 0, true},
    BuiltinInfo{Builtin::kHash, "hash", 1, false},
    BuiltinInfo{Builtin::kMin, "min", 2, false},
    BuiltinInfo{Builtin::kMax, "max", 2, false},
    BuiltinInfo{Builtin::kAbs, "abs", 1, false},
    BuiltinInfo{Builtin::kLen, "len", 1, false},
    BuiltinInfo{Builtin::kHas, "has", 1, false},
    BuiltinInfo{Builtin::kSeconds, "seconds", 1, false},
    BuiltinInfo{Builtin::kFromSeconds, "from_seconds", 1, false},
    BuiltinInfo{Builtin::kInt, "int", 1, false},
    BuiltinInfo{Builtin::kFloat, "float", 1, false},
    BuiltinInfo{Builtin::kStr, "str", 1, false},
    BuiltinInfo{Builtin::kLower, "lower", 1, false},
    BuiltinInfo{Builtin::kUpper, "upper", 1, false},
    BuiltinInfo{Builtin::kStartsWith, "starts_with", 2, false},
    BuiltinInfo{Builtin::kEndsWith, "ends_with", 2, false},
    BuiltinInfo{Builtin::kContains, "contains", 2, false},
    BuiltinInfo{Builtin::kSubstr, "substr", 3, false},
    BuiltinInfo{Builtin::kSha256, "sha256", 1, false},
    BuiltinInfo{Builtin::kConsistentHash, "consistent_hash", 2, false},
};

constexpr std::array kActions = {
    ActionInfo{Action::kReject, "reject", true},   ActionInfo{Action::kDelay, "delay", false},
    ActionInfo{Action::kRoute, "route", false},    ActionInfo{Action::kMirror, "mirror", false},
    ActionInfo{Action::kRespond, "respond", true}, ActionInfo{Action::kRetry, "retry", false},
    ActionInfo{Action::kLog, "log", false},        ActionInfo{Action::kObserve, "observe", false},
};

// The tables are indexed by enum value.
constexpr bool tables_in_enum_order() {
  for (size_t i = 0; i < kBuiltins.size(); ++i) {
    if (static_cast<size_t>(kBuiltins[i].id) != i) return false;
  }
  for (size_t i = 0; i < kActions.size(); ++i) {
    if (static_cast<size_t>(kActions[i].id) != i) return false;
  }
  return true;
}
static_assert(tables_in_enum_order());

}  // namespace

std::span<const BuiltinInfo> builtin_table() {
  return kBuiltins;
}

std::span<const ActionInfo> action_table() {
  return kActions;
}

const BuiltinInfo* find_builtin(std::string_view name) {
  for (const auto& b : kBuiltins) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

const ActionInfo* find_action(std::string_view name) {
  for (const auto& a : kActions) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

const BuiltinInfo& builtin_info(Builtin id) {
  return kBuiltins[static_cast<size_t>(id)];
}

const ActionInfo& action_info(Action id) {
  return kActions[static_cast<size_t>(id)];
}

}  // namespace mrpc::compiler
