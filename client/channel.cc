// Channel's non-virtual members and its factory: libmrpc's Channel is a ShmChannel.
#include "mrpc/client/channel.h"

#include "shm_channel.h"

namespace mrpc {

Expected<std::shared_ptr<Channel>> Channel::connect(ChannelOptions options) {
  auto channel = client::ShmChannel::open(std::move(options));
  if (!channel) return channel.status();
  return std::shared_ptr<Channel>(std::move(*channel));
}

std::future<std::pair<Status, ReceivedMessage>> Channel::call_async(const ServiceSchema& service,
                                                                    uint32_t method_index,
                                                                    const MessageRef& request,
                                                                    const CallOptions& options) {
  auto promise = std::make_shared<std::promise<std::pair<Status, ReceivedMessage>>>();
  auto future = promise->get_future();
  start_call(service, method_index, request, options,
             [promise](Status status, ReceivedMessage response) {
               promise->set_value({std::move(status), std::move(response)});
             });
  return future;
}

std::pair<Status, ReceivedMessage> Channel::call(const ServiceSchema& service,
                                                 uint32_t method_index, const MessageRef& request,
                                                 const CallOptions& options) {
  return call_async(service, method_index, request, options).get();
}

}  // namespace mrpc
