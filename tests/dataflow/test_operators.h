// Small operators the dataflow tests put into graphs, one per outcome an operator can choose.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "mrpc/dataflow/graph.h"

namespace mrpc::testing {

inline RpcPtr make_rpc(uint64_t call_id, uint32_t service_id = 1, uint16_t method_index = 0) {
  auto rpc = mrpc::make_rpc();
  rpc->call_id = call_id;
  rpc->service_id = service_id;
  rpc->method_index = method_index;
  return rpc;
}

// Collects what leaves the graph at either end.
struct Exits {
  std::vector<RpcPtr> requests;
  std::vector<RpcPtr> replies;
  GraphExits bind() {
    return {[this](RpcPtr rpc) { requests.push_back(std::move(rpc)); },
            [this](RpcPtr rpc) { replies.push_back(std::move(rpc)); }};
  }
  std::vector<uint64_t> request_ids() const {
    std::vector<uint64_t> ids;
    for (const auto& rpc : requests) ids.push_back(rpc->call_id);
    return ids;
  }
  std::vector<uint64_t> reply_ids() const {
    std::vector<uint64_t> ids;
    for (const auto& rpc : replies) ids.push_back(rpc->call_id);
    return ids;
  }
};

// Passes everything, counting; tags each RPC's metadata with its name so order is visible.
class Tagger final : public Operator {
 public:
  explicit Tagger(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  void on_requests(RpcBatch& batch, Output&) override {
    for (auto& rpc : batch) rpc->metadata.push_back({"req", name_});
    requests_seen += batch.size();
  }
  void on_replies(RpcBatch& batch, Output&) override {
    for (auto& rpc : batch) rpc->metadata.push_back({"rep", name_});
    replies_seen += batch.size();
  }
  size_t requests_seen = 0;
  size_t replies_seen = 0;

 private:
  std::string name_;
};

// Holds every request until told to let them go; then releases them in order from poll().
class Holder final : public Operator {
 public:
  std::string_view name() const override { return "holder"; }
  void on_requests(RpcBatch& batch, Output&) override {
    for (auto& rpc : batch) held_.push_back(std::move(rpc));
  }
  void on_replies(RpcBatch&, Output&) override {}
  bool poll(Output& requests, Output&) override {
    bool released = false;
    while (release_allowed_ > 0 && !held_.empty()) {
      requests.pass(std::move(held_.front()));
      held_.pop_front();
      --release_allowed_;
      released = true;
    }
    return released;
  }
  void detach(Output& requests, Output&) override {
    for (auto& rpc : held_) requests.pass(std::move(rpc));
    held_.clear();
  }
  size_t held() const override { return held_.size(); }
  void allow(size_t count) { release_allowed_ += count; }

 private:
  std::deque<RpcPtr> held_;
  size_t release_allowed_ = 0;
};

// Delays every request by a fixed time.
class Delayer final : public Operator {
 public:
  explicit Delayer(Nanos by) : by_(by) {}
  std::string_view name() const override { return "delayer"; }
  void on_requests(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) out.delay(std::move(rpc), out.now() + by_.count());
  }
  void on_replies(RpcBatch&, Output&) override {}

 private:
  Nanos by_;
};

// Drops requests for one method with PERMISSION_DENIED.
class Dropper final : public Operator {
 public:
  explicit Dropper(uint16_t denied_method) : denied_method_(denied_method) {}
  std::string_view name() const override { return "dropper"; }
  void on_requests(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch)
      if (rpc->method_index == denied_method_)
        out.drop(std::move(rpc), Status(StatusCode::kPermissionDenied, "method denied"));
  }
  void on_replies(RpcBatch&, Output&) override {}

 private:
  uint16_t denied_method_;
};

// Answers requests for one service itself, with a fixed response offset.
class Answerer final : public Operator {
 public:
  Answerer(uint32_t service_id, uint64_t response_offset)
      : service_id_(service_id), response_offset_(response_offset) {}
  std::string_view name() const override { return "answerer"; }
  void on_requests(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) {
      if (rpc->service_id != service_id_) continue;
      rpc->response.offset = response_offset_;
      out.answer(std::move(rpc));
    }
  }
  void on_replies(RpcBatch&, Output&) override {}

 private:
  uint32_t service_id_;
  uint64_t response_offset_;
};

// Mirrors each request: forks a mirror attempt downstream and ends its reply here.
class Mirror final : public Operator {
 public:
  std::string_view name() const override { return "mirror"; }
  void on_requests(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) out.fork(*rpc, AttemptKind::kMirror);
  }
  void on_replies(RpcBatch& batch, Output& out) override {
    for (auto& rpc : batch) {
      if (rpc->attempt_kind == AttemptKind::kMirror) {
        absorbed_replies.push_back(rpc->call_id);
        out.end(std::move(rpc));
      }
    }
  }
  std::vector<uint64_t> absorbed_replies;
};

}  // namespace mrpc::testing
