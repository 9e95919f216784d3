// Type: the checker's view of a value's type, including protobuf messages (as the set of
// descriptors of every matched method, so wildcard access can be checked field by field).
// Private to the compiler.
#pragma once

#include <google/protobuf/descriptor.h>

#include <string>
#include <vector>

namespace mrpc::compiler {

struct Type {
  enum class Kind {
    kError,  // after a reported error: compatible with everything, so errors do not cascade
    kVoid,
    kInt,
    kFloat,
    kBool,
    kString,
    kBytes,
    kDuration,
    kTime,
    kStatus,
    kList,
    kSet,
    kMap,
    kEmptyBraces,  // `{}`: an empty set or map
    kCounter,
    kHistogram,
    kResponse,
    kMessage,  // messages: one descriptor per matched method
    kRpc,      // the `rpc` context
    kCaller,   // `rpc.caller`
  };
  Kind kind = Kind::kError;
  std::vector<Type> args;  // list/set: element; map: key, value
  std::vector<const google::protobuf::Descriptor*> messages;
  bool is_request = false;  // a message reached from `req` (not `resp`)

  static Type of(Kind kind) {
    Type t;
    t.kind = kind;
    return t;
  }
  static Type list(Type element) {
    Type t = of(Kind::kList);
    t.args.push_back(std::move(element));
    return t;
  }
  static Type set(Type element) {
    Type t = of(Kind::kSet);
    t.args.push_back(std::move(element));
    return t;
  }
  static Type map(Type key, Type value) {
    Type t = of(Kind::kMap);
    t.args.push_back(std::move(key));
    t.args.push_back(std::move(value));
    return t;
  }
  bool is(Kind k) const { return kind == k; }
  bool is_error() const { return kind == Kind::kError; }
  bool is_scalar() const {
    return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool ||
           kind == Kind::kString || kind == Kind::kBytes || kind == Kind::kDuration ||
           kind == Kind::kTime || kind == Kind::kStatus;
  }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
};

// "int", "map<string, float>", "message hotel.Request"
std::string type_name(const Type& type);
// Same type (messages: same set of full names); kError matches everything.
bool same_type(const Type& a, const Type& b);

}  // namespace mrpc::compiler
