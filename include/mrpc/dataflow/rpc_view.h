/* The plain-data view of one RPC that policy code runs over: the IR evaluator today, and the
 * JIT-compiled handlers once the LLVM lowering exists. Plain C: generated code and the evaluator
 * read and write these fields and call the function pointers in `ops`, and touch no C++ object
 * through it.
 *
 * Who fills it: the daemon's policy operator, once per handler run, from its own Rpc; it owns
 * every byte the view points at and keeps them alive and unchanged (by anyone but the handler)
 * while the handler runs. Which thread: the runtime thread running the operator; a view is never
 * shared between threads.
 *
 * Messages: `region` is the start of the bytes the message lives in and `region_size` their
 * length; `body_offset` is where the message body starts, region-relative, like every offset
 * inside the message (docs/message-layout.md). Readers check every reference against
 * `region_size`, so a lying length inside the message can never make a read leave the region.
 * When a policy reads message fields, the daemon points `region` at its private copy of the
 * bytes (time-of-check/time-of-use: the app cannot change them under the policy).
 *
 * Encoded blocks (metadata, endpoints): entries laid end to end, each a little-endian u32 byte
 * count and that many bytes; metadata alternates key and value entries. */
#ifndef MRPC_DATAFLOW_RPC_VIEW_H_
#define MRPC_DATAFLOW_RPC_VIEW_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mrpc_str {
  const char* data;
  uint32_t size;
} mrpc_str;

typedef struct mrpc_message_view {
  uint8_t* region;      /* null: no message (a response handler's request, an error) */
  uint64_t region_size; /* bytes at `region` */
  uint64_t body_offset; /* region-relative offset of the body */
  uint64_t fingerprint; /* MessageLayout::fingerprint() of the body's type; a policy built
                         * against another layout does not run on it (the call is rejected
                         * FAILED_PRECONDITION). 0: not stated, not checked. */
} mrpc_message_view;

struct mrpc_rpc_view;

typedef struct mrpc_rpc_view_ops {
  /* Looks `key` up in the call's metadata: 1 and `*value` set when present, 0 when absent. */
  int (*metadata_get)(const struct mrpc_rpc_view* rpc, const char* key, uint32_t key_size,
                      mrpc_str* value);
  /* Sets `key` (adding it when absent): 0 on success, non-zero when the metadata block would
   * pass limits::kMaxMetadataBytes (nothing changes then). */
  int (*metadata_set)(struct mrpc_rpc_view* rpc, const char* key, uint32_t key_size,
                      const char* value, uint32_t value_size);
  /* Removes every entry of `key` (none present is fine): 0 on success. May be null (then a
   * removal is a fault with no effect). */
  int (*metadata_remove)(struct mrpc_rpc_view* rpc, const char* key, uint32_t key_size);
} mrpc_rpc_view_ops;

typedef struct mrpc_rpc_view {
  uint64_t call_id;
  uint32_t attempt;    /* rpc.attempt: retries of this call so far */
  uint32_t service_id; /* the daemon's ids of the registered service and method */
  uint32_t method_id;
  mrpc_str service; /* "hotel.Reservation" */
  mrpc_str method;  /* "MakeReservation" */
  uint32_t caller_uid;
  int32_t caller_pid;
  mrpc_str caller_app;
  mrpc_str caller_host;
  uint32_t status;          /* a StatusCode; OK until the call ends */
  int64_t deadline_ns;      /* CLOCK_MONOTONIC; a handler may set it (on request) */
  int64_t latency_ns;       /* response and error handlers */
  int32_t priority;         /* a handler may set it (on request) */
  uint64_t size;            /* bytes of the message the handler sees */
  mrpc_str endpoint;        /* the endpoint chosen (response and error handlers) */
  const uint8_t* endpoints; /* encoded block of endpoint names */
  uint32_t endpoints_size;
  mrpc_message_view request;
  mrpc_message_view response;
  const uint8_t* metadata; /* encoded block: key, value, key, value, ... */
  uint32_t metadata_size;
  const mrpc_rpc_view_ops* ops;
  void* ops_context; /* for the functions in `ops` */
  /* The policy's per-call variables (`call x: T;`) for this call: one cell per variable, in the
   * runner's own cell format (compiler::ir::Value for the evaluator and the JIT), set to their
   * initial values before the call's request handler and kept by the daemon in the call's record
   * until its response or error handler has run. Null: no call record (the cells then live for
   * one handler run only). */
  void* call_variables;
  /* 1 + the index, in the policy's `applies to` methods, of the method this call is, when the
   * daemon has resolved it already (it does once per service and method); 0: not resolved, the
   * runner matches `service` and `method` against the policy's methods by name. */
  uint32_t policy_method;
} mrpc_rpc_view;

#ifdef __cplusplus
}
#endif

#endif /* MRPC_DATAFLOW_RPC_VIEW_H_ */
