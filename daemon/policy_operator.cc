#include "policy_operator.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "core.h"
#include "mrpc/base/check.h"
#include "mrpc/message/copy.h"
#include "mrpc/message/layout.h"
#include "mrpc/transports/shm/metadata_block.h"
#include "peer_request.h"
#include "remote_ids.h"
#include "runner_factory.h"

namespace mrpc {

namespace ir = compiler::ir;

const ir::Policy* CompiledPolicyFile::find(const std::string& name) const {
  for (const auto& policy : unit->policies)
    if (policy.name == name) return &policy;
  return nullptr;
}

namespace {
constexpr const char* kEventNames[] = {"request", "response", "error"};
constexpr const char* kOutcomeNames[] = {"pass",    "reject",          "drop",     "delay",
                                         "respond", "schema_mismatch", "unapplied"};
// A time-of-check copy that is delivered is first tried in one pass into a pooled block of this
// size (copy_message_to's first try); a bigger message is measured, then copied. Not a limit:
// any size within max_message_bytes is copied either way.
constexpr uint64_t kCopyFirstTryBytes = 1024;

mrpc_str view_of(const std::string& s) {
  return mrpc_str{s.data(), static_cast<uint32_t>(s.size())};
}

// Whether any expression of `policy` reads `rpc.<field>`.
bool reads_rpc_field(const ir::Expr& expr, ir::RpcField field) {
  if (expr.kind == ir::ExprKind::kRpc && expr.rpc_field == field) return true;
  for (const auto& child : expr.children)
    if (reads_rpc_field(*child, field)) return true;
  return false;
}
bool reads_rpc_field(const ir::Block& block, ir::RpcField field) {
  for (const auto& stmt : block) {
    for (const auto& expr : stmt->exprs)
      if (reads_rpc_field(*expr, field)) return true;
    for (const auto& inner : stmt->blocks)
      if (reads_rpc_field(inner, field)) return true;
  }
  return false;
}
bool reads_rpc_field(const ir::Policy& policy, ir::RpcField field) {
  for (const auto& handler : policy.handlers)
    if (reads_rpc_field(handler.body, field)) return true;
  return false;
}

// Whether a statement of `block` assigns a string or bytes message field (`req.text = ...`):
// such a value is placed after the handler, in a private copy that can grow.
bool writes_string_field(const ir::Block& block) {
  for (const auto& stmt : block) {
    if (stmt->kind == ir::StmtKind::kAssign && !stmt->exprs.empty() &&
        stmt->exprs[0]->kind == ir::ExprKind::kField &&
        (stmt->exprs[0]->type.is(ir::Kind::kString) || stmt->exprs[0]->type.is(ir::Kind::kBytes)))
      return true;
    for (const auto& inner : stmt->blocks)
      if (writes_string_field(inner)) return true;
  }
  return false;
}
bool writes_string_field(const ir::Policy& policy) {
  for (const auto& handler : policy.handlers)
    if (writes_string_field(handler.body)) return true;
  return false;
}

// Whether any expression of `policy` reads the call's metadata (`rpc.metadata[k]`,
// `k in rpc.metadata`).
bool reads_metadata(const ir::Expr& expr) {
  if (expr.kind == ir::ExprKind::kMetadata) return true;
  if (expr.kind == ir::ExprKind::kRpc && expr.rpc_field == ir::RpcField::kMetadata) return true;
  for (const auto& child : expr.children)
    if (reads_metadata(*child)) return true;
  return false;
}
bool reads_metadata(const ir::Block& block) {
  for (const auto& stmt : block) {
    for (const auto& expr : stmt->exprs)
      if (reads_metadata(*expr)) return true;
    for (const auto& inner : stmt->blocks)
      if (reads_metadata(inner)) return true;
  }
  return false;
}
bool reads_metadata(const ir::Policy& policy) {
  for (const auto& handler : policy.handlers)
    if (reads_metadata(handler.body)) return true;
  return false;
}

// Whether any handler of `policy` runs `action`.
bool runs_action(const ir::Block& block, compiler::Action action) {
  for (const auto& stmt : block) {
    if (stmt->kind == ir::StmtKind::kAction && stmt->action == action) return true;
    for (const auto& inner : stmt->blocks)
      if (runs_action(inner, action)) return true;
  }
  return false;
}
bool runs_action(const ir::Policy& policy, compiler::Action action) {
  for (const auto& handler : policy.handlers)
    if (runs_action(handler.body, action)) return true;
  return false;
}

void append_entry(std::string& block, const char* data, uint32_t size) {
  block.append(reinterpret_cast<const char*>(&size), 4);
  block.append(data, size);
}
}  // namespace

DaemonCore& PolicyOperator::this_threads_core() const {
  DaemonCore* running = DaemonCore::of_this_thread();
  return running != nullptr ? *running : core_;
}

namespace {
uint64_t next_operator_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

PolicyOperator::PolicyOperator(std::string name, std::shared_ptr<const CompiledPolicyFile> file,
                               const ir::Policy& policy, DaemonCore& core, uint64_t seed)
    : name_(std::move(name)),
      file_(std::move(file)),
      policy_(policy),
      core_(core),
      seed_(seed),
      id_(next_operator_id()),
      random_(seed),
      runner_(make_policy_runner(policy_, core.clock, random_)),
      uses_size_(reads_rpc_field(policy_, ir::RpcField::kSize)),
      uses_latency_(reads_rpc_field(policy_, ir::RpcField::kLatency)),
      uses_endpoints_(reads_rpc_field(policy_, ir::RpcField::kEndpoints) ||
                      reads_rpc_field(policy_, ir::RpcField::kEndpoint)),
      reads_metadata_(reads_metadata(policy_)),
      writes_strings_(writes_string_field(policy_)) {
  for (ir::Event event : {ir::Event::kRequest, ir::Event::kResponse, ir::Event::kError})
    handles_[static_cast<size_t>(event)] = policy_.handler_for(event) != nullptr;
  mirrors_ = runs_action(policy_, compiler::Action::kMirror);
  uses_endpoints_ = uses_endpoints_ || mirrors_ || runs_action(policy_, compiler::Action::kRoute);
  reply_side_ = handles_[1] || handles_[2] || uses_latency_ || mirrors_;
  replies_read_request_ = (policy_.reads_message || uses_size_) && (handles_[1] || handles_[2]) &&
                          policy_.placement == ir::Placement::kCallee;
}

PolicyOperator::~PolicyOperator() = default;

Status PolicyOperator::set_param(const std::string& name, ir::Value value) {
  std::lock_guard lock(mutex_);
  return runner_->set_param(name, std::move(value));
}

const PolicyOperator::MethodCheck& PolicyOperator::check_method(const Rpc& rpc) {
  const uint64_t key = (uint64_t{rpc.service_id} << 16) | rpc.method_index;
  if (key == last_method_key_) return *last_method_;  // calls mostly repeat one method
  auto found = methods_.find(key);
  if (found != methods_.end()) {
    last_method_key_ = key;
    last_method_ = &found->second;
    return found->second;
  }
  MethodCheck check;
  const RegisteredService* service = core().registry.find(rpc.service_id);
  if (service != nullptr && rpc.method_index < service->info->methods.size()) {
    const MethodInfo& method = service->info->methods[rpc.method_index];
    check.input = method.input;
    check.output = method.output;
    if (!policy_.schema_known) {
      check.policy_method = 0;  // generic: applies to every call
    } else {
      const std::string full = service->full_name + "." + method.name;
      for (size_t m = 0; m < policy_.methods.size(); ++m) {
        if (policy_.methods[m].full_name != full) continue;
        check.policy_method = static_cast<int>(m);
        const ir::Method& built = policy_.methods[m];
        check.layout_matches = built.input != nullptr && built.output != nullptr &&
                               method.input != nullptr && method.output != nullptr &&
                               built.input->fingerprint() == method.input->fingerprint() &&
                               built.output->fingerprint() == method.output->fingerprint();
        if (!check.layout_matches)
          spdlog::warn(
              "policy '{}': {} was registered with a layout other than the one the policy was "
              "built against (fingerprint {:016x}/{:016x}, policy {:016x}/{:016x}); its calls are "
              "rejected FAILED_PRECONDITION",
              name_, full, method.input ? method.input->fingerprint() : 0,
              method.output ? method.output->fingerprint() : 0,
              built.input ? built.input->fingerprint() : 0,
              built.output ? built.output->fingerprint() : 0);
      }
    }
  }
  // Service ids are never reused (service_registry.h), so the answer stays right. Map values
  // keep their address when the map grows.
  last_method_key_ = key;
  last_method_ = &methods_.emplace(key, check).first->second;
  return *last_method_;
}

void PolicyOperator::encode_metadata(const Rpc& rpc) {
  metadata_scratch_.clear();
  const std::span<const std::byte> peer = peer_metadata(rpc);
  if (rpc.metadata_length != 0 && (rpc.metadata_block.present() || !peer.empty())) {
    const Connection* owner =
        peer.empty() ? core().memory_of(rpc, rpc.metadata_block.owner) : nullptr;
    const std::byte* source = peer.empty() ? nullptr : peer.data();
    uint64_t source_bytes = peer.size();
    const uint64_t offset = peer.empty() ? rpc.metadata_block.offset : 0;
    if (owner != nullptr) {
      source = owner->heap.data();
      source_bytes = owner->heap.size();
    }
    const uint64_t length = rpc.metadata_length;
    if (source != nullptr && length <= limits::kMaxMetadataBytes && offset <= source_bytes &&
        length <= source_bytes - offset) {
      // One read of the app's bytes into private memory, then parsing there (the app may be
      // rewriting the block meanwhile).
      std::string block(reinterpret_cast<const char*>(source) + offset, length);
      uint32_t count = 0;
      uint64_t at = 4;
      if (length >= 4) std::memcpy(&count, block.data(), 4);
      for (uint32_t i = 0; i < count && at + 8 <= length; ++i) {
        uint32_t key_size = 0, value_size = 0;
        std::memcpy(&key_size, block.data() + at, 4);
        std::memcpy(&value_size, block.data() + at + 4, 4);
        at += 8;
        if (uint64_t{key_size} + value_size > length - at) break;  // malformed: the rest is ignored
        append_entry(metadata_scratch_, block.data() + at, key_size);
        append_entry(metadata_scratch_, block.data() + at + key_size, value_size);
        at += uint64_t{key_size} + value_size;
      }
    }
  }
  for (const auto& added : rpc.metadata) {  // later entries win a lookup
    append_entry(metadata_scratch_, added.key.data(), static_cast<uint32_t>(added.key.size()));
    append_entry(metadata_scratch_, added.value.data(), static_cast<uint32_t>(added.value.size()));
  }
}

int PolicyOperator::metadata_get(const mrpc_rpc_view* view, const char* key, uint32_t key_size,
                                 mrpc_str* value) {
  return compiler::encoded_block_ops()->metadata_get(view, key, key_size, value);
}

int PolicyOperator::metadata_remove(mrpc_rpc_view* view, const char* key, uint32_t key_size) {
  auto* self = static_cast<PolicyOperator*>(view->ops_context);
  // Writing policies took the app's block into Rpc::metadata before the handler ran
  // (take_metadata), so every entry of the key is there to remove.
  const std::string_view k(key, key_size);
  std::erase_if(self->current_->metadata, [&](const MetadataEntry& e) { return e.key == k; });
  self->encode_metadata(*self->current_);
  view->metadata = reinterpret_cast<const uint8_t*>(self->metadata_scratch_.data());
  view->metadata_size = static_cast<uint32_t>(self->metadata_scratch_.size());
  return 0;
}

int PolicyOperator::metadata_set(mrpc_rpc_view* view, const char* key, uint32_t key_size,
                                 const char* value, uint32_t value_size) {
  auto* self = static_cast<PolicyOperator*>(view->ops_context);
  if (!shm::valid_metadata_key(std::string_view(key, key_size))) return 1;
  if (self->metadata_scratch_.size() + 8 + key_size + value_size > limits::kMaxMetadataBytes)
    return 1;
  std::string k(key, key_size);
  std::string v(value, value_size);
  bool replaced = false;
  for (auto& entry : self->current_->metadata)
    if (entry.key == k) {
      entry.value = v;
      replaced = true;
    }
  if (!replaced) self->current_->metadata.push_back({k, v});
  append_entry(self->metadata_scratch_, key, key_size);
  append_entry(self->metadata_scratch_, value, value_size);
  view->metadata = reinterpret_cast<const uint8_t*>(self->metadata_scratch_.data());
  view->metadata_size = static_cast<uint32_t>(self->metadata_scratch_.size());
  return 0;
}

bool PolicyOperator::take_metadata(Rpc& rpc, std::string& error) {
  const uint64_t length = rpc.metadata_length;
  std::string block;
  if (std::span<const std::byte> peer = peer_metadata(rpc); !peer.empty()) {
    block.assign(reinterpret_cast<const char*>(peer.data()), peer.size());  // daemon-private
  } else {
    const Connection* owner = core().memory_of(rpc, rpc.metadata_block.owner);
    if (owner == nullptr) {
      error = "the app holding the metadata left";
      return false;
    }
    const uint64_t offset = rpc.metadata_block.offset;
    const uint64_t heap_bytes = owner->heap.size();
    if (length > limits::kMaxMetadataBytes || offset > heap_bytes || length > heap_bytes - offset) {
      error = fmt::format(
          "the metadata block [{}, +{}) lies outside the caller's heap of {} bytes "
          "or exceeds limits::kMaxMetadataBytes ({})",
          offset, length, heap_bytes, limits::kMaxMetadataBytes);
      return false;
    }
    // One read of the app's bytes into private memory, then strict decoding there.
    block.assign(reinterpret_cast<const char*>(owner->heap.data()) + offset, length);
  }
  auto pairs =
      shm::decode_metadata(reinterpret_cast<const std::byte*>(block.data()), length, 0, length);
  if (!pairs.ok()) {
    error = "malformed metadata block: " + pairs.status().message();
    return false;
  }
  std::vector<MetadataEntry> entries;
  entries.reserve(pairs->size() + rpc.metadata.size());
  for (auto& [key, value] : *pairs)  // entries operators added replace the app's of their key
    if (rpc.find_metadata(key) == nullptr) entries.push_back({std::move(key), std::move(value)});
  for (auto& added : rpc.metadata) entries.push_back(std::move(added));
  rpc.metadata = std::move(entries);
  rpc.metadata_block = MessageLocation{};
  rpc.metadata_length = 0;
  return true;
}

bool PolicyOperator::copy_message_view(bool is_request, MessageLocation& where,
                                       bool deliver_checked, const MessageLayout* layout,
                                       mrpc_message_view& view, uint64_t& size,
                                       std::string& error) {
  if (!where.present() || layout == nullptr) return true;  // no message: the view stays empty
  auto point_view_at = [&](PrivateMessage& held) {
    view.region = reinterpret_cast<uint8_t*>(held.bytes.get());
    view.region_size = held.size;
    view.body_offset = where.offset;
    view.fingerprint = layout->fingerprint();
    size = held.message_bytes;
  };
  if (is_request && deliver_checked && current_ != nullptr) {
    // A peer daemon's request is decoded where its delivery would decode it (no copy of its
    // own: the payload is daemon-private), and the delivery hands that over.
    if (current_->peer_request != nullptr && where.region != RegionKind::kPrivate &&
        !current_->received_request.present() && !decode_peer_request_here(*current_, error))
      return false;
    if (current_->received_request.present() && writes_strings_) {
      // In the callee's receive region, which cannot grow: this handler may write strings, so it
      // decides on a private copy of that copy.
      if (!move_received_to_private(*current_, *layout, error)) return false;
    } else if (copy_into_receive_region(*current_, layout, view, size)) {
      return true;
    }
  }
  if (deliver_checked && where.region == RegionKind::kPrivate) {
    // An operator before this one took it out of the app's memory: the handler reads (and may
    // write) it in place, in a copy of its own when forked attempts share it.
    // Known gap (review, session 4): use_count() is a relaxed load, so a count of 1 does not
    // formally order this write after a fork on another shard that just dropped its reference
    // having read the bytes (a fence would, but TSan builds refuse atomic_thread_fence).
    if (where.private_copy.use_count() > 1) {
      const PrivateMessage& shared = *where.private_copy;
      auto own = std::make_shared<PrivateMessage>();
      own->bytes.reset(new std::byte[shared.size]);
      std::memcpy(own->bytes.get(), shared.bytes.get(), shared.size);
      own->size = shared.size;
      own->message_bytes = shared.message_bytes;
      where.private_copy = std::move(own);
    }
    point_view_at(*where.private_copy);
    return true;
  }
  ConstRegion source;
  if (where.region == RegionKind::kPrivate) {
    source = ConstRegion{where.private_copy->bytes.get(), where.private_copy->size};
  } else {
    // The caller's heap may belong to another shard: the RPC pinned it when it crossed.
    const Connection* owner = current_ == nullptr ? core().connection(where.owner)
                                                  : core().memory_of(*current_, where.owner);
    if (owner == nullptr) {
      error = "the app holding the message left";
      return false;
    }
    source = where.region == RegionKind::kHeap
                 ? owner->heap_view()
                 : ConstRegion{owner->receive.data(), owner->receive.size()};
  }
  const CopyLimits limits{core().config.max_message_bytes, limits::kMaxMessageNesting};
  if (deliver_checked && where.region == RegionKind::kHeap) {
    // The message this handler decides on, out of memory its app can still write: copied
    // straight into a private message of its own (pooled), and the bytes it checks become the
    // bytes delivered.
    if (!copy_to_private(*layout, source, where, error)) return false;
    // A response leaves its server's heap here: the server may free it now (once per reply, as
    // the transport would after its copy; free_held and the transport skip private copies).
    if (!is_request && current_ != nullptr)
      core().reply_done(where.owner, current_->delivery_id, current_->pinned_memory);
    point_view_at(*where.private_copy);
    return true;
  }
  // Per-run scratch: read, never delivered.
  Scratch& scratch = is_request ? request_scratch_ : response_scratch_;
  if (scratch.bytes == nullptr) {
    // Uninitialised: pages are touched only as far as messages reach.
    scratch.size = core().config.max_message_bytes + limits::kMaxMessageNesting * 64 + 4096;
    scratch.bytes.reset(new std::byte[scratch.size]);
  }
  auto reserve = [](void* context, uint64_t bytes) {
    auto& into = *static_cast<Scratch*>(context);
    return bytes <= into.size ? MutableRegion{into.bytes.get(), bytes} : MutableRegion{};
  };
  // One pass: the scratch holds any message within max_message_bytes.
  CopyStats stats;
  auto copied = copy_message_to(*layout, source, where.offset, reserve, &scratch, limits, &stats,
                                limits.max_message_bytes);
  if (!copied.ok()) {
    error = copied.status().message();
    return false;
  }
  // The copy is one block from the scratch's start: nothing of it lies past what it took.
  scratch.used = stats.bytes;
  size = scratch.used;
  view.region = reinterpret_cast<uint8_t*>(scratch.bytes.get());
  view.region_size = scratch.used;
  view.body_offset = *copied;
  view.fingerprint = layout->fingerprint();
  return true;
}

bool PolicyOperator::copy_to_private(const MessageLayout& layout, ConstRegion source,
                                     MessageLocation& where, std::string& error) {
  struct Taken {
    PrivateMessagePool& pool;
    std::shared_ptr<PrivateMessage> message;
  } taken{*private_messages_, nullptr};
  auto reserve = [](void* context, uint64_t bytes) {
    auto& into = *static_cast<Taken*>(context);
    into.message.reset();  // a second reservation: the first goes back to the pool first
    into.message = into.pool.take(bytes);
    return MutableRegion{into.message->bytes.get(), bytes};
  };
  // One pass into a pooled block of kCopyFirstTryBytes; a bigger message is measured.
  CopyStats stats;
  auto copied =
      copy_message_to(layout, source, where.offset, reserve, &taken,
                      CopyLimits{core().config.max_message_bytes, limits::kMaxMessageNesting},
                      &stats, kCopyFirstTryBytes);
  if (!copied.ok()) {
    error = copied.status().message();
    return false;
  }
  taken.message->size = stats.bytes;  // the rest of the block holds nothing of this message
  taken.message->message_bytes = stats.bytes;
  where = MessageLocation{where.owner, RegionKind::kPrivate, *copied, std::move(taken.message)};
  return true;
}

bool PolicyOperator::move_received_to_private(Rpc& rpc, const MessageLayout& layout,
                                              std::string& error) {
  const Connection* callee = core().connection(rpc.received_request.owner);
  MRPC_ASSERT(callee != nullptr, "call {}: received request of a connection not on this shard",
              rpc.call_id);
  MessageLocation moved{rpc.request.owner, RegionKind::kHeap, rpc.received_request.offset};
  if (!copy_to_private(layout, ConstRegion{callee->receive.data(), callee->receive.size()}, moved,
                       error))
    return false;
  core().free_received_request(rpc);
  rpc.request = std::move(moved);
  return true;
}

std::span<const std::byte> PolicyOperator::peer_metadata(const Rpc& rpc) {
  if (rpc.peer_request == nullptr || rpc.metadata_length == 0) return {};
  MRPC_ASSERT(rpc.peer_request->metadata.size() == rpc.metadata_length,
              "call {}: a peer's metadata block of {} bytes, metadata_length {}", rpc.call_id,
              rpc.peer_request->metadata.size(), rpc.metadata_length);
  return rpc.peer_request->metadata;
}

bool PolicyOperator::decode_peer_request_here(Rpc& rpc, std::string& error) {
  Connection* callee = core().connection(rpc.endpoint.connection);
  if (callee == nullptr) {
    error = "the serving app left";
    read_error_code_ = StatusCode::kUnavailable;
    return false;
  }
  uint64_t bytes = 0;
  auto decoded = decode_peer_request(core(), rpc, *callee, &bytes);
  if (!decoded.ok()) {
    error = decoded.status().message();
    read_error_code_ = decoded.status().code();  // a full region is not the caller's fault
    return false;
  }
  callee->report_receive_usage();
  rpc.received_request = MessageLocation{callee->id, RegionKind::kReceive, *decoded};
  rpc.received_request_bytes = bytes;
  return true;
}

bool PolicyOperator::keep_peer_request(Rpc& rpc, const MethodCheck& method, std::string& error) {
  if (reads_metadata_ && rpc.metadata_length != 0 && !take_metadata(rpc, error)) {
    error = "its metadata: " + error;
    return false;
  }
  if (!replies_read_request_ || method.input == nullptr ||
      rpc.request.region == RegionKind::kPrivate)
    return true;
  if (!rpc.received_request.present() && !decode_peer_request_here(rpc, error)) return false;
  return move_received_to_private(rpc, *method.input, error);
}

void PolicyOperator::place_string_writes(Rpc& rpc, ir::Event event, compiler::Verdict& verdict) {
  auto& writes = verdict.writes;
  // Only into the message this handler decides on and that is delivered from its copy: the
  // request in a request handler, a server's response in a response handler at the callee.
  const int region = event == ir::Event::kRequest ? 0 : event == ir::Event::kResponse ? 1 : -1;
  if (region < 0 || writes.size() > kMaxPlacedFieldWrites) return;  // left unapplied (counted)
  MessageLocation& where = region == 0 ? rpc.request : rpc.response;
  if (!where.present() || where.region != RegionKind::kPrivate ||
      where.private_copy.use_count() != 1 || (region == 0 && rpc.received_request.present()))
    return;
  auto placeable = [&](const compiler::FieldWrite& write) {
    if (write.applied || write.step == nullptr || write.region != region) return false;
    const FieldLayout& field = *write.step->field;
    return (field.kind == FieldKind::kString || field.kind == FieldKind::kBytes) && !field.repeated;
  };
  // Program order: a later write or clear of the same field, or a later assignment of another
  // member of its oneof (they share storage), made in place already, wins.
  auto superseded = [&](size_t i) {
    const compiler::FieldWrite& write = writes[i];
    const FieldLayout& field = *write.step->field;
    for (size_t j = i + 1; j < writes.size(); ++j) {
      const compiler::FieldWrite& later = writes[j];
      if (later.step == nullptr || later.region != write.region || later.body != write.body ||
          later.step->holder != write.step->holder)
        continue;
      const FieldLayout& other = *later.step->field;
      if (&other == &field) return true;
      if (field.oneof_index >= 0 && other.oneof_index == field.oneof_index &&
          later.value.kind != ir::Kind::kVoid)
        return true;
    }
    return false;
  };
  const PrivateMessage& old = *where.private_copy;
  const uint64_t start = (old.size + 7) & ~uint64_t{7};
  uint64_t grown = start;
  placed_.clear();
  for (size_t i = 0; i < writes.size(); ++i) {
    if (!placeable(writes[i]) || superseded(i)) continue;
    MRPC_ASSERT(writes[i].body + writes[i].step->field->offset + sizeof(RegionRef) <= old.size,
                "policy '{}': a string write at {} + {} outside its copy of {} bytes", name_,
                writes[i].body, writes[i].step->field->offset, old.size);
    placed_.push_back(i);
    grown += (writes[i].value.s.size() + 7) & ~uint64_t{7};
  }
  if (placed_.empty() || grown > core().config.max_message_bytes) return;
  // Appended after the message (each 8-aligned, as every part of a message is), in one bigger
  // pooled block: the old one goes back to the pool.
  std::shared_ptr<PrivateMessage> next = private_messages_->take(grown);
  std::byte* to = next->bytes.get();
  std::memcpy(to, old.bytes.get(), old.size);
  std::memset(to + old.size, 0, grown - old.size);
  uint64_t at = start;
  for (size_t i : placed_) {
    compiler::FieldWrite& write = writes[i];
    const std::string& bytes = write.value.s;
    std::memcpy(to + at, bytes.data(), bytes.size());
    const auto size = static_cast<uint32_t>(bytes.size());  // within kMaxPolicyStringBytes
    const RegionRef ref{at, size, size};
    std::memcpy(to + write.body + write.step->field->offset, &ref, sizeof ref);
    compiler::set_field_presence(reinterpret_cast<uint8_t*>(to), write.body, *write.step, true);
    at += (bytes.size() + 7) & ~uint64_t{7};
    write.applied = true;
  }
  next->size = grown;
  next->message_bytes = old.message_bytes + (grown - start);
  where.private_copy = std::move(next);
}

bool PolicyOperator::copy_into_receive_region(Rpc& rpc, const MessageLayout* layout,
                                              mrpc_message_view& view, uint64_t& size) {
  auto point_view_at = [&](const Connection& callee) {
    const MessageLocation& received = rpc.received_request;
    view.region = reinterpret_cast<uint8_t*>(callee.receive.data());
    // No reference of the copy points past its block.
    view.region_size = received.offset + rpc.received_request_bytes;
    view.body_offset = received.offset;
    view.fingerprint = layout->fingerprint();
    size = rpc.received_request_bytes;
  };
  if (rpc.received_request.present()) {  // a policy before this one copied it there
    const Connection* callee = core().connection(rpc.received_request.owner);
    MRPC_ASSERT(callee != nullptr, "call {}: received request of a connection not on this shard",
                rpc.call_id);
    point_view_at(*callee);
    return true;
  }
  // Only in the callee's ingress graph (this shard's, the callee's receive region's), for a
  // request still in its caller's heap (a private copy is read in place, no copy at all).
  // Not for a policy that writes strings (they need a copy that can grow).
  if (policy_.placement != ir::Placement::kCallee || rpc.request.region != RegionKind::kHeap ||
      writes_strings_)
    return false;
  Connection* callee = core().connection(rpc.endpoint.connection);
  const Connection* caller = core().memory_of(rpc, rpc.request.owner);
  if (callee == nullptr || caller == nullptr) return false;
  const uint64_t used_before = callee->receive_allocator->used_bytes();
  CopyStats stats;
  auto copied =
      copy_message(*layout, caller->heap_view(), rpc.request.offset, callee->receive_view(),
                   *callee->receive_allocator,
                   CopyLimits{core().config.max_message_bytes, limits::kMaxMessageNesting}, &stats);
  // Refused (a bad message, or no room): the private copy below says why, or leaves the room
  // error to the delivery, as without this path.
  if (!copied.ok()) return false;
  caller->charge_copy(callee->receive_allocator->used_bytes() - used_before);  // fair rounds
  callee->report_receive_usage();
  rpc.received_request = MessageLocation{callee->id, RegionKind::kReceive, *copied};
  rpc.received_request_bytes = stats.bytes;
  point_view_at(*callee);
  return true;
}

std::string PolicyOperator::endpoint_name(const RegisteredService& service, size_t server) {
  const std::string& app = server < service.server_apps.size() ? service.server_apps[server] : "";
  return fmt::format("{}#{}", app, service.servers[server]);
}

void PolicyOperator::encode_endpoints(const Rpc& rpc) {
  endpoints_scratch_.clear();
  const RegisteredService* service = core().registry.find(rpc.service_id);
  if (service == nullptr) return;
  for (size_t i = 0; i < service->servers.size(); ++i) {
    const std::string name = endpoint_name(*service, i);
    append_entry(endpoints_scratch_, name.data(), static_cast<uint32_t>(name.size()));
  }
}

ConnectionId PolicyOperator::find_endpoint(const Rpc& rpc, const std::string& endpoint) const {
  const RegisteredService* service = core().registry.find(rpc.service_id);
  if (service == nullptr) return kNoConnection;
  for (size_t i = 0; i < service->servers.size(); ++i)
    if (endpoint_name(*service, i) == endpoint) return service->servers[i];
  return kNoConnection;
}

bool PolicyOperator::apply_route(Rpc& rpc, const std::string& endpoint) {
  const ConnectionId id = find_endpoint(rpc, endpoint);
  if (id == kNoConnection) return false;
  rpc.endpoint.connection = id;  // the router honours it while the endpoint has room
  return true;
}

bool PolicyOperator::apply_mirrors(Rpc& rpc, const compiler::Verdict& verdict, Output& out) {
  bool all = true;
  for (const auto& [endpoint, fraction] : verdict.mirrors) {
    if (random_.next_unit() >= fraction) continue;  // not this call
    const ConnectionId id = find_endpoint(rpc, endpoint);
    if (id == kNoConnection || rpc.attempts_made >= limits::kMaxAttemptsPerCall) {
      all = false;
      continue;
    }
    if (mirrored_.size() >= kMaxPolicyTrackedCalls) {
      // Forget mirrors whose replies never came back this way (their calls ended elsewhere);
      // a mirror reply this policy does not recognise would end its call as if it were one.
      const MonoTime now = out.now();
      std::erase_if(mirrored_, [&](const auto& entry) {
        return now - entry.second > kForgetMirrorAfter.count();
      });
      if (mirrored_.size() >= kMaxPolicyTrackedCalls) {
        all = false;
        continue;
      }
    }
    const uint16_t attempt = out.fork(rpc, AttemptKind::kMirror, Endpoint{id});
    mirrored_.emplace((rpc.call_id << 16) ^ attempt, out.now());
  }
  return all;
}

void PolicyOperator::count(const Rpc& rpc, ir::Event event, Outcome outcome) {
  const uint64_t method = (uint64_t{rpc.service_id} << 16) | rpc.method_index;
  const SeriesKey key{rpc.caller.get(), method, static_cast<uint8_t>(event), outcome};
  if (last_series_ < series_.size() && key == last_series_key_) {  // the common case
    ++series_[last_series_].count;
    return;
  }
  auto found = series_index_.find(key);
  if (found != series_index_.end()) {
    ++series_[found->second.index].count;
    last_series_key_ = key;
    last_series_ = found->second.index;
    return;
  }
  // A new (connection, method) pair: its labels may name a series already (another connection
  // of an app with the same name); past the limits, the "_other" series.
  PolicySeries series;
  const bool full = series_.size() >= kMaxPolicyMetricSeries ||
                    series_index_.size() >= 4 * kMaxPolicyMetricSeries;
  if (full) {
    series.caller = "_other";
    series.method = "_other";
  } else {
    series.caller = rpc.caller ? rpc.caller->app_name : "";
    const RegisteredService* service = core().registry.find(rpc.service_id);
    series.method = service != nullptr && rpc.method_index < service->info->methods.size()
                        ? service->full_name + "." + service->info->methods[rpc.method_index].name
                        : "_unknown";
  }
  series.event = kEventNames[static_cast<size_t>(event)];
  series.outcome = kOutcomeNames[outcome];
  const std::string labels =
      fmt::format("{}\n{}\n{}\n{}", series.caller, series.method, series.event, series.outcome);
  auto [named, added] = series_by_labels_.emplace(labels, series_.size());
  if (added) series_.push_back(std::move(series));
  ++series_[named->second].count;
  if (!full) series_index_.emplace(key, SeriesValue{rpc.caller, named->second});
}

void* PolicyOperator::call_variables(Rpc& rpc, ir::Event event) {
  PolicyCallVariables* entry = nullptr;
  for (auto& e : rpc.policy_call_variables)
    if (e.owner == id_) entry = &e;
  if (entry == nullptr) {
    rpc.policy_call_variables.push_back(PolicyCallVariables{id_, nullptr});
    entry = &rpc.policy_call_variables.back();
  }
  if (entry->cells == nullptr || event == ir::Event::kRequest) {
    auto cells = std::make_shared<std::vector<ir::Value>>();
    cells->reserve(policy_.call_variables.size());
    for (const auto& v : policy_.call_variables) cells->push_back(v.initial);
    entry->cells = std::move(cells);
  }
  return static_cast<std::vector<ir::Value>*>(entry->cells.get())->data();
}

void PolicyOperator::run_one(RpcPtr& rpc, ir::Event event, Output& out) {
  const MethodCheck& method = check_method(*rpc);
  if (method.policy_method < 0) return;  // not a call this policy applies to: it passes
  if (!method.layout_matches) {
    count(*rpc, event, kSchemaMismatch);
    out.drop(std::move(rpc),
             Status(StatusCode::kFailedPrecondition,
                    fmt::format("policy '{}' was built against another layout of this method's "
                                "messages than the app registered; the call is refused rather "
                                "than read at wrong offsets",
                                name_)));
    return;
  }
  int64_t latency_ns = 0;
  if (uses_latency_) {
    const uint64_t key = (rpc->call_id << 16) ^ rpc->attempt;
    if (event == ir::Event::kRequest) {
      if (started_.size() >= kMaxPolicyTrackedCalls) started_.clear();
      started_[key] = out.now();
    } else if (auto found = started_.find(key); found != started_.end()) {
      latency_ns = out.now() - found->second;
      started_.erase(found);
    }
  }
  if (event == ir::Event::kRequest && rpc->peer_request != nullptr &&
      (reads_metadata_ || replies_read_request_)) {
    std::string error;
    if (!keep_peer_request(*rpc, method, error)) {
      fail_read(rpc, event, "the peer's request", error, out);
      return;
    }
  }
  if (!handles_[static_cast<size_t>(event)]) return;
  if (event != ir::Event::kRequest && replies_read_request_ &&
      remote_ids::is_remote(rpc->request.owner) && rpc->request.region != RegionKind::kPrivate) {
    // A peer's call whose request passed before this policy was attached: its delivery consumed
    // the request, so this handler cannot run; the call is not failed for it.
    count(*rpc, event, kUnapplied);
    return;
  }
  const RegisteredService* service = core().registry.find(rpc->service_id);
  static const std::string kEmpty;
  const std::string& service_name = service ? service->full_name : kEmpty;
  const std::string& method_name =
      service ? service->info->methods[rpc->method_index].name : kEmpty;

  static constexpr mrpc_rpc_view_ops kOps = {&PolicyOperator::metadata_get,
                                             &PolicyOperator::metadata_set,
                                             &PolicyOperator::metadata_remove};
  mrpc_rpc_view view{};
  view.call_id = rpc->call_id;
  view.attempt = rpc->attempt;
  view.service_id = rpc->service_id;
  view.method_id = rpc->method_index;
  view.service = view_of(service_name);
  view.method = view_of(method_name);
  if (rpc->caller) {
    view.caller_uid = rpc->caller->uid;
    view.caller_pid = rpc->caller->pid;
    view.caller_app = view_of(rpc->caller->app_name);
    view.caller_host = view_of(rpc->caller->host);
  }
  view.status = static_cast<uint32_t>(rpc->status.code());
  view.deadline_ns = rpc->deadline == kNoDeadline ? 0 : rpc->deadline;
  view.priority = rpc->priority;
  current_ = rpc.get();
  if (reads_metadata_ && event == ir::Event::kRequest && rpc->metadata_block.present()) {
    std::string error;
    if (!take_metadata(*rpc, error)) {
      current_ = nullptr;
      fail_read(rpc, event, "the metadata", error, out);
      return;
    }
  }
  if (reads_metadata_) {  // reads or writes: a policy that does neither never sees the block
    encode_metadata(*rpc);
    view.metadata = reinterpret_cast<const uint8_t*>(metadata_scratch_.data());
    view.metadata_size = static_cast<uint32_t>(metadata_scratch_.size());
  }
  view.ops = &kOps;
  if (uses_endpoints_) {
    encode_endpoints(*rpc);
    view.endpoints = reinterpret_cast<const uint8_t*>(endpoints_scratch_.data());
    view.endpoints_size = static_cast<uint32_t>(endpoints_scratch_.size());
    if (event != ir::Event::kRequest && rpc->endpoint.routed()) {
      endpoint_scratch_.clear();
      if (const RegisteredService* serving = core().registry.find(rpc->service_id)) {
        for (size_t i = 0; i < serving->servers.size(); ++i)
          if (serving->servers[i] == rpc->endpoint.connection)
            endpoint_scratch_ = endpoint_name(*serving, i);
      }
      view.endpoint = view_of(endpoint_scratch_);
    }
  }
  view.ops_context = this;
  view.latency_ns = latency_ns;
  if (policy_.schema_known) view.policy_method = static_cast<uint32_t>(method.policy_method) + 1;
  // Whether the message of this event is read in the private copy that is delivered (then the
  // handler's in-place field writes reach the callee or caller).
  bool writes_delivered = false;
  if (policy_.reads_message || uses_size_) {
    std::string error;
    uint64_t request_size = 0, response_size = 0;
    const bool request_event = event == ir::Event::kRequest;
    const bool response_event = event == ir::Event::kResponse;
    bool copied = copy_message_view(true, rpc->request, request_event, method.input, view.request,
                                    request_size, error) &&
                  (!response_event || copy_message_view(false, rpc->response, true, method.output,
                                                        view.response, response_size, error));
    view.size = request_event ? request_size : response_size;
    const MessageLocation& decided = request_event ? rpc->request : rpc->response;
    writes_delivered = (request_event && rpc->received_request.present()) ||
                       ((request_event || response_event) && decided.present() &&
                        decided.region == RegionKind::kPrivate);
    if (!copied) {
      current_ = nullptr;
      fail_read(rpc, event, "the message", error, out);
      return;
    }
  }
  if (!policy_.call_variables.empty()) view.call_variables = call_variables(*rpc, event);
  compiler::Verdict& verdict = verdict_;
  runner_->run_into(event, view, verdict);
  current_ = nullptr;
  for (const auto& log : verdict.logs) {
    std::string fields;
    for (const auto& [key, value] : log.fields)
      fields += fmt::format(" {}={}", key, ir::value_text(value));
    spdlog::info("policy '{}': {}{}", name_, log.event, fields);
  }
  if (event == ir::Event::kRequest) {
    rpc->priority = static_cast<uint8_t>(std::clamp<int32_t>(view.priority, 0, 255));
    if (view.deadline_ns != 0) rpc->deadline = view.deadline_ns;
  }
  switch (verdict.outcome) {
    case compiler::Verdict::Outcome::kReject:
      count(*rpc, event, kReject);
      out.drop(std::move(rpc), Status(verdict.status, verdict.message));
      return;
    case compiler::Verdict::Outcome::kDrop:
      count(*rpc, event, kDrop);
      if (rpc->deadline != kNoDeadline) {
        out.end(std::move(rpc));  // absorbed: the caller sees its deadline expire
      } else {
        out.drop(std::move(rpc), Status(StatusCode::kUnavailable,
                                        fmt::format("dropped by policy '{}' (the call had no "
                                                    "deadline to expire)",
                                                    name_)));
      }
      return;
    case compiler::Verdict::Outcome::kRespond:
      respond(rpc, event, verdict, method, out);
      return;
    case compiler::Verdict::Outcome::kContinue:
      break;
  }
  // Before mirrors fork (they would share the copy): both attempts carry the placed strings.
  if (!verdict.writes.empty()) place_string_writes(*rpc, event, verdict);
  // A route on the caller's side names the endpoint the router takes (when it serves the
  // service and has room); elsewhere, or naming no endpoint, it is not applied.
  const bool routed = verdict.route.has_value() && event == ir::Event::kRequest &&
                      policy_.placement == ir::Placement::kCaller &&
                      apply_route(*rpc, *verdict.route);
  const bool mirrored = !verdict.mirrors.empty() && event == ir::Event::kRequest &&
                        policy_.placement == ir::Placement::kCaller &&
                        apply_mirrors(*rpc, verdict, out);
  const bool writes_unapplied = std::any_of(
      verdict.writes.begin(), verdict.writes.end(),
      [&](const compiler::FieldWrite& write) { return !write.applied || !writes_delivered; });
  const bool unapplied = (verdict.route.has_value() && !routed) ||
                         (!verdict.mirrors.empty() && !mirrored) ||
                         verdict.retry_after_ns.has_value() || writes_unapplied;
  if (verdict.delay_ns > 0 && event == ir::Event::kRequest) {
    count(*rpc, event, kDelay);
    // A held request does not keep a block of the callee's receive region (a caller could fill
    // it with delayed calls): it waits in a private copy (if that copy fails, where it is).
    if (rpc->received_request.present() && method.input != nullptr) {
      std::string error;
      (void)move_received_to_private(*rpc, *method.input, error);
    }
    const MonoTime now = out.now();
    const MonoTime until =
        verdict.delay_ns > kNoDeadline - now ? kNoDeadline - 1 : now + verdict.delay_ns;
    out.delay(std::move(rpc), until);
    return;
  }
  count(*rpc, event, unapplied ? kUnapplied : kPass);
}

void PolicyOperator::fail_read(RpcPtr& rpc, ir::Event event, const char* what,
                               const std::string& error, Output& out) {
  const StatusCode code = read_error_code_;
  read_error_code_ = StatusCode::kInvalidArgument;
  count(*rpc, event, kReject);
  out.drop(std::move(rpc),
           Status(code, fmt::format("policy '{}' could not read {}: {}", name_, what, error)));
}

void PolicyOperator::respond(RpcPtr& rpc, ir::Event event, const compiler::Verdict& verdict,
                             const MethodCheck& method, Output& out) {
  // The stored response is copied (bounds-checked: it is bytes the policy kept) into the caller's
  // receive region, where the caller's frontend takes responses from; the server never sees the
  // call.
  Connection* caller = core().connection(rpc->connection);
  Status failed;
  if (event != ir::Event::kRequest) {
    failed = Status(StatusCode::kUnimplemented,
                    fmt::format("policy '{}': respond on the reply path is not applied", name_));
  } else if (caller == nullptr || method.output == nullptr || verdict.response_bytes.empty()) {
    failed =
        Status(StatusCode::kUnavailable,
               fmt::format("policy '{}' answered the call, but {}", name_,
                           caller == nullptr ? "its caller left" : "the stored response is empty"));
  } else {
    const ConstRegion stored{reinterpret_cast<const std::byte*>(verdict.response_bytes.data()),
                             verdict.response_bytes.size()};
    auto copied =
        copy_message(*method.output, stored, verdict.response_body_offset, caller->receive_view(),
                     *caller->receive_allocator,
                     CopyLimits{core().config.max_message_bytes, limits::kMaxMessageNesting});
    caller->report_receive_usage();
    if (copied.ok()) {
      count(*rpc, event, kRespond);
      rpc->response = MessageLocation{caller->id, RegionKind::kReceive, *copied};
      rpc->status = Status();
      out.answer(std::move(rpc));
      return;
    }
    failed = Status(copied.status().code(),
                    fmt::format("policy '{}' answered the call, but its stored response does not "
                                "fit the caller: {}",
                                name_, copied.status().message()));
  }
  count(*rpc, event, kUnapplied);
  out.drop(std::move(rpc), failed);
}

void PolicyOperator::on_requests(RpcBatch& batch, Output& out) {
  std::lock_guard lock(mutex_);
  running_ = &this_threads_core();
  for (auto& rpc : batch) {
    if (rpc) run_one(rpc, ir::Event::kRequest, out);
  }
  running_ = nullptr;
}

void PolicyOperator::on_replies(RpcBatch& batch, Output& out) {
  if (!reply_side_) return;  // no response or error handler: replies pass untouched
  std::lock_guard lock(mutex_);
  running_ = &this_threads_core();
  for (auto& rpc : batch) {
    if (!rpc) continue;
    if (rpc->attempt_kind == AttemptKind::kMirror && !mirrored_.empty()) {
      auto forked = mirrored_.find((rpc->call_id << 16) ^ rpc->attempt);
      if (forked != mirrored_.end()) {  // a mirror this policy sent: its reply ends here
        mirrored_.erase(forked);
        out.end(std::move(rpc));
        continue;
      }
    }
    run_one(rpc, rpc->status.ok() ? ir::Event::kResponse : ir::Event::kError, out);
  }
  running_ = nullptr;
}

OperatorState PolicyOperator::export_state() const {
  std::lock_guard lock(mutex_);
  OperatorState state;
  for (const auto& declared : policy_.states) {
    ir::Value value = runner_->state(declared.name);
    switch (value.kind) {
      case ir::Kind::kFloat:
        state[declared.name] = value.f;
        break;
      case ir::Kind::kString:
      case ir::Kind::kBytes:
        state[declared.name] = value.s;
        break;
      case ir::Kind::kInt:
      case ir::Kind::kBool:
      case ir::Kind::kDuration:
      case ir::Kind::kTime:
      case ir::Kind::kStatus:
      case ir::Kind::kCounter:
        state[declared.name] = value.i;
        break;
      default:
        break;  // containers and histograms: carry_from carries them
    }
  }
  return state;
}

void PolicyOperator::import_state(const OperatorState& state) {
  std::lock_guard lock(mutex_);
  if (carried_) return;  // carry_from already took the old version's state
  carried_ = true;
  for (const auto& declared : policy_.states) {
    auto found = state.find(declared.name);
    if (found == state.end()) continue;
    ir::Value value = runner_->state(declared.name);
    if (auto* i = std::get_if<int64_t>(&found->second)) {
      value.i = *i;
    } else if (auto* f = std::get_if<double>(&found->second)) {
      value.f = *f;
    } else {
      value.s = std::get<std::string>(found->second);
    }
    if (Status set = runner_->set_state(declared.name, value); !set.ok())
      warnings_.push_back(fmt::format("state '{}' not carried: {}", declared.name, set.message()));
  }
}

void PolicyOperator::carry_from(const PolicyOperator& old) {
  if (&old == this) return;
  std::scoped_lock lock(mutex_, old.mutex_);
  if (carried_) return;
  carried_ = true;
  for (const auto& previous : old.policy_.states) {
    const ir::State* now = nullptr;
    for (const auto& declared : policy_.states)
      if (declared.name == previous.name) now = &declared;
    if (now == nullptr) {
      warnings_.push_back(fmt::format("state '{}' ({}) dropped: the new version has no such state",
                                      previous.name, ir::type_text(previous.type)));
      continue;
    }
    if (now->labels != previous.labels) {
      warnings_.push_back(
          fmt::format("state '{}' starts empty: its labels changed", previous.name));
      continue;
    }
    if (ir::type_text(now->type) != ir::type_text(previous.type)) {
      warnings_.push_back(
          fmt::format("state '{}' starts from its initial value: its type changed from {} to {}",
                      previous.name, ir::type_text(previous.type), ir::type_text(now->type)));
      continue;
    }
    if (Status set = runner_->set_state(previous.name, old.runner_->state(previous.name));
        !set.ok())
      warnings_.push_back(fmt::format("state '{}' starts from its initial value: {}", previous.name,
                                      set.message()));
  }
}

std::vector<std::string> PolicyOperator::take_warnings() {
  std::lock_guard lock(mutex_);
  return std::exchange(warnings_, {});
}

std::vector<std::pair<std::string, ir::Value>> PolicyOperator::states() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, ir::Value>> out;
  for (const auto& declared : policy_.states)
    out.emplace_back(declared.name, runner_->state(declared.name));
  return out;
}

std::vector<PolicySeries> PolicyOperator::series() const {
  std::lock_guard lock(mutex_);
  return series_;
}

}  // namespace mrpc
