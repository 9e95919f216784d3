// Routes protobuf's own log (e.g. "String field ... contains invalid UTF-8 data", descriptor
// errors without a collector) into spdlog, so hostile input from apps cannot spam the daemon's
// stderr. Process-wide (protobuf's handler is global); idempotent; any thread.
#pragma once

namespace mrpc {

// protobuf's INFO, WARNING and ERROR messages are about input the daemon was given: they go to
// spdlog at debug level, prefixed "protobuf:"; FATAL goes to spdlog's critical (protobuf then
// aborts as it always does).
void route_protobuf_log_to_spdlog();

}  // namespace mrpc
