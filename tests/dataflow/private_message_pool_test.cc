// PrivateMessagePool: a private copy dropped by its last holder, on any thread, goes back to its
// pool with its buffer, so that taking copies for the calls in flight reuses the same messages;
// the pool outlives its owner while copies are held; oversized buffers are not kept.
#include "mrpc/dataflow/private_message_pool.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

using namespace mrpc;

TEST_CASE("private copies dropped by their holders are taken again with their buffers") {
  auto pool = PrivateMessagePool::create();
  std::set<const std::byte*> buffers;
  {
    std::vector<std::shared_ptr<PrivateMessage>> in_flight;
    for (int i = 0; i < 8; ++i) {
      in_flight.push_back(pool->take(256));
      CHECK(in_flight.back()->size == 256);
      buffers.insert(in_flight.back()->bytes.get());
    }
    CHECK(buffers.size() == 8);
  }
  CHECK(pool->idle() == 8);
  // Smaller requests reuse the same buffers; the size is what was asked for.
  for (int round = 0; round < 100; ++round) {
    std::vector<std::shared_ptr<PrivateMessage>> in_flight;
    for (int i = 0; i < 8; ++i) {
      in_flight.push_back(pool->take(64 + round));
      CHECK(in_flight.back()->size == uint64_t(64 + round));
      CHECK(in_flight.back()->message_bytes == 0);
      CHECK(buffers.count(in_flight.back()->bytes.get()) == 1);
    }
  }
  CHECK(pool->idle() == 8);
}

TEST_CASE("a private copy outlives its pool's owner and one over the pooled size is not kept") {
  std::shared_ptr<PrivateMessage> held;
  std::weak_ptr<PrivateMessagePool> watched;
  {
    auto pool = PrivateMessagePool::create();
    watched = pool;
    held = pool->take(100);
    auto big = pool->take(limits::kMaxPooledPrivateMessageBytes + 1);
    big.reset();
    CHECK(pool->idle() == 0);  // freed, not kept
  }
  CHECK_FALSE(watched.expired());  // the copy still holds its pool
  std::memset(held->bytes.get(), 0x5a, held->size);
  held.reset();
  CHECK(watched.expired());
}

TEST_CASE("private copies dropped on other threads while the owner takes more stay whole") {
  auto pool = PrivateMessagePool::create();
  constexpr int kCopies = 20000;
  std::vector<std::shared_ptr<PrivateMessage>> handed(kCopies);
  std::atomic<int> published{0};
  std::thread dropper([&] {
    for (int i = 0; i < kCopies; ++i) {
      while (published.load(std::memory_order_acquire) <= i) std::this_thread::yield();
      CHECK(handed[i]->bytes[0] == std::byte(i & 0xff));
      handed[i].reset();
    }
  });
  for (int i = 0; i < kCopies; ++i) {
    handed[i] = pool->take(32);
    handed[i]->bytes[0] = std::byte(i & 0xff);
    published.store(i + 1, std::memory_order_release);
  }
  dropper.join();
  CHECK(pool->idle() <= limits::kMaxIdlePrivateMessages);
}
