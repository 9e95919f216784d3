// The .mpol abstract syntax tree: mrpc's own tree (not ANTLR's parse tree), every node with the
// Span it came from. Built by parse_file (parser.h), read by the formatter and the checker.
// Ownership: a File owns all its nodes through unique_ptr and by value; nothing is shared.
// Single-threaded; a File is immutable once built.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "mrpc/dsl/source.h"

namespace mrpc::dsl::ast {

// `int`, `list<string>`, `map<string, response>`, `counter`, ...
struct Type {
  std::string name;
  std::vector<Type> args;
  Span span;
};

enum class ExprKind {
  kInt,          // int_value
  kFloat,        // float_value
  kDuration,     // int_value units of `text` (ns, us, ms, s, m, h)
  kString,       // text (escapes decoded)
  kBool,         // int_value 0 or 1
  kName,         // text
  kMember,       // children[0] . text   (name_span: the member name)
  kIndex,        // children[0] [ children[1] ]
  kCall,         // children[0] ( children[1..] ), arg_names[i] names children[i+1] or is ""
  kUnary,        // text (op) children[0]
  kBinary,       // children[0] text(op) children[1]; op "not in" for `x not in s`
  kList,         // [children...]
  kSet,          // {children...}
  kMap,          // {children[0]: children[1], ...}
  kEmptyBraces,  // {} : an empty set or map, typed by where it is used
};

struct Expr {
  ExprKind kind = ExprKind::kInt;
  Span span;
  Span name_span;
  int64_t int_value = 0;
  double float_value = 0;
  std::string text;
  std::vector<std::unique_ptr<Expr>> children;
  std::vector<std::string> arg_names;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Stmt;
struct Block {
  Span span;  // from `{` to `}`
  std::vector<std::unique_ptr<Stmt>> statements;
};

enum class StmtKind {
  kLet,     // let|var name (: type)? = exprs[0]
  kAssign,  // exprs[0] op exprs[1], op one of = += -=
  kRemove,  // remove exprs[0]   (a container[key])
  kClear,   // clear exprs[0]    (a message field)
  kIf,      // if exprs[i] blocks[i] ... (else blocks.back() when blocks.size() > exprs.size())
  kFor,     // for name in exprs[0] (.. exprs[1])? blocks[0]
  kPass,
  kDrop,
  kBreak,  // leaves the innermost `for`
  kExpr,   // exprs[0];  (a call: action, builtin or container method)
};

struct Stmt {
  StmtKind kind = StmtKind::kPass;
  Span span;
  std::string name;  // let / for variable
  Span name_span;
  bool is_mutable = false;   // var (true) or let
  std::optional<Type> type;  // let's declared type
  std::string op;            // assignment operator
  std::vector<ExprPtr> exprs;
  std::vector<Block> blocks;
};

// `hotel.Reservation.MakeReservation`, `hotel.Search.*`, `hotel.*`, `*`.
struct Pattern {
  std::vector<std::string> segments;
  bool wildcard = false;  // ends in `*`
  Span span;
};

enum class Placement { kCaller, kCallee };
enum class HandlerKind { kRequest, kResponse, kError };

struct AppliesTo {
  std::vector<Pattern> patterns;
  Placement placement = Placement::kCallee;
  Span span;
};
struct Param {
  std::string name;
  Span name_span;
  Type type;
  ExprPtr default_value;
  Span span;
};
struct StateArg {
  std::string key;  // "capacity", "evict", "label" or "" for a histogram bucket bound
  Span key_span;
  ExprPtr value;
};
struct State {
  std::string name;
  Span name_span;
  Type type;
  std::vector<StateArg> args;
  ExprPtr initial;  // `state open: bool = false;` (scalar state only), or null
  Span span;
  // `call NAME: TYPE (= VALUE)?;`: a per-call variable (set in `on request`, read by the later
  // handlers of the same call), not state; it has no args.
  bool per_call = false;
};
struct Schedule {
  std::string kind;  // "strict" | "weighted"
  Span kind_span;
  std::vector<ExprPtr> weights;
  Span span;
};
// `on request { }`, or one body for several events: `on response, error { }`.
struct Handler {
  std::vector<HandlerKind> kinds;  // at least one, in source order
  std::vector<Span> kind_spans;    // kind_spans[i] names kinds[i]
  Block body;
  Span span;
};
using PolicyMember = std::variant<AppliesTo, Param, State, Schedule, Handler>;

struct Policy {
  std::string name;
  Span name_span;
  std::vector<PolicyMember> members;  // in source order
  Span span;
};

struct MarshalRule {
  enum class Kind { kEncoding, kPeer, kRedact } kind = Kind::kEncoding;
  std::string encoding;  // "native" | "protobuf"
  Span encoding_span;
  std::string peer_glob;  // kPeer
  ExprPtr path;           // kRedact: req.x / resp.x
  Span span;
};
struct Marshal {
  Pattern pattern;
  std::vector<MarshalRule> rules;
  Span span;
};

struct Import {
  std::string path;
  bool is_proto = false;
  Span path_span;
  Span span;
};
struct Const {
  std::string name;
  Span name_span;
  std::optional<Type> type;
  ExprPtr value;
  Span span;
};
using Item = std::variant<Import, Const, Policy, Marshal>;

// A comment, kept for the formatter; not part of the tree's meaning.
struct Comment {
  std::string text;  // with its `//` or `/* */`
  Span span;
};

struct File {
  uint32_t source_id = 0;
  std::vector<Item> items;
  std::vector<Comment> comments;
};

const char* handler_kind_name(HandlerKind kind);
const char* placement_name(Placement placement);
// "hotel.Search.*"
std::string pattern_text(const Pattern& pattern);

}  // namespace mrpc::dsl::ast
