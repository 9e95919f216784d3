// Fuzz entry points for copy_message and Schema::from_file_descriptor_set (message_inputs.h).
#include "message_inputs.h"

#include <cstring>
#include <memory>
#include <vector>

#include "document_fixture.h"
#include "echo.mrpc.h"
#include "hostile_schemas.h"
#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/message/schema.h"
#include "mrpc/message/shm_heap.h"
#include "nested.mrpc.h"

namespace mrpc::fuzz {
namespace {

constexpr size_t kHeaderBytes = 10;

// The types a fuzzed heap is read as: every kind of field, recursion, maps and a oneof.
const char* const kTypes[] = {"nested.Document",         "nested.Tree", "nested.Point",
                              "nested.Document.Section", "amp.Outer",   "amp.Choice"};
constexpr size_t kTypeCount = sizeof(kTypes) / sizeof(kTypes[0]);

struct Schemas {
  std::shared_ptr<const Schema> nested;
  std::shared_ptr<const Schema> amp;
  const MessageLayout* layout(size_t index) const {
    const char* name = kTypes[index % kTypeCount];
    const MessageLayout* found = nested->message(name);
    return found != nullptr ? found : amp->message(name);
  }
};

const Schemas& schemas() {
  static const Schemas loaded = [] {
    auto nested = Schema::from_file_descriptor_set(nested::file_descriptor_set_nested());
    auto amp = Schema::from_file_descriptor_set(testing::oneof_schema(16));
    MRPC_ASSERT(nested.ok() && amp.ok(), "the fuzz schemas do not register");
    return Schemas{*nested, *amp};
  }();
  return loaded;
}

// 8-aligned private memory (a region's base is page-aligned).
struct Buffer {
  explicit Buffer(uint64_t bytes) : words((bytes + 7) / 8 + 1), size(bytes) {}
  std::byte* base() { return reinterpret_cast<std::byte*>(words.data()); }
  std::vector<uint64_t> words;
  uint64_t size;
};

std::string header(size_t type, uint64_t root, uint8_t nesting) {
  std::string out(kHeaderBytes, '\0');
  out[0] = static_cast<char>(type);
  std::memcpy(out.data() + 1, &root, sizeof(root));
  out[9] = static_cast<char>(nesting);
  return out;
}

// copy_message_to copies `root` in one pass (its first try, into a block that holds any copy
// within the limits) and in two passes, into zeroed blocks: the same root, bytes and work, or the
// same error.
void compare_copy_passes(const MessageLayout& layout, ConstRegion source, uint64_t root,
                         const CopyLimits& limits) {
  struct Block {
    std::vector<std::byte> bytes;
  };
  auto reserve = [](void* context, uint64_t bytes) {
    auto& into = *static_cast<Block*>(context);
    into.bytes.assign(bytes, std::byte{0});
    return MutableRegion{into.bytes.data(), bytes};
  };
  Block one_block, two_block;
  CopyStats one_stats, two_stats;
  auto one = copy_message_to(layout, source, root, reserve, &one_block, limits, &one_stats,
                             limits.max_message_bytes);
  auto two = copy_message_to(layout, source, root, reserve, &two_block, limits, &two_stats, 0);
  MRPC_ASSERT(one.ok() == two.ok(), "one pass {}, two passes {}",
              one.ok() ? "copies" : one.status().to_string(),
              two.ok() ? "copy" : two.status().to_string());
  MRPC_ASSERT(one_stats.work == two_stats.work, "one pass counts {} steps, two passes {}",
              one_stats.work, two_stats.work);
  if (!two.ok()) {
    MRPC_ASSERT(one.status().to_string() == two.status().to_string(),
                "one pass refuses with {}, two passes with {}", one.status().to_string(),
                two.status().to_string());
    return;
  }
  MRPC_ASSERT(*one == *two && one_stats.bytes == two_stats.bytes &&
                  std::memcmp(one_block.bytes.data(), two_block.bytes.data(), two_stats.bytes) == 0,
              "one pass and two passes copy differently ({} and {} bytes)", one_stats.bytes,
              two_stats.bytes);
}

}  // namespace

void copy_from_heap(std::string_view input) {
  if (input.size() < kHeaderBytes) return;
  const MessageLayout& layout = *schemas().layout(static_cast<uint8_t>(input[0]));
  uint64_t root = 0;
  std::memcpy(&root, input.data() + 1, sizeof(root));
  const uint32_t nesting = static_cast<uint8_t>(input[9]) % (limits::kMaxMessageNesting + 8);
  const std::string_view contents = input.substr(kHeaderBytes);
  Buffer heap(contents.size());
  std::memcpy(heap.base(), contents.data(), contents.size());
  root %= heap.size + 64;

  const uint64_t room = 4 * heap.size + 4096;
  Buffer receive(room);
  RegionAllocator allocator(room);
  const CopyLimits limits{room, nesting};
  compare_copy_passes(layout, {heap.base(), heap.size}, root, limits);
  auto copied = copy_message(layout, {heap.base(), heap.size}, root, {receive.base(), room},
                             allocator, limits);
  if (!copied.ok()) {
    MRPC_ASSERT(allocator.live_blocks() == 0, "a failed copy left {} blocks",
                allocator.live_blocks());
    return;
  }
  // The copy is well-formed: copying it again (as the daemon would forward it) succeeds and
  // takes exactly as many bytes.
  const uint64_t used = allocator.used_bytes();
  Buffer again(room);
  RegionAllocator again_allocator(room);
  auto recopied = copy_message(layout, {receive.base(), room}, *copied, {again.base(), room},
                               again_allocator, limits);
  MRPC_ASSERT(recopied.ok(), "a copy does not copy again: {}", recopied.status().to_string());
  MRPC_ASSERT(again_allocator.used_bytes() == used, "copy of a copy: {} bytes, first copy {}",
              again_allocator.used_bytes(), used);
  MRPC_ASSERT(allocator.free(*copied).ok() && allocator.live_blocks() == 0,
              "the copy does not free as one block");
}

void register_schema(std::string_view input) {
  auto schema = Schema::from_file_descriptor_set(input);
  if (!schema.ok()) return;
  auto again = Schema::from_file_descriptor_set(input);
  MRPC_ASSERT(again.ok(), "a schema registers once but not twice: {}", again.status().to_string());
  google::protobuf::FileDescriptorSet set;
  MRPC_ASSERT(set.ParseFromArray(input.data(), static_cast<int>(input.size())),
              "a registered schema does not parse");
  // Every top-level type: same fingerprint both times, and its reachable text can be built.
  for (const auto& file : set.file()) {
    for (const auto& message : file.message_type()) {
      std::string name =
          file.package().empty() ? message.name() : file.package() + "." + message.name();
      const MessageLayout* first = (*schema)->message(name);
      const MessageLayout* second = (*again)->message(name);
      MRPC_ASSERT(first != nullptr && second != nullptr, "registered type {} has no layout", name);
      MRPC_ASSERT(first->fingerprint() == second->fingerprint(),
                  "fingerprint of {} differs between two registrations", name);
      (void)first->canonical_text();
    }
  }
}

std::vector<std::string> copy_seeds() {
  std::vector<std::string> seeds;
  constexpr uint64_t kHeapBytes = 64 << 10;
  auto seed = [&](size_t type, auto fill) {
    std::vector<uint64_t> words(kHeapBytes / 8);
    auto* base = reinterpret_cast<std::byte*>(words.data());
    ShmHeap heap(base, kHeapBytes);
    const uint64_t root = fill(heap);
    uint64_t end = kHeapBytes;
    while (end > 0 && base[end - 1] == std::byte{0}) --end;
    seeds.push_back(header(type, root, limits::kMaxMessageNesting) +
                    std::string(reinterpret_cast<const char*>(base), (end + 7) / 8 * 8));
  };
  seed(0, [](ShmHeap& heap) {
    auto doc = nested::Document::create(heap);
    testing::fill_document(doc);
    return doc.ref().offset;
  });
  seed(1, [](ShmHeap& heap) {
    auto tree = nested::Tree::create(heap);
    testing::fill_tree(tree, "t", 4);
    return tree.ref().offset;
  });
  seed(2, [](ShmHeap& heap) {
    auto point = nested::Point::create(heap);
    point.set_x(1);
    point.set_y(2);
    return point.ref().offset;
  });
  // amp.Outer with three Choices, built by hand from the layout.
  seed(4, [](ShmHeap& heap) {
    const MessageLayout& outer = *schemas().amp->message("amp.Outer");
    const MessageLayout& choice = *schemas().amp->message("amp.Choice");
    auto message = heap.new_message(outer.body_size());
    MRPC_ASSERT(message.ok(), "no room for a seed");
    const uint64_t array = heap.allocate(message->offset, 3 * choice.body_size(), 8, true);
    const RegionRef ref{array, 3, 3};
    std::memcpy(message->base + message->offset + outer.field_by_name("items")->offset, &ref,
                sizeof(ref));
    for (uint32_t i = 0; i < 3; ++i) {
      const uint32_t number = 1 + 5 * i;
      std::memcpy(message->base + array + i * choice.body_size() + choice.oneofs()[0].case_offset,
                  &number, sizeof(number));
    }
    return message->offset;
  });
  return seeds;
}

std::vector<std::string> schema_seeds() {
  return {std::string(nested::file_descriptor_set_nested()),
          std::string(echo::EchoService::schema().file_descriptor_set),
          testing::chain_schema(20, 10, 5), testing::oneof_schema(16)};
}

}  // namespace mrpc::fuzz
