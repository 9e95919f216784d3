// MrpcGenerator: from one .proto file, writes x.mrpc.h (message classes over shared memory at the
// offsets of mrpc::LayoutSet, enums, service stubs and skeletons) and x.mrpc.cc (the embedded
// FileDescriptorSet and service schemas). Runs inside protoc, single-threaded.
#pragma once

#include <google/protobuf/compiler/code_generator.h>

#include <string>

namespace mrpc::tools {

class MrpcGenerator final : public google::protobuf::compiler::CodeGenerator {
 public:
  bool Generate(const google::protobuf::FileDescriptor* file, const std::string& parameter,
                google::protobuf::compiler::GeneratorContext* context,
                std::string* error) const override;
  uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

}  // namespace mrpc::tools
