// Schema: the message layouts and services of one registered FileDescriptorSet, computed at run
// time exactly as protoc-gen-mrpc computes them at build time (docs/message-layout.md): the
// layout is a pure function of the protobuf descriptor. The daemon builds one per registered
// schema; later, the marshalling and policy compilers read field offsets from it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mrpc/base/expected.h"

namespace mrpc {

class MessageLayout;  // mrpc/message/layout.h

struct MethodInfo {
  std::string name;
  const MessageLayout* input = nullptr;
  const MessageLayout* output = nullptr;
};

struct ServiceInfo {
  std::string full_name;
  std::vector<MethodInfo> methods;  // declaration order
};

class Schema {
 public:
  // INVALID_ARGUMENT with a readable reason if the bytes are not a valid, self-contained set.
  static Expected<std::shared_ptr<const Schema>> from_file_descriptor_set(std::string_view bytes);
  virtual ~Schema() = default;

  virtual const MessageLayout* message(std::string_view full_name) const = 0;
  virtual const ServiceInfo* service(std::string_view full_name) const = 0;
};

}  // namespace mrpc
