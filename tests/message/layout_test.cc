// MessageLayout: the layout computed at run time from a FileDescriptorSet is the one
// protoc-gen-mrpc baked into generated code, and it follows docs/message-layout.md.
#include <doctest/doctest.h>

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/text_format.h>

#include "echo.mrpc.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/schema.h"
#include "nested.mrpc.h"

namespace {

std::shared_ptr<const mrpc::Schema> nested_schema() {
  auto schema = mrpc::Schema::from_file_descriptor_set(nested::file_descriptor_set_nested());
  REQUIRE(schema.ok());
  return *schema;
}

template <class M>
void check_matches_generated(const mrpc::Schema& schema) {
  const mrpc::MessageLayout* layout = schema.message(M::kFullName);
  REQUIRE(layout != nullptr);
  CHECK(layout->body_size() == M::kBodySize);
  CHECK(layout->fingerprint() == M::kLayoutFingerprint);
}

// A FileDescriptorSet written as text, for layouts of shapes the examples do not have.
std::string descriptor_set_from_text(const char* text) {
  google::protobuf::FileDescriptorSet set;
  REQUIRE(google::protobuf::TextFormat::ParseFromString(text, &set));
  return set.SerializeAsString();
}

}  // namespace

TEST_CASE(
    "layout computed at run time from the FileDescriptorSet equals the one in generated code") {
  auto schema = nested_schema();
  check_matches_generated<nested::Document>(*schema);
  check_matches_generated<nested::Document_Section>(*schema);
  check_matches_generated<nested::Document_CountsEntry>(*schema);
  check_matches_generated<nested::Document_NamesEntry>(*schema);
  check_matches_generated<nested::Document_PlacesEntry>(*schema);
  check_matches_generated<nested::Point>(*schema);
  check_matches_generated<nested::Tree>(*schema);

  auto echo =
      mrpc::Schema::from_file_descriptor_set(echo::EchoService::schema().file_descriptor_set);
  REQUIRE(echo.ok());
  check_matches_generated<echo::EchoRequest>(**echo);
  check_matches_generated<echo::EchoReply>(**echo);
  const mrpc::ServiceInfo* service = (*echo)->service("echo.EchoService");
  REQUIRE(service != nullptr);
  REQUIRE(service->methods.size() == 1);
  CHECK(service->methods[0].name == "Echo");
  CHECK(service->methods[0].input->fingerprint() == echo::EchoRequest::kLayoutFingerprint);
  CHECK(service->methods[0].output->fingerprint() == echo::EchoReply::kLayoutFingerprint);
}

TEST_CASE("layout follows the documented rules for every field kind") {
  auto schema = nested_schema();
  const mrpc::MessageLayout& doc = *schema->message("nested.Document");
  CHECK(doc.body_size() % mrpc::MessageLayout::kAlignment == 0);
  for (const mrpc::FieldLayout& field : doc.fields()) {
    INFO("field ", field.name);
    CHECK(field.offset % std::min<uint32_t>(field.size, 8) == 0);
    CHECK(field.offset + field.size <= doc.unknown_fields_offset());
    if (field.repeated || field.kind == mrpc::FieldKind::kString ||
        field.kind == mrpc::FieldKind::kBytes || field.kind == mrpc::FieldKind::kMessage) {
      CHECK(field.size == sizeof(mrpc::RegionRef));
    }
  }
  // Presence bits: proto3 optional and singular message fields only, in declaration order.
  CHECK(doc.field_by_name("maybe_count")->presence_bit == 0);
  CHECK(doc.field_by_name("maybe_name")->presence_bit == 1);
  CHECK(doc.field_by_name("origin")->presence_bit == 2);
  CHECK(doc.field_by_name("lead")->presence_bit == 3);
  CHECK(doc.field_by_name("tree")->presence_bit == 4);
  CHECK(doc.field_by_name("title")->presence_bit == mrpc::kNoPresenceBit);
  CHECK(doc.presence_words() == 1);
  // The oneof: one case word after the bitmap, members share one slot as big as the biggest.
  REQUIRE(doc.oneofs().size() == 1);
  const mrpc::OneofLayout& body = doc.oneofs()[0];
  CHECK(body.case_offset == 4);
  CHECK(body.storage_size == sizeof(mrpc::RegionRef));
  for (const char* member : {"text", "image", "location", "number"}) {
    CHECK(doc.field_by_name(member)->offset == body.storage_offset);
    CHECK(doc.field_by_name(member)->oneof_index == 0);
    CHECK(doc.field_by_name(member)->presence_bit == mrpc::kNoPresenceBit);
  }
  // Repeated messages are arrays of whole bodies; maps are repeated entry messages.
  const mrpc::FieldLayout& sections = *doc.field_by_name("sections");
  CHECK(sections.element_size == schema->message("nested.Document.Section")->body_size());
  const mrpc::FieldLayout& counts = *doc.field_by_name("counts");
  CHECK(counts.is_map);
  CHECK(counts.repeated);
  REQUIRE(counts.message != nullptr);
  CHECK(counts.message->is_map_entry());
  CHECK(counts.message->field_by_number(1)->name == "key");
  CHECK(doc.field_by_name("switches")->element_size == 1);
  CHECK(doc.field_by_name("samples")->element_size == 8);
  CHECK(doc.field_by_name("tags")->element_size == sizeof(mrpc::RegionRef));
}

