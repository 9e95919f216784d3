// RegionAllocator: blocks by offset, bad frees refused without any change, space coalesced.
#include "mrpc/message/region_allocator.h"

#include <doctest/doctest.h>

#include <iterator>
#include <map>
#include <vector>

#include "mrpc/base/random.h"

using mrpc::ByteBudget;
using mrpc::RegionAllocator;
using mrpc::StatusCode;

TEST_CASE("allocations are aligned and disjoint and inside the region") {
  RegionAllocator allocator(1 << 16);
  std::vector<std::pair<uint64_t, uint64_t>> blocks;
  for (uint64_t align : {8, 16, 64, 4096, 8, 32}) {
    auto block = allocator.allocate(100, align);
    REQUIRE(block.ok());
    CHECK(*block % align == 0);
    CHECK(*block + 100 <= allocator.region_bytes());
    for (const auto& [start, length] : blocks)
      CHECK((*block >= start + length || *block + 100 <= start));
    blocks.emplace_back(*block, 100);
  }
  CHECK(allocator.live_blocks() == blocks.size());
  CHECK(allocator.used_bytes() == blocks.size() * 104);  // 100 rounded up to 8
}

TEST_CASE("free of anything but a live block's start is INVALID_ARGUMENT and changes nothing") {
  RegionAllocator allocator(4096);
  auto a = allocator.allocate(64);
  auto b = allocator.allocate(64);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  const uint64_t used = allocator.used_bytes();
  for (uint64_t bad : {*a + 8, *b + 63, uint64_t{4096}, uint64_t{1} << 40, ~uint64_t{0}}) {
    CHECK(allocator.free(bad).code() == StatusCode::kInvalidArgument);
    CHECK(allocator.used_bytes() == used);
    CHECK(allocator.live_blocks() == 2);
  }
  CHECK(allocator.free(*a).ok());
  CHECK(allocator.free(*a).code() == StatusCode::kInvalidArgument);  // double free
  CHECK(allocator.live_blocks() == 1);
  CHECK(allocator.free(*b).ok());
  CHECK(allocator.used_bytes() == 0);
}

TEST_CASE("a full region answers RESOURCE_EXHAUSTED and freed neighbours merge back into one") {
  RegionAllocator allocator(1024);
  std::vector<uint64_t> blocks;
  for (int i = 0; i < 16; ++i) {
    auto block = allocator.allocate(64);
    REQUIRE(block.ok());
    blocks.push_back(*block);
  }
  CHECK(allocator.allocate(8).status().code() == StatusCode::kResourceExhausted);
  CHECK(allocator.allocate(1ull << 40).status().code() == StatusCode::kResourceExhausted);
  // Free in an interleaved order: every other block, then the rest.
  for (size_t i = 0; i < blocks.size(); i += 2) REQUIRE(allocator.free(blocks[i]).ok());
  CHECK(allocator.allocate(128).status().code() == StatusCode::kResourceExhausted);
  for (size_t i = 1; i < blocks.size(); i += 2) REQUIRE(allocator.free(blocks[i]).ok());
  auto whole = allocator.allocate(1024);
  REQUIRE(whole.ok());
  CHECK(*whole == 0);
}

TEST_CASE("random allocate/free keeps the books: used_bytes returns to zero") {
  RegionAllocator allocator(1 << 20);
  mrpc::SeededRandom random(7);
  std::vector<uint64_t> live;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || random.next_u64() % 3 != 0) {
      auto block =
          allocator.allocate(1 + random.next_u64() % 2000, uint64_t{8} << (random.next_u64() % 4));
      if (block.ok()) live.push_back(*block);
    } else {
      const size_t index = random.next_u64() % live.size();
      REQUIRE(allocator.free(live[index]).ok());
      live[index] = live.back();
      live.pop_back();
    }
  }
  for (uint64_t block : live) REQUIRE(allocator.free(block).ok());
  CHECK(allocator.used_bytes() == 0);
  CHECK(allocator.live_blocks() == 0);
  auto whole = allocator.allocate(1 << 20);
  CHECK(whole.ok());
}

