// Seeded random documents of examples/nested/nested.proto, every field kind set or left unset at
// random, built through either C++ API of that file: mrpc's generated builders (views, passed by
// value) or protoc's classes (pointers from mutable_ and add_). One generator, so the tests that
// compare the two APIs draw their documents the same way.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "mrpc/base/random.h"

namespace mrpc::testing::nested_documents {

// protoc's builders are pointers, mrpc's are views: either way, the object to call setters on.
template <class Builder>
auto& builder_of(Builder& builder) {
  if constexpr (std::is_pointer_v<Builder>) {
    return *builder;
  } else {
    return builder;
  }
}

// string fields hold UTF-8 (printable ASCII here); bytes fields any byte.
inline std::string random_text(SeededRandom& random, size_t max) {
  std::string text(random.next_u64() % (max + 1), '\0');
  for (char& c : text) c = static_cast<char>(0x20 + random.next_u64() % 95);
  return text;
}

inline std::string random_bytes(SeededRandom& random, size_t max) {
  std::string bytes(random.next_u64() % (max + 1), '\0');
  for (char& c : bytes) c = static_cast<char>(random.next_u64());
  return bytes;
}

template <class PointBuilder>
void fill_point(SeededRandom& random, PointBuilder point_builder) {
  auto& point = builder_of(point_builder);
  point.set_x(static_cast<int32_t>(random.next_u64()));
  if (random.next_u64() % 2) point.set_y(static_cast<int32_t>(random.next_u64()));
}

template <class TreeBuilder>
void fill_tree(SeededRandom& random, TreeBuilder tree_builder, int depth) {
  auto& tree = builder_of(tree_builder);
  tree.set_label(random_text(random, 8));
  if (depth == 0) return;
  for (int i = 0, n = static_cast<int>(random.next_u64() % 3); i < n; ++i)
    fill_tree(random, tree.add_children(), depth - 1);
  if (random.next_u64() % 3 == 0) fill_tree(random, tree.mutable_parent_hint(), depth - 1);
}

// `Color` is the API's nested.Color enum (the two APIs name it in different namespaces).
template <class Color, class DocumentBuilder>
void fill_document(SeededRandom& random, DocumentBuilder document_builder) {
  auto& doc = builder_of(document_builder);
  using Kind = typename std::remove_reference_t<decltype(doc)>::Kind;
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
  if (maybe()) doc.set_kind(static_cast<Kind>(random.next_u64() % 3));
  if (maybe()) doc.set_color(static_cast<Color>(random.next_u64() % 4));
  if (maybe()) doc.set_maybe_count(static_cast<int32_t>(random.next_u64() % 3));
  if (maybe()) doc.set_maybe_name(random_text(random, 4));
  if (maybe()) doc.set_title(random_text(random, 40));
  if (maybe()) doc.set_blob(random_bytes(random, 300));
  if (maybe()) fill_point(random, doc.mutable_origin());
  if (maybe()) {
    auto lead_builder = doc.mutable_lead();
    auto& lead = builder_of(lead_builder);
    lead.set_title(random_text(random, 10));
    for (int i = 0, n = static_cast<int>(random.next_u64() % 4); i < n; ++i)
      lead.add_paragraphs(random_text(random, 20));
    if (maybe()) fill_point(random, lead.mutable_anchor());
  }
  for (int i = 0, count = static_cast<int>(random.next_u64() % 12); i < count; ++i) {
    doc.add_numbers(static_cast<int32_t>(random.next_u64()));
    doc.add_samples(random.next_unit());
    doc.add_switches(random.next_u64() % 2 == 0);
    doc.add_tags(random_text(random, 6));
    doc.add_chunks(random_bytes(random, 6));
    fill_point(random, doc.add_path());
    auto section_builder = doc.add_sections();
    auto& section = builder_of(section_builder);
    section.set_title(random_text(random, 5));
    if (maybe()) fill_point(random, section.mutable_anchor());
    doc.add_palette(static_cast<Color>(random.next_u64() % 4));
    // Keys and values drawn in one order for both APIs (argument order is unspecified).
    const std::string count_key = random_text(random, 3);
    const auto count_value = static_cast<int32_t>(random.next_u64());
    const auto name_key = static_cast<int64_t>(random.next_u64() % 64);
    const std::string name_value = random_text(random, 5);
    const std::string place_key = random_text(random, 3);
    if constexpr (std::is_pointer_v<DocumentBuilder>) {
      (*doc.mutable_counts())[count_key] = count_value;
      (*doc.mutable_names())[name_key] = name_value;
      fill_point(random, &(*doc.mutable_places())[place_key]);
    } else {
      doc.insert_counts(count_key, count_value);
      doc.insert_names(name_key, name_value);
      fill_point(random, doc.insert_places(place_key));
    }
  }
  switch (random.next_u64() % 5) {
    case 0:
      doc.set_text(random_text(random, 10));
      break;
    case 1:
      doc.set_image(random_bytes(random, 10));
      break;
    case 2:
      fill_point(random, doc.mutable_location());
      break;
    case 3:
      doc.set_number(static_cast<int64_t>(random.next_u64()));
      break;
    default:
      break;
  }
  if (maybe()) fill_tree(random, doc.mutable_tree(), 3);
}

}  // namespace mrpc::testing::nested_documents
