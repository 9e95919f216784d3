// Status: the outcome of an RPC or of any operation that can fail on the datapath.
// Codes are gRPC's, so a status crosses from mrpc to gRPC and back unchanged. Errors are values:
// nothing on the datapath throws.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace mrpc {

enum class StatusCode : uint32_t {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};
inline constexpr uint32_t kMaxStatusCode = 16;

// The canonical upper-case name, as gRPC spells it ("DEADLINE_EXCEEDED").
std::string_view status_code_name(StatusCode code);
// Inverse of status_code_name; false if `name` is not a status code.
bool status_code_from_name(std::string_view name, StatusCode& out);
// A code received from outside (a ring entry, a peer): anything unknown becomes kUnknown.
StatusCode status_code_from_wire(uint32_t raw);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "DEADLINE_EXCEEDED: call took longer than 5ms"
  std::string to_string() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace mrpc
