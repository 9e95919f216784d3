// Test helpers shared by the message tests: a region in plain memory, and a nested.Document that
// sets every kind of field, with the check that a message reads back exactly that.
#pragma once

#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mrpc/message/shm_heap.h"
#include "nested.mrpc.h"

namespace mrpc::testing {

// Zeroed, 64-byte-aligned memory standing in for a shared-memory region.
class TestRegion {
 public:
  explicit TestRegion(uint64_t bytes) : words_(new uint64_t[(bytes + 7) / 8]()), size_(bytes) {}
  std::byte* base() const { return reinterpret_cast<std::byte*>(words_.get()); }
  uint64_t size() const { return size_; }

 private:
  std::unique_ptr<uint64_t[]> words_;
  uint64_t size_;
};

inline std::string blob_bytes() {
  return std::string("\0\x01\xff\x7f binary", 11);
}

inline void fill_tree(nested::Tree tree, const std::string& label, int depth) {
  tree.set_label(label);
  if (depth == 0) return;
  for (int i = 0; i < 2; ++i)
    fill_tree(tree.add_children(), label + "." + std::to_string(i), depth - 1);
}

// Sets every field kind of nested.Document.
inline void fill_document(nested::Document doc) {
  doc.set_flag(true);
  doc.set_i32(-7);
  doc.set_s32(-123456);
  doc.set_u32(4000000000u);
  doc.set_f32(77);
  doc.set_i64(-(int64_t{1} << 40));
  doc.set_s64(-5);
  doc.set_u64(~uint64_t{0});
  doc.set_sf64(-99);
  doc.set_ratio(0.5f);
  doc.set_weight(2.25);
  doc.set_kind(nested::Document::IMAGE);
  doc.set_color(nested::BLUE);
  doc.set_maybe_count(0);  // set to the default value: presence must still say set
  doc.set_title("hello, shared memory");
  doc.set_blob(blob_bytes());
  auto origin = doc.mutable_origin();
  origin.set_x(1);
  origin.set_y(2);
  auto lead = doc.mutable_lead();
  lead.set_title("lead");
  for (int i = 0; i < 3; ++i) lead.add_paragraphs("paragraph " + std::to_string(i));
  lead.mutable_anchor().set_x(42);
  for (int i = 0; i < 100; ++i) doc.add_numbers(i * i - 50);
  for (int i = 0; i < 9; ++i) doc.add_samples(i / 4.0);
  for (int i = 0; i < 5; ++i) doc.add_switches(i % 2 == 0);
  for (int i = 0; i < 10; ++i) doc.add_tags("tag-" + std::to_string(i));
  doc.add_chunks(blob_bytes());
  doc.add_chunks("");
  for (int i = 0; i < 5; ++i) {
    auto point = doc.add_path();
    point.set_x(i);
    point.set_y(-i);
  }
  for (int i = 0; i < 3; ++i) {
    auto section = doc.add_sections();
    section.set_title("section " + std::to_string(i));
    for (int p = 0; p <= i; ++p)
      section.add_paragraphs(
          std::string(static_cast<size_t>(10 * p + 1), 'a' + static_cast<char>(p)));
    section.mutable_anchor().set_y(i);
  }
  doc.add_palette(nested::RED);
  doc.add_palette(nested::GREEN);
  doc.set_text("replaced by the location below");
  auto location = doc.mutable_location();
  location.set_x(3);
  location.set_y(4);
  doc.insert_counts("a", 1);
  doc.insert_counts("b", 2);
  doc.insert_counts("a", 3);  // replaces
  doc.insert_names(5, "five");
  doc.insert_names(-1, "minus one");
  auto home = doc.insert_places("home");
  home.set_x(9);
  home.set_y(10);
  fill_tree(doc.mutable_tree(), "root", 3);
  doc.mutable_tree().mutable_parent_hint().set_label("hint");
}

inline void check_tree(const nested::Tree::View& tree, const std::string& label, int depth) {
  CHECK(tree.label() == label);
  REQUIRE(tree.children_size() == (depth == 0 ? 0 : 2));
  for (int i = 0; i < tree.children_size(); ++i)
    check_tree(tree.children(i), label + "." + std::to_string(i), depth - 1);
}

// Every value fill_document set, read back through the const accessors.
inline void check_document(const nested::Document::View& doc) {
  CHECK(doc.flag());
  CHECK(doc.i32() == -7);
  CHECK(doc.s32() == -123456);
  CHECK(doc.u32() == 4000000000u);
  CHECK(doc.f32() == 77u);
  CHECK(doc.i64() == -(int64_t{1} << 40));
  CHECK(doc.s64() == -5);
  CHECK(doc.u64() == ~uint64_t{0});
  CHECK(doc.sf64() == -99);
  CHECK(doc.ratio() == 0.5f);
  CHECK(doc.weight() == 2.25);
  CHECK(doc.kind() == nested::Document::IMAGE);
  CHECK(doc.color() == nested::BLUE);
  CHECK(doc.has_maybe_count());
  CHECK(doc.maybe_count() == 0);
  CHECK_FALSE(doc.has_maybe_name());
  CHECK(doc.maybe_name().empty());
  CHECK(doc.title() == "hello, shared memory");
  CHECK(doc.blob() == blob_bytes());
  REQUIRE(doc.has_origin());
  CHECK(doc.origin().x() == 1);
  CHECK(doc.origin().y() == 2);
  REQUIRE(doc.has_lead());
  CHECK(doc.lead().title() == "lead");
  REQUIRE(doc.lead().paragraphs_size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(doc.lead().paragraphs(i) == "paragraph " + std::to_string(i));
  CHECK(doc.lead().anchor().x() == 42);
  REQUIRE(doc.numbers_size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(doc.numbers(i) == i * i - 50);
  REQUIRE(doc.samples_size() == 9);
  for (int i = 0; i < 9; ++i) CHECK(doc.samples(i) == i / 4.0);
  REQUIRE(doc.switches_size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(doc.switches(i) == (i % 2 == 0));
  REQUIRE(doc.tags_size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(doc.tags(i) == "tag-" + std::to_string(i));
  REQUIRE(doc.chunks_size() == 2);
  CHECK(doc.chunks(0) == blob_bytes());
  CHECK(doc.chunks(1).empty());
  REQUIRE(doc.path_size() == 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(doc.path(i).x() == i);
    CHECK(doc.path(i).y() == -i);
  }
  REQUIRE(doc.sections_size() == 3);
  for (int i = 0; i < 3; ++i) {
    const auto section = doc.sections(i);
    CHECK(section.title() == "section " + std::to_string(i));
    REQUIRE(section.paragraphs_size() == i + 1);
    for (int p = 0; p <= i; ++p)
      CHECK(section.paragraphs(p) ==
            std::string(static_cast<size_t>(10 * p + 1), 'a' + static_cast<char>(p)));
    CHECK(section.anchor().y() == i);
  }
  REQUIRE(doc.palette_size() == 2);
  CHECK(doc.palette(0) == nested::RED);
  CHECK(doc.palette(1) == nested::GREEN);
  CHECK(doc.body_case() == nested::Document::kLocation);
  CHECK_FALSE(doc.has_text());
  CHECK(doc.text().empty());
  CHECK(doc.has_location());
  CHECK(doc.location().x() == 3);
  CHECK(doc.location().y() == 4);
  CHECK(doc.counts_size() == 2);
  CHECK(doc.counts_at("a") == 3);
  CHECK(doc.counts_at("b") == 2);
  CHECK_FALSE(doc.counts_contains("c"));
  CHECK(doc.counts_at("c") == 0);
  CHECK(doc.names_at(5) == "five");
  CHECK(doc.names_at(-1) == "minus one");
  CHECK(doc.names_at(6).empty());
  REQUIRE(doc.places_contains("home"));
  CHECK(doc.places_at("home").x() == 9);
  CHECK(doc.places_at("home").y() == 10);
  REQUIRE(doc.has_tree());
  check_tree(doc.tree(), "root", 3);
  CHECK(doc.tree().has_parent_hint());
  CHECK(doc.tree().parent_hint().label() == "hint");
}

}  // namespace mrpc::testing
