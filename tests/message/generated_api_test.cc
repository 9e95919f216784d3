// The generated API's guarantees: an unsent message is freed when its owner is dropped; views of
// repeated-field elements stay valid as the field grows; setters say when they could not write;
// CopyFrom/MergeFrom are deep and follow protobuf's rules; conversion to and from protobuf
// round-trips exactly; map lookups are hash lookups with insert-or-assign.
#include <doctest/doctest.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/message_differencer.h>

#include <fmt/format.h>

#include <cmath>
#include <string>

#include "document_fixture.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/random.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/protobuf_convert.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/message/schema.h"
#include "random_nested_document.h"

using mrpc::ShmHeap;
using mrpc::StatusCode;
using mrpc::testing::TestRegion;
namespace nested_documents = mrpc::testing::nested_documents;
namespace pb = google::protobuf;

namespace {

// A heap to build in, and a receive region the daemon would copy messages into.
struct Bench {
  TestRegion heap_region{16 << 20};
  ShmHeap heap{heap_region.base(), heap_region.size()};
  TestRegion receive_region{16 << 20};
  mrpc::RegionAllocator receive_allocator{receive_region.size()};
  std::shared_ptr<const mrpc::Schema> schema;

  Bench() {
    auto parsed = mrpc::Schema::from_file_descriptor_set(nested::file_descriptor_set_nested());
    REQUIRE(parsed.ok());
    schema = *parsed;
  }
  // What the daemon does with a sent message: copies it into the receiver's read-only region.
  nested::Document::View receive(const nested::Document& built) {
    auto copied = mrpc::copy_message(
        *schema->message("nested.Document"), {heap_region.base(), heap_region.size()},
        built.ref().offset, {receive_region.base(), receive_region.size()}, receive_allocator,
        {mrpc::limits::kDefaultMaxMessageBytes, mrpc::limits::kMaxMessageNesting});
    REQUIRE_MESSAGE(copied.ok(), copied.status().to_string());
    return nested::Document::View(
        mrpc::MessageRef{receive_region.base(), receive_region.size(), *copied, nullptr});
  }
};

// protobuf's own classes of nested.proto share the C++ namespace of mrpc's (nested::Document),
// so the protobuf side here is a DynamicMessage of the same descriptor.
struct Protobuf {
  pb::DescriptorPool pool;
  pb::DynamicMessageFactory factory{&pool};
  const pb::Descriptor* document = nullptr;

  Protobuf() {
    pb::FileDescriptorSet set;
    REQUIRE(set.ParseFromString(std::string(nested::file_descriptor_set_nested())));
    for (const auto& file : set.file()) REQUIRE(pool.BuildFile(file) != nullptr);
    document = pool.FindMessageTypeByName("nested.Document");
    REQUIRE(document != nullptr);
  }
  std::unique_ptr<pb::Message> convert(const nested::Document::View& view) {
    std::unique_ptr<pb::Message> message(factory.GetPrototype(document)->New());
    const mrpc::Status status = mrpc::to_protobuf(view, *message);
    REQUIRE_MESSAGE(status.ok(), status.to_string());
    return message;
  }
};

bool equal(const pb::Message& a, const pb::Message& b, std::string* report) {
  pb::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(report);
  return differencer.Compare(a, b);
}

}  // namespace

TEST_CASE("dropping 10000 unsent messages leaves the heap's usage where it started") {
  Bench bench;
  const uint64_t used = bench.heap.used_bytes();
  mrpc::SeededRandom random(7);
  for (int i = 0; i < 10000; ++i) {
    auto doc = nested::Document::create(bench.heap);
    nested_documents::fill_document<nested::Color, nested::Document>(random, doc);
    REQUIRE(mrpc::sendable(doc.ref()).ok());
  }
  CHECK(bench.heap.used_bytes() == used);
  CHECK(bench.heap.live_messages() == 0);

  // Moving the owner moves the duty to free; release() hands it to the caller.
  auto first = nested::Document::create(bench.heap);
  auto second = std::move(first);
  CHECK(bench.heap.live_messages() == 1);
  const mrpc::MessageRef root = second.release();
  CHECK(bench.heap.live_messages() == 1);
  CHECK(bench.heap.free_message(root.offset).ok());
  CHECK(bench.heap.used_bytes() == used);
}

TEST_CASE("views of repeated message elements stay valid as the field grows, nested ones too") {
  Bench bench;
  auto doc = nested::Document::create(bench.heap);
  auto first = doc.add_sections();
  auto tree = doc.mutable_tree();
  auto child = tree.add_children();
  auto grandchild = child.add_children();
  for (int i = 0; i < 200; ++i) {  // each growth moves the arrays
    doc.add_sections().set_title("s" + std::to_string(i));
    tree.add_children().set_label("c" + std::to_string(i));
    child.add_children().set_label("g" + std::to_string(i));
  }
  CHECK(first.set_title("first, written after 200 adds"));
  first.add_paragraphs("p");
  CHECK(child.set_label("child"));
  CHECK(grandchild.set_label("grandchild"));
  CHECK(doc.sections_size() == 201);
  CHECK(doc.sections(0).title() == "first, written after 200 adds");
  CHECK(doc.sections(0).paragraphs(0) == "p");
  CHECK(doc.sections(200).title() == "s199");
  CHECK(doc.tree().children(0).label() == "child");
  CHECK(doc.tree().children(0).children(0).label() == "grandchild");
  CHECK(doc.tree().children(0).children(200).label() == "g199");
  // A view of an element that a clear removed reads as empty and writes nothing.
  doc.clear_sections();
  CHECK_FALSE(first.set_title("gone"));
  CHECK(first.title().empty());
}

