// Schema::from_file_descriptor_set: parses the set, checks its size against SchemaLimits, builds
// it in a private DescriptorPool (which checks it is valid and self-contained) and computes every
// message's layout with LayoutSet. The input is untrusted (any local app registers schemas):
// every walk is iterative and linear in the set's size (docs/security.md, findings 1 and 2).
#include "mrpc/message/schema.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>

#include <map>

#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/message/layout.h"

namespace mrpc {
namespace {

namespace pb = google::protobuf;

class CollectingErrors final : public pb::DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, const std::string& element_name, const pb::Message*,
                ErrorLocation, const std::string& message) override {
    if (++count > limits::kMaxSchemaErrorsQuoted) return;
    if (!quoted.empty()) quoted += "; ";
    quoted += fmt::format("{}: {}: {}", filename, element_name, message);
  }
  // The first errors, then how many more (limits::kMaxSchemaErrorsQuoted).
  std::string text() const {
    if (count <= limits::kMaxSchemaErrorsQuoted) return quoted;
    return fmt::format("{}; and {} more errors", quoted, count - limits::kMaxSchemaErrorsQuoted);
  }
  std::string quoted;
  uint64_t count = 0;
};

class DescriptorSchema final : public Schema {
 public:
  const MessageLayout* message(std::string_view full_name) const override {
    return layouts.find(full_name);
  }
  const ServiceInfo* service(std::string_view full_name) const override {
    auto it = services.find(full_name);
    return it == services.end() ? nullptr : &it->second;
  }

  uint64_t layout_work() const override { return layouts.work(); }

  const pb::Descriptor* descriptor(std::string_view full_name) const override {
    return pool->FindMessageTypeByName(std::string(full_name));
  }

  // `descriptor` and every type declared inside it (an explicit stack, no recursion).
  void add_messages(const pb::Descriptor& descriptor) {
    std::vector<const pb::Descriptor*> stack{&descriptor};
    while (!stack.empty()) {
      const pb::Descriptor* next = stack.back();
      stack.pop_back();
      layouts.add(*next);
      for (int i = next->nested_type_count() - 1; i >= 0; --i)
        stack.push_back(next->nested_type(i));
    }
  }

  LayoutSet layouts;
  std::map<std::string, ServiceInfo, std::less<>> services;
  // The pool the layouts were computed from, with what it refers to (kept for descriptor()).
  std::unique_ptr<pb::SimpleDescriptorDatabase> database;
  std::unique_ptr<CollectingErrors> errors;
  std::unique_ptr<pb::DescriptorPool> pool;
};

Status invalid(std::string reason) {
  return Status(StatusCode::kInvalidArgument, "invalid FileDescriptorSet: " + std::move(reason));
}

Status too_big(std::string what, uint64_t count, uint64_t limit, std::string_view name) {
  return Status(StatusCode::kResourceExhausted,
                fmt::format("schema has {} {}, more than the limit of {} (limits::{})", count, what,
                            limit, name));
}

// Counts the types, fields and declaration nesting of `set` without building anything, stopping
// at the first limit passed.
Status check_limits(const pb::FileDescriptorSet& set, const SchemaLimits& limits) {
  uint64_t types = 0, fields = 0;
  struct Pending {
    const pb::DescriptorProto* message;
    uint32_t depth;
  };
  std::vector<Pending> stack;
  auto count_enum = [&](const pb::EnumDescriptorProto& e) {
    ++types;
    fields += static_cast<uint64_t>(e.value_size());
  };
  for (const pb::FileDescriptorProto& file : set.file()) {
    fields += static_cast<uint64_t>(file.extension_size());
    for (const auto& e : file.enum_type()) count_enum(e);
    for (const auto& m : file.message_type()) stack.push_back({&m, 1});
    while (!stack.empty()) {
      const Pending next = stack.back();
      stack.pop_back();
      if (next.depth > limits.max_nesting) {
        return too_big("message types declared inside each other", next.depth, limits.max_nesting,
                       "kMaxSchemaNesting");
      }
      ++types;
      fields += static_cast<uint64_t>(next.message->field_size()) +
                static_cast<uint64_t>(next.message->extension_size());
      for (const auto& e : next.message->enum_type()) count_enum(e);
      for (const auto& m : next.message->nested_type()) stack.push_back({&m, next.depth + 1});
      if (types > limits.max_types) {
        return too_big("message and enum types", types, limits.max_types, "kMaxSchemaTypes");
      }
      if (fields > limits.max_fields) {
        return too_big("fields and enum values", fields, limits.max_fields, "kMaxSchemaFields");
      }
    }
    if (types > limits.max_types) {
      return too_big("message and enum types", types, limits.max_types, "kMaxSchemaTypes");
    }
    if (fields > limits.max_fields) {
      return too_big("fields and enum values", fields, limits.max_fields, "kMaxSchemaFields");
    }
  }
  return Status();
}

}  // namespace

Expected<std::shared_ptr<const Schema>> Schema::from_file_descriptor_set(
    std::string_view bytes, const SchemaLimits& limits) {
  if (bytes.size() > limits.max_bytes) {
    return too_big("bytes", bytes.size(), limits.max_bytes, "kMaxSchemaBytes");
  }
  pb::FileDescriptorSet set;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !set.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return invalid("not a serialized google.protobuf.FileDescriptorSet");
  }
  MRPC_TRY_STATUS(check_limits(set, limits));
  auto schema = std::make_shared<DescriptorSchema>();
  schema->database = std::make_unique<pb::SimpleDescriptorDatabase>();
  for (const pb::FileDescriptorProto& file : set.file()) {
    if (!schema->database->Add(file))
      return invalid("file " + file.name() + " is given twice or is malformed");
  }
  schema->errors = std::make_unique<CollectingErrors>();
  schema->pool = std::make_unique<pb::DescriptorPool>(schema->database.get(), schema->errors.get());
  const CollectingErrors& errors = *schema->errors;
  for (const pb::FileDescriptorProto& proto : set.file()) {
    const pb::FileDescriptor* file = schema->pool->FindFileByName(proto.name());
    if (file == nullptr) {
      return invalid(fmt::format("file {} does not build: {}", proto.name(),
                                 errors.count == 0 ? "missing import" : errors.text()));
    }
    for (int i = 0; i < file->message_type_count(); ++i)
      schema->add_messages(*file->message_type(i));
    for (int s = 0; s < file->service_count(); ++s) {
      const pb::ServiceDescriptor& service = *file->service(s);
      ServiceInfo info;
      info.full_name = service.full_name();
      for (int m = 0; m < service.method_count(); ++m) {
        const pb::MethodDescriptor& method = *service.method(m);
        info.methods.push_back(MethodInfo{method.name(), &schema->layouts.add(*method.input_type()),
                                          &schema->layouts.add(*method.output_type())});
      }
      schema->services.emplace(info.full_name, std::move(info));
    }
  }
  return std::shared_ptr<const Schema>(std::move(schema));
}

}  // namespace mrpc
