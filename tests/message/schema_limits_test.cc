// Schema registration against hostile FileDescriptorSets (docs/security.md, findings 1 and 2):
// every limit of limits.h has its own error, no walk recurses on the input (an 80,000-type chain
// is laid out without exhausting the stack when the limits allow it), and the layout and
// fingerprint work is linear in the schema: asserted by LayoutSet's step counter, not by time.
#include <doctest/doctest.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include "hostile_schemas.h"
#include "mrpc/base/limits.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/schema.h"

namespace mrpc::testing {
namespace {

bool names(const Status& status, std::string_view text) {
  return status.message().find(text) != std::string::npos;
}

// Limits that let a chain of `types` through, to measure the layout work itself.
SchemaLimits room_for(uint32_t types) {
  SchemaLimits limits;
  limits.max_types = types;
  limits.max_fields = types;
  return limits;
}

uint64_t chain_work(uint32_t types) {
  auto schema = Schema::from_file_descriptor_set(chain_schema(types), room_for(types));
  REQUIRE_MESSAGE(schema.ok(), schema.status().to_string());
  const MessageLayout* head = (*schema)->message("chain.T0");
  REQUIRE(head != nullptr);
  // Every link is there: the last type of the chain is reachable from the first.
  CHECK(head->canonical_text().find(fmt::format("chain.T{} ", types - 1)) != std::string::npos);
  return (*schema)->layout_work();
}

TEST_CASE("an 80,000-type chain is rejected by kMaxSchemaTypes before anything is built") {
  const std::string bytes = chain_schema(80000);
  CHECK(bytes.size() <= limits::kMaxSchemaBytes);
  auto schema = Schema::from_file_descriptor_set(bytes);
  REQUIRE_FALSE(schema.ok());
  CHECK(schema.status().code() == StatusCode::kResourceExhausted);
  CHECK(names(schema.status(), "limits::kMaxSchemaTypes"));
}

TEST_CASE("an 80,000-type chain within raised limits is laid out without recursion") {
  // Before: collect_reachable recursed once per link and overflowed the stack (SIGSEGV).
  const uint64_t work = chain_work(80000);
  MESSAGE("layout work for 80,000 chained types: ", work, " steps");
  CHECK(work <= 12ull * 80000);
}

TEST_CASE("an 8,000-type chain is accepted and its layout work is linear in the types") {
  // Before: each type's fingerprint hashed the text of every type it reaches, 8,000^2 / 2
  // descriptions (40 s on the daemon's runtime thread).
  auto schema = Schema::from_file_descriptor_set(chain_schema(8000));
  REQUIRE_MESSAGE(schema.ok(), schema.status().to_string());
  const uint64_t small = chain_work(1000);
  const uint64_t large = (*schema)->layout_work();
  MESSAGE("layout work: 1,000 types ", small, " steps; 8,000 types ", large, " steps");
  CHECK(large <= 12ull * 8000);
  CHECK(large <= 8 * small + 64);
  // A fingerprint still covers the whole chain: a change at the far end changes the head's.
  auto other = Schema::from_file_descriptor_set(chain_schema(7999));
  REQUIRE(other.ok());
  CHECK((*schema)->message("chain.T0")->fingerprint() !=
        (*other)->message("chain.T0")->fingerprint());
  CHECK((*schema)->message("chain.T7990")->fingerprint() !=
        (*other)->message("chain.T7990")->fingerprint());
}

TEST_CASE("a schema over kMaxSchemaBytes is rejected before it is parsed") {
  const std::string bytes(limits::kMaxSchemaBytes + 1, '\0');
  auto schema = Schema::from_file_descriptor_set(bytes);
  REQUIRE_FALSE(schema.ok());
  CHECK(schema.status().code() == StatusCode::kResourceExhausted);
  CHECK(names(schema.status(), "limits::kMaxSchemaBytes"));
}

TEST_CASE("a message with more fields than kMaxSchemaFields is rejected by name") {
  google::protobuf::FileDescriptorSet set;
  auto* file = set.add_file();
  file->set_name("wide.proto");
  file->set_package("wide");
  auto* message = file->add_message_type();
  message->set_name("Wide");
  for (uint32_t i = 1; i <= limits::kMaxSchemaFields + 1; ++i) {
    auto* field = message->add_field();
    field->set_name(fmt::format("f{}", i));
    field->set_number(static_cast<int>(i));
    field->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
    field->set_type(google::protobuf::FieldDescriptorProto::TYPE_BOOL);
  }
  auto schema = Schema::from_file_descriptor_set(set.SerializeAsString());
  REQUIRE_FALSE(schema.ok());
  CHECK(schema.status().code() == StatusCode::kResourceExhausted);
  CHECK(names(schema.status(), "limits::kMaxSchemaFields"));
}

// `levels` message types, each declared inside the one before.
std::string nested_declarations(uint32_t levels) {
  google::protobuf::FileDescriptorSet set;
  auto* file = set.add_file();
  file->set_name("deep.proto");
  file->set_package("deep");
  google::protobuf::DescriptorProto* message = file->add_message_type();
  message->set_name("N1");
  for (uint32_t depth = 2; depth <= levels; ++depth) {
    message = message->add_nested_type();
    message->set_name(fmt::format("N{}", depth));
  }
  return set.SerializeAsString();
}

TEST_CASE("message types declared deeper than kMaxSchemaNesting are rejected by name") {
  auto schema =
      Schema::from_file_descriptor_set(nested_declarations(limits::kMaxSchemaNesting + 1));
  REQUIRE_FALSE(schema.ok());
  CHECK(schema.status().code() == StatusCode::kResourceExhausted);
  CHECK(names(schema.status(), "limits::kMaxSchemaNesting"));

  // At the limit: accepted, and every nested type has its layout.
  auto accepted = Schema::from_file_descriptor_set(nested_declarations(limits::kMaxSchemaNesting));
  REQUIRE_MESSAGE(accepted.ok(), accepted.status().to_string());
  std::string name = "deep.N1";
  for (uint32_t depth = 2; depth <= limits::kMaxSchemaNesting; ++depth)
    name += fmt::format(".N{}", depth);
  CHECK((*accepted)->message(name) != nullptr);
}

TEST_CASE("the error of a schema with thousands of invalid fields stays short") {
  // Every member of this oneof is in protobuf's reserved range: one error each from protobuf.
  google::protobuf::FileDescriptorSet set;
  REQUIRE(set.ParseFromString(oneof_schema(19999)));
  auto schema = Schema::from_file_descriptor_set(set.SerializeAsString());
  REQUIRE(schema.ok());  // oneof_schema skips the reserved numbers
  auto* choice = set.mutable_file(0)->mutable_message_type(0);
  for (int i = 0; i < choice->field_size(); ++i)
    choice->mutable_field(i)->set_number(19000 + i % 1000);
  auto rejected = Schema::from_file_descriptor_set(set.SerializeAsString());
  REQUIRE_FALSE(rejected.ok());
  CHECK(rejected.status().code() == StatusCode::kInvalidArgument);
  CHECK(rejected.status().message().size() < 4096);
  CHECK(names(rejected.status(), "more errors"));
}

TEST_CASE("fingerprints do not depend on the order types are laid out in") {
  // A chain of 50 with a cycle T10 -> T5: laying out T7 first (which reaches T5..T49) and then
  // T0 gives every type the fingerprint it gets when T0 is laid out first.
  google::protobuf::FileDescriptorSet set;
  REQUIRE(set.ParseFromString(chain_schema(50, 10, 5)));
  google::protobuf::DescriptorPool pool;
  REQUIRE(pool.BuildFile(set.file(0)) != nullptr);
  auto type = [&](const char* name) { return pool.FindMessageTypeByName(name); };
  LayoutSet head_first, middle_first;
  head_first.add(*type("chain.T0"));
  middle_first.add(*type("chain.T7"));
  middle_first.add(*type("chain.T0"));
  for (const char* name :
       {"chain.T0", "chain.T4", "chain.T5", "chain.T7", "chain.T10", "chain.T11", "chain.T49"}) {
    CAPTURE(name);
    CHECK(head_first.find(name)->fingerprint() == middle_first.find(name)->fingerprint());
  }
  // Types in one cycle still have fingerprints of their own.
  CHECK(head_first.find("chain.T5")->fingerprint() != head_first.find("chain.T6")->fingerprint());
}

}  // namespace
}  // namespace mrpc::testing
