// Schema::from_file_descriptor_set: parses the set, builds it in a private DescriptorPool (which
// checks it is valid and self-contained) and computes every message's layout with LayoutSet.
#include "mrpc/message/schema.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>

#include <map>

#include "mrpc/base/check.h"
#include "mrpc/message/layout.h"

namespace mrpc {
namespace {

namespace pb = google::protobuf;

class CollectingErrors final : public pb::DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, const std::string& element_name, const pb::Message*,
                ErrorLocation, const std::string& message) override {
    if (!text.empty()) text += "; ";
    text += fmt::format("{}: {}: {}", filename, element_name, message);
  }
  std::string text;
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

  void add_messages(const pb::Descriptor& descriptor) {
    layouts.add(descriptor);
    for (int i = 0; i < descriptor.nested_type_count(); ++i)
      add_messages(*descriptor.nested_type(i));
  }

  LayoutSet layouts;
  std::map<std::string, ServiceInfo, std::less<>> services;
};

Status invalid(std::string reason) {
  return Status(StatusCode::kInvalidArgument, "invalid FileDescriptorSet: " + std::move(reason));
}

}  // namespace

Expected<std::shared_ptr<const Schema>> Schema::from_file_descriptor_set(std::string_view bytes) {
  pb::FileDescriptorSet set;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !set.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return invalid("not a serialized google.protobuf.FileDescriptorSet");
  }
  pb::SimpleDescriptorDatabase database;
  for (const pb::FileDescriptorProto& file : set.file()) {
    if (!database.Add(file))
      return invalid("file " + file.name() + " is given twice or is malformed");
  }
  CollectingErrors errors;
  pb::DescriptorPool pool(&database, &errors);
  auto schema = std::make_shared<DescriptorSchema>();
  for (const pb::FileDescriptorProto& proto : set.file()) {
    const pb::FileDescriptor* file = pool.FindFileByName(proto.name());
    if (file == nullptr) {
      return invalid(fmt::format("file {} does not build: {}", proto.name(),
                                 errors.text.empty() ? "missing import" : errors.text));
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
