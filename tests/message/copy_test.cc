// copy_message: an exact copy of a well-formed message in one block; errors, and nothing left
// allocated, for hostile ones (out-of-region references, huge lengths, cycles, deep chains, bad
// oneof cases, concurrent mutation, random corruption).
#include "mrpc/message/copy.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "document_fixture.h"
#include "mrpc/base/limits.h"
#include "mrpc/base/random.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/message/schema.h"

using mrpc::StatusCode;
using mrpc::testing::TestRegion;

namespace {

constexpr mrpc::CopyLimits kLimits{mrpc::limits::kDefaultMaxMessageBytes,
                                   mrpc::limits::kMaxMessageNesting};

// An app's heap (source) and a daemon-owned receive region (destination), with the schema.
struct CopyBench {
  TestRegion heap_region{1 << 20};
  mrpc::ShmHeap heap{heap_region.base(), heap_region.size()};
  TestRegion receive_region{1 << 20};
  mrpc::RegionAllocator receive_allocator{receive_region.size()};
  std::shared_ptr<const mrpc::Schema> schema;

  CopyBench() {
    auto parsed = mrpc::Schema::from_file_descriptor_set(nested::file_descriptor_set_nested());
    REQUIRE(parsed.ok());
    schema = *parsed;
  }
  const mrpc::MessageLayout& layout(std::string_view name) const { return *schema->message(name); }
  uint32_t offset_of(std::string_view message, const char* field) const {
    return layout(message).field_by_name(field)->offset;
  }
  mrpc::Expected<uint64_t> copy(std::string_view message, uint64_t root,
                                const mrpc::CopyLimits& limits = kLimits) {
    return mrpc::copy_message(layout(message), {heap_region.base(), heap_region.size()}, root,
                              {receive_region.base(), receive_region.size()}, receive_allocator,
                              limits);
  }
  // The copy as the receiving app sees it: read-only, no heap.
  template <class M>
  M received(uint64_t root) const {
    return M(mrpc::MessageRef{receive_region.base(), receive_region.size(), root, nullptr});
  }
};

void write_ref(const mrpc::MessageRef& message, uint32_t field_offset, mrpc::RegionRef value) {
  std::memcpy(message.base + message.offset + field_offset, &value, sizeof(value));
}

void expect_rejected(CopyBench& bench, uint64_t root, StatusCode code,
                     const mrpc::CopyLimits& limits = kLimits) {
  auto copied = bench.copy("nested.Document", root, limits);
  REQUIRE_FALSE(copied.ok());
  CHECK(copied.status().code() == code);
  CHECK(bench.receive_allocator.used_bytes() == 0);
  CHECK(bench.receive_allocator.live_blocks() == 0);
}

// Reads every field of a (possibly garbage) copy, to prove reading it stays in bounds.
void read_everything(const nested::Document::View& doc) {
  volatile size_t sink = 0;
  sink = sink + doc.title().size() + doc.blob().size() + static_cast<size_t>(doc.origin().x());
  for (int i = 0; i < doc.tags_size(); ++i) sink = sink + doc.tags(i).size();
  for (int i = 0; i < doc.sections_size(); ++i) sink = sink + doc.sections(i).paragraphs_size();
  for (int i = 0; i < doc.numbers_size(); ++i) sink = sink + static_cast<size_t>(doc.numbers(i));
  sink = sink + doc.counts_size() + doc.tree().children_size() + doc.text().size();
}

}  // namespace

TEST_CASE("copy_message copies the nested example exactly and into one block") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(doc);
  auto copied = bench.copy("nested.Document", doc.ref().offset);
  REQUIRE(copied.ok());
  CHECK(bench.receive_allocator.live_blocks() == 1);
  // The source is not needed any more: free it and scribble over it before reading the copy.
  doc.reset();
  std::memset(bench.heap_region.base(), 0xa5, bench.heap_region.size());
  mrpc::testing::check_document(bench.received<nested::Document>(*copied));
  // The copy is compact: smaller than what the arena used for the original.
  CHECK(bench.receive_allocator.used_bytes() < 8192);
  REQUIRE(bench.receive_allocator.free(*copied).ok());
  CHECK(bench.receive_allocator.used_bytes() == 0);
}

