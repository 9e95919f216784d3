// TcpTransport: calls between this daemon and peer daemons over TCP (docs/tcp-transport.md). One
// per shard, run by the shard's runtime thread as a Task: it owns that shard's TCP links (no thread
// per connection; sockets are non-blocking, TCP_NODELAY, watched with Runtime::watch_readable).
//
// Caller side (this host's app calls a service no local app serves): the Router hands the RPC to
// route(), which asks the EndpointResolver for the service's peers, takes the shard's pooled link
// to one (round robin; connecting it if needed), encodes the request from the caller's heap with
// the service's compiled protobuf wire codec straight into the link's send buffer and keeps the RPC
// in the link's call table, whose slot handle is the frame's call id. The reply frame finds it by
// that id, its response is decoded into the caller's receive region, and the RPC goes back up the
// caller's egress graph as LocalTransport's replies do.
//
// Callee side (a peer's request arrives on a link): the service is found by name in the shard's
// registry view, the call gets a record in this shard's call table (caller: the link's remote id,
// remote_ids.h; deadline: now + the frame's remaining timeout) and goes to a serving app's ingress
// graph, on this shard or through a shard hand-off. The payload travels with the RPC (in
// Rpc::peer_request, peer_request.h) and is decoded into the callee's receive region at delivery,
// or before it by a policy at the callee that reads the request (decode_peer_request). The reply
// comes back here (reply_here, on the link's shard), is encoded from the server's heap into a reply
// frame, and the record ends.
//
// Failures: a link that breaks (reset, EOF, connect refused or timed out, a malformed frame: the
// reason is logged) fails every call waiting on it with UNAVAILABLE, at once; the next call
// connects again. A link whose send queue holds limits::kMaxTcpSendQueueBytes refuses new calls
// with RESOURCE_EXHAUSTED. Calls whose caller gave up (deadline, cancel) are swept from the link
// tables.
//
// Trust: peers are trusted (no TLS, no authentication yet; see the docs).
// Threads: every method runs on the owning shard's runtime thread, except adopt(), which is posted
// to it as a job.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core.h"
#include "endpoint_resolver.h"
#include "mrpc/base/slot_table.h"
#include "mrpc/dataflow/runtime.h"
#include "mrpc/transports/shm/app_socket.h"
#include "peer_request.h"
#include "tcp/frame.h"

namespace mrpc {

class TcpTransport;

// What every shard's TcpTransport shares: immutable after start, except the log-once set.
struct TcpShared {
  std::unique_ptr<EndpointResolver> resolver;
  std::string host_name;              // this host, in hello and request frames
  std::vector<TcpTransport*> shards;  // by shard index
  // True the first time `key` (a service and a peer) is given, over all shards: schema
  // mismatches are logged once per service and peer, not once per link. Rare (handshakes only).
  bool first_time(std::string key) {
    std::lock_guard lock(logged_mutex);
    return logged.insert(std::move(key)).second;
  }
  std::mutex logged_mutex;
  std::set<std::string> logged;
};

// The schema fingerprint of a registered service as the TCP handshake compares it: its methods'
// names and their request and response layouts' fingerprints (each covering every message the
// type reaches), hashed; never 0. Equal fingerprints: the native encoding of every method's
// messages means the same on both sides.
uint64_t service_fingerprint(const RegisteredService& service);

// Counters of one shard's links (read by stats from any thread).
struct TcpCounters {
  std::atomic<uint64_t> links_opened{0};
  std::atomic<uint64_t> links_closed{0};
  std::atomic<uint64_t> links_open{0};
  std::atomic<uint64_t> calls_sent{0};    // requests sent to peers
  std::atomic<uint64_t> calls_served{0};  // requests received from peers
  std::atomic<uint64_t> calls_failed_on_link_loss{0};
  std::atomic<uint64_t> bad_frames{0};  // links closed for a malformed frame
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> send_syscalls{0};
  std::atomic<uint64_t> recv_syscalls{0};       // recv calls on links
  std::atomic<uint64_t> recv_empty{0};          // of those, EAGAIN: nothing was there
  std::atomic<uint64_t> keepalive_timeouts{0};  // links closed for a silent peer
  std::atomic<uint64_t> pings_sent{0};
  std::atomic<uint64_t> calls_refused_backoff{0};  // failed at once: the peer's reconnect not due
  std::atomic<uint64_t> calls_refused_queue_full{0};  // RESOURCE_EXHAUSTED: send queue full
  std::atomic<uint64_t> calls_cancelled_by_peer{0};   // served calls a cancel frame ended
  std::atomic<uint64_t> requests_sent_native{0};      // requests sent in the native encoding
  std::atomic<uint64_t> requests_sent_protobuf{0};    // ... in the protobuf wire encoding
  std::atomic<uint64_t> replies_sent_native{0};       // replies to peers, native
  std::atomic<uint64_t> schema_offers_sent{0};        // handshakes this side started
  std::atomic<uint64_t> schema_mismatches{0};         // answers with another fingerprint
  std::atomic<uint64_t> native_refused{0};          // native requests whose fingerprint is not ours
  std::atomic<uint64_t> gather_segments_copied{0};  // heap spans copied (not sent in their round)
  // Bytes in this shard's link send buffers not sent yet (now), and the most there ever were: the
  // daemon's memory for frames waiting on slow peers (bounded per link by kMaxTcpSendQueueBytes
  // plus one frame).
  std::atomic<uint64_t> send_queue_bytes{0};
  std::atomic<uint64_t> send_queue_bytes_peak{0};
};

class TcpTransport final : public Task {
 public:
  TcpTransport(DaemonCore& core, TcpShared& shared);
  ~TcpTransport() override;
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  // No app of this host serves `service`: if the resolver names peers for it, the call goes to one
  // of them (or fails back up the caller's egress graph) and null is returned; else `rpc` is
  // returned untouched.
  RpcPtr route(Connection& caller, const RegisteredService& service, RpcPtr rpc);
  // The reply (or error) of a call that came from a peer, on the shard of its link.
  void reply_here(RpcPtr rpc);
  // A call a peer brought over `link_id` ended at this daemon (reply, deadline, cancel, refusal):
  // the link forgets it (DaemonCore::finish_call calls this for every remote caller).
  void served_call_ended(ConnectionId link_id, uint64_t peer_call_id);

