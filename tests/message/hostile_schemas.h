// FileDescriptorSets an attacker would register (docs/security.md, findings 1-3), built in
// memory: long chains of message types and a oneof with very many members.
#pragma once

#include <google/protobuf/descriptor.pb.h>

#include <string>

#include <fmt/format.h>

namespace mrpc::testing {

// package chain; message T0 { T1 next = 1; } ... message T<n-1> { int32 v = 1; }
// With back_from > 0: T<back_from> also has `T<back_to> back = 2;` (a cycle in the chain).
inline std::string chain_schema(uint32_t types, uint32_t back_from = 0, uint32_t back_to = 0) {
  google::protobuf::FileDescriptorSet set;
  auto* file = set.add_file();
  file->set_name("chain.proto");
  file->set_package("chain");
  file->set_syntax("proto3");
  for (uint32_t i = 0; i < types; ++i) {
    auto* message = file->add_message_type();
    message->set_name(fmt::format("T{}", i));
    auto* field = message->add_field();
    field->set_number(1);
    field->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
    if (i + 1 < types) {
      field->set_name("next");
      field->set_type(google::protobuf::FieldDescriptorProto::TYPE_MESSAGE);
      field->set_type_name(fmt::format(".chain.T{}", i + 1));
    } else {
      field->set_name("v");
      field->set_type(google::protobuf::FieldDescriptorProto::TYPE_INT32);
    }
    if (back_from > 0 && i == back_from) {
      auto* back = message->add_field();
      back->set_name("back");
      back->set_number(2);
      back->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
      back->set_type(google::protobuf::FieldDescriptorProto::TYPE_MESSAGE);
      back->set_type_name(fmt::format(".chain.T{}", back_to));
    }
  }
  return set.SerializeAsString();
}

// The field number of the i-th member (from 1) of oneof_schema's oneof: protobuf reserves
// 19000-19999.
inline uint32_t oneof_member_number(uint32_t i) {
  return i < 19000 ? i : i + 1000;
}

// package amp; message Choice { oneof pick { int32 m1 = 1; ... int32 m<members> = ...; } }
//              message Outer { repeated Choice items = 1; }
inline std::string oneof_schema(uint32_t members) {
  google::protobuf::FileDescriptorSet set;
  auto* file = set.add_file();
  file->set_name("amp.proto");
  file->set_package("amp");
  file->set_syntax("proto3");
  auto* choice = file->add_message_type();
  choice->set_name("Choice");
  choice->add_oneof_decl()->set_name("pick");
  for (uint32_t i = 1; i <= members; ++i) {
    auto* field = choice->add_field();
    field->set_name(fmt::format("m{}", i));
    field->set_number(static_cast<int>(oneof_member_number(i)));
    field->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
    field->set_type(google::protobuf::FieldDescriptorProto::TYPE_INT32);
    field->set_oneof_index(0);
  }
  auto* outer = file->add_message_type();
  outer->set_name("Outer");
  auto* items = outer->add_field();
  items->set_name("items");
  items->set_number(1);
  items->set_label(google::protobuf::FieldDescriptorProto::LABEL_REPEATED);
  items->set_type(google::protobuf::FieldDescriptorProto::TYPE_MESSAGE);
  items->set_type_name(".amp.Choice");
  return set.SerializeAsString();
}

}  // namespace mrpc::testing
