// PolicyOperator: one attachment of one compiled .mpol policy as a dataflow operator. It is the
// adapter between the daemon's Rpc descriptors and a compiler::PolicyRunner (the IR evaluator
// today, the JIT-compiled policy once it lands; runner_factory.h is the one place that chooses):
//   - fills an mrpc_rpc_view per handler run: names and ids from the service registry, the caller
//     from the Rpc, the metadata as an encoded block (re-encoded from the app's shm block into a
//     scratch buffer), and, only when the policy reads message fields, a daemon-private copy of
//     the message (copy_message), so the app cannot change the bytes under the policy;
//   - time of check is time of use: the private copy of the message a handler decides on (the
//     request on the request path, a server's response on its way back) becomes the Rpc's
//     message (RegionKind::kPrivate) and is what the transport delivers, and a policy that reads
//     metadata first moves the app's metadata block into Rpc::metadata; a policy that reads
//     neither copies nothing. At the callee the request's copy is made where the delivery would
//     make it, in the callee's receive region (read-only to every app: Rpc::received_request),
//     so deciding on it costs no copy of its own;
//   - re-checks, per (service, method) the first time it sees one, that the layout the app
//     registered has the fingerprint the policy was built against; a mismatch rejects that call
//     FAILED_PRECONDITION instead of reading wrong offsets (apps that register later included);
//   - turns the Verdict into Output calls: pass, reject (drop with the policy's status), drop
//     (the attempt is absorbed: the caller sees its deadline expire), delay, priority and deadline
//     writes, metadata writes (Rpc::metadata);
//   - `rpc.size` is the bytes of the private copy (the message is copied when a handler reads
//     rpc.size too); `rpc.latency` is the time from the request passing this operator to its
//     reply passing it back;
//   - `route(e)` on the caller's side picks the endpoint the router takes (`rpc.endpoints` names
//     each server of the service "<app name>#<connection id>");
//   - `mirror(e, f)` on the caller's side forks a mirror attempt to e for a fraction f of calls
//     and ends its reply here;
//   - `respond(r)` answers the call with a stored response, copied into the caller's receive
//     region (request path only);
//   - counts what it saw per (caller app, method, event, outcome) for the Prometheus export.
//   - string and bytes writes into the delivered copy are placed after the handler (appended to
//     the private copy, which grows; place_string_writes).
// Not applied yet (counted as `unapplied` in metrics and said in docs/policies.md): `route` at
// callee or to an unknown name, `mirror` likewise, `retry`, map-entry and message-valued writes
// into message fields and string writes into repeated elements (recorded by the runner, never
// made), and any field write on a message that is not delivered from the copy the handler wrote
// (the request in a response handler, a response already in the caller's receive region).
//
// Threads: one instance is shared by every graph of its attachment (one policy state per
// attachment, as the language reads); runtime threads run it under its mutex, and the control
// plane reads its state and metrics under the same mutex. Ownership: it owns its runner and keeps
// the compiled unit it was built from alive (shared_ptr).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "mrpc/base/random.h"
#include "mrpc/compiler/evaluator.h"
#include "mrpc/compiler/ir.h"
#include "mrpc/compiler/policy_runner.h"
#include "mrpc/dataflow/operator.h"
#include "mrpc/dataflow/private_message_pool.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/region_allocator.h"

