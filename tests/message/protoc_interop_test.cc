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

namespace {

// Zeroed memory standing in for the app's heap and the receiver's region.
struct Region {
  explicit Region(uint64_t bytes) : words(new uint64_t[bytes / 8]()), size(bytes) {}
  std::byte* base() const { return reinterpret_cast<std::byte*>(words.get()); }
  std::unique_ptr<uint64_t[]> words;
  uint64_t size;
};

std::string random_text(mrpc::SeededRandom& random, size_t max) {
  std::string text(random.next_u64() % (max + 1), '\0');
  for (char& c : text) c = static_cast<char>(0x20 + random.next_u64() % 95);
  return text;
}

std::string random_bytes(mrpc::SeededRandom& random, size_t max) {
  std::string bytes(random.next_u64() % (max + 1), '\0');
  for (char& c : bytes) c = static_cast<char>(random.next_u64());
  return bytes;
}

void random_point(mrpc::SeededRandom& random, nested::Point* point) {
  point->set_x(static_cast<int32_t>(random.next_u64()));
  if (random.next_u64() % 2) point->set_y(static_cast<int32_t>(random.next_u64()));
}

void random_tree(mrpc::SeededRandom& random, nested::Tree* tree, int depth) {
  tree->set_label(random_text(random, 8));
  if (depth == 0) return;
  for (int i = 0, n = static_cast<int>(random.next_u64() % 3); i < n; ++i)
    random_tree(random, tree->add_children(), depth - 1);
  if (random.next_u64() % 3 == 0) random_tree(random, tree->mutable_parent_hint(), depth - 1);
}

// Every field kind of nested.Document, through protoc's typed API, each set or not at random.
nested::Document random_document(mrpc::SeededRandom& random) {
  nested::Document doc;
  auto maybe = [&] { return random.next_u64() % 4 != 0; };
  if (maybe()) doc.set_flag(true);
  if (maybe()) doc.set_i32(static_cast<int32_t>(random.next_u64()));
  if (maybe()) doc.set_s32(static_cast<int32_t>(random.next_u64()));
  if (maybe()) doc.set_u32(static_cast<uint32_t>(random.next_u64()));
  if (maybe()) doc.set_f32(static_cast<uint32_t>(random.next_u64()));
  if (maybe()) doc.set_i64(static_cast<int64_t>(random.next_u64()));
  if (maybe()) doc.set_s64(static_cast<int64_t>(random.next_u64()));
  if (maybe()) doc.set_u64(random.next_u64());
  if (maybe()) doc.set_sf64(static_cast<int64_t>(random.next_u64()));
  if (maybe()) doc.set_ratio(static_cast<float>(random.next_unit() * 100 - 50));
  if (maybe()) doc.set_weight(random.next_unit() * 1e9);
  if (maybe()) doc.set_kind(static_cast<nested::Document::Kind>(random.next_u64() % 3));
  if (maybe()) doc.set_color(static_cast<nested::Color>(random.next_u64() % 4));
  if (maybe()) doc.set_maybe_count(static_cast<int32_t>(random.next_u64() % 3));
  if (maybe()) doc.set_maybe_name(random_text(random, 4));
  if (maybe()) doc.set_title(random_text(random, 40));
  if (maybe()) doc.set_blob(random_bytes(random, 300));
  if (maybe()) random_point(random, doc.mutable_origin());
  if (maybe()) {
    nested::Document::Section* lead = doc.mutable_lead();
    lead->set_title(random_text(random, 10));
    for (int i = 0, n = static_cast<int>(random.next_u64() % 4); i < n; ++i)
      lead->add_paragraphs(random_text(random, 20));
    if (maybe()) random_point(random, lead->mutable_anchor());
  }
  for (int i = 0, count = static_cast<int>(random.next_u64() % 12); i < count; ++i) {
    doc.add_numbers(static_cast<int32_t>(random.next_u64()));
    doc.add_samples(random.next_unit());
    doc.add_switches(random.next_u64() % 2 == 0);
    doc.add_tags(random_text(random, 6));
    doc.add_chunks(random_bytes(random, 6));
    random_point(random, doc.add_path());
    nested::Document::Section* section = doc.add_sections();
    section->set_title(random_text(random, 5));
    if (maybe()) random_point(random, section->mutable_anchor());
    doc.add_palette(static_cast<nested::Color>(random.next_u64() % 4));
    (*doc.mutable_counts())[random_text(random, 3)] = static_cast<int32_t>(random.next_u64());
    (*doc.mutable_names())[static_cast<int64_t>(random.next_u64() % 64)] = random_text(random, 5);
    random_point(random, &(*doc.mutable_places())[random_text(random, 3)]);
  }
  switch (random.next_u64() % 5) {
    case 0:
      doc.set_text(random_text(random, 10));
      break;
    case 1:
      doc.set_image(random_bytes(random, 10));
      break;
    case 2:
      random_point(random, doc.mutable_location());
      break;
    case 3:
      doc.set_number(static_cast<int64_t>(random.next_u64()));
      break;
    default:
      break;
  }
  if (maybe()) random_tree(random, doc.mutable_tree(), 3);
  return doc;
}

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
    const nested::Document original = random_document(random);

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
