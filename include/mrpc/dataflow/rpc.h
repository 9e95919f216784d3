// Rpc: the descriptor of one attempt of a call as it travels through the daemon's dataflow graphs,
// request path and reply path. It carries references to messages (offsets into a connection's
// region), never the bytes themselves. Owned by exactly one place at a time (RpcPtr): a queue
// between operators, an operator holding it, a timer, or a callee's table of calls it serves.
// Touched only by the runtime thread that currently owns it.
//
// A call has one attempt at first; operators may fork more (a retry, a mirror, a fan-out): each
// is an Rpc of its own with the same call_id, delivered and answered on its own. Whichever attempt
// reaches the caller's frontend first ends the call, exactly once; any attempt that surfaces
// after that finds its call gone and is discarded (its memory freed).
//
// Descriptors come from a per-thread pool (make_rpc): in steady state no call allocates one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mrpc/base/clock.h"
#include "mrpc/base/status.h"

namespace mrpc {

// Identifies one app connection in a daemon; 0 is "none".
using ConnectionId = uint64_t;
inline constexpr ConnectionId kNoConnection = 0;

// Who made a call, as the kernel says (SO_PEERCRED), plus the name the app gave itself.
struct CallerIdentity {
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid = 0;
  std::string app_name;
  std::string host;  // a call from a peer daemon: that host's name (mpol rpc.caller.host); else ""
};

// A daemon-private copy of a message taken out of an app's heap because a policy read it: the
// bytes the policy checked are the bytes delivered, never a second read of memory the app can
// still write (time-of-check/time-of-use). Laid out as in the region it came from: `bytes` holds
// [0, size) and the message's root lies at its MessageLocation::offset. Attempts forked from the
// call share it (read-only); an operator writes into it only while it holds the one reference.
struct PrivateMessage {
  std::unique_ptr<std::byte[]> bytes;
  uint64_t size = 0;           // bytes of `bytes`
  uint64_t message_bytes = 0;  // of them, the message's own (rpc.size)
};

// Where a message lives: in a region of connection `owner` (its heap: what the app wrote; its
// receive region: what the daemon placed there for it), or in a PrivateMessage of the daemon
// (`owner` still names the app it came from), at the root `offset`.
enum class RegionKind : uint8_t { kHeap, kReceive, kPrivate };
struct MessageLocation {
  static constexpr uint64_t kNone = UINT64_MAX;
  ConnectionId owner = kNoConnection;
  RegionKind region = RegionKind::kHeap;
  uint64_t offset = kNone;
  std::shared_ptr<PrivateMessage> private_copy;  // kPrivate only
  bool present() const { return offset != kNone; }
};

// A request that came from a peer daemon (TCP), as it waits in the callee's daemon until its
// delivery decodes it into the callee's receive region (Rpc::peer_request). Defined by the daemon
// (daemon/peer_request.h): its payload and the caller's metadata block as the frame carried
// them, in daemon-private memory no app can write.
struct PeerRequest;

struct MetadataEntry {
  std::string key;
  std::string value;
  friend bool operator==(const MetadataEntry&, const MetadataEntry&) = default;
};

// Where a call is going once routed. Local: another app connection on this host (later: a peer
// daemon's address as well).
struct Endpoint {
  ConnectionId connection = kNoConnection;
  bool routed() const { return connection != kNoConnection; }
};

// The per-call variables (mpol `call x: T;`) one policy operator keeps in a call's record: set
// by its request handler, read by its response and error handlers. `cells` are the policy
// runner's (a std::vector<compiler::ir::Value>, type-erased here), at most
// limits::kMaxPolicyCallVariables of them, a string at most kMaxPolicyCallVariableBytes.
struct PolicyCallVariables {
  uint64_t owner = 0;  // the operator's process-unique id (never reused, unlike its address)
  std::shared_ptr<void> cells;
};

// Which of a connection's two graphs an RPC is in: egress (the caller's side: frontend ->
// policies -> router) or ingress (the callee's side: delivery -> policies -> the app).
enum class GraphSide : uint8_t { kEgress, kIngress };

enum class AttemptKind : uint8_t {
  kPrimary,  // the call as the app made it
  kRetry,    // another try after a failed attempt; its reply may end the call
  kMirror,   // a shadow copy: its reply is absorbed by the operator that forked it
  kFanOut,   // one of several parallel attempts; an operator combines or picks the replies
};

struct Rpc {
  uint64_t call_id = 0;                     // the daemon's handle of the call (its call table)
  uint64_t caller_call_id = 0;              // the id the calling app chose for it
  uint64_t delivery_id = 0;                 // the id the callee app knows it by, once delivered
  ConnectionId connection = kNoConnection;  // the caller's connection
  std::shared_ptr<const CallerIdentity> caller;
  uint32_t service_id = 0;
  uint16_t method_index = 0;
  MessageLocation request;
  // The request already copied into the callee's receive region (kReceive, owner: the callee),
  // by a policy at the callee that read it there: the delivery hands this block to the callee
  // instead of copying `request` again. Set only in the callee's ingress graph, on its runtime
  // thread; the RPC owns the block until it is delivered, and frees it if it turns back or ends
  // first. `request` still says where the call's request came from (retries copy from there).
  MessageLocation received_request;
  uint64_t received_request_bytes = 0;  // of the block, the message's own (rpc.size)
  MessageLocation response;
  Status status;  // code and detail text; OK until something ends the call otherwise
  MonoTime deadline = kNoDeadline;
  // The call's metadata as the app encoded it (shm metadata block format), read from the caller's
  // heap only when the call is delivered: no per-call decoding into strings. A policy that reads
  // metadata takes the block out of the heap into `metadata` (and clears this) before it reads,
  // so what it checked is what is delivered. A peer's call has its block in `peer_request`
  // instead (metadata_block not present; metadata_length its length, 0 once a policy took it).
  MessageLocation metadata_block;
  uint32_t metadata_length = 0;
  // Metadata added by operators on the way (decoded); merged into the block on delivery, an entry
  // here replacing the block's entries of the same key.
  std::vector<MetadataEntry> metadata;
  uint8_t priority = 0;         // higher first; policies set and read it
  bool wait_for_ready = false;  // with no endpoint, wait for one (up to the deadline)
  Endpoint endpoint;
  uint16_t attempt = 0;  // 0: the call's first attempt; forks number the others
  AttemptKind attempt_kind = AttemptKind::kPrimary;
  uint16_t attempts_made = 1;  // attempts of the call forked along this one's line, itself included
  // A call from a peer daemon (TCP): the payload encoding its request came in (tcp::
  // PayloadEncoding; 0 otherwise); its reply goes back in the same encoding.
  uint8_t peer_encoding = 0;
  // That call's request until its delivery (or a policy at the callee) decodes it; then null.
  // Never changed once made: attempts forked from the call share it. `request` names the link
  // (owner: its remote id, remote_ids.h) while it holds the request.
  std::shared_ptr<const PeerRequest> peer_request;
  // When the call entered the daemon: the admission epoch it was stamped with (graph.h, the
  // upgrade gate); attempts forked from it keep it. 0: not stamped yet.
  uint64_t admission_epoch = 0;
  // While the RPC is on another runtime thread (shard) than the memory its request or response
  // lies in: a reference that keeps that memory mapped (the daemon's connection). Null otherwise.
  std::shared_ptr<const void> pinned_memory;
  // Per-call variables of the policies on this call's path, one entry per policy operator that
  // declares some (usually none: no allocation). The record travels with the call between
  // threads like the rest of it, so a handler on any shard sees what the request handler set.
  std::vector<PolicyCallVariables> policy_call_variables;

  const std::string* find_metadata(std::string_view key) const {
    for (const auto& entry : metadata)
      if (entry.key == key) return &entry.value;
    return nullptr;
  }
};

// Gives a descriptor back to its thread's pool.
struct RpcRecycler {
  void operator()(Rpc* rpc) const noexcept;
};
using RpcPtr = std::unique_ptr<Rpc, RpcRecycler>;

// A fresh descriptor (all fields default), from this thread's pool.
RpcPtr make_rpc();
// A copy of `rpc`, from this thread's pool.
RpcPtr make_rpc(const Rpc& rpc);
// Descriptors made and not yet given back, over all threads (leak checks in tests and stats).
int64_t rpcs_alive();
// One batch handed to an operator; it moves out the entries it takes (see operator.h).
using RpcBatch = std::vector<RpcPtr>;

}  // namespace mrpc