namespace mrpc {

struct DaemonCore;

// Most (caller, method, event, outcome) series one attachment keeps; calls past it are counted
// under caller "_other".
inline constexpr size_t kMaxPolicyMetricSeries = 1024;
// Most calls whose start time one attachment keeps for `rpc.latency` (calls that end without
// their reply passing back through it would otherwise pile up); past it the table is cleared and
// those calls see a latency of 0.
inline constexpr size_t kMaxPolicyTrackedCalls = 1u << 16;
// With kMaxPolicyTrackedCalls mirrors outstanding, those forked longer ago than this are
// forgotten (their calls ended elsewhere); if none is that old, new mirrors are not sent.
inline constexpr std::chrono::seconds kForgetMirrorAfter{60};
// Most field writes one handler run may record for string writes to be placed (a handler that
// writes more, in a loop over a long repeated field, gets none placed: each counts unapplied),
// which keeps placing them linear in the message.
inline constexpr size_t kMaxPlacedFieldWrites = 64;

// A checked, verified policy file: what `load` made. Immutable once built; shared by every
// attachment made from it.
struct CompiledPolicyFile {
  std::string hash;  // sha256 of the source text
  std::string path;
  std::shared_ptr<void> keep_alive;  // the checker and sources the unit's layouts point into
  std::unique_ptr<compiler::ir::Unit> unit;
  const compiler::ir::Policy* find(const std::string& name) const;
};

// One metric series of an attachment.
struct PolicySeries {
  std::string caller;
  std::string method;   // "echo.EchoService.Echo"
  std::string event;    // request, response, error
  std::string outcome;  // pass, reject, drop, delay, schema_mismatch, unapplied
  uint64_t count = 0;
};

class PolicyOperator final : public Operator {
 public:
  PolicyOperator(std::string name, std::shared_ptr<const CompiledPolicyFile> file,
                 const compiler::ir::Policy& policy, DaemonCore& core, uint64_t seed);
  ~PolicyOperator() override;

  std::string_view name() const override { return name_; }
  void on_requests(RpcBatch& batch, Output& out) override;
  void on_replies(RpcBatch& batch, Output& out) override;
  bool polls() const override { return false; }  // it only reacts to the RPCs it is given
  // Scalars (int, float, string-like) only: the generic carrier. Upgrades between two
  // PolicyOperators use carry_from, which also carries containers and histograms.
  OperatorState export_state() const override;
  void import_state(const OperatorState& state) override;

  // Control plane (before it is attached).
  Status set_param(const std::string& name, compiler::ir::Value value);
  // Takes `old`'s state by name and type, once (later calls do nothing): a state the new version
  // lacks is dropped, one whose type changed keeps its initial value; each gives a warning.
  // Runtime thread, between rounds (neither operator is running).
  void carry_from(const PolicyOperator& old);
  std::vector<std::string> take_warnings();

  // Control plane, any thread.
  const compiler::ir::Policy& policy() const { return policy_; }
  const std::shared_ptr<const CompiledPolicyFile>& file() const { return file_; }
  std::vector<std::pair<std::string, compiler::ir::Value>> states() const;
  std::vector<PolicySeries> series() const;
  uint64_t seed() const { return seed_; }

 private:
  struct MethodCheck {
    int policy_method = -1;  // index in Policy::methods; -1: the policy does not apply
    bool layout_matches = true;
    const MessageLayout* input = nullptr;  // the registered layouts
    const MessageLayout* output = nullptr;
  };
  struct SeriesKey {
    const CallerIdentity* caller;
    uint64_t method;  // service_id << 16 | method_index
    uint8_t event;
    uint8_t outcome;
    bool operator==(const SeriesKey&) const = default;
  };
  struct SeriesKeyHash {
    size_t operator()(const SeriesKey& k) const {
      return std::hash<uint64_t>()(reinterpret_cast<uintptr_t>(k.caller) ^ (k.method << 8) ^
                                   (uint64_t{k.event} << 4) ^ k.outcome);
    }
  };
  struct SeriesValue {
    std::shared_ptr<const CallerIdentity> caller;  // keeps the key's pointer from being reused
    size_t index;                                  // into series_
  };
  enum Outcome : uint8_t { kPass, kReject, kDrop, kDelay, kRespond, kSchemaMismatch, kUnapplied };

