// Expected<T>: a value or the Status that says why there is none (LLVM's Expected, Rust's Result).
#pragma once

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <variant>

#include "mrpc/base/status.h"

namespace mrpc {

template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value)
      : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Expected(Status status) : state_(std::in_place_index<1>, std::move(status)) {  // NOLINT
    assert(!std::get<1>(state_).ok() && "Expected built from an OK status carries no value");
  }

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // The value. On an error: prints the status ("value() of an error: UNAVAILABLE: ...") to stderr
  // and aborts; check ok() first where an error is possible.
  T& value() & {
    check_value();
    return *std::get_if<0>(&state_);
  }
  const T& value() const& {
    check_value();
    return *std::get_if<0>(&state_);
  }
  T&& value() && {
    check_value();
    return std::move(*std::get_if<0>(&state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // The error; OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<1>(state_); }

 private:
  void check_value() const {
    if (ok()) return;
    std::fprintf(stderr, "mrpc: Expected::value() of an error: %s\n",
                 std::get<1>(state_).to_string().c_str());
    std::abort();
  }

  std::variant<T, Status> state_;
};

}  // namespace mrpc

// Returns the error of an Expected or Status expression from the enclosing function.
#define MRPC_TRY_STATUS(expr)                    \
  do {                                           \
    ::mrpc::Status mrpc_status_ = (expr);        \
    if (!mrpc_status_.ok()) return mrpc_status_; \
  } while (0)