  // Shard 0: the daemon's listening socket; accepted links are placed on shards round robin.
  void set_listener(shm::UniqueFd listener);
  // Takes an accepted connection (runs on this shard, posted as a job).
  void adopt(shm::UniqueFd socket, std::string peer);

  bool run() override;
  MonoTime next_timer() const override;
  bool prepare_to_sleep() override;

  const TcpCounters& counters() const { return counters_; }
  // Closes every link (their calls fail UNAVAILABLE). Runtime thread, or after it stopped.
  void close_all(const char* reason);
  // The daemon stops (its runtime thread has stopped): the listener and every link close.
  void shutdown();

 private:
  struct OutCall {
    RpcPtr rpc;
  };
  // The link's send queue, in order: bytes of `out` or, for the native encoding, spans of an app's
  // heap sent straight from there (gathered by sendmsg). external == nullptr: out[begin, end);
  // else external[begin, end). Heap spans never outlive the round that queued them (settle()).
  struct Segment {
    const std::byte* external = nullptr;
    size_t begin = 0;
    size_t end = 0;
  };
  // Per service the link's caller side has called: what the peer's schema handshake said.
  struct ServiceWire {
    uint32_t service_id = 0;
    std::string name;
    uint64_t fingerprint = 0;  // ours
    enum class State : uint8_t { kAsked, kNative, kProtobuf } state = State::kAsked;
  };
  // A server's response sent from its heap: it may free it (reply_done) once the bytes are out.
  struct DeferredRelease {
    ConnectionId server = kNoConnection;
    uint64_t delivery = 0;
    std::shared_ptr<const void> pinned;
  };
  // One TCP connection to or from a peer daemon.
  struct Link {
    enum class State { kConnecting, kOpen, kClosed };
    SlotHandle handle = kNoSlotHandle;  // local, in links_
    ConnectionId id = kNoConnection;    // remote_ids::of_link
    shm::UniqueFd socket;
    State state = State::kConnecting;
    bool outgoing = false;
    uint32_t peer_index = 0;  // outgoing links: the resolver's peer
    std::string peer;         // address:port, for logs
    std::string peer_host;    // from its hello
    MonoTime connect_deadline = kNoDeadline;
    std::atomic<bool> readable{true};
    bool watched = false;
    // Reads without a readiness flag (busy rounds, calls under way) pay while they find data; one
    // that found nothing makes the link cold: then only every kColdLinkReadRounds-th such round
    // reads, until one finds data (at one call in flight that is one wasted recv per 8 calls,
    // not one per call; under load the link is hot again within 8 rounds).
    bool cold = false;
    uint32_t cold_rounds = 0;
    std::string close_reason;
    std::vector<std::byte> in;  // received bytes: [in_start, in_end) not parsed yet
    size_t in_start = 0;
    size_t in_end = 0;
    std::vector<std::byte> out;
    std::vector<Segment> segments;  // the send queue (above), from segment_head
    size_t segment_head = 0;
    uint64_t queued_bytes = 0;
    bool has_external = false;  // a heap span is queued (settle() copies what is left unsent)
    std::vector<std::shared_ptr<const void>> pins;  // heaps whose spans are queued this round
    std::vector<DeferredRelease> releases;          // responses sent from server heaps this round
    std::vector<ServiceWire> wire;                  // caller side: per service, by handshake
    SlotTable<OutCall> calls{limits::kMaxTcpCallsPerConnection};  // caller side: awaiting replies
    uint32_t serving = 0;  // callee side: requests it brought that are not answered yet
    // Callee side: the peer's call id -> this shard's call handle, for the peer's cancel frames
    // (a hash lookup per served call: the peer's ids are its own slot handles).
    std::unordered_map<uint64_t, SlotHandle> served;
    // The last bytes received (or the link's start, or the start of waiting for replies): every
    // open link, idle or not, is pinged after kTcpKeepaliveInterval of silence and closed after
    // kTcpKeepaliveTimeout (a partition is found while idle too, on both sides).
    MonoTime last_heard = 0;
    MonoTime ping_sent = 0;
    uint64_t pings = 0;
    uint64_t queued() const { return queued_bytes; }
  };