// A block for copy_message_to: each reservation (counted) replaces it with `bytes` zeroed bytes,
// or, with `refuse`, gives no room.
struct ReservedBlock {
  std::vector<std::byte> bytes;
  int reservations = 0;
  bool refuse = false;
  static mrpc::MutableRegion reserve(void* context, uint64_t bytes) {
    auto& into = *static_cast<ReservedBlock*>(context);
    ++into.reservations;
    if (into.refuse) return mrpc::MutableRegion{};
    into.bytes.assign(bytes, std::byte{0});
    return mrpc::MutableRegion{into.bytes.data(), bytes};
  }
};

TEST_CASE(
    "copy_message_to copies into exactly the block it reserves, root first, and says no room "
    "when refused") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(doc);
  ReservedBlock block;
  const mrpc::ReserveCopy reserve = ReservedBlock::reserve;
  const mrpc::ConstRegion source{bench.heap_region.base(), bench.heap_region.size()};
  auto copied = mrpc::copy_message_to(bench.layout("nested.Document"), source, doc.ref().offset,
                                      reserve, &block, kLimits);
  REQUIRE(copied.ok());
  CHECK(*copied == 0);
  CHECK(block.reservations == 1);
  // The same bytes copy_message puts into a region allocator's block: measured, not guessed.
  auto reference = bench.copy("nested.Document", doc.ref().offset);
  REQUIRE(reference.ok());
  CHECK(block.bytes.size() == bench.receive_allocator.used_bytes());
  doc.reset();
  std::memset(bench.heap_region.base(), 0xa5, bench.heap_region.size());
  mrpc::testing::check_document(
      nested::Document(mrpc::MessageRef{block.bytes.data(), block.bytes.size(), *copied, nullptr}));

  auto again = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(again);
  block.refuse = true;
  auto refused = mrpc::copy_message_to(bench.layout("nested.Document"), source, again.ref().offset,
                                       reserve, &block, kLimits);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(block.reservations == 2);
}

// copy_message_to's one pass against its two passes, on the same source: each into a zeroed
// block of its own.
struct PassesCompared {
  struct Run {
    ReservedBlock block;
    mrpc::CopyStats stats;
    mrpc::Expected<uint64_t> root = uint64_t{0};
  };
  static Run run(const mrpc::MessageLayout& layout, mrpc::ConstRegion source, uint64_t root,
                 const mrpc::CopyLimits& limits, uint64_t first_try_bytes) {
    Run run;
    run.root = mrpc::copy_message_to(layout, source, root, ReservedBlock::reserve, &run.block,
                                     limits, &run.stats, first_try_bytes);
    return run;
  }
  // The one pass's result is the two passes': the same root, bytes, work and error.
  static void check_same(const Run& one, const Run& two) {
    REQUIRE(one.root.ok() == two.root.ok());
    CHECK(one.stats.work == two.stats.work);
    if (!two.root.ok()) {
      CHECK(one.root.status().code() == two.root.status().code());
      CHECK(one.root.status().message() == two.root.status().message());
      return;
    }
    CHECK(*one.root == *two.root);
    REQUIRE(one.stats.bytes == two.stats.bytes);
    REQUIRE(one.block.bytes.size() >= one.stats.bytes);
    CHECK(std::memcmp(one.block.bytes.data(), two.block.bytes.data(), two.stats.bytes) == 0);
  }
};

