// ShardTask: a shard's receiving end of the hand-offs from other shards (shard_link.h). Each round
// it moves what this shard could not yet push into full links, then takes at most a batch of
// messages from every link into it and acts on them: requests delivered to this shard's apps,
// replies for its calls, deliveries recorded in its call table, cancels, responses freed.
// Runtime thread of its shard only.
#pragma once

#include <vector>

#include "core.h"
#include "local_transport.h"

namespace mrpc {

class ShardTask final : public Task {
 public:
  ShardTask(DaemonCore& core, LocalTransport& local) : core_(core), local_(local) {}

  bool run() override;
  bool prepare_to_sleep() override;
  void woke() override { core_.inbox->woke(); }

 private:
  void handle(ShardMessage& message);

  DaemonCore& core_;
  LocalTransport& local_;
  std::vector<ShardMessage> batch_;  // reused every round
};

}  // namespace mrpc
