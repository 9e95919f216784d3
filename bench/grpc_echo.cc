#include "grpc_echo.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "grpc_echo.grpc.pb.h"
#include "mrpc/base/clock.h"

namespace mrpc::bench {
namespace {

class EchoServiceImpl final : public benchgrpc::Echo::Service {
  grpc::Status Call(grpc::ServerContext*, const benchgrpc::EchoMessage* request,
                    benchgrpc::EchoMessage* reply) override {
    reply->set_payload(request->payload());
    return grpc::Status::OK;
  }
};

struct AsyncCall {
  benchgrpc::EchoMessage reply;
  grpc::ClientContext context;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<benchgrpc::EchoMessage>> reader;
  MonoTime started = 0;
};

}  // namespace

int run_grpc_echo_server(uint16_t port, const std::string& address) {
  EchoServiceImpl service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(fmt::format("{}:{}", address, port), grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (!server) return 1;
  server->Wait();
  return 0;
}

Status run_grpc_client(const GrpcRunOptions& options, LatencyRecorder& latencies, double& seconds) {
  auto channel = grpc::CreateChannel(options.target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)))
    return Status(StatusCode::kUnavailable, "gRPC server at " + options.target + " not reachable");
  auto stub = benchgrpc::Echo::NewStub(channel);
  benchgrpc::EchoMessage request;
  request.set_payload(std::string(options.payload, 'x'));
  const auto& clock = MonotonicClock::instance();
  latencies.reserve(options.calls);
  MonoTime start = clock.now();
  if (options.window <= 1) {
    for (uint32_t i = 0; i < options.calls; ++i) {
      grpc::ClientContext context;
      benchgrpc::EchoMessage reply;
      MonoTime t0 = clock.now();
      grpc::Status status = stub->Call(&context, request, &reply);
      latencies.add(clock.now() - t0);
      if (!status.ok()) return Status(StatusCode::kUnavailable, status.error_message());
    }
  } else {
    grpc::CompletionQueue queue;
    uint32_t started = 0, finished = 0;
    auto start_one = [&] {
      auto* call = new AsyncCall;
      call->started = clock.now();
      call->reader = stub->AsyncCall(&call->context, request, &queue);
      call->reader->Finish(&call->reply, &call->status, call);
      ++started;
    };
    while (started < options.window && started < options.calls) start_one();
    void* tag = nullptr;
    bool ok = false;
    Status result;
    while (finished < options.calls && queue.Next(&tag, &ok)) {
      std::unique_ptr<AsyncCall> call(static_cast<AsyncCall*>(tag));
      latencies.add(clock.now() - call->started);
      ++finished;
      if (!ok || !call->status.ok())
        result = Status(StatusCode::kUnavailable, call->status.error_message());
      if (started < options.calls) start_one();
    }
    queue.Shutdown();
    while (queue.Next(&tag, &ok)) delete static_cast<AsyncCall*>(tag);
    if (!result.ok()) return result;
  }
  seconds = static_cast<double>(clock.now() - start) / 1e9;
  return Status();
}

}  // namespace mrpc::bench
