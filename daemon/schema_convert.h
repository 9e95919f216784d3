// Conversion between a caller's schema and the registration's, on one host (docs/tcp-transport.md,
// "Schemas"). A caller that registered a service with another, compatible schema (SchemaVariant,
// service_registry.h) builds requests and reads responses in its own layouts; the rest of the
// daemon (policies, routing, local delivery, TCP) works in the registration's. So its messages
// are converted at its door, through the protobuf wire encoding (which both schemas read):
//   - a request, when the call enters (AppFrontend::on_call): encoded from the caller's heap with
//     the caller's codec, decoded with the registration's into a PrivateMessage (the call's
//     request from then on, as a policy's checked copy is);
//   - a response, when the call completes (AppFrontend::complete): encoded from the caller's
//     receive region with the registration's codec, decoded with the caller's into a new block of
//     that region, the first block freed.
// Calls of apps whose schema is the registration's pay one bool test (Connection::schema_variants).
// Threads: a shard's runtime thread (scratch buffers are per thread).
#pragma once

#include "connection.h"
#include "core.h"
#include "mrpc/base/status.h"

namespace mrpc {

// The caller's schema variant of the call's service, or null (its schema is the registration's).
const SchemaVariant* variant_of(DaemonCore& core, const Connection& caller, uint32_t service_id);

// Replaces rpc.request (in `caller`'s heap, its layouts) with a private copy in the
// registration's layouts. The status of a request that cannot be converted (corrupt, too large).
Status convert_request(DaemonCore& core, const Connection& caller, const SchemaVariant& variant,
                       Rpc& rpc);

// `*response` (a block of `caller`'s receive region, the registration's layouts) becomes a block
// in the caller's layouts; the old block is freed either way.
Status convert_response(DaemonCore& core, Connection& caller, const SchemaVariant& variant,
                        const Rpc& rpc, uint64_t* response);

}  // namespace mrpc