TEST_CASE("shrink gives a block's tail back, and the whole region merges again after free") {
  RegionAllocator allocator(4096);
  auto block = allocator.allocate(4096);
  REQUIRE(block.ok());
  CHECK(allocator.allocate(8).status().code() == StatusCode::kResourceExhausted);
  REQUIRE(allocator.shrink(*block, 1000).ok());
  CHECK(allocator.used_bytes() == 1000);
  auto tail = allocator.allocate(3096);
  REQUIRE(tail.ok());
  CHECK(*tail == *block + 1000);
  CHECK(allocator.shrink(*block, 2000).code() == StatusCode::kInvalidArgument);
  CHECK(allocator.shrink(*block + 8, 8).code() == StatusCode::kInvalidArgument);
  REQUIRE(allocator.free(*tail).ok());
  REQUIRE(allocator.free(*block).ok());
  CHECK(allocator.used_bytes() == 0);
  auto whole = allocator.allocate(4096);
  CHECK(whole.ok());
}

TEST_CASE("allocators sharing a byte budget are refused past it together, and give it back") {
  ByteBudget budget(1000);
  RegionAllocator first(4096);
  RegionAllocator second(4096);
  auto early = first.allocate(96);  // live before the budget: charged when it is attached
  REQUIRE(early.ok());
  REQUIRE(first.charge_to(budget, "test_budget").ok());
  REQUIRE(second.charge_to(budget, "test_budget").ok());
  CHECK(budget.used() == 96);
  auto a = first.allocate(500);
  REQUIRE(a.ok());
  auto refused = second.allocate(500);  // 96 + 504 + 504 > 1000, though the region has room
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("test_budget=1000") != std::string::npos);
  CHECK(budget.used() == 600);  // the refusal charged nothing
  auto b = second.allocate(400);
  REQUIRE(b.ok());
  CHECK(budget.used() == 1000);
  REQUIRE(second.shrink(*b, 200).ok());
  CHECK(budget.used() == 800);
  REQUIRE(first.free(*a).ok());
  CHECK(budget.used() == 296);
  {
    RegionAllocator moved = std::move(second);  // the budget follows the state
    CHECK(budget.used() == 296);
  }
  CHECK(budget.used() == 96);  // the moved-to allocator gave its 200 back when it died
  RegionAllocator replaced(64);
  replaced = std::move(first);
  CHECK(budget.used() == 96);
  replaced = RegionAllocator(64);  // assigning over a charging allocator returns its bytes
  CHECK(budget.used() == 0);
}

TEST_CASE(
    "thousands of live blocks stay disjoint, and only their starts free, through random churn") {
  // Many live blocks at once (the live-block table grows and deletes with collisions); checked
  // against a model: blocks never overlap, every start frees once, no other offset frees.
  RegionAllocator allocator(8 << 20);
  mrpc::SeededRandom random(20261202);
  std::map<uint64_t, uint64_t> model;  // start -> bytes asked for
  for (int step = 0; step < 60000; ++step) {
    CAPTURE(step);
    const uint64_t choice = random.next_u64() % 10;
    if (model.empty() || choice < 6) {
      const uint64_t bytes = 1 + random.next_u64() % (choice == 0 ? 9000 : 600);
      auto block = allocator.allocate(bytes);
      if (!block.ok()) continue;
      auto next = model.lower_bound(*block);
      REQUIRE((next == model.end() || *block + bytes <= next->first));
      if (next != model.begin()) {
        auto previous = std::prev(next);
        REQUIRE(previous->first + previous->second <= *block);
      }
      model.emplace(*block, bytes);
    } else {
      auto it = model.begin();
      std::advance(it, static_cast<long>(random.next_u64() % model.size()));
      if (it->second >= 16) {
        CHECK(allocator.free(it->first + 8).code() == StatusCode::kInvalidArgument);
      }
      if (choice == 9 && it->second > 8) {
        const uint64_t kept = 1 + random.next_u64() % it->second;
        REQUIRE(allocator.shrink(it->first, kept).ok());
        it->second = kept;
        continue;
      }
      REQUIRE(allocator.free(it->first).ok());
      CHECK(allocator.free(it->first).code() == StatusCode::kInvalidArgument);
      model.erase(it);
    }
    REQUIRE(allocator.live_blocks() == model.size());
  }
  for (const auto& [start, bytes] : model) REQUIRE(allocator.free(start).ok());
  CHECK(allocator.used_bytes() == 0);
  CHECK(allocator.allocate(8 << 20).ok());
}