TEST_CASE(
    "copy_message_to in one pass makes the copy and the errors of the two passes, and measures "
    "when the first block is too small") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(doc);
  const mrpc::MessageLayout& layout = bench.layout("nested.Document");
  const mrpc::ConstRegion source{bench.heap_region.base(), bench.heap_region.size()};
  const uint64_t root = doc.ref().offset;

  const auto two = PassesCompared::run(layout, source, root, kLimits, 0);
  REQUIRE(two.root.ok());
  CHECK(two.stats.passes == 2);
  CHECK(two.block.reservations == 1);
  CHECK(two.stats.bytes == two.block.bytes.size());  // measured exactly

  SUBCASE("a first block that holds it: one pass, one reservation, the same bytes") {
    const auto one = PassesCompared::run(layout, source, root, kLimits, 64 << 10);
    CHECK(one.stats.passes == 1);
    CHECK(one.block.reservations == 1);
    PassesCompared::check_same(one, two);
    mrpc::testing::check_document(nested::Document(mrpc::MessageRef{
        const_cast<std::byte*>(one.block.bytes.data()), one.stats.bytes, *one.root, nullptr}));
  }
  SUBCASE("a first block one byte short: measured and copied again into a second reservation") {
    const auto one = PassesCompared::run(layout, source, root, kLimits, two.stats.bytes - 1);
    CHECK(one.stats.passes == 2);
    CHECK(one.block.reservations == 2);
    PassesCompared::check_same(one, two);
  }
  SUBCASE("max_work exactly what the two passes take: both copy; one step less: both refuse") {
    mrpc::CopyLimits exact = kLimits;
    exact.max_work = two.stats.work;
    const auto exact_one = PassesCompared::run(layout, source, root, exact, 64 << 10);
    CHECK(exact_one.stats.passes == 1);  // its steps, counted twice, are exactly max_work
    PassesCompared::check_same(exact_one, PassesCompared::run(layout, source, root, exact, 0));
    mrpc::CopyLimits short_by_one = kLimits;
    short_by_one.max_work = two.stats.work - 1;
    const auto refused_one = PassesCompared::run(layout, source, root, short_by_one, 64 << 10);
    CHECK_FALSE(refused_one.root.ok());
    PassesCompared::check_same(refused_one,
                               PassesCompared::run(layout, source, root, short_by_one, 0));
  }
  SUBCASE("max_message_bytes one short of the copy: both refuse, with the same words") {
    mrpc::CopyLimits tight = kLimits;
    tight.max_message_bytes = two.stats.bytes - 1;
    const auto one = PassesCompared::run(layout, source, root, tight, 64 << 10);
    CHECK_FALSE(one.root.ok());
    CHECK(one.root.status().code() == StatusCode::kResourceExhausted);
    PassesCompared::check_same(one, PassesCompared::run(layout, source, root, tight, 0));
  }
  SUBCASE("an empty string whose offset lies outside the source: both refuse") {
    write_ref(doc.ref(), bench.offset_of("nested.Document", "title"), {uint64_t{1} << 40, 0, 0});
    const auto one = PassesCompared::run(layout, source, root, kLimits, 64 << 10);
    CHECK_FALSE(one.root.ok());
    CHECK(one.root.status().code() == StatusCode::kInvalidArgument);
    PassesCompared::check_same(one, PassesCompared::run(layout, source, root, kLimits, 0));
  }
  SUBCASE("a tree at the nesting limit whose repeated message field is empty: both refuse") {
    // The measuring walk checks the depth of a repeated message field's elements even when it
    // has none; the copying walk once skipped the empty array first.
    auto tree = nested::Tree::create(bench.heap);
    mrpc::CopyLimits flat = kLimits;
    flat.max_nesting = 1;
    const mrpc::MessageLayout& tree_layout = bench.layout("nested.Tree");
    const auto one = PassesCompared::run(tree_layout, source, tree.ref().offset, flat, 64 << 10);
    CHECK_FALSE(one.root.ok());
    PassesCompared::check_same(
        one, PassesCompared::run(tree_layout, source, tree.ref().offset, flat, 0));
  }
  SUBCASE("a string past the end of the source: both refuse, with the same words") {
    write_ref(doc.ref(), bench.offset_of("nested.Document", "title"),
              {bench.heap_region.size() - 2, 10, 10});
    const auto one = PassesCompared::run(layout, source, root, kLimits, 64 << 10);
    CHECK_FALSE(one.root.ok());
    PassesCompared::check_same(one, PassesCompared::run(layout, source, root, kLimits, 0));
  }
}

