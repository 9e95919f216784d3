// Channel's non-virtual members and its factory: libmrpc's Channel is a ShmChannel.
#include "mrpc/client/channel.h"

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "mrpc/base/block_pool.h"
#include "mrpc/transports/shm/protocol.h"
#include "shm_channel.h"

namespace mrpc {
namespace {

// Where connect looks for mrpcd, and what said so (for the error that says it is not there).
std::pair<std::string, std::string> socket_path_and_source(const ChannelOptions& options) {
  if (!options.socket_path.empty()) return {options.socket_path, "ChannelOptions::socket_path"};
  const char* from_env = std::getenv(shm::kAppSocketEnv);
  if (from_env != nullptr && *from_env != '\0')
    return {from_env, fmt::format("${}", shm::kAppSocketEnv)};
  return {shm::kDefaultAppSocketPath,
          fmt::format("the default; neither ChannelOptions::socket_path nor ${} is set",
                      shm::kAppSocketEnv)};
}

}  // namespace

Expected<std::shared_ptr<Channel>> Channel::connect(ChannelOptions options) {
  const auto [path, source] = socket_path_and_source(options);
  auto channel = client::ShmChannel::open(std::move(options));
  if (!channel) {
    const Status& status = channel.status();
    // No socket file, or nobody listening on it: the daemon is not running there.
    if (status.code() == StatusCode::kUnavailable &&
        status.message().starts_with("connecting to mrpcd")) {
      return Status(StatusCode::kUnavailable,
                    fmt::format("mrpcd is not running: nothing listens at {} ({}); start it "
                                "(mrpcd --app-socket {}) or point ${} at its app socket [{}]",
                                path, source, path, shm::kAppSocketEnv, status.message()));
    }
    return status;
  }
  return std::shared_ptr<Channel>(std::move(*channel));
}

std::future<std::pair<Status, ReceivedMessage>> Channel::call_async(const ServiceSchema& service,
                                                                    uint32_t method_index,
                                                                    const MessageRef& request,
                                                                    const CallOptions& options) {
  // The promise moves into the completion (an UntypedCompletion may be move-only). Its shared
  // state and result come from the calling thread's BlockPool (no allocation once it is warm).
  auto promise = pooled_promise<std::pair<Status, ReceivedMessage>>();
  auto future = promise.get_future();
  start_call(service, method_index, request, options,
             [promise = std::move(promise)](Status status, ReceivedMessage response) mutable {
               promise.set_value({std::move(status), std::move(response)});
             });
  return future;
}

std::pair<Status, ReceivedMessage> Channel::call(const ServiceSchema& service,
                                                 uint32_t method_index, const MessageRef& request,
                                                 const CallOptions& options) {
  // Waits on this stack frame (no allocation): the completion notifies under the mutex, so this
  // frame outlives every access the completion makes to it.
  struct Waiter {
    std::mutex mutex;
    std::condition_variable ended;
    bool done = false;
    std::pair<Status, ReceivedMessage> result;
  } waiter;
  start_call(service, method_index, request, options,
             [&waiter](Status status, ReceivedMessage response) {
               std::lock_guard lock(waiter.mutex);
               waiter.result = {std::move(status), std::move(response)};
               waiter.done = true;
               waiter.ended.notify_one();
             });
  std::unique_lock lock(waiter.mutex);
  waiter.ended.wait(lock, [&waiter] { return waiter.done; });
  return std::move(waiter.result);
}

}  // namespace mrpc
