// ShmHeap: per-message arenas, failed messages when the heap is full, whole-tree frees, threads.
#include "mrpc/message/shm_heap.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "document_fixture.h"
#include "echo.mrpc.h"

using mrpc::ShmHeap;
using mrpc::StatusCode;
using mrpc::testing::TestRegion;

TEST_CASE(
    "a setter that finds the heap full marks the message failed and sendable says "
    "RESOURCE_EXHAUSTED") {
  TestRegion region(4096);
  ShmHeap heap(region.base(), region.size());
  auto request = echo::EchoRequest::create(heap);
  CHECK(mrpc::sendable(request.ref()).ok());
  request.set_text("fits");
  CHECK(mrpc::sendable(request.ref()).ok());
  request.set_payload(std::string(100000, 'x'));  // bigger than the whole heap
  CHECK(mrpc::sendable(request.ref()).code() == StatusCode::kResourceExhausted);
  CHECK(request.text() == "fits");
  CHECK(request.payload().empty());
  request.set_payload("small");  // a failed message stays failed, whatever comes after
  CHECK(mrpc::sendable(request.ref()).code() == StatusCode::kResourceExhausted);
  request.reset();
  CHECK(heap.used_bytes() == 0);
}

TEST_CASE(
    "a message that cannot even be created reads as empty and ignores writes and is not sendable") {
  TestRegion region(4096);
  ShmHeap heap(region.base(), region.size());
  std::vector<uint64_t> roots;
  for (;;) {
    auto filler = heap.new_message(8);
    if (!filler.ok()) break;
    roots.push_back(filler->offset);
  }
  auto document = nested::Document::create(heap);
  CHECK(mrpc::sendable(document.ref()).code() == StatusCode::kResourceExhausted);
  document.set_title("ignored");
  document.mutable_origin().set_x(5);
  document.add_numbers(1);
  CHECK(document.title().empty());
  CHECK(document.origin().x() == 0);
  CHECK(document.numbers_size() == 0);
  for (uint64_t root : roots) REQUIRE(heap.free_message(root).ok());
  CHECK(heap.used_bytes() == 0);
}

TEST_CASE("free_message returns the whole tree: used_bytes back at its start after many messages") {
  TestRegion region(8 << 20);
  ShmHeap heap(region.base(), region.size());
  const uint64_t start = heap.used_bytes();
  std::vector<uint64_t> roots;
  for (int i = 0; i < 2000; ++i) {
    auto document = nested::Document::create(heap);
    mrpc::testing::fill_document(document);
    REQUIRE(mrpc::sendable(document.ref()).ok());
    roots.push_back(document.release().offset);
    if (roots.size() == 50) {  // keep some alive while others come and go
      for (uint64_t root : roots) REQUIRE(heap.free_message(root).ok());
      roots.clear();
    }
  }
  for (uint64_t root : roots) REQUIRE(heap.free_message(root).ok());
  CHECK(heap.used_bytes() == start);
  CHECK(heap.live_messages() == 0);
}

TEST_CASE("free_message and sendable refuse offsets that are not a live message's root") {
  TestRegion region(1 << 16);
  ShmHeap heap(region.base(), region.size());
  auto document = nested::Document::create(heap);
  auto origin = document.mutable_origin();
  const uint64_t used = heap.used_bytes();
  CHECK(heap.free_message(origin.ref().offset).code() == StatusCode::kInvalidArgument);
  CHECK(mrpc::sendable(origin.ref()).code() == StatusCode::kInvalidArgument);
  CHECK(heap.free_message(12345).code() == StatusCode::kInvalidArgument);
  CHECK(heap.used_bytes() == used);
  const uint64_t root = document.ref().offset;
  document.reset();
  CHECK(heap.free_message(root).code() == StatusCode::kInvalidArgument);
  CHECK(mrpc::sendable(mrpc::MessageRef{}).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("messages built on many threads while another thread frees them") {
  TestRegion region(16 << 20);
  ShmHeap heap(region.base(), region.size());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  std::vector<std::atomic<uint64_t>> handoff(kThreads * kPerThread);
  for (auto& slot : handoff) slot.store(mrpc::kNoOffset);
  std::atomic<int> bad{0};
  std::vector<std::thread> builders;
  for (int t = 0; t < kThreads; ++t) {
    builders.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto request = echo::EchoRequest::create(heap);
        const std::string text = std::to_string(t) + ":" + std::to_string(i);
        request.set_text(text);
        request.set_payload(std::string(static_cast<size_t>(i % 700), 'p'));
        if (!mrpc::sendable(request.ref()).ok() || request.text() != text) bad.fetch_add(1);
        handoff[static_cast<size_t>(t * kPerThread + i)].store(request.release().offset,
                                                               std::memory_order_release);
      }
    });
  }
  std::thread freer([&] {
    for (auto& slot : handoff) {
      uint64_t root;
      while ((root = slot.load(std::memory_order_acquire)) == mrpc::kNoOffset)
        std::this_thread::yield();
      if (!heap.free_message(root).ok()) bad.fetch_add(1);
    }
  });
  for (auto& builder : builders) builder.join();
  freer.join();
  CHECK(bad.load() == 0);
  CHECK(heap.used_bytes() == 0);
  CHECK(heap.live_messages() == 0);
}

TEST_CASE(
    "an offset in any chunk of a message's arena grows that message; offsets between messages, in "
    "a freed one or past the heap own nothing") {
  TestRegion region(1 << 20);
  ShmHeap heap(region.base(), region.size());
  auto first = heap.new_message(16);
  auto second = heap.new_message(16);
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  // Grows `first` chunk after chunk; each block is owned through the one before (in later chunks).
  uint64_t owner = first->offset;
  std::vector<uint64_t> blocks;
  for (int i = 0; i < 12; ++i) {
    const uint64_t block = heap.allocate(owner, 1000 + 700 * i, 8, true);
    REQUIRE(block != mrpc::kNoOffset);
    blocks.push_back(block);
    owner = block + 5;  // inside the block, not at its start
  }
  CHECK(heap.live_messages() == 2);
  // Every block belongs to `first`: freeing `second` leaves them usable, freeing `first` frees all.
  REQUIRE(heap.free_message(second->offset).ok());
  CHECK(heap.allocate(blocks.back(), 8, 8, false) != mrpc::kNoOffset);
  CHECK(heap.allocate(second->offset, 8, 8, false) == mrpc::kNoOffset);     // freed: owns nothing
  CHECK(heap.allocate(region.size(), 8, 8, false) == mrpc::kNoOffset);      // past the heap
  CHECK(heap.allocate(region.size() - 8, 8, 8, false) == mrpc::kNoOffset);  // never handed out
  CHECK(heap.free_message(blocks[3]).code() == StatusCode::kInvalidArgument);  // not a root
  REQUIRE(heap.free_message(first->offset).ok());
  CHECK(heap.used_bytes() == 0);
  CHECK(heap.live_messages() == 0);
  for (uint64_t block : blocks) CHECK(heap.allocate(block, 8, 8, false) == mrpc::kNoOffset);
}
