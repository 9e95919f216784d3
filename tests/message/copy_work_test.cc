// copy_message's work is linear in the message, never elements x schema members (docs/security.md,
// finding 3), and bounded per call by CopyLimits::max_work with its own error. Asserted with the
// copy's own step counter (CopyStats), not by time.
#include <doctest/doctest.h>

#include <cstring>

#include "document_fixture.h"
#include "hostile_schemas.h"
#include "mrpc/base/limits.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/message/schema.h"

namespace mrpc::testing {
namespace {

constexpr uint32_t kMembers = 20000;
constexpr uint32_t kElements = 699000;  // 24-byte elements: just under 16 MiB

// An app heap holding amp.Outer at offset 0 whose `items` are `elements` Choices, each with its
// oneof case set to `number`.
struct Amplifier {
  std::shared_ptr<const Schema> schema;
  const MessageLayout* outer = nullptr;
  const MessageLayout* choice = nullptr;
  uint64_t array_offset = 0;
  TestRegion heap;
  TestRegion receive;
  RegionAllocator receive_allocator;

  Amplifier(uint32_t elements, uint32_t number)
      : schema(parse()),
        outer(schema->message("amp.Outer")),
        choice(schema->message("amp.Choice")),
        array_offset(outer->body_size()),
        heap(array_offset + uint64_t{elements} * choice->body_size()),
        receive(heap.size() + 4096),
        receive_allocator(receive.size()) {
    const FieldLayout& items = *outer->field_by_name("items");
    const RegionRef ref{array_offset, elements, elements};
    std::memcpy(heap.base() + items.offset, &ref, sizeof(ref));
    const uint32_t case_offset = choice->oneofs()[0].case_offset;
    for (uint64_t i = 0; i < elements; ++i) {
      std::memcpy(heap.base() + array_offset + i * choice->body_size() + case_offset, &number,
                  sizeof(number));
    }
  }
  static std::shared_ptr<const Schema> parse() {
    auto parsed = Schema::from_file_descriptor_set(oneof_schema(kMembers));
    REQUIRE_MESSAGE(parsed.ok(), parsed.status().to_string());
    return *parsed;
  }
  Expected<uint64_t> copy(CopyStats& stats, CopyLimits limits = {limits::kDefaultMaxMessageBytes,
                                                                 limits::kMaxMessageNesting}) {
    return copy_message(*outer, {heap.base(), heap.size()}, 0, {receive.base(), receive.size()},
                        receive_allocator, limits, &stats);
  }
};

TEST_CASE("a 699K-element repeated oneof of 20,000 members copies in work linear in the elements") {
  // Before: every element's case was checked against every member, 699K x 20,000 steps (77 s).
  // The last member: the worst case for a scan.
  Amplifier amp(kElements, oneof_member_number(kMembers));
  REQUIRE(amp.choice->body_size() == 24);
  CopyStats stats;
  auto copied = amp.copy(stats);
  REQUIRE_MESSAGE(copied.ok(), copied.status().to_string());
  MESSAGE("copy work: ", stats.work, " steps for ", kElements, " elements");
  CHECK(stats.work <= 4ull * kElements + 16);
  CHECK(stats.work >= 2ull * kElements);
  uint32_t case_value = 0;
  std::memcpy(&case_value,
              amp.receive.base() + *copied + amp.outer->body_size() + uint64_t{kElements - 1} * 24 +
                  amp.choice->oneofs()[0].case_offset,
              sizeof(case_value));
  CHECK(case_value == oneof_member_number(kMembers));
}

TEST_CASE("a oneof case that names no member is rejected at the first element") {
  Amplifier amp(1000, 19500);  // reserved by protobuf: never a member
  CopyStats stats;
  auto copied = amp.copy(stats);
  REQUIRE_FALSE(copied.ok());
  CHECK(copied.status().code() == StatusCode::kInvalidArgument);
  CHECK(copied.status().message().find("case 19500 is not one of its fields") != std::string::npos);
  CHECK(stats.work <= 8);
  CHECK(amp.receive_allocator.live_blocks() == 0);
}

TEST_CASE("a copy that takes more steps than max_work fails with its own error") {
  Amplifier amp(1000, 7);
  CopyStats stats;
  CopyLimits limits{limits::kDefaultMaxMessageBytes, limits::kMaxMessageNesting, 500};
  auto copied = amp.copy(stats, limits);
  REQUIRE_FALSE(copied.ok());
  CHECK(copied.status().code() == StatusCode::kResourceExhausted);
  CHECK(copied.status().message().find("max_work") != std::string::npos);
  CHECK(stats.work == 501);
  CHECK(amp.receive_allocator.live_blocks() == 0);
  // The same message within the default bound copies.
  CopyStats enough;
  CHECK(amp.copy(enough).ok());
  CHECK(enough.work <= 4 * 1000 + 16);
}

}  // namespace
}  // namespace mrpc::testing
