// MRPC_ASSERT: our own bug. Prints the condition, the values involved and where, then aborts.
// Bad input from outside (an app, a peer, a policy file) never reaches an assertion: it becomes a
// Status returned to whoever sent it.
#pragma once

#include <fmt/format.h>

#include "mrpc/base/status.h"

namespace mrpc::detail {
[[noreturn]] void assertion_failed(const char* condition, const char* file, int line,
                                   const std::string& detail);
// The assertion's message: nothing, or a format string and its values.
inline std::string assertion_message() {
  return {};
}
template <typename... Args>
std::string assertion_message(fmt::format_string<Args...> format, Args&&... args) {
  return fmt::format(format, std::forward<Args>(args)...);
}
}  // namespace mrpc::detail

#define MRPC_ASSERT(cond, ...)                                                        \
  do {                                                                                \
    if (!(cond)) [[unlikely]] {                                                       \
      ::mrpc::detail::assertion_failed(#cond, __FILE__, __LINE__,                     \
                                       ::mrpc::detail::assertion_message(__VA_ARGS__)); \
    }                                                                                 \
  } while (0)

// MRPC_REQUIRE: bad input from outside. In a function returning Status (or Expected<T>), returns
// a Status with `code` and a message formatted from the rest (say the values involved) unless
// `cond` holds. Never aborts: the sender gets the error, the process carries on.
#define MRPC_REQUIRE(cond, code, ...)                            \
  do {                                                           \
    if (!(cond)) [[unlikely]] {                                  \
      return ::mrpc::Status((code), ::fmt::format(__VA_ARGS__)); \
    }                                                            \
  } while (0)
