// map_lookup_bench: cost of one generated map lookup (`names_at`) as the map grows, on a received
// (read-only) message and on one being built. A hash lookup costs about the same at every size;
// the linear scan it replaced grew with the size (10,000 lookups in 10,000 entries took 386 ms).
//   build/bench/map_lookup_bench [--lookups N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "mrpc/base/limits.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/region_allocator.h"
#include "mrpc/message/schema.h"
#include "nested.mrpc.h"

namespace {

struct Region {
  explicit Region(uint64_t bytes) : words(new uint64_t[bytes / 8]()), size(bytes) {}
  std::byte* base() const { return reinterpret_cast<std::byte*>(words.get()); }
  std::unique_ptr<uint64_t[]> words;
  uint64_t size;
};

template <class View>
double ns_per_lookup(const View& view, int entries, int lookups, uint64_t* checksum) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < lookups; ++i)
    *checksum += view.names_at(int64_t{(i * 7919) % entries} * 3).size();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  return std::chrono::duration<double, std::nano>(elapsed).count() / lookups;
}

}  // namespace

int main(int argc, char** argv) {
  int lookups = 100000;
  if (argc == 3 && std::strcmp(argv[1], "--lookups") == 0) lookups = std::atoi(argv[2]);
  auto schema = mrpc::Schema::from_file_descriptor_set(nested::file_descriptor_set_nested());
  if (!schema.ok()) return 1;
  std::printf("%10s %22s %22s %16s\n", "entries", "received ns/lookup", "building ns/lookup",
              "first lookup ms");
  uint64_t checksum = 0;
  for (int entries : {100, 1000, 10000, 100000, 1000000}) {
    Region heap_region(256 << 20), receive_region(256 << 20);
    mrpc::ShmHeap heap(heap_region.base(), heap_region.size);
    mrpc::RegionAllocator allocator(receive_region.size);
    auto doc = nested::Document::create(heap);
    for (int i = 0; i < entries; ++i) doc.insert_names(int64_t{i} * 3, std::to_string(i));
    auto copied = mrpc::copy_message(*(*schema)->message("nested.Document"),
                                     {heap_region.base(), heap_region.size}, doc.ref().offset,
                                     {receive_region.base(), receive_region.size}, allocator,
                                     {uint64_t{1} << 30, mrpc::limits::kMaxMessageNesting});
    if (!copied.ok()) {
      std::printf("copy failed: %s\n", copied.status().to_string().c_str());
      return 1;
    }
    const nested::Document::View received(
        mrpc::MessageRef{receive_region.base(), receive_region.size, *copied, nullptr});
    const auto first_start = std::chrono::steady_clock::now();
    checksum += received.names_at(0).size();  // builds the index
    const double first_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first_start)
            .count();
    const double on_received = ns_per_lookup(received, entries, lookups, &checksum);
    const double on_building = ns_per_lookup(doc, entries, lookups, &checksum);
    std::printf("%10d %22.1f %22.1f %16.2f\n", entries, on_received, on_building, first_ms);
  }
  std::printf("(checksum %llu)\n", static_cast<unsigned long long>(checksum));
  return 0;
}
