// The per-thread pool of Rpc descriptors. See mrpc/dataflow/rpc.h.
#include "mrpc/dataflow/rpc.h"

#include <atomic>
#include <vector>

#include "mrpc/base/limits.h"

namespace mrpc {

namespace {
std::atomic<int64_t> alive{0};

// Descriptors a thread keeps for reuse. Past kRpcPoolPerThread they are freed, so a burst does
// not pin memory for ever.
struct RpcPool {
  std::vector<Rpc*> spare;
  ~RpcPool() {
    for (Rpc* rpc : spare) delete rpc;
    spare.clear();
    destroyed = true;
  }
  static thread_local bool destroyed;
};
thread_local bool RpcPool::destroyed = false;
thread_local RpcPool pool;

Rpc* take() {
  alive.fetch_add(1, std::memory_order_relaxed);
  if (RpcPool::destroyed || pool.spare.empty()) return nullptr;
  Rpc* rpc = pool.spare.back();
  pool.spare.pop_back();
  return rpc;
}
}  // namespace

void RpcRecycler::operator()(Rpc* rpc) const noexcept {
  if (rpc == nullptr) return;
  alive.fetch_sub(1, std::memory_order_relaxed);
  if (RpcPool::destroyed || pool.spare.size() >= limits::kRpcPoolPerThread) {
    delete rpc;
    return;
  }
  *rpc = Rpc{};  // drops the caller identity, the status text, added metadata
  if (pool.spare.capacity() == pool.spare.size())
    pool.spare.reserve(std::max<size_t>(64, pool.spare.size() * 2));
  pool.spare.push_back(rpc);
}

RpcPtr make_rpc() {
  Rpc* rpc = take();
  return RpcPtr(rpc != nullptr ? rpc : new Rpc());
}

RpcPtr make_rpc(const Rpc& original) {
  Rpc* rpc = take();
  if (rpc == nullptr) return RpcPtr(new Rpc(original));
  *rpc = original;
  return RpcPtr(rpc);
}

int64_t rpcs_alive() {
  return alive.load(std::memory_order_relaxed);
}

}  // namespace mrpc
