#include "mrpc/base/status.h"

#include <array>

#include <fmt/format.h>

namespace mrpc {
namespace {
constexpr std::array<std::string_view, kMaxStatusCode + 1> kNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
}  // namespace

std::string_view status_code_name(StatusCode code) {
  auto index = static_cast<uint32_t>(code);
  return index <= kMaxStatusCode ? kNames[index] : "UNKNOWN";
}

bool status_code_from_name(std::string_view name, StatusCode& out) {
  for (uint32_t i = 0; i <= kMaxStatusCode; ++i) {
    if (kNames[i] == name) {
      out = static_cast<StatusCode>(i);
      return true;
    }
  }
  return false;
}

StatusCode status_code_from_wire(uint32_t raw) {
  return raw <= kMaxStatusCode ? static_cast<StatusCode>(raw) : StatusCode::kUnknown;
}

std::string Status::to_string() const {
  if (message_.empty()) return std::string(status_code_name(code_));
  return fmt::format("{}: {}", status_code_name(code_), message_);
}

}  // namespace mrpc