TEST_CASE("setters return false once the heap is full and the message then cannot be sent") {
  TestRegion region(64 << 10);
  ShmHeap heap(region.base(), region.size());
  auto doc = nested::Document::create(heap);
  CHECK(doc.set_title("fits"));
  CHECK(doc.set_i32(5));
  CHECK_FALSE(doc.set_blob(std::string(128 << 10, 'x')));  // larger than the heap
  CHECK(mrpc::sendable(doc.ref()).code() == StatusCode::kResourceExhausted);
  CHECK_FALSE(doc.add_tags(std::string(100 << 10, 'y')));
  // A message that could not even be created: every write says so.
  std::vector<mrpc::Owned<nested::Document>> fillers;
  for (;;) {
    auto filler = nested::Document::create(heap);
    if (!mrpc::sendable(filler.ref()).ok()) {
      CHECK_FALSE(filler.set_i32(1));
      CHECK_FALSE(filler.set_title("t"));
      CHECK_FALSE(filler.add_numbers(1));
      CHECK_FALSE(filler.insert_counts("k", 1));
      CHECK(filler.add_sections().title().empty());
      break;
    }
    fillers.push_back(std::move(filler));
  }
  // A received (read-only) message accepts no writes either, through a forced mutable view.
  nested::Document forced(
      mrpc::MessageRef{doc.ref().base, doc.ref().region_size, doc.ref().offset, nullptr});
  CHECK_FALSE(forced.set_i32(9));
  CHECK(doc.i32() == 5);
}

namespace {
// The message sendable() gives for a message that lost the write of `field` to a full heap.
std::string lost_write(std::string_view field) {
  return fmt::format(
      "send heap full while the message was built: the write of {} (and any after it) was lost",
      field);
}
}  // namespace

TEST_CASE("sendable names the first field whose write a full heap lost, nested and repeated") {
  SUBCASE("a string of a sub-message") {
    TestRegion region(64 << 10);
    ShmHeap heap(region.base(), region.size());
    auto doc = nested::Document::create(heap);
    CHECK(doc.set_title("fits"));
    CHECK_FALSE(doc.mutable_lead().set_title(std::string(128 << 10, 'x')));
    CHECK_FALSE(doc.set_blob(std::string(100 << 10, 'y')));  // failed already: not the one named
    const mrpc::Status status = mrpc::sendable(doc.ref());
    CHECK(status.code() == StatusCode::kResourceExhausted);
    CHECK(status.message() == lost_write("nested.Document.Section.title"));
  }
  SUBCASE("an element of a repeated string") {
    TestRegion region(64 << 10);
    ShmHeap heap(region.base(), region.size());
    auto doc = nested::Document::create(heap);
    CHECK(doc.add_tags("fits"));
    CHECK_FALSE(doc.add_tags(std::string(128 << 10, 't')));
    CHECK(mrpc::sendable(doc.ref()).message() == lost_write("nested.Document.tags"));
  }
  SUBCASE("an element of a repeated message, added while other messages fill the heap") {
    TestRegion region(64 << 10);
    ShmHeap heap(region.base(), region.size());
    auto doc = nested::Document::create(heap);
    std::vector<mrpc::Owned<nested::Point>> fillers;
    for (;;) {
      auto filler = nested::Point::create(heap);
      if (!mrpc::sendable(filler.ref()).ok()) break;
      fillers.push_back(std::move(filler));
    }
    int added = 0;
    while (mrpc::sendable(doc.ref()).ok()) {
      REQUIRE(added < 100000);
      doc.add_sections();
      ++added;
    }
    CHECK(mrpc::sendable(doc.ref()).message() == lost_write("nested.Document.sections"));
  }
  SUBCASE("a map entry") {
    TestRegion region(64 << 10);
    ShmHeap heap(region.base(), region.size());
    auto doc = nested::Document::create(heap);
    CHECK_FALSE(doc.insert_names(7, std::string(128 << 10, 'n')));
    CHECK(mrpc::sendable(doc.ref()).message() == lost_write("nested.Document.NamesEntry.value"));
  }
  SUBCASE("a write refused for another reason does not fail the message") {
    TestRegion region(64 << 10);
    ShmHeap heap(region.base(), region.size());
    auto doc = nested::Document::create(heap);
    CHECK_FALSE(doc.set_numbers(3, 1));  // no element 3
    CHECK_FALSE(doc.set_tags(0, "none"));
    CHECK(mrpc::sendable(doc.ref()).ok());
  }
}

