// Test-only helpers for the codec tests: schemas loaded from .proto files at run time, seeded
// random messages (libprotobuf DynamicMessage), a reference wire writer that reorders fields,
// flips packing and adds unknown fields, and a tree-walking reference that builds a message in a
// region from a libprotobuf message and reads it back. The reference code walks the layout at run
// time; it exists only here, to check the compiled codecs against.
#pragma once

#include <google/protobuf/compiler/importer.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "mrpc/message/copy.h"
#include "mrpc/message/layout.h"

namespace mrpc::codec_testing {

// Loads .proto files from the repository (paths relative to MRPC_SOURCE_DIR).
class ProtoLibrary {
 public:
  ProtoLibrary();
  const google::protobuf::Descriptor& message(const std::string& file,
                                              const std::string& full_name);
  std::unique_ptr<google::protobuf::Message> make(const google::protobuf::Descriptor& type);

 private:
  struct Errors : google::protobuf::compiler::MultiFileErrorCollector {
    void AddError(const std::string& file, int line, int column,
                  const std::string& message) override;
  };
  google::protobuf::compiler::DiskSourceTree tree_;
  Errors errors_;
  google::protobuf::compiler::Importer importer_;
  google::protobuf::DynamicMessageFactory factory_;
};

// A random message: every field set with probability ~1/2 (required ones always), repeated fields
// 0-4 elements, recursion stopped at `depth`. No NaN (equality would fail on it).
void fill_random(google::protobuf::Message& message, std::mt19937_64& random, int depth = 3);

// The protobuf encoding of `message`, with the fields in a random order (keeping the order of
// elements of one field), each repeated scalar packed or not at random, and (if `unknown`)
// random fields the schema does not have appended.
std::string write_variant(const google::protobuf::Message& message, std::mt19937_64& random,
                          bool unknown);

// Plain memory standing in for a shared-memory region, with a bump allocator.
class Region {
 public:
  explicit Region(uint64_t bytes);
  std::byte* base() const { return reinterpret_cast<std::byte*>(words_.get()); }
  uint64_t size() const { return size_; }
  ConstRegion view() const { return {base(), size_}; }
  MutableRegion mutable_view() const { return {base(), size_}; }
  uint64_t allocate(uint64_t bytes);  // 8-aligned, zeroed; aborts the test when full

 private:
  std::unique_ptr<uint64_t[]> words_;
  uint64_t size_;
  uint64_t used_ = 8;  // offset 0 stays unused, like a real heap's first block
};

// Builds `message` in `region` per `layout`; returns the root body's offset.
uint64_t build(const MessageLayout& layout, const google::protobuf::Message& message,
               Region& region);
// Reads the message at `offset` of `region` (per `layout`) into `out`.
void read(const MessageLayout& layout, const std::byte* base, uint64_t offset,
          google::protobuf::Message& out);

// Equality as protobuf means it (maps as maps), with the first difference in `*report`.
bool equal(const google::protobuf::Message& a, const google::protobuf::Message& b,
           std::string* report);

}  // namespace mrpc::codec_testing