  // One handler run over `rpc`; returns what to do with it.
  void run_one(RpcPtr& rpc, compiler::ir::Event event, Output& out);
  const MethodCheck& check_method(const Rpc& rpc);
  // Fills the message view with a private copy of the message at `where` (laid out by `layout`).
  // `deliver_checked`: the handler decides on this message, so a copy out of an app's heap is
  // kept (a PrivateMessage `where` then points at) and is what gets delivered: an app that
  // rewrites its heap after submitting cannot change what the policy checked. Otherwise the copy
  // is per-run scratch.
  bool copy_message_view(bool is_request, MessageLocation& where, bool deliver_checked,
                         const MessageLayout* layout, mrpc_message_view& view, uint64_t& size,
                         std::string& error);
  // At the callee, a request still in its caller's heap is copied where the delivery would copy
  // it, into the callee's receive region (which the callee maps read-only): the handler decides on
  // that copy, and the delivery hands it over as it is (Rpc::received_request). False when that
  // is not the case here or the copy was refused (the private copy then decides).
  bool copy_into_receive_region(Rpc& rpc, const MessageLayout* layout, mrpc_message_view& view,
                                uint64_t& size);
  // A pooled private copy of the message at where.offset of `source`, in `where` (kPrivate, its
  // owner kept); false with `error` when the copy is refused.
  bool copy_to_private(const MessageLayout& layout, ConstRegion source, MessageLocation& where,
                       std::string& error);
  // Moves rpc.received_request (in the callee's receive region) into a pooled private copy that
  // becomes rpc.request, and frees the block; false with `error` if the copy fails.
  bool move_received_to_private(Rpc& rpc, const MessageLayout& layout, std::string& error);
  // Makes the string and bytes writes the runner left to the daemon (a non-repeated field,
  // FieldWrite::step): each value is appended to the private copy that is delivered, in a bigger
  // pooled block, and the field pointed at it, after the handler (so a read of that field later
  // in the same handler sees the old value, and a later write or clear of the same field or of
  // another member of its oneof wins). Writes into anything else, and every string write of a
  // run that recorded more than kMaxPlacedFieldWrites writes, stay unapplied.
  void place_string_writes(Rpc& rpc, compiler::ir::Event event, compiler::Verdict& verdict);
  // Moves the app's metadata block out of its heap into rpc.metadata (one read, strictly
  // decoded), for a policy that reads metadata: the entries it checks are those delivered.
  // A peer's call (Rpc::peer_request) may carry the block instead: read there, as it is
  // daemon-private.
  bool take_metadata(Rpc& rpc, std::string& error);
  void encode_metadata(const Rpc& rpc);
  // The metadata block a peer daemon sent with the call, while it is still to be read there
  // (empty otherwise).
  static std::span<const std::byte> peer_metadata(const Rpc& rpc);
  // Decodes a peer daemon's request into the callee's receive region (where its delivery would
  // decode it) as rpc.received_request; false with `error` (and read_error_code_) if it does
  // not decode or does not fit.
  bool decode_peer_request_here(Rpc& rpc, std::string& error);
  // Before a peer's call is delivered (which decodes its request and metadata block and keeps
  // neither): takes what this policy's handlers will read of them later, the metadata into
  // rpc.metadata and, for reply handlers that read the request, the request into a private copy.
  bool keep_peer_request(Rpc& rpc, const MethodCheck& method, std::string& error);
  // Ends the call because `what` could not be read: `error`, with read_error_code_ (then reset).
  void fail_read(RpcPtr& rpc, compiler::ir::Event event, const char* what, const std::string& error,
                 Output& out);
  // `respond(r)`: the call is answered with the stored response r, copied into the caller's
  // receive region.
  void respond(RpcPtr& rpc, compiler::ir::Event event, const compiler::Verdict& verdict,
               const MethodCheck& method, Output& out);
  // Endpoint names: "<app name>#<connection id>" of each connection serving the service.
  static std::string endpoint_name(const struct RegisteredService& service, size_t server);
  void encode_endpoints(const Rpc& rpc);
  // Points the call at the endpoint so named; false when no server of its service has the name.
  bool apply_route(Rpc& rpc, const std::string& endpoint);
  ConnectionId find_endpoint(const Rpc& rpc, const std::string& endpoint) const;
  // `mirror(e, f)`: forks a mirror attempt to e for a fraction f of calls; false if one named no
  // endpoint (or the call has no attempt left).
  bool apply_mirrors(Rpc& rpc, const compiler::Verdict& verdict, Output& out);
  void count(const Rpc& rpc, compiler::ir::Event event, Outcome outcome);
  // The cells of this policy's per-call variables in the call's record: fresh, at their initial
  // values, on request (a retried request starts over); on response and error the request's (a
  // fresh set when the record has none: the request passed before this operator was attached).
  void* call_variables(Rpc& rpc, compiler::ir::Event event);

