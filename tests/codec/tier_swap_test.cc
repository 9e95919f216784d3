// The tier swap under concurrent use and the tiered CodecCache's background thread: the optimized
// code swapped into a schema's codecs while other threads encode and decode with them changes no
// result; a tiered cache tiers its schemas up in the background and unloads both modules when the
// schema goes. Its own executable, labelled multishard, so that scripts/test.sh runs it under
// TSan too (the generated code itself is not instrumented; the swap, the queue and the cache are).
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "codec_harness.h"
#include "mrpc/codec/codec_cache.h"

namespace {

using namespace mrpc::codec_testing;
using mrpc::codec::CodecLimits;
using mrpc::codec::CompiledSchema;
using mrpc::codec::MessageCodec;
using mrpc::codec::NativeSpan;
using mrpc::jit::CodegenTier;

std::shared_ptr<const CompiledSchema> compile_at(const pb::Descriptor& type, CodegenTier tier) {
  auto schema = harness().compiler->compile({&type}, tier);
  REQUIRE_MESSAGE(schema.ok(), schema.status().to_string());
  CHECK((*schema)->tier() == tier);
  return *schema;
}

std::string native_bytes(const MessageCodec& codec, const Region& heap, uint64_t root) {
  std::vector<NativeSpan> spans;
  auto size = codec.encode_native(heap.view(), root, spans, CodecLimits{});
  REQUIRE_MESSAGE(size.ok(), size.status().to_string());
  std::string bytes;
  for (const NativeSpan& span : spans) {
    bytes.append(reinterpret_cast<const char*>(span.data), span.size);
  }
  return bytes;
}

}  // namespace

TEST_CASE("the optimized code swaps in while threads encode and decode with the same codec") {
  const pb::Descriptor& type =
      harness().protos.message("examples/protos/hotel/profile.proto", "hotel.ProfileResult");
  auto schema = compile_at(type, CodegenTier::kFast);
  const MessageCodec* codec = schema->find(type.full_name());  // held across the swap
  REQUIRE(codec != nullptr);
  // A few messages built once; the threads only read them.
  constexpr int kMessages = 8;
  Region heap(4 << 20);
  std::vector<uint64_t> roots;
  std::vector<std::string> expected_wire;
  std::vector<std::string> expected_native;
  std::vector<std::byte> out(1 << 20);
  for (int i = 0; i < kMessages; ++i) {
    RandomCase c = random_case(type, 0x7153ull + static_cast<uint64_t>(i));
    roots.push_back(build(codec->layout(), *c.message, heap));
    expected_wire.push_back(c.message->SerializeAsString());
    expected_native.push_back(native_bytes(*codec, heap, roots.back()));
  }

  constexpr int kThreads = 4;
  constexpr uint64_t kRoundsEachSide = 50;  // per thread, before and after the swap
  std::atomic<bool> swapped{false};
  std::atomic<bool> stop{false};
  std::atomic<int> threads_ready_before{0};
  std::atomic<int> threads_done_after{0};
  std::atomic<uint64_t> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ReceiveRegion receive;
      std::vector<std::byte> buffer(1 << 20);
      uint64_t rounds = 0;
      uint64_t after = 0;
      bool counted_before = false;
      bool counted_after = false;
      while (!stop.load(std::memory_order_acquire)) {
        const bool was_swapped = swapped.load(std::memory_order_acquire);
        const int m = static_cast<int>((rounds + static_cast<uint64_t>(t)) % kMessages);
        // Wire: encode, decode, and re-encode the decoded copy (no libprotobuf on these threads).
        auto encoded = codec->encode_wire(heap.view(), roots[m], buffer, CodecLimits{});
        const bool wire_ok =
            encoded.ok() && std::string(reinterpret_cast<const char*>(encoded->data()),
                                        encoded->size()) == expected_wire[m];
        auto decoded = codec->decode_wire(as_bytes(expected_wire[m]), receive.region.mutable_view(),
                                          receive.allocator, CodecLimits{});
        bool round_trip_ok = false;
        if (decoded.ok()) {
          auto again = codec->encode_wire(receive.region.view(), *decoded, buffer, CodecLimits{});
          round_trip_ok = again.ok() && std::string(reinterpret_cast<const char*>(again->data()),
                                                    again->size()) == expected_wire[m];
          (void)receive.allocator.free(*decoded);
        }
        // Native: the same spans' bytes, and they decode.
        std::vector<NativeSpan> spans;
        std::string native;
        if (codec->encode_native(heap.view(), roots[m], spans, CodecLimits{}).ok()) {
          for (const NativeSpan& span : spans) {
            native.append(reinterpret_cast<const char*>(span.data), span.size);
          }
        }
        auto native_root =
            codec->decode_native(as_bytes(expected_native[m]), receive.region.mutable_view(),
                                 receive.allocator, CodecLimits{});
        if (native_root.ok()) (void)receive.allocator.free(*native_root);
        if (!wire_ok || !round_trip_ok || native != expected_native[m] || !native_root.ok()) {
          mismatches.fetch_add(1);
        }
        ++rounds;
        if (!counted_before && rounds >= kRoundsEachSide) {
          counted_before = true;
          threads_ready_before.fetch_add(1);
        }
        if (was_swapped && ++after >= kRoundsEachSide && !counted_after) {
          counted_after = true;
          threads_done_after.fetch_add(1);
        }
      }
      if (receive.allocator.live_blocks() != 0) mismatches.fetch_add(1000000);
    });
  }
  // Every thread runs the fast code a while, the swap happens under them, and every thread runs
  // the optimized code a while. (Ordering by counters, not by time.)
  while (threads_ready_before.load() < kThreads) std::this_thread::yield();
  const mrpc::Status status = harness().compiler->tier_up(*schema);
  CHECK_MESSAGE(status.ok(), status.to_string());
  swapped.store(true, std::memory_order_release);
  while (threads_done_after.load() < kThreads) std::this_thread::yield();
  stop.store(true, std::memory_order_release);
  for (std::thread& thread : threads) thread.join();
  CHECK(mismatches.load() == 0);
  CHECK(schema->tier() == CodegenTier::kOptimized);
  CHECK(schema->tier_up_nanoseconds() > 0);
  CHECK(schema->find(type.full_name()) == codec);
  // A second tier-up has nothing to do.
  CHECK(harness().compiler->tier_up(*schema).ok());
}

