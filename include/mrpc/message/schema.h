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
#include "mrpc/base/limits.h"

namespace google::protobuf {
class Descriptor;
}  // namespace google::protobuf

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

// What one schema may contain (limits.h has the defaults and why). Checked on the serialized set
// before anything is built from it.
struct SchemaLimits {
  uint64_t max_bytes = limits::kMaxSchemaBytes;
  uint32_t max_types = limits::kMaxSchemaTypes;
  uint32_t max_fields = limits::kMaxSchemaFields;
  uint32_t max_nesting = limits::kMaxSchemaNesting;
};

class Schema {
 public:
  // INVALID_ARGUMENT with a readable reason if the bytes are not a valid, self-contained set;
  // RESOURCE_EXHAUSTED naming the limit (limits::kMaxSchema*) if the set is bigger than `limits`
  // allow. Time and memory are linear in the size of the set: no walk recurses on the input.
  // Runs on the calling thread (the daemon should call it off its datapath; docs/security.md).
  static Expected<std::shared_ptr<const Schema>> from_file_descriptor_set(
      std::string_view bytes, const SchemaLimits& limits = {});
  virtual ~Schema() = default;

  virtual const MessageLayout* message(std::string_view full_name) const = 0;
  virtual const ServiceInfo* service(std::string_view full_name) const = 0;
  // Steps the layout and fingerprint passes took (LayoutSet::work): linear in the schema.
  virtual uint64_t layout_work() const = 0;
  // The protobuf descriptor of a message type, or null; it lives as long as the Schema (the
  // marshalling compiler reads wire types from it). Thread-safe (protobuf's pool locks).
  virtual const google::protobuf::Descriptor* descriptor(std::string_view full_name) const = 0;
};

}  // namespace mrpc