  static int metadata_get(const mrpc_rpc_view* view, const char* key, uint32_t key_size,
                          mrpc_str* value);
  static int metadata_set(mrpc_rpc_view* view, const char* key, uint32_t key_size,
                          const char* value, uint32_t value_size);
  static int metadata_remove(mrpc_rpc_view* view, const char* key, uint32_t key_size);

  const std::string name_;
  const std::shared_ptr<const CompiledPolicyFile> file_;
  const compiler::ir::Policy& policy_;
  // The shard running it (one operator serves the apps of every shard, one shard at a time under
  // mutex_); `core_` off the runtime threads. Looked up once per batch (a thread_local read in a
  // shared library is a call), kept in running_ while the batch runs.
  DaemonCore& core() const { return running_ != nullptr ? *running_ : this_threads_core(); }
  DaemonCore& this_threads_core() const;
  DaemonCore& core_;
  DaemonCore* running_ = nullptr;  // under mutex_, during on_requests and on_replies
  const uint64_t seed_;
  const uint64_t id_;  // process-unique: owns its entry in Rpc::policy_call_variables
  mutable std::mutex mutex_;
  SeededRandom random_;
  std::unique_ptr<compiler::PolicyRunner> runner_;
  bool carried_ = false;
  // What the handlers read, from the IR: `rpc.size` needs the message walked (copied), and
  // `rpc.latency` the start time of each call.
  bool uses_size_ = false;
  bool uses_latency_ = false;
  bool uses_endpoints_ = false;  // rpc.endpoints or rpc.endpoint, route or mirror
  // Reads or writes `rpc.metadata`: its request metadata is taken out of the app's heap first; a
  // policy that does neither gets no metadata block in its view.
  bool reads_metadata_ = false;
  // Assigns a string or bytes field: its copy of the request is never the callee's receive-region
  // copy, which cannot grow.
  bool writes_strings_ = false;
  // At the callee, with a response or error handler that reads the request (or rpc.size): a
  // peer daemon's request is kept in a private copy for it (its delivery consumes the payload).
  bool replies_read_request_ = false;
  // The code a failed read of the call's messages ends it with (a peer's request that does not
  // fit the callee's region: RESOURCE_EXHAUSTED, as its delivery would say).
  StatusCode read_error_code_ = StatusCode::kInvalidArgument;
  bool mirrors_ = false;  // runs `mirror`
  // (call id << 16) ^ attempt of the mirrors it forked -> when.
  std::unordered_map<uint64_t, MonoTime> mirrored_;
  std::string endpoints_scratch_;
  std::string endpoint_scratch_;
  std::unordered_map<uint64_t, MonoTime> started_;  // (call id, attempt) -> request seen
  std::vector<std::string> warnings_;
  std::unordered_map<uint64_t, MethodCheck> methods_;
  uint64_t last_method_key_ = UINT64_MAX;  // one-entry cache in front of methods_
  const MethodCheck* last_method_ = nullptr;
  bool handles_[3] = {};     // a handler per ir::Event
  bool reply_side_ = false;  // runs on replies at all
  std::unordered_map<SeriesKey, SeriesValue, SeriesKeyHash> series_index_;
  std::vector<PolicySeries> series_;
  SeriesKey last_series_key_{};  // one-entry cache in front of series_index_
  size_t last_series_ = SIZE_MAX;
  std::unordered_map<std::string, size_t> series_by_labels_;  // "caller\nmethod\nevent\noutcome"
  // Per-run scratch (under mutex_): the metadata block, the private message copies.
  std::string metadata_scratch_;
  Rpc* current_ = nullptr;      // the Rpc the view describes (for metadata_set)
  compiler::Verdict verdict_;   // of the handler run now; its buffers are reused
  std::vector<size_t> placed_;  // place_string_writes: the writes it places (reused)
  struct Scratch {
    std::unique_ptr<std::byte[]> bytes;  // allocated on the first copy
    uint64_t size = 0;
    uint64_t used = 0;  // by the last copy, from the start
  };
  // The private copies that are delivered (time of check is time of use), taken under mutex_.
  const std::shared_ptr<PrivateMessagePool> private_messages_ = PrivateMessagePool::create();
  Scratch request_scratch_;
  Scratch response_scratch_;
};

}  // namespace mrpc
