// One program linking protoc's C++ classes of nested.proto (nested::Document, in nested.pb.h)
// beside mrpc's classes of the same .proto, generated with mrpc_generate(... NAMESPACE shm)
// (nested::shm::Document): conversion between the two, typed on both sides, round-trips exactly.
#include <doctest/doctest.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/message_differencer.h>

#include <string>

#include "mrpc/base/limits.h"
#include "mrpc/base/random.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/protobuf_convert.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/message/schema.h"
#include "mrpc/message/shm_heap.h"
#include "nested.mrpc.h"  // nested::shm::*
#include "nested.pb.h"    // nested::* (protoc)
#include "random_nested_document.h"

namespace {

// Zeroed memory standing in for the app's heap and the receiver's region.
struct Region {
  explicit Region(uint64_t bytes) : words(new uint64_t[bytes / 8]()), size(bytes) {}
  std::byte* base() const { return reinterpret_cast<std::byte*>(words.get()); }
  std::unique_ptr<uint64_t[]> words;
  uint64_t size;
};

}  // namespace

TEST_CASE(
    "protoc's classes and mrpc's classes generated with NAMESPACE shm link in one program and "
    "convert both ways exactly, for seeded random documents") {
  Region heap_region(16 << 20);
  mrpc::ShmHeap heap(heap_region.base(), heap_region.size);
  Region receive_region(16 << 20);
  mrpc::RegionAllocator receive_allocator(receive_region.size);
  auto schema = mrpc::Schema::from_file_descriptor_set(nested::shm::file_descriptor_set_nested());
  REQUIRE(schema.ok());
  const mrpc::MessageLayout& layout = *(*schema)->message("nested.Document");

  for (uint64_t seed = 1; seed <= 300; ++seed) {
    CAPTURE(seed);
    mrpc::SeededRandom random(seed);
    nested::Document original;
    mrpc::testing::nested_documents::fill_document<nested::Color>(random, &original);

    // protoc class -> mrpc message being built.
    auto built = nested::shm::Document::create(heap);
    const mrpc::Status in = mrpc::from_protobuf(original, built);
    REQUIRE_MESSAGE(in.ok(), in.to_string());
    REQUIRE(mrpc::sendable(built.ref()).ok());
    CHECK(built.title() == original.title());
    CHECK(built.numbers_size() == original.numbers_size());
    CHECK(built.has_origin() == original.has_origin());
    CHECK(static_cast<int>(built.body_case()) == static_cast<int>(original.body_case()));

    // What the daemon does with a sent message: a copy into the receiver's read-only region.
    auto copied = mrpc::copy_message(
        layout, {heap_region.base(), heap_region.size}, built.ref().offset,
        {receive_region.base(), receive_region.size}, receive_allocator,
        {mrpc::limits::kDefaultMaxMessageBytes, mrpc::limits::kMaxMessageNesting});
    REQUIRE_MESSAGE(copied.ok(), copied.status().to_string());
    const nested::shm::Document::View received(
        mrpc::MessageRef{receive_region.base(), receive_region.size, *copied, nullptr});

    // mrpc message (built, and received) -> protoc class: equal to the original, and its wire
    // bytes too (deterministic serialization).
    for (const nested::shm::Document::View* view :
         {&static_cast<const nested::shm::Document::View&>(built), &received}) {
      nested::Document back;
      back.set_title("cleared by to_protobuf");
      const mrpc::Status out = mrpc::to_protobuf(*view, back);
      REQUIRE_MESSAGE(out.ok(), out.to_string());
      std::string report;
      google::protobuf::util::MessageDifferencer differencer;
      differencer.ReportDifferencesToString(&report);
      CHECK_MESSAGE(differencer.Compare(original, back), report);
      std::string a, b;
      {
        google::protobuf::io::StringOutputStream sa(&a), sb(&b);
        google::protobuf::io::CodedOutputStream ca(&sa), cb(&sb);
        ca.SetSerializationDeterministic(true);
        cb.SetSerializationDeterministic(true);
        CHECK(original.SerializeToCodedStream(&ca));
        CHECK(back.SerializeToCodedStream(&cb));
      }
      CHECK(a == b);
    }
    REQUIRE(receive_allocator.free(*copied).ok());
  }
  CHECK(heap.used_bytes() == 0);
  CHECK(receive_allocator.used_bytes() == 0);
}
