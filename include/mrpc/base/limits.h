// Every limit and default of mrpc, named, in one place. Each limit has its own diagnostic or
// status message that names it, so whoever hits one knows which and where.
// Areas own their section; add to yours, keep the others' lines untouched.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace mrpc::limits {

using namespace std::chrono_literals;

// ---- Per-app defaults enforced by mrpcd (overridable in the daemon's configuration) ----
// Size of the shared-memory heap an app builds its outgoing messages in.
inline constexpr uint64_t kDefaultAppHeapBytes = 64ull << 20;
// Size of the read-only region the daemon places incoming messages in for an app.
inline constexpr uint64_t kDefaultAppReceiveBytes = 64ull << 20;
// Calls an app may have started and not yet seen end.
inline constexpr uint32_t kDefaultMaxCallsInFlight = 4096;
// Calls delivered to one serving app that it has not answered yet, or whose response the daemon
// still reads (until their kReplyDone is posted) (its callers' calls, from every app together);
// past it the router tries the service's other endpoints, then refuses with RESOURCE_EXHAUSTED.
// Bounds what a server that never replies costs the daemon.
inline constexpr uint32_t kDefaultMaxCallsServed = 16384;
// Largest message (all its parts together) an app may send.
inline constexpr uint64_t kDefaultMaxMessageBytes = 16ull << 20;
// Entries in each shared-memory ring (app->daemon and daemon->app); a power of two.
inline constexpr uint32_t kDefaultRingEntries = 4096;
// Deepest nesting of messages inside messages the daemon follows.
inline constexpr uint32_t kMaxMessageNesting = 64;
// Largest metadata block (all key/value pairs of one call).
inline constexpr uint32_t kMaxMetadataBytes = 16u << 10;
// Longest error text an app's kReply may carry (longer text is cut to this).
inline constexpr uint32_t kMaxStatusDetailBytes = 1024;
// Blocks of kMaxStatusDetailBytes the daemon sets aside in each app's receive region for error
// text, so a call that fails because the region is full still tells the app why.
inline constexpr uint32_t kReservedStatusDetailBlocks = 8;
// App connections mrpcd holds at once; more are refused until some close.
inline constexpr uint32_t kDefaultMaxAppConnections = 1024;
// mrpcd --runtime-threads: shards (a handle has 8 bits for its shard).
inline constexpr uint32_t kMaxRuntimeThreads = 64;
// Messages a link between two shards holds before its producer keeps them in an overflow list.
inline constexpr uint32_t kShardLinkEntries = 4096;
// Services one daemon knows (each keeps the schema it was registered with).
inline constexpr uint32_t kMaxRegisteredServices = 1024;
// RegisterService requests of one app waiting at the codec compile thread at once; beyond, a
// request is answered RESOURCE_EXHAUSTED at once (a flood cannot queue unbounded work).
inline constexpr size_t kMaxPendingRegistrationsPerApp = 16;
// App connections (handshaking or ready) of one uid at once, so one user cannot take every one of
// kDefaultMaxAppConnections; more are refused until some close.
inline constexpr uint32_t kDefaultMaxAppConnectionsPerUid = 512;
// Services whose registration one uid's apps created (serving or calling), so one user cannot
// fill kMaxRegisteredServices.
inline constexpr uint32_t kDefaultMaxServicesPerUid = 256;
// Calls the apps of one uid may have in flight together (over all their connections and runtime
// threads): sixteen connections' worth of kDefaultMaxCallsInFlight. Past it, a call is refused
// with RESOURCE_EXHAUSTED naming the uid.
inline constexpr uint32_t kDefaultMaxCallsInFlightPerUid = 65536;
// Bytes the daemon may have placed in the receive regions of one uid's connections that their
// apps have not released (requests delivered to its servers, replies to its calls): 64 full
// default regions. Past it, what would land there fails with RESOURCE_EXHAUSTED.
inline constexpr uint64_t kDefaultMaxReceiveBytesPerUid = 4ull << 30;
// After the last app serving a service leaves, only apps of the uid that served it may serve it
// for this long (a restarting server reclaims its name; nobody else can take it meanwhile).
inline constexpr std::chrono::nanoseconds kDefaultServiceOwnerGracePeriod = 30s;
// Time an app connection has to say Hello before mrpcd closes it.
inline constexpr std::chrono::nanoseconds kAppHandshakeTimeout = 5s;
// Longest app name mrpcd keeps from Hello (longer names are cut on a UTF-8 character boundary).
inline constexpr size_t kMaxAppNameBytes = 128;
// Largest control message on the app socket (a schema registration is the big one).
inline constexpr uint32_t kMaxAppSocketMessageBytes = 4u << 20;