TEST_CASE("copy_message rejects references outside the source region") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(doc);
  const uint64_t root = doc.ref().offset;
  const uint64_t size = bench.heap_region.size();

  SUBCASE("string past the end") {
    write_ref(doc.ref(), bench.offset_of("nested.Document", "title"), {size - 2, 10, 10});
  }
  SUBCASE("offset of 2^40") {
    write_ref(doc.ref(), bench.offset_of("nested.Document", "blob"), {uint64_t{1} << 40, 4, 4});
  }
  SUBCASE("offset that overflows when the length is added") {
    write_ref(doc.ref(), bench.offset_of("nested.Document", "blob"), {~uint64_t{0} - 2, 8, 8});
  }
  SUBCASE("array count whose bytes reach 2^40") {
    write_ref(doc.ref(), bench.offset_of("nested.Document", "sections"),
              {0, 0xffffffffu, 0xffffffffu});
  }
  SUBCASE("sub-message body past the end") {
    write_ref(doc.ref(), bench.offset_of("nested.Document", "origin"), {size - 8, 16, 16});
  }
  SUBCASE("element of a repeated string") {
    const mrpc::RegionRef tags =
        mrpc::gen::get_ref(doc.ref(), bench.offset_of("nested.Document", "tags"));
    const mrpc::RegionRef bad{size, 1, 1};
    std::memcpy(bench.heap_region.base() + tags.offset + 3 * sizeof(mrpc::RegionRef), &bad,
                sizeof(bad));
  }
  SUBCASE("root itself") {
    expect_rejected(bench, size - 8, StatusCode::kInvalidArgument);
    return;
  }
  expect_rejected(bench, root, StatusCode::kInvalidArgument);
}

TEST_CASE("copy_message rejects a self-referencing message and a chain deeper than the limit") {
  CopyBench bench;
  SUBCASE("a tree whose parent_hint is itself") {
    auto doc = nested::Document::create(bench.heap);
    auto tree = doc.mutable_tree();
    tree.set_label("loop");
    tree.mutable_parent_hint();  // sets the presence bit; now point the reference back at tree
    write_ref(tree.ref(), bench.offset_of("nested.Tree", "parent_hint"),
              {tree.ref().offset, nested::Tree::kBodySize, nested::Tree::kBodySize});
    expect_rejected(bench, doc.ref().offset, StatusCode::kInvalidArgument);
  }
  SUBCASE("a legitimate chain: accepted up to the limit, rejected past it") {
    auto doc = nested::Document::create(bench.heap);
    auto link = doc.mutable_tree();
    for (int depth = 0; depth < 100; ++depth) link = link.mutable_parent_hint();
    link.set_label("bottom");
    expect_rejected(bench, doc.ref().offset, StatusCode::kInvalidArgument,
                    {kLimits.max_message_bytes, 64});
    auto copied = bench.copy("nested.Document", doc.ref().offset, {kLimits.max_message_bytes, 128});
    REQUIRE(copied.ok());
    auto copy = bench.received<nested::Document>(*copied).tree();
    for (int depth = 0; depth < 100; ++depth) copy = copy.parent_hint();
    CHECK(copy.label() == "bottom");
  }
}

TEST_CASE("copy_message enforces max_message_bytes and a full destination and oneof cases") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(doc);
  SUBCASE("too big") {
    expect_rejected(bench, doc.ref().offset, StatusCode::kResourceExhausted, {1024, 64});
  }
  SUBCASE("no room in the destination") {
    auto filler = bench.receive_allocator.allocate(bench.receive_region.size() - 256);
    REQUIRE(filler.ok());
    auto copied = bench.copy("nested.Document", doc.ref().offset);
    CHECK(copied.status().code() == StatusCode::kResourceExhausted);
    CHECK(bench.receive_allocator.live_blocks() == 1);
  }
  SUBCASE("a oneof case that names no member") {
    const uint32_t bogus = 999;
    std::memcpy(
        doc.ref().base + doc.ref().offset + bench.layout("nested.Document").oneofs()[0].case_offset,
        &bogus, 4);
    expect_rejected(bench, doc.ref().offset, StatusCode::kInvalidArgument);
  }
}

