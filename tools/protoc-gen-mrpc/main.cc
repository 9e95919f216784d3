// protoc-gen-mrpc: entry point; protoc runs it as `--mrpc_out=DIR` (see cmake/MrpcGenerate.cmake).
#include <google/protobuf/compiler/plugin.h>

#include "generator.h"

int main(int argc, char* argv[]) {
  mrpc::tools::MrpcGenerator generator;
  return google::protobuf::compiler::PluginMain(argc, argv, &generator);
}
