// copy_message: the daemon's one way of moving a message from an app's heap (untrusted: the app
// may change it while it is read) into another app's receive region (trusted: only the daemon
// writes it). Every reference is bounds-checked against the source region and read once; the
// copy lands in ONE contiguous block, so releasing it is one RegionAllocator::free of the root.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mrpc/base/expected.h"
#include "mrpc/base/limits.h"

namespace mrpc {

class MessageLayout;
class RegionAllocator;

struct ConstRegion {
  const std::byte* base = nullptr;
  uint64_t size = 0;
};
struct MutableRegion {
  std::byte* base = nullptr;
  uint64_t size = 0;
};

struct CopyLimits {
  uint64_t max_message_bytes;  // all parts of the message together
  uint32_t max_nesting;        // messages inside messages
  // Steps (bodies visited, references followed, oneof cases resolved), both passes together.
  uint64_t max_work = limits::kDefaultMaxCopyWork;
};

// What one copy did (for tests and counters).
struct CopyStats {
  uint64_t work = 0;    // steps, as CopyLimits::max_work counts them (two passes' worth, also
                        // when copy_message_to copied in one)
  uint64_t bytes = 0;   // copy_message_to: bytes of its block the copy takes, from its start
  uint32_t passes = 0;  // copy_message_to: 1 copied without measuring, 2 measured then copied
};

// Returns the root offset of the copy in `destination`. The work is linear in the bytes of the
// message (never in elements x schema members): each body costs its references and oneofs,
// each oneof case one binary search among its members.
// INVALID_ARGUMENT: a reference outside the source region, a length that does not fit, a bad
// oneof case, nesting deeper than the limit. RESOURCE_EXHAUSTED: bigger than max_message_bytes,
// more work than max_work, or no room in the destination. On error nothing stays allocated in
// the destination. `stats`, if given, is filled in either case.
Expected<uint64_t> copy_message(const MessageLayout& layout, ConstRegion source,
                                uint64_t source_offset, MutableRegion destination,
                                RegionAllocator& destination_allocator, const CopyLimits& limits,
                                CopyStats* stats = nullptr);

// Where copy_message_to puts a copy: a region of at least `bytes` bytes that only the daemon can
// write (base null: no room). Called with the first try's size when there is one and, if the copy
// was not made there, once more with the size pass 1 measured; a second call replaces the region
// the first returned.
using ReserveCopy = MutableRegion (*)(void* context, uint64_t bytes);

// The same copy into a block of its own: the root lies at offset 0 of the region `reserve`
// returned, and the copy takes at most the bytes it was asked for (fewer when the app shrank the
// message between the two passes; bytes no reference of the copy points at, such as that tail and
// the padding after strings, keep whatever the region held: every reference in the copy is the
// daemon's). For copies the daemon keeps private (a policy's time-of-check copy), which need no
// region allocator. On error the region holds garbage; the caller still owns it.
// `first_try_bytes` not 0: first one pass, copying straight into a block of that size (at most
// max_message_bytes of it used) without measuring: most messages fit, and the measuring walk is
// saved. A copy that does not fit there, or fails there for any reason, is made again by the two
// passes, so the result, the error and `stats->work` are what the two passes give (each step of
// the one pass counts twice against max_work, as the two passes would count it); stats->bytes
// says how much of the block the copy took, stats->passes which way it was made.
Expected<uint64_t> copy_message_to(const MessageLayout& layout, ConstRegion source,
                                   uint64_t source_offset, ReserveCopy reserve, void* context,
                                   const CopyLimits& limits, CopyStats* stats = nullptr,
                                   uint64_t first_try_bytes = 0);

}  // namespace mrpc