TEST_CASE("copy_message stays in bounds while the app rewrites the message under it") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(doc);
  const std::string big(50000, 'b');
  doc.set_blob(big);
  const mrpc::RegionRef big_ref =
      mrpc::gen::get_ref(doc.ref(), bench.offset_of("nested.Document", "blob"));
  const mrpc::RegionRef small_ref{big_ref.offset, 3, 3};
  const uint32_t slot = bench.offset_of("nested.Document", "blob");
  std::atomic<bool> stop{false};
  std::thread mutator([&] {
    for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      write_ref(doc.ref(), slot, (i & 1) ? big_ref : small_ref);
      const uint32_t count =
          (i & 2) ? 100 : 0xffffffffu;  // flips the numbers array between sane and huge
      std::memcpy(
          doc.ref().base + doc.ref().offset + bench.offset_of("nested.Document", "numbers") + 8,
          &count, 4);
    }
  });
  int succeeded = 0;
  for (int attempt = 0; attempt < 2000; ++attempt) {
    auto copied = bench.copy("nested.Document", doc.ref().offset);
    if (copied.ok()) {
      ++succeeded;
      auto copy = bench.received<nested::Document>(*copied);
      CHECK((copy.blob().size() == 3 || copy.blob() == big));
      CHECK(copy.numbers_size() == 100);
      REQUIRE(bench.receive_allocator.free(*copied).ok());
    } else {
      CHECK((copied.status().code() == StatusCode::kInvalidArgument ||
             copied.status().code() == StatusCode::kResourceExhausted));
    }
    CHECK(bench.receive_allocator.used_bytes() == 0);
  }
  stop.store(true);
  mutator.join();
  MESSAGE("copies that succeeded while the source changed: ", succeeded, " of 2000");
}

TEST_CASE("copy_message never crashes on randomly corrupted sources (fixed seed)") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  mrpc::testing::fill_document(doc);
  // Everything the message occupies lies below this (arenas grow from the start of the heap).
  const uint64_t used_span = 64 << 10;
  REQUIRE(bench.heap.used_bytes() < used_span);
  std::vector<std::byte> pristine(bench.heap_region.base(), bench.heap_region.base() + used_span);
  mrpc::SeededRandom random(20261124);
  int accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    std::memcpy(bench.heap_region.base(), pristine.data(), used_span);
    const int flips = 1 + static_cast<int>(random.next_u64() % 8);
    for (int f = 0; f < flips; ++f) {
      // Half the flips land in the root body, where the references are.
      const uint64_t at = (random.next_u64() & 1)
                              ? doc.ref().offset + random.next_u64() % nested::Document::kBodySize
                              : random.next_u64() % used_span;
      bench.heap_region.base()[at] = static_cast<std::byte>(random.next_u64());
    }
    auto copied = bench.copy("nested.Document", doc.ref().offset);
    if (copied.ok()) {
      ++accepted;
      read_everything(bench.received<nested::Document>(*copied));
      REQUIRE(bench.receive_allocator.free(*copied).ok());
    }
    REQUIRE(bench.receive_allocator.used_bytes() == 0);
  }
  MESSAGE("corrupted sources accepted (still well-formed): ", accepted, " of 3000");
}

TEST_CASE("copy_message carries the unknown-field bytes of every message") {
  CopyBench bench;
  auto doc = nested::Document::create(bench.heap);
  auto origin = doc.mutable_origin();
  origin.set_x(5);
  const std::string unknown("\x08\x96\x01 wire-format bytes", 21);
  auto attach_unknown = [&](const mrpc::MessageRef& message, const mrpc::MessageLayout& layout) {
    const uint64_t at = bench.heap.allocate(message.offset, unknown.size(), 8, false);
    REQUIRE(at != mrpc::kNoOffset);
    std::memcpy(bench.heap_region.base() + at, unknown.data(), unknown.size());
    write_ref(message, layout.unknown_fields_offset(),
              {at, static_cast<uint32_t>(unknown.size()), 0});
  };
  attach_unknown(doc.ref(), bench.layout("nested.Document"));
  attach_unknown(origin.ref(), bench.layout("nested.Point"));
  auto copied = bench.copy("nested.Document", doc.ref().offset);
  REQUIRE(copied.ok());
  auto copy = bench.received<nested::Document>(*copied);
  CHECK(mrpc::gen::get_bytes(copy.ref(), bench.layout("nested.Document").unknown_fields_offset()) ==
        unknown);
  CHECK(mrpc::gen::get_bytes(copy.origin().ref(),
                             bench.layout("nested.Point").unknown_fields_offset()) == unknown);
  CHECK(copy.origin().x() == 5);
  REQUIRE(bench.receive_allocator.free(*copied).ok());
}
