// Expected<T>: a value or the Status that says why there is none (LLVM's Expected, Rust's Result).
#pragma once

#include <cassert>
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

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // The error; OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<1>(state_); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace mrpc

// Returns the error of an Expected or Status expression from the enclosing function.
#define MRPC_TRY_STATUS(expr)                    \
  do {                                           \
    ::mrpc::Status mrpc_status_ = (expr);        \
    if (!mrpc_status_.ok()) return mrpc_status_; \
  } while (0)
