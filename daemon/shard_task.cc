#include "shard_task.h"

#include "router.h"

namespace mrpc {

namespace {
// Messages taken from one link per round, so one busy shard cannot hold this one.
constexpr size_t kMessagesPerLinkPerRound = 256;
}  // namespace

bool ShardTask::run() {
  bool did_work = false;
  const uint32_t count = static_cast<uint32_t>(core_.shared.shards.size());
  for (uint32_t to = 0; to < count; ++to) {
    if (to == core_.shard) continue;
    ShardInbox& inbox = *core_.shared.shards[to]->inbox;
    ShardLink& link = inbox.from(core_.shard);
    if (link.has_overflow()) {
      link.flush();
      inbox.ring();
      did_work = true;
    }
  }
  for (uint32_t from = 0; from < count; ++from) {
    if (from == core_.shard) continue;
    batch_.clear();
    if (core_.inbox->from(from).pop(batch_, kMessagesPerLinkPerRound) == 0) continue;
    did_work = true;
    for (ShardMessage& message : batch_) handle(message);
  }
  batch_.clear();
  return did_work;
}

bool ShardTask::prepare_to_sleep() {
  const uint32_t count = static_cast<uint32_t>(core_.shared.shards.size());
  for (uint32_t to = 0; to < count; ++to) {
    if (to != core_.shard && core_.shared.shards[to]->inbox->from(core_.shard).has_overflow())
      return false;  // what did not fit must still go
  }
  return core_.inbox->prepare_to_sleep();
}

void ShardTask::handle(ShardMessage& message) {
  using Kind = ShardMessage::Kind;
  switch (message.kind) {
    case Kind::kRequest:
      local_.deliver_here(std::move(message.rpc));
      return;
    case Kind::kReply:
      local_.reply_here(std::move(message.rpc));
      return;
    case Kind::kBounced: {
      RpcPtr rpc = std::move(message.rpc);
      Connection* caller = core_.connection(rpc->connection);
      if (caller == nullptr || core_.call(rpc->call_id) == nullptr) {
        core_.discard(std::move(rpc));
        return;
      }
      core_.refresh_service(rpc->service_id);  // the endpoint that left is gone from it now
      Router(core_).route(*caller, std::move(rpc));
      return;
    }
    case Kind::kDelivered: {
      CallRecord* record = core_.call(message.call);
      if (record == nullptr || record->delivered >= record->deliveries.size()) {
        // Ended meanwhile (or past its attempts): the callee drops it.
        core_.transport->cancel(message.connection, message.value);
        return;
      }
      record->deliveries[record->delivered++] = Delivery{message.connection, message.value};
      return;
    }
    case Kind::kCancel:
      local_.cancel_here(message.connection, message.value);
      return;
    case Kind::kReplyDone:
      core_.reply_done(message.connection, message.value, nullptr);
      message.pinned_memory.reset();  // on the shard that owns it
      return;
    case Kind::kFreeReceived:
      if (Connection* owner = core_.connection(message.connection)) {
        (void)owner->free_received(message.value);
        owner->report_receive_usage();
      }
      return;
  }
}

}  // namespace mrpc