  Link* link_to(const PeerAddress& peer);
  Link* add_link(shm::UniqueFd socket, bool outgoing, std::string peer_text);
  void start_connect(Link& link, const PeerAddress& peer);
  void check_connect(Link& link);
  bool read_link(Link& link);
  bool flush_link(Link& link);
  void handle_frame(Link& link, const tcp::Frame& frame);
  void handle_request(Link& link, const tcp::Frame& frame);
  void handle_reply(Link& link, const tcp::Frame& frame);
  void close_link(Link& link, std::string reason);
  void teardown(Link& link);
  // Appends a frame (prefix, metadata, payload) to the link's send buffer.
  Status append_frame(Link& link, const tcp::Frame& frame, std::span<const std::byte> metadata,
                      std::span<const std::byte> payload);
  void send_error_reply(Link& link, uint64_t call_id, const Status& status);
  // Appends a native-encoded frame: prefix and metadata copied, then the fingerprint and the
  // native spans, sent from where they lie (`gather`: they stay valid and unchanged through this
  // round, the caller pinned their memory) or copied.
  Status append_native_frame(Link& link, const tcp::Frame& frame,
                             std::span<const std::byte> metadata, uint64_t fingerprint,
                             const std::vector<codec::NativeSpan>& spans, uint64_t total,
                             bool gather);
  // Adds to the shard's send_queue_bytes gauge (and its peak).
  void count_queued(size_t bytes);
  void append_owned(Link& link, size_t at, size_t bytes);
  void append_external(Link& link, const std::byte* data, size_t bytes);
  // End of a round: heap spans still queued are copied into `out`, then the pins and deferred
  // releases of the round go.
  void settle(Link& link);
  void run_releases(Link& link);
  // Caller side: the encoding of a call of `service` over `link` (config, then handshake).
  tcp::PayloadEncoding choose_encoding(Link& link, const RegisteredService& service,
                                       const RemoteService& remote);
  void handle_schema(Link& link, const tcp::Frame& frame);
  void send_schema(Link& link, tcp::FrameKind kind, std::string_view service, uint64_t fingerprint);
  // Ends a caller-side call waiting on a link with `status` (back up its caller's egress graph).
  void fail_out_call(RpcPtr rpc, Status status);
  // Drops link calls whose caller ended them (deadline, cancel); a cancel frame tells the peer.
  void sweep();
  uint32_t find_service(std::string_view name);
  bool accept_links();

  DaemonCore& core_;
  TcpShared& shared_;
  SlotTable<std::unique_ptr<Link>> links_{limits::kMaxTcpPeerConnections};
  std::vector<SlotHandle> peer_links_;  // by PeerAddress::index: this shard's link, or none
  // Reconnect backoff per peer (by PeerAddress::index).
  struct PeerState {
    MonoTime retry_at = 0;  // no new link before then
    Nanos backoff{0};
    std::string last_error;
  };
  std::vector<PeerState> peer_state_;
  std::vector<std::pair<uint32_t, const RemoteService*>> remote_cache_;  // service id -> peers
  std::vector<std::pair<std::string, uint32_t>> service_cache_;  // name -> local id (callee side)
  std::shared_ptr<const CallerIdentity> last_identity_;  // reused while the caller app repeats
  std::vector<std::byte> scratch_;                       // one encoded message (reused)
  std::vector<std::byte> metadata_scratch_;              // a merged metadata block (reused)
  std::vector<codec::NativeSpan> native_spans_;          // one native encoding (reused)
  std::vector<iovec> iovecs_;                            // one sendmsg (reused)
  size_t next_peer_ = 0;
  shm::UniqueFd listener_;
  std::atomic<bool> listener_readable_{true};
  size_t next_shard_ = 0;
  MonoTime next_sweep_ = 0;
  bool pending_io_ = false;  // a link has bytes to send or a connect under way
  TcpCounters counters_;
};

// The daemon's TCP listening socket on `address` ("address:port"); the port actually bound in
// `*port` (for port 0).
Expected<shm::UniqueFd> listen_tcp(const std::string& address, uint16_t* port);

}  // namespace mrpc
