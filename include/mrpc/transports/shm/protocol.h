// The contract between an app (libmrpc) and its host's mrpcd, on one app connection.
//
// Setup runs over the app socket (a Unix SOCK_SEQPACKET socket; one control message per packet,
// protobuf messages from transports/shm/app_protocol.proto, file descriptors by SCM_RIGHTS).
// After the handshake the daemon has created, and passed to the app, four things:
//   heap     memfd, app maps read-write, daemon maps read-only. The app builds outgoing messages
//            here; its allocator's metadata lives in the app's private memory. Sealed against
//            shrinking and growing, so a mapping never faults.
//   receive  memfd, daemon maps read-write, app maps read-only (F_SEAL_FUTURE_WRITE). The daemon
//            places incoming messages here; the daemon's allocator owns it.
//   rings    memfd, both map read-write: the submission ring (app -> daemon) then the completion
//            ring (daemon -> app), each a RingHeader then `ring_entries` RingEntry slots.
//   doorbells two eventfds: app_to_daemon (the app writes it when it posts while the daemon sleeps)
//            and daemon_to_app (the reverse).
// Offsets in entries are relative to the start of the region they point into (heap for app ->
// daemon, receive for daemon -> app), so they are valid whatever address each side maps it at.
// The daemon never trusts what it reads from the heap or the rings: every index, offset, length
// and id is checked before use, and read once.
#pragma once

#include <atomic>
#include <cstdint>

namespace mrpc::shm {

inline constexpr uint32_t kProtocolVersion = 2;
// Where libmrpc finds the daemon unless MRPC_SOCKET says otherwise.
inline constexpr const char* kDefaultAppSocketPath = "/run/mrpc/app.sock";
inline constexpr const char* kAppSocketEnv = "MRPC_SOCKET";
// The control interface (policies, stats) is a different socket with its own permissions.
inline constexpr const char* kDefaultControlSocketPath = "/run/mrpc/control.sock";

// Offset meaning "no message / no block".
inline constexpr uint64_t kNoOffset = UINT64_MAX;

enum class EntryKind : uint8_t {
  // ---- app -> daemon (submission ring) ----
  kCall = 1,     // start a call: request root in the heap; call_id chosen by the app. The daemon
                 // keeps the app's calls in max_calls_in_flight slots, slot = (low 32 bits of
                 // call_id) mod max_calls_in_flight: a call whose slot is taken by another call
                 // still in flight is refused with RESOURCE_EXHAUSTED (libmrpc uses
                 // (generation << 32) | slot ids, so its ids never collide)
  kReply = 2,    // end an incoming call: status, response root in the heap (or kNoOffset);
                 // also releases the request the daemon placed in the receive region
  kCancel = 3,   // cancel a call this app started (call_id = the app's id)
  kRelease = 4,  // the app is done with the receive-region block at message_offset
  // ---- daemon -> app (completion ring) ----
  kIncomingCall = 16,       // a call to a service this app serves; call_id chosen by the daemon:
                            // (generation << 32) | slot, slot < Welcome.max_calls_served, and a
                            // slot is not given to another call before the kReplyDone of its
                            // previous one is posted (so the app may index its table by slot);
                            // request in the receive region; metadata block there too
  kCallDone = 17,           // a call this app started has ended: status, response in the receive
                            // region (kNoOffset unless OK); the daemon no longer reads the request,
                            // so the app may free it. A non-OK status may come with UTF-8 detail
                            // text in the receive region (detail_offset): the app copies it and
                            // gives that block back with kRelease
  kReplyDone = 18,          // the daemon no longer reads the response the app sent with kReply
                            // (call_id = the daemon's id); the app may free it. Every kReply gets
                            // one, also one without a response
  kIncomingCancelled = 19,  // an incoming call was cancelled or timed out; a kReply for it is
                            // still expected (and ignored), to release the request
};

// kCall flags. kCallWaitForReady (gRPC's wait_for_ready): while no app serves the service, the
// daemon keeps the call waiting for one to register (up to its deadline) instead of ending it
// UNAVAILABLE at once.
inline constexpr uint8_t kCallWaitForReady = 1;

// One slot of a ring; 64 bytes, one cache line.
struct RingEntry {
  EntryKind kind;
  uint8_t flags;             // kCall: kCallWaitForReady; otherwise 0
  uint16_t method_index;     // kCall, kIncomingCall: index of the method in its service
  uint32_t service_id;       // kCall, kIncomingCall: id the daemon gave at schema registration
  uint64_t call_id;          // see EntryKind
  uint64_t message_offset;   // root of the message (request or response), or kNoOffset
  uint64_t metadata_offset;  // metadata block (below), or kNoOffset
  uint32_t metadata_length;  // bytes of the metadata block
  uint32_t status;           // kReply, kCallDone: a StatusCode
  int64_t deadline;          // kCall, kIncomingCall: absolute CLOCK_MONOTONIC ns
  uint64_t detail_offset;    // kReply, kCallDone: UTF-8 error text, or kNoOffset
  uint32_t detail_length;
  uint32_t reserved;
};
static_assert(sizeof(RingEntry) == 64);

// A zeroed entry of `kind` for `call_id`, with every offset set to kNoOffset.
constexpr RingEntry make_ring_entry(EntryKind kind, uint64_t call_id) {
  RingEntry entry{};
  entry.kind = kind;
  entry.call_id = call_id;
  entry.message_offset = kNoOffset;
  entry.metadata_offset = kNoOffset;
  entry.detail_offset = kNoOffset;
  return entry;
}

// Metadata block: u32 count, then per pair u32 key_length, u32 value_length, key bytes, value
// bytes (no padding). Keys are lower-case ASCII like HTTP/2 headers; at most
// limits::kMaxMetadataBytes in all.

// Ring control words. Single producer, single consumer. The producer owns `tail`, the consumer
// owns `head`; entries [head, tail) are full. Indices grow forever; slot = index & (entries - 1).
// A consumer about to sleep sets `consumer_sleeping` = 1, re-checks the ring, then blocks on its
// doorbell; a producer that sees `consumer_sleeping` after publishing writes the doorbell.
struct alignas(64) RingHeader {
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> tail;
  alignas(64) std::atomic<uint32_t> consumer_sleeping;
};
static_assert(sizeof(RingHeader) == 192);

// Bytes of the rings region for `entries` slots per ring.
constexpr uint64_t rings_region_bytes(uint32_t entries) {
  return 2 * (sizeof(RingHeader) + static_cast<uint64_t>(entries) * sizeof(RingEntry));
}
// Where each ring starts in the rings region.
constexpr uint64_t submission_ring_offset() {
  return 0;
}
constexpr uint64_t completion_ring_offset(uint32_t entries) {
  return rings_region_bytes(entries) / 2;
}

}  // namespace mrpc::shm