// ---- Messages in shared memory (dataflow/message) ----
// A new message's first arena chunk: its body plus this much room for its strings and arrays.
inline constexpr uint64_t kHeapFirstChunkSlackBytes = 256;
// Later chunks of a message's arena double in size up to this (one bigger value gets its own).
inline constexpr uint64_t kHeapMaxChunkGrowthBytes = 1ull << 20;
// Freed arenas a heap keeps for reuse (their bookkeeping, not heap memory).
inline constexpr size_t kHeapSpareArenas = 1024;

// ---- Marshalling (compiler/codec) ----
// The wire decoder builds a message in a block sized by a guess, then gives the unused tail back
// to the receive region, unless it is smaller than this (small messages then keep a block size
// the region allocator reuses fast).
inline constexpr uint64_t kCodecDecodeShrinkMinBytes = 1024;
// The compile budget of one schema's codecs: IR instructions before optimization (LLVM's O2 and
// code generation time grow about linearly with them). Measured (codec_bench, the 2-core build
// machine under load): hotel.ProfileResult's schema is 1587 instructions in 16 functions and
// compiles cold in 160 ms, about 100 us per instruction; the every-field-kind test schema is 7801.
// This budget, 4 times that, bounds one compile to about 3 s.
inline constexpr uint64_t kMaxCodecInstructions = 32768;
// The JIT's on-disk object cache: largest object file it loads.
inline constexpr uint64_t kMaxCachedObjectBytes = 64ull << 20;

// ---- Schemas apps register (dataflow/message/schema.cc; docs/security.md) ----
// Checked on the FileDescriptorSet before any descriptor is built, each with its own error, so
// a hostile schema costs at most a parse of its bytes. Every walk over a schema is iterative and
// linear in its size; these bound its memory and the time one registration takes.
// Largest serialized FileDescriptorSet (the app socket's frame limit as well).
inline constexpr uint64_t kMaxSchemaBytes = kMaxAppSocketMessageBytes;
// Message and enum types in one schema, nested ones included.
inline constexpr uint32_t kMaxSchemaTypes = 16384;
// Fields (of every message, extensions included) and enum values in one schema.
inline constexpr uint32_t kMaxSchemaFields = 65536;
// Deepest declaration of a message type inside another (`message A { message B { ... } }`);
// protobuf's own DescriptorPool stops at 32.
inline constexpr uint32_t kMaxSchemaNesting = 24;
// Errors of an invalid schema quoted in the reply to the app (the rest are counted).
inline constexpr uint32_t kMaxSchemaErrorsQuoted = 8;

// ---- Copying a message out of an app's heap (dataflow/message/copy.cc) ----
// Steps (bodies, references followed, oneof cases resolved; both passes) one copy may take. The
// work is linear in the message's bytes (a few steps per 16 bytes at most), so a message within
// kDefaultMaxMessageBytes stays far below this; it is a backstop with its own error.
inline constexpr uint64_t kDefaultMaxCopyWork = 1ull << 25;

