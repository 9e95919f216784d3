// MRPC_ASSERT: our own bug. Prints the condition, the values involved and where, then aborts.
// Bad input from outside (an app, a peer, a policy file) never reaches an assertion: it becomes a
// Status returned to whoever sent it.
#pragma once

#include <fmt/format.h>

namespace mrpc::detail {
[[noreturn]] void assertion_failed(const char* condition, const char* file, int line,
                                   const std::string& detail);
}  // namespace mrpc::detail

#define MRPC_ASSERT(cond, ...)                                                        \
  do {                                                                                \
    if (!(cond)) [[unlikely]] {                                                       \
      ::mrpc::detail::assertion_failed(#cond, __FILE__, __LINE__,                     \
                                       ::fmt::format("" __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                                 \
  } while (0)
