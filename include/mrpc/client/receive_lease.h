// ReceiveLease: keeps one block of the app's read-only receive region alive. libmrpc creates one
// per received message (a response, or an incoming request); every ReceivedMessage copy shares
// it, and when the last copy is destroyed the lease hands the block back to mrpcd (kRelease for a
// response; for an incoming request the kReply, which also releases it). If the connection the
// block came from is gone, nothing is sent; the old mapping stays valid while a lease holds it.
// Destroyed on whichever thread drops the last copy.
#pragma once

#include <utility>

#include "mrpc/base/inline_function.h"

namespace mrpc {

class ReceiveLease {
 public:
  // What runs when the lease dies. Callables of up to 48 bytes are kept inline (no allocation).
  using Release = InlineFunction<void(), 48>;
  // `release` runs once, when the lease is destroyed; it also keeps the region mapped.
  explicit ReceiveLease(Release release) : release_(std::move(release)) {}
  ~ReceiveLease() {
    if (release_) release_();
  }
  ReceiveLease(const ReceiveLease&) = delete;
  ReceiveLease& operator=(const ReceiveLease&) = delete;

 private:
  Release release_;
};

}  // namespace mrpc