TEST_CASE("fingerprint changes when any reachable layout changes and recursion terminates") {
  const char* base = R"(file {
    name: "a.proto" package: "a" syntax: "proto3"
    message_type { name: "Node" field { name: "id" number: 1 type: TYPE_INT32 label: LABEL_OPTIONAL }
                   field { name: "next" number: 2 type: TYPE_MESSAGE type_name: ".a.Node" label: LABEL_OPTIONAL }
                   field { name: "leaf" number: 3 type: TYPE_MESSAGE type_name: ".a.Leaf" label: LABEL_REPEATED } }
    message_type { name: "Leaf" field { name: "v" number: 1 type: TYPE_INT32 label: LABEL_OPTIONAL } }
  })";
  const char* changed_leaf = R"(file {
    name: "a.proto" package: "a" syntax: "proto3"
    message_type { name: "Node" field { name: "id" number: 1 type: TYPE_INT32 label: LABEL_OPTIONAL }
                   field { name: "next" number: 2 type: TYPE_MESSAGE type_name: ".a.Node" label: LABEL_OPTIONAL }
                   field { name: "leaf" number: 3 type: TYPE_MESSAGE type_name: ".a.Leaf" label: LABEL_REPEATED } }
    message_type { name: "Leaf" field { name: "v" number: 1 type: TYPE_INT64 label: LABEL_OPTIONAL } }
  })";
  auto first = mrpc::Schema::from_file_descriptor_set(descriptor_set_from_text(base));
  auto again = mrpc::Schema::from_file_descriptor_set(descriptor_set_from_text(base));
  auto second = mrpc::Schema::from_file_descriptor_set(descriptor_set_from_text(changed_leaf));
  REQUIRE(first.ok());
  REQUIRE(again.ok());
  REQUIRE(second.ok());
  const mrpc::MessageLayout& node = *(*first)->message("a.Node");
  CHECK(node.field_by_name("next")->message == &node);
  CHECK(node.fingerprint() == (*again)->message("a.Node")->fingerprint());
  // Node's own offsets are the same, but a Leaf inside it changed: the fingerprint must differ.
  CHECK(node.body_size() == (*second)->message("a.Node")->body_size());
  CHECK(node.fingerprint() != (*second)->message("a.Node")->fingerprint());
}

TEST_CASE("proto2 optional scalars get presence bits") {
  const char* text = R"(file {
    name: "p2.proto" package: "p2" syntax: "proto2"
    message_type { name: "M" field { name: "a" number: 1 type: TYPE_INT32 label: LABEL_OPTIONAL }
                              field { name: "b" number: 2 type: TYPE_STRING label: LABEL_REQUIRED }
                              field { name: "c" number: 3 type: TYPE_BOOL label: LABEL_REPEATED } }
  })";
  auto schema = mrpc::Schema::from_file_descriptor_set(descriptor_set_from_text(text));
  REQUIRE(schema.ok());
  const mrpc::MessageLayout& m = *(*schema)->message("p2.M");
  CHECK(m.field_by_name("a")->presence_bit == 0);
  CHECK(m.field_by_name("b")->presence_bit == 1);
  CHECK(m.field_by_name("c")->presence_bit == mrpc::kNoPresenceBit);
}

TEST_CASE("Schema rejects bytes that are not a self-contained FileDescriptorSet") {
  auto garbage = mrpc::Schema::from_file_descriptor_set("\xff\xff\xff not a descriptor set");
  CHECK(garbage.status().code() == mrpc::StatusCode::kInvalidArgument);
  const char* missing_import = R"(file {
    name: "b.proto" package: "b" syntax: "proto3" dependency: "missing.proto"
    message_type { name: "M" field { name: "x" number: 1 type: TYPE_MESSAGE type_name: ".other.X" label: LABEL_OPTIONAL } }
  })";
  auto incomplete =
      mrpc::Schema::from_file_descriptor_set(descriptor_set_from_text(missing_import));
  CHECK(incomplete.status().code() == mrpc::StatusCode::kInvalidArgument);
  CHECK(incomplete.status().message().find("b.proto") != std::string::npos);
}
