// Conversion between mrpc messages (in shared memory, generated classes of protoc-gen-mrpc) and
// protobuf messages of the same .proto (the protobuf C++ class, or a DynamicMessage), so code that
// uses protobuf can move to mrpc one call at a time. Deep: every field, sub-message, repeated
// field, map and oneof; unknown fields are not carried. Uses protobuf reflection (an app that calls
// these links libprotobuf); the layout comes from the protobuf message's descriptor and must have
// the fingerprint of the mrpc type, else FAILED_PRECONDITION (the two were generated from different
// versions of the .proto).
//
// protoc-gen-mrpc's classes take the C++ namespace of the package, as protoc's do; to link both
// for one .proto, generate mrpc's with mrpc_generate(... NAMESPACE shm) (pkg::shm::M beside
// protoc's pkg::M), or convert through a DynamicMessage.
//
// Thread: any; the layouts are cached process-wide behind a mutex.
#pragma once

#include <cstdint>

#include "mrpc/base/status.h"
#include "mrpc/message/message_ref.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace mrpc {

// Clears `out` and fills it from the mrpc message `in` (any readable region).
Status to_protobuf(const MessageRef& in, uint64_t layout_fingerprint,
                   google::protobuf::Message& out);

// Merges `in` into the mrpc message `out`, which must be in a heap (a message being built).
// RESOURCE_EXHAUSTED if the heap filled up (the message is then failed, as after a failed setter).
Status from_protobuf(const google::protobuf::Message& in, uint64_t layout_fingerprint,
                     const MessageRef& out);

// Typed forms: `view` is any generated message view (received or built), `out` a mutable one.
template <class View>
Status to_protobuf(const View& view, google::protobuf::Message& out) {
  return to_protobuf(view.ref(), View::kLayoutFingerprint, out);
}
template <class Mutable>
Status from_protobuf(const google::protobuf::Message& in, Mutable& out) {
  return from_protobuf(in, Mutable::kLayoutFingerprint, out.ref());
}

}  // namespace mrpc
