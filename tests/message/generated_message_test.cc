// Generated accessors: every field kind of nested.proto round-trips; a read-only view (no heap)
// reads the same; corrupt references read as empty instead of crashing.
#include <doctest/doctest.h>

#include <cstring>

#include "document_fixture.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/schema.h"

using mrpc::ShmHeap;
using mrpc::testing::TestRegion;

namespace {

// The same message seen as a received one: no heap, so nothing can be written through it.
nested::Document read_only(const nested::Document& doc) {
  mrpc::MessageRef ref = doc.ref();
  ref.heap = nullptr;
  return nested::Document(ref);
}

void write_ref(const mrpc::MessageRef& message, uint32_t field_offset, mrpc::RegionRef value) {
  std::memcpy(message.base + message.offset + field_offset, &value, sizeof(value));
}

}  // namespace

TEST_CASE("generated accessors round-trip every field kind of nested.proto") {
  TestRegion region(1 << 20);
  ShmHeap heap(region.base(), region.size());
  auto doc = nested::Document::create(heap);
  mrpc::testing::fill_document(doc);
  REQUIRE(mrpc::sendable(doc.ref()).ok());
  mrpc::testing::check_document(doc);
  mrpc::testing::check_document(read_only(doc));
  doc.reset();
}

TEST_CASE("an empty message reads as defaults and clear_ undoes set_") {
  TestRegion region(1 << 16);
  ShmHeap heap(region.base(), region.size());
  auto doc = nested::Document::create(heap);
  CHECK_FALSE(doc.flag());
  CHECK(doc.title().empty());
  CHECK_FALSE(doc.has_origin());
  CHECK(doc.origin().x() == 0);
  CHECK(doc.body_case() == nested::Document::BODY_NOT_SET);
  CHECK(doc.numbers_size() == 0);
  CHECK(doc.numbers(0) == 0);  // out of range reads as the default
  CHECK(doc.tags(3).empty());
  CHECK(doc.sections(1).title().empty());

  doc.set_maybe_name("x");
  doc.set_title("t");
  doc.mutable_origin().set_y(3);
  doc.set_number(7);
  doc.add_tags("a");
  CHECK(doc.has_maybe_name());
  CHECK(doc.body_case() == nested::Document::kNumber);
  CHECK(doc.number() == 7);
  doc.set_text("now text");  // switching the oneof member clears the old one
  CHECK(doc.number() == 0);
  CHECK(doc.text() == "now text");
  doc.clear_maybe_name();
  doc.clear_title();
  doc.clear_origin();
  doc.clear_body();
  doc.clear_tags();
  CHECK_FALSE(doc.has_maybe_name());
  CHECK(doc.title().empty());
  CHECK_FALSE(doc.has_origin());
  CHECK(doc.body_case() == nested::Document::BODY_NOT_SET);
  CHECK(doc.tags_size() == 0);
  doc.add_tags("again");
  CHECK(doc.tags(0) == "again");
  // set_ on an existing element, and strings that shrink and grow in place
  doc.set_tags(0, "replaced");
  CHECK(doc.tags(0) == "replaced");
  doc.set_title("a much longer title than before");
  doc.set_title("short");
  CHECK(doc.title() == "short");
  doc.reset();
  CHECK(heap.used_bytes() == 0);
}

TEST_CASE("a read-only view ignores writes") {
  TestRegion region(1 << 16);
  ShmHeap heap(region.base(), region.size());
  auto doc = nested::Document::create(heap);
  doc.set_title("kept");
  auto view = read_only(doc);
  view.set_title("not written");
  view.set_i32(5);
  view.add_numbers(1);
  view.mutable_origin().set_x(1);
  CHECK(doc.title() == "kept");
  CHECK(doc.i32() == 0);
  CHECK(doc.numbers_size() == 0);
  CHECK_FALSE(doc.has_origin());
  doc.reset();
}

TEST_CASE("corrupt references in a received message read as empty and never out of bounds") {
  TestRegion region(1 << 16);
  ShmHeap heap(region.base(), region.size());
  auto doc = nested::Document::create(heap);
  mrpc::testing::fill_document(doc);
  auto schema = mrpc::Schema::from_file_descriptor_set(nested::file_descriptor_set_nested());
  REQUIRE(schema.ok());
  const mrpc::MessageLayout& layout = *(*schema)->message("nested.Document");
  auto offset_of = [&](const char* name) { return layout.field_by_name(name)->offset; };

  write_ref(doc.ref(), offset_of("title"), {region.size() - 4, 100, 100});
  write_ref(doc.ref(), offset_of("blob"), {uint64_t{1} << 40, 5, 5});
  write_ref(doc.ref(), offset_of("numbers"), {0, 0xffffffffu, 0xffffffffu});
  write_ref(doc.ref(), offset_of("origin"), {region.size() - 8, 16, 16});
  write_ref(doc.ref(), offset_of("sections"), {~uint64_t{0} - 4, 2, 2});
  auto view = read_only(doc);
  CHECK(view.title().empty());
  CHECK(view.blob().empty());
  CHECK(view.numbers_size() == 0);
  CHECK(view.numbers(5) == 0);
  CHECK(view.origin().x() == 0);
  CHECK(view.sections_size() == 0);
  CHECK(view.sections(0).title().empty());

  // A view whose root itself is out of the region.
  nested::Document nowhere(
      mrpc::MessageRef{region.base(), region.size(), region.size() - 1, nullptr});
  CHECK(nowhere.title().empty());
  CHECK(nowhere.tree().children_size() == 0);
  nested::Document nothing(mrpc::MessageRef{});
  CHECK(nothing.counts_at("a") == 0);
  doc.reset();
}