TEST_CASE("CopyFrom of a received message equals the original, for seeded random documents") {
  Bench bench;
  Protobuf protobuf;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    CAPTURE(seed);
    mrpc::SeededRandom random(seed);
    auto original = nested::Document::create(bench.heap);
    nested_documents::fill_document<nested::Color, nested::Document>(random, original);
    REQUIRE(mrpc::sendable(original.ref()).ok());
    const nested::Document::View received = bench.receive(original);

    auto copy = nested::Document::create(bench.heap);
    copy.set_title("overwritten by CopyFrom");
    copy.add_numbers(99);
    REQUIRE(copy.CopyFrom(received));
    auto expected = protobuf.convert(original);
    std::string report;
    CHECK_MESSAGE(equal(*expected, *protobuf.convert(copy), &report), report);
    CHECK_MESSAGE(equal(*expected, *protobuf.convert(received), &report), report);
    REQUIRE(bench.receive_allocator.free(received.ref().offset).ok());
  }
}

TEST_CASE(
    "MergeFrom follows protobuf: set fields overwrite, repeated append, maps insert-or-assign") {
  Bench bench;
  auto into = nested::Document::create(bench.heap);
  into.set_title("kept");
  into.set_i32(1);
  into.add_numbers(1);
  into.insert_counts("a", 1);
  into.insert_counts("b", 2);
  into.mutable_origin().set_x(10);
  auto from = nested::Document::create(bench.heap);
  from.set_i32(2);
  from.add_numbers(2);
  from.insert_counts("b", 20);
  from.insert_counts("c", 30);
  from.mutable_origin().set_y(5);
  REQUIRE(into.MergeFrom(from));
  CHECK(into.title() == "kept");
  CHECK(into.i32() == 2);
  CHECK(into.numbers_size() == 2);
  CHECK(into.numbers(1) == 2);
  CHECK(into.counts_size() == 3);
  CHECK(into.counts_at("a") == 1);
  CHECK(into.counts_at("b") == 20);
  CHECK(into.counts_at("c") == 30);
  CHECK(into.origin().x() == 10);
  CHECK(into.origin().y() == 5);
  CHECK(into.CopyFrom(into));  // copying a message onto itself changes nothing
  CHECK(into.counts_size() == 3);
}

TEST_CASE("conversion to and from protobuf round-trips exactly, for seeded random documents") {
  Bench bench;
  Protobuf protobuf;
  for (uint64_t seed = 1000; seed < 1200; ++seed) {
    CAPTURE(seed);
    mrpc::SeededRandom random(seed);
    auto original = nested::Document::create(bench.heap);
    nested_documents::fill_document<nested::Color, nested::Document>(random, original);
    auto as_protobuf = protobuf.convert(original);
    auto back = nested::Document::create(bench.heap);
    const mrpc::Status status = mrpc::from_protobuf(*as_protobuf, back);
    REQUIRE_MESSAGE(status.ok(), status.to_string());
    std::string report;
    CHECK_MESSAGE(equal(*as_protobuf, *protobuf.convert(back), &report), report);
    // And the wire bytes protobuf makes of both are the same (deterministic: maps sorted).
    auto wire = [](const pb::Message& message) {
      std::string bytes;
      pb::io::StringOutputStream stream(&bytes);
      pb::io::CodedOutputStream coded(&stream);
      coded.SetSerializationDeterministic(true);
      message.SerializeToCodedStream(&coded);
      return bytes;
    };
    const std::string a = wire(*as_protobuf), b = wire(*protobuf.convert(back));
    CHECK(a == b);
  }
  // A protobuf message of another type is refused with both fingerprints named.
  std::unique_ptr<pb::Message> point(
      protobuf.factory.GetPrototype(protobuf.pool.FindMessageTypeByName("nested.Point"))->New());
  auto doc = nested::Document::create(bench.heap);
  const mrpc::Status refused = mrpc::to_protobuf(doc, *point);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK(refused.message().find("nested.Point") != std::string::npos);
}

TEST_CASE("a map of 100000 entries answers 100000 lookups with the right values") {
  Bench bench;
  auto doc = nested::Document::create(bench.heap);
  constexpr int kEntries = 100000;
  for (int i = 0; i < kEntries; ++i) REQUIRE(doc.insert_names(int64_t{i} * 7, std::to_string(i)));
  REQUIRE(doc.insert_names(7, "replaced"));  // insert-or-assign: no second entry
  CHECK(doc.names_size() == kEntries);
  const nested::Document::View received = bench.receive(doc);
  int right = 0;
  for (int i = 0; i < kEntries; ++i) {
    const int64_t key = int64_t{i} * 7;
    const std::string expected = i == 1 ? "replaced" : std::to_string(i);
    right += received.names_at(key) == expected && doc.names_at(key) == expected;
  }
  CHECK(right == kEntries);
  CHECK_FALSE(received.names_contains(3));
  CHECK(received.names_find(3) == -1);
  CHECK(received.names_at(3).empty());
  // Iteration as key/value pairs, in insertion order.
  CHECK(received.names(2).key() == 14);
  CHECK(received.names(2).value() == "2");
}