// ---- Calls ----
// Deadline of a call made without one.
inline constexpr std::chrono::nanoseconds kDefaultCallTimeout = 30s;
// Server handler threads per channel (ChannelOptions::handler_threads): a small pool, so one slow
// handler does not hold up every other call of the channel.
inline constexpr int kDefaultHandlerThreads = 4;
// Pause between tries of a wait_for_ready call (CallOptions::wait_for_ready), doubling up to the
// max.
inline constexpr std::chrono::nanoseconds kWaitForReadyInitialBackoff = 10ms;
inline constexpr std::chrono::nanoseconds kWaitForReadyMaxBackoff = 1s;

// ---- Runtime scheduling ----
// How long a runtime thread keeps polling an idle queue before it sleeps on its eventfds.
inline constexpr std::chrono::nanoseconds kDefaultSpinBudget = 50us;
// RPCs one operator takes from one queue in one round of its graph: bounds the work one
// connection gets per round, so a flooding app cannot stall the others on its runtime.
inline constexpr size_t kDefaultOperatorBatch = 32;
// Bytes of messages the daemon copies for one connection per turn (its calls' requests, its
// replies), on average: each turn earns this much credit (up to one turn's worth) and a copy costs
// its bytes; a connection in debt sits out its turns until paid back. So a 16 MB call costs its
// sender 16 turns, and another app's small calls are not held behind a stream of big ones.
inline constexpr uint64_t kDefaultRoundCopyBytes = 1ull << 20;
// Rpc descriptors one thread keeps for reuse (more are freed when given back).
inline constexpr size_t kRpcPoolPerThread = 65536;
// Attempts of one call that may be delivered (the first, retries, mirrors, fan-outs together);
// past it a forked attempt fails with RESOURCE_EXHAUSTED instead of being delivered.
inline constexpr uint32_t kMaxAttemptsPerCall = 4;
// A private copy of a message (a policy's time-of-check copy) whose buffer is larger than this is
// freed when its call drops it; smaller ones go back to their pool for the next call.
inline constexpr uint64_t kMaxPooledPrivateMessageBytes = 64u << 10;
// Idle private copies one pool keeps (so at most this x kMaxPooledPrivateMessageBytes bytes).
inline constexpr size_t kMaxIdlePrivateMessages = 256;

// ---- App library (libmrpc) ----
// How long libmrpc waits for mrpcd's answer to Hello or RegisterService before giving up.
inline constexpr std::chrono::nanoseconds kAppControlReplyTimeout = 5s;
// Reconnection after the daemon went away: first wait, doubled after each failure up to the max.
inline constexpr std::chrono::nanoseconds kReconnectInitialBackoff = 10ms;
inline constexpr std::chrono::nanoseconds kReconnectMaxBackoff = 1s;
// While its completion thread spins, how often libmrpc looks at the app socket (daemon loss,
// registration replies).
inline constexpr std::chrono::nanoseconds kAppSocketCheckInterval = 1ms;
// The longest completion-thread spin budget a channel accepts (ChannelOptions::spin_budget,
// $MRPC_SPIN_BUDGET_US); more is surely a mistake (a thread spinning that long is a busy loop).
inline constexpr std::chrono::nanoseconds kMaxSpinBudget = 1s;
// Entries that need no action from mrpcd soon (kRelease: a receive-region block given back) are
// posted without ringing its doorbell; a busy app's next kCall carries them. When the app goes
// idle with such entries posted and mrpcd asleep, libmrpc rings it after this long.
inline constexpr std::chrono::nanoseconds kQuietEntryNoticeDelay = 1ms;
// Entries can also arrive or be posted while libmrpc's completion thread sleeps without ringing it:
// a kRelease posted quietly on an app thread (a response dropped there), a kReplyDone mrpcd posts
// without a doorbell (a served response it no longer reads). While the app holds response blocks
// or has responses awaiting kReplyDone, that thread's sleep is bounded: first by
// kQuietEntryNoticeDelay, doubling after each timer wake-up that found nothing to do, up to this.
inline constexpr std::chrono::nanoseconds kHeldBlockRecheckMax = 64ms;
// The largest max_calls_in_flight and max_calls_served libmrpc accepts in a Welcome (it sizes its
// call tables by them); mrpcd refuses a configuration above them.
inline constexpr uint32_t kMaxCallsInFlightAccepted = 1u << 20;
inline constexpr uint32_t kMaxCallsServedAccepted = 1u << 20;

