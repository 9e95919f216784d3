// The .mpol builtin functions and actions: ONE table, read by the checker (names, arity and
// "did you mean"), the IR builder (name -> enum), the evaluator and, later, the LLVM lowering
// (enum -> runtime helper). Adding a builtin starts here.
// Immutable data; safe from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace mrpc::compiler {

// Functions usable as values (`len(x)`, `now()`, ...).
enum class Builtin : uint8_t {
  kNow,
  kRandom,
  kHash,
  kMin,
  kMax,
  kAbs,
  kLen,
  kHas,
  kSeconds,
  kFromSeconds,
  kInt,
  kFloat,
  kStr,
  kLower,
  kUpper,
  kStartsWith,
  kEndsWith,
  kContains,
  kSubstr,
  kSha256,
  kConsistentHash,
};

// Actions: statements only (`reject(...)`, `log(...)`, ...).
enum class Action : uint8_t {
  kReject,
  kDelay,
  kRoute,
  kMirror,
  kRespond,
  kRetry,
  kLog,
  kObserve,
};

struct BuiltinInfo {
  Builtin id;
  std::string_view name;
  int arity;  // number of arguments
  // Reads the clock or the random source: never folded, never hoisted.
  bool impure;
};

struct ActionInfo {
  Action id;
  std::string_view name;
  // pass/reject/drop/respond end the handler.
  bool ends_handler;
};

std::span<const BuiltinInfo> builtin_table();
std::span<const ActionInfo> action_table();
// The entry of that name, or null.
const BuiltinInfo* find_builtin(std::string_view name);
const ActionInfo* find_action(std::string_view name);
const BuiltinInfo& builtin_info(Builtin id);
const ActionInfo& action_info(Action id);

}  // namespace mrpc::compiler
