// Replaces the global operator new and delete (every form) of the test binary that includes this
// header, so a test can count heap allocations: those made on threads that set
// `count_allocations_here`, or on every thread while `count_allocations_everywhere` is set.
// Include it in exactly ONE source file of a test executable (it defines the operators).
// Every form allocates with malloc and frees with free, so a sanitizer never sees new paired
// with free (LLVM uses the nothrow forms).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

// GCC sees the replacement's free() inlined into allocators and warns of a mismatch it cannot have.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace mrpc::testing {
inline std::atomic<uint64_t> counted_allocations{0};
inline std::atomic<bool> count_allocations_everywhere{false};
inline thread_local bool count_allocations_here = false;

inline void note_allocation() {
  if (count_allocations_here || count_allocations_everywhere.load(std::memory_order_relaxed))
    counted_allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace mrpc::testing

__attribute__((noinline)) void* operator new(std::size_t bytes) {
  mrpc::testing::note_allocation();
  if (void* memory = std::malloc(bytes == 0 ? 1 : bytes)) return memory;
  throw std::bad_alloc();
}
void* operator new[](std::size_t bytes) {
  return operator new(bytes);
}
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept {
  mrpc::testing::note_allocation();
  return std::malloc(bytes == 0 ? 1 : bytes);
}
void* operator new[](std::size_t bytes, const std::nothrow_t& tag) noexcept {
  return operator new(bytes, tag);
}
__attribute__((noinline)) void operator delete(void* memory) noexcept {
  std::free(memory);
}
void operator delete[](void* memory) noexcept {
  std::free(memory);
}
__attribute__((noinline)) void operator delete(void* memory, std::size_t) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::size_t) noexcept {
  std::free(memory);
}
void operator delete(void* memory, const std::nothrow_t&) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, const std::nothrow_t&) noexcept {
  std::free(memory);
}