// While mrpcd's runtime is busy, how often it looks for new app and control connections (it
// always looks right after waking, which is when a connection attempt wakes it).
inline constexpr std::chrono::nanoseconds kDaemonListenerCheckInterval = 1ms;

// ---- Policy language (.mpol) ----
// Binary operators in one run of an expression (between `;`, `{`, `}` and `,` at the same
// bracket level). Checked on the tokens before parsing: ANTLR's prediction is super-linear on
// long operator chains (docs/security.md, finding 8); no real policy comes close.
inline constexpr uint32_t kMaxPolicyOperatorChain = 256;
// Largest .mpol file the parser reads (bytes).
inline constexpr uint64_t kMaxPolicyFileBytes = 1ull << 20;
// Deepest nesting of blocks, brackets, unary operators and type arguments in a .mpol file. Checked
// on the tokens before parsing, so no input can exhaust the parser's stack.
inline constexpr uint32_t kMaxPolicyNestingDepth = 64;
// Errors reported per run before the compiler stops ("too many errors, stopping").
inline constexpr uint32_t kMaxPolicyErrors = 50;
// Iterations of a `for i in A..B` loop (its bounds are constants).
inline constexpr int64_t kMaxRangeIterations = 1024;
// Largest capacity a state container may declare.
inline constexpr int64_t kMaxContainerCapacity = 1 << 20;
// Longest string literal (bytes, after escapes).
inline constexpr uint64_t kMaxStringLiteralBytes = 4096;
// Deepest chain of `import "x.mpol"` (cycles are reported separately).
inline constexpr uint32_t kMaxPolicyImportDepth = 16;
// Work one handler may do, counted by the verifier before the policy loads: every statement and
// every expression node is one unit, and a `for` multiplies its body by its iteration bound (a
// range's length, or kMaxForEachIterations), so nested loops multiply.
inline constexpr int64_t kMaxHandlerWork = 1 << 22;
// Elements a `for` over a list, set or repeated field may visit. A longer collection is a
// run-time fault: the handler stops and the call is rejected with RESOURCE_EXHAUSTED.
inline constexpr int64_t kMaxForEachIterations = 1024;
// Elements of a list, set or map param (its default is checked by the verifier, the attached
// value by the daemon); a `for` over a param is bounded by it.
inline constexpr int64_t kMaxParamElements = 256;
// Longest string value a handler may compute (`+`, `str`, `lower`, ...); longer is a run-time
// fault (the call is rejected with RESOURCE_EXHAUSTED). Strings read from a message are not
// copied and not bounded by it.
inline constexpr uint64_t kMaxPolicyStringBytes = 64u << 10;
// Longest string stored in state (a string state, a container key or value); storing a longer
// one is a run-time fault. The verifier sizes state with it.
inline constexpr uint64_t kMaxStateStringBytes = 256;
// Largest response a `map<K, response>` stores; a bigger one is not stored (counted).
inline constexpr uint64_t kMaxStoredResponseBytes = 32u << 10;
// Worst-case bytes of one attachment's state (every container full of its largest entries),
// checked by the verifier with each capacity param at its default (the daemon checks the
// attached values).
inline constexpr uint64_t kMaxPolicyStateBytes = 256ull << 20;
// The LLVM part of one policy compile: the instructions its lowering may emit (before O2). LLVM's
// optimization and code generation grow with them (superlinearly in one function), so this bounds a
// compile's time and memory on the policy-control thread (a policy at the limit: see
// docs/security.md).
inline constexpr uint64_t kMaxPolicyInstructions = 1u << 12;

