#include "document_copy.h"

namespace nested {
namespace {

void copy_section(const Document::Section::View& from, Document::Section to) {
  to.set_title(from.title());
  for (int i = 0; i < from.paragraphs_size(); ++i) to.add_paragraphs(from.paragraphs(i));
  if (from.has_anchor()) copy_point(from.anchor(), to.mutable_anchor());
}

}  // namespace

void copy_point(const Point::View& from, Point to) {
  to.set_x(from.x());
  to.set_y(from.y());
}

void copy_tree(const Tree::View& from, Tree to) {
  to.set_label(from.label());
  for (int i = 0; i < from.children_size(); ++i) copy_tree(from.children(i), to.add_children());
  if (from.has_parent_hint()) copy_tree(from.parent_hint(), to.mutable_parent_hint());
}

void copy_document(const Document::View& from, Document to) {
  // Scalars, enums and optionals.
  to.set_flag(from.flag());
  to.set_i32(from.i32());
  to.set_s32(from.s32());
  to.set_u32(from.u32());
  to.set_f32(from.f32());
  to.set_i64(from.i64());
  to.set_s64(from.s64());
  to.set_u64(from.u64());
  to.set_sf64(from.sf64());
  to.set_ratio(from.ratio());
  to.set_weight(from.weight());
  to.set_kind(from.kind());
  to.set_color(from.color());
  if (from.has_maybe_count()) to.set_maybe_count(from.maybe_count());
  if (from.has_maybe_name()) to.set_maybe_name(from.maybe_name());

  // Strings and messages.
  to.set_title(from.title());
  to.set_blob(from.blob());
  if (from.has_origin()) copy_point(from.origin(), to.mutable_origin());
  if (from.has_lead()) copy_section(from.lead(), to.mutable_lead());

  // Repeated fields.
  for (int i = 0; i < from.numbers_size(); ++i) to.add_numbers(from.numbers(i));
  for (int i = 0; i < from.samples_size(); ++i) to.add_samples(from.samples(i));
  for (int i = 0; i < from.switches_size(); ++i) to.add_switches(from.switches(i));
  for (int i = 0; i < from.tags_size(); ++i) to.add_tags(from.tags(i));
  for (int i = 0; i < from.chunks_size(); ++i) to.add_chunks(from.chunks(i));
  for (int i = 0; i < from.path_size(); ++i) copy_point(from.path(i), to.add_path());
  for (int i = 0; i < from.sections_size(); ++i) copy_section(from.sections(i), to.add_sections());
  for (int i = 0; i < from.palette_size(); ++i) to.add_palette(from.palette(i));

  // The oneof: only its set member.
  switch (from.body_case()) {
    case Document::kText:
      to.set_text(from.text());
      break;
    case Document::kImage:
      to.set_image(from.image());
      break;
    case Document::kLocation:
      copy_point(from.location(), to.mutable_location());
      break;
    case Document::kNumber:
      to.set_number(from.number());
      break;
    case Document::BODY_NOT_SET:
      break;
  }

  // Maps.
  for (int i = 0; i < from.counts_size(); ++i)
    to.insert_counts(from.counts(i).key(), from.counts(i).value());
  for (int i = 0; i < from.names_size(); ++i)
    to.insert_names(from.names(i).key(), from.names(i).value());
  for (int i = 0; i < from.places_size(); ++i)
    copy_point(from.places(i).value(), to.insert_places(from.places(i).key()));

  if (from.has_tree()) copy_tree(from.tree(), to.mutable_tree());
}

}  // namespace nested
