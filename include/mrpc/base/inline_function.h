// InlineFunction<R(Args...), N>: a move-only callable holder that keeps callables of up to N bytes
// inside itself (no heap allocation), like std::function with a larger small-buffer and without
// the copy requirement. Larger callables (or ones whose move may throw) go to the heap, as
// std::function's do. libmrpc's completions are InlineFunctions so that the per-call callback
// path allocates nothing (a generated stub's wrapper around an app's std::function fits).
//
// Not thread-safe (like std::function): one owner at a time; calling it is the owner's business.
#pragma once

#include <cstddef>
#include <functional>
#include <new>
#include <type_traits>
#include <utility>

namespace mrpc {

namespace detail {
template <class D>
inline constexpr bool kIsStdFunction = false;
template <class Sig>
inline constexpr bool kIsStdFunction<std::function<Sig>> = true;
}  // namespace detail

template <class Signature, size_t InlineBytes = 64>
class InlineFunction;

template <class R, class... Args, size_t InlineBytes>
class InlineFunction<R(Args...), InlineBytes> {
 public:
  // Whether a callable of type D is kept inline: making an InlineFunction of it allocates nothing.
  template <class D>
  static constexpr bool kStoredInline =
      sizeof(D) <= InlineBytes &&
      alignof(D) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<D>;

  InlineFunction() noexcept = default;
  InlineFunction(std::nullptr_t) noexcept {}  // NOLINT: as std::function

  template <class F, class D = std::decay_t<F>,
            class = std::enable_if_t<!std::is_same_v<D, InlineFunction> &&
                                     std::is_invocable_r_v<R, D&, Args...>>>
  InlineFunction(F&& f) {  // NOLINT: implicit, as std::function
    // An empty std::function or a null function pointer makes an empty InlineFunction.
    if constexpr (std::is_pointer_v<D> || std::is_member_pointer_v<D> ||
                  detail::kIsStdFunction<D>) {
      if (!f) return;
    }
    if constexpr (kStoredInline<D>) {
      ::new (static_cast<void*>(storage_)) D(std::forward<F>(f));
      ops_ = &kInlineOps<D>;
    } else {
      *reinterpret_cast<D**>(storage_) = new D(std::forward<F>(f));
      ops_ = &kHeapOps<D>;
    }
  }

  InlineFunction(InlineFunction&& other) noexcept { take(other); }
  InlineFunction& operator=(InlineFunction&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  InlineFunction& operator=(std::nullptr_t) noexcept {
    reset();
    return *this;
  }
  InlineFunction(const InlineFunction&) = delete;
  InlineFunction& operator=(const InlineFunction&) = delete;
  ~InlineFunction() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  // Calling an empty InlineFunction is a bug of the caller: std::bad_function_call, as
  // std::function.
  R operator()(Args... args) {
    if (ops_ == nullptr) throw std::bad_function_call();
    return ops_->invoke(storage_, std::forward<Args>(args)...);
  }

  // True if the callable lives inside (no heap block); for tests.
  bool stored_inline() const noexcept { return ops_ != nullptr && ops_->is_inline; }

 private:
  struct Ops {
    R (*invoke)(void* storage, Args&&... args);
    void (*relocate)(void* from, void* to) noexcept;  // move-construct into `to`, destroy `from`
    void (*destroy)(void* storage) noexcept;
    bool is_inline;
  };

  template <class D>
  static constexpr Ops kInlineOps = {
      [](void* storage, Args&&... args) -> R {
        return std::invoke(*static_cast<D*>(storage), std::forward<Args>(args)...);
      },
      [](void* from, void* to) noexcept {
        ::new (to) D(std::move(*static_cast<D*>(from)));
        static_cast<D*>(from)->~D();
      },
      [](void* storage) noexcept { static_cast<D*>(storage)->~D(); },
      true,
  };
  template <class D>
  static constexpr Ops kHeapOps = {
      [](void* storage, Args&&... args) -> R {
        return std::invoke(**static_cast<D**>(storage), std::forward<Args>(args)...);
      },
      [](void* from, void* to) noexcept { *static_cast<D**>(to) = *static_cast<D**>(from); },
      [](void* storage) noexcept { delete *static_cast<D**>(storage); },
      false,
  };

  void take(InlineFunction& other) noexcept {
    if (other.ops_ == nullptr) return;
    other.ops_->relocate(other.storage_, storage_);
    ops_ = std::exchange(other.ops_, nullptr);
  }
  void reset() noexcept {
    if (ops_ == nullptr) return;
    // Cleared first: a callable whose destructor drops the last reference to our owner must not
    // see itself destroyed twice.
    const Ops* ops = std::exchange(ops_, nullptr);
    ops->destroy(storage_);
  }

  alignas(std::max_align_t)
      std::byte storage_[InlineBytes < sizeof(void*) ? sizeof(void*) : InlineBytes];
  const Ops* ops_ = nullptr;
};

}  // namespace mrpc