TEST_CASE("a tiered codec cache compiles fast, tiers up in the background and unloads both") {
  mrpc::codec::CodecCache cache(*harness().compiler,
                                mrpc::codec::CodecCacheOptions{.first_tier = CodegenTier::kFast});
  const pb::Descriptor& document = harness().protos.message("nested.proto", "nested.Document");
  const size_t modules_before = harness().jit->module_count();
  const uint64_t fast_before = harness().jit->stats().modules_compiled_fast;
  auto first = cache.get({&document});
  REQUIRE_MESSAGE(first.ok(), first.status().to_string());
  CHECK(harness().jit->stats().modules_compiled_fast == fast_before + 1);
  cache.wait_for_tier_ups();
  CHECK((*first)->tier() == CodegenTier::kOptimized);
  CHECK(harness().jit->module_count() == modules_before + 2);  // both tiers until it goes
  auto stats = cache.stats();
  CHECK(stats.compiles == 1);
  CHECK(stats.tier_ups == 1);
  CHECK(stats.tier_up_failures == 0);
  CHECK(stats.tier_ups_pending == 0);
  CHECK(stats.tier_up_nanoseconds > 0);
  // A hit is the same schema, optimized now; nothing is queued again.
  auto second = cache.get({&document});
  REQUIRE(second.ok());
  CHECK(second->get() == first->get());
  cache.wait_for_tier_ups();
  CHECK(cache.stats().tier_ups == 1);
  // Once nobody holds it, prune unloads both modules.
  first = mrpc::Status(mrpc::StatusCode::kCancelled, "released");
  second = mrpc::Status(mrpc::StatusCode::kCancelled, "released");
  CHECK(cache.prune() == 1);
  CHECK(harness().jit->module_count() == modules_before);
}

TEST_CASE("a schema dropped before its tier-up is skipped and the cache stops cleanly") {
  const pb::Descriptor& orders =
      harness().protos.message("examples/protos/shop/orders.proto", "shop.OrderRequest");
  const size_t modules_before = harness().jit->module_count();
  {
    mrpc::codec::CodecCache cache(*harness().compiler,
                                  mrpc::codec::CodecCacheOptions{.first_tier = CodegenTier::kFast});
    auto schema = cache.get({&orders});
    REQUIRE_MESSAGE(schema.ok(), schema.status().to_string());
    schema = mrpc::Status(mrpc::StatusCode::kCancelled, "released");
    // Before the tier-up (skipped: the queue holds only a weak_ptr) or during it (the tier-up
    // thread still holds it: the second prune drops it): either way nothing leaks.
    cache.prune();
    cache.wait_for_tier_ups();
    cache.prune();
    CHECK(cache.stats().tier_ups_pending == 0);
    CHECK(cache.stats().schemas == 0);
  }
  CHECK(harness().jit->module_count() == modules_before);
}