// Elements and bytes (of its string elements) of a local list a handler builds with
// `xs.append(x)`: an append past either is a run-time fault (the handler stops and the call is
// rejected with RESOURCE_EXHAUSTED), so a list is bounded like a string.
inline constexpr int64_t kMaxLocalListElements = 256;
inline constexpr uint64_t kMaxLocalListBytes = 64u << 10;
// Label keys a labelled metric may declare (`state calls: counter[label method, label code];`).
inline constexpr uint32_t kMaxMetricLabels = 8;
// Distinct label-value combinations one labelled metric of one attachment keeps. A call that
// brings a new combination past it is counted under the overflow series, whose every label value
// is "_other" (so the metric's total still equals what the policy counted). The verifier sizes
// state with it.
inline constexpr uint32_t kMaxMetricLabelSets = 256;
// Longest label value (bytes); a longer value is counted under the overflow series too.
inline constexpr uint64_t kMaxMetricLabelValueBytes = 128;
// Per-call variables a policy may declare (`call started: time;`), and the longest string or
// bytes value one may hold: assigning a longer one is a run-time fault (RESOURCE_EXHAUSTED).
// Together they bound what a policy keeps in each call's record.
inline constexpr uint32_t kMaxPolicyCallVariables = 16;
inline constexpr uint64_t kMaxPolicyCallVariableBytes = 256;

// ---- Daemon-to-daemon TCP transport (transports/tcp, docs/tcp-transport.md) ----
// Largest frame (fixed header, names, status text, metadata and payload together) a daemon
// accepts from a peer; a longer one closes the connection (logged).
inline constexpr uint32_t kMaxTcpFrameBytes = 32u << 20;
// Longest host name and app name a frame may carry (caller identity).
inline constexpr uint32_t kMaxTcpHostNameBytes = 255;
// Longest fully qualified service name a frame may carry.
inline constexpr uint32_t kMaxTcpServiceNameBytes = 1024;
// Longest status text a reply frame may carry.
inline constexpr uint32_t kMaxTcpStatusTextBytes = 4096;
// Bytes a connection may have queued for sending before new calls on it fail
// RESOURCE_EXHAUSTED (back-pressure from a slow peer).
inline constexpr uint64_t kMaxTcpSendQueueBytes = 64ull << 20;
// Calls in flight on one daemon-to-daemon connection (its table of calls awaiting replies).
inline constexpr uint32_t kMaxTcpCallsPerConnection = 1u << 16;
// Remote endpoints one service may list in the configuration file.
inline constexpr uint32_t kMaxRemoteEndpointsPerService = 64;
// Daemon-to-daemon connections one daemon accepts at once; more are closed at accept.
inline constexpr uint32_t kMaxTcpPeerConnections = 1024;
// How long a connect to a peer daemon may take before its calls fail UNAVAILABLE.
inline constexpr std::chrono::nanoseconds kTcpConnectTimeout = 2s;
// Keepalive of a link with calls waiting on it: a ping after this long without any frame from the
// peer, and the link is closed (its calls fail UNAVAILABLE) after kTcpKeepaliveTimeout without
// one: a silent peer (a partition) is detected, not only a closed one.
inline constexpr std::chrono::nanoseconds kTcpKeepaliveInterval = 500ms;
inline constexpr std::chrono::nanoseconds kTcpKeepaliveTimeout = 2s;
// After a link to a peer fails, new calls to that peer fail at once (UNAVAILABLE) until a
// reconnect is due: the wait doubles from kTcpReconnectBackoffMin up to kTcpReconnectBackoffMax
// while connecting keeps failing, and resets once a link is open.
inline constexpr std::chrono::nanoseconds kTcpReconnectBackoffMin = 20ms;
inline constexpr std::chrono::nanoseconds kTcpReconnectBackoffMax = 1s;
// Largest configuration file mrpcd reads (-c FILE).
inline constexpr uint64_t kMaxConfigFileBytes = 1ull << 20;
// The upgrade gate (graph.h): a replaced operator version stays, for the replies of calls it
// admitted, until the last of them ends or the latest of their deadlines passes, and never longer
// than this after it was replaced (calls with no deadline, replies that never come back).
inline constexpr std::chrono::nanoseconds kMaxUpgradeGateWait = 60s;

}  // namespace mrpc::limits
