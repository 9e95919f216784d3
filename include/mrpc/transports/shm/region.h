// Shared-memory regions backed by sealed memfds (see protocol.h for the four per connection).
//
// The daemon creates every region; the app attaches to what it receives over the app socket and
// verifies size and seals before mapping, so a mapping never faults (no shrinking) and the
// receive region can never be written by the app (F_SEAL_FUTURE_WRITE).
// Objects here are owned by one thread at a time; the memory they map is shared with the peer
// process and must be treated as untrusted by the daemon (see protocol.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "mrpc/base/expected.h"
#include "mrpc/base/status.h"
#include "mrpc/transports/shm/unique_fd.h"

namespace mrpc::shm {

enum class RegionAccess { kReadWrite, kReadOnly };

// Seals every region carries: its size is fixed forever and no one can add or remove seals.
inline constexpr int kFixedSizeSeals =
    0x0001 /*F_SEAL_SEAL*/ | 0x0002 /*F_SEAL_SHRINK*/ | 0x0004 /*F_SEAL_GROW*/;
// Seals of a receive region: also no new writable mapping (only its creator writes it).
inline constexpr int kReceiveRegionSeals = kFixedSizeSeals | 0x0010 /*F_SEAL_FUTURE_WRITE*/;

// One mmap of a region; unmaps when destroyed. Move-only.
class Mapping {
 public:
  Mapping() = default;
  // Maps `bytes` of `fd` shared, at offset 0.
  static Expected<Mapping> map(int fd, uint64_t bytes, RegionAccess access);
  ~Mapping();
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  bool writable() const { return writable_; }

 private:
  Mapping(std::byte* data, uint64_t size, bool writable)
      : data_(data), size_(size), writable_(writable) {}
  void unmap();

  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
  bool writable_ = false;
};

// A memfd and this process's mapping of it.
class SharedRegion {
 public:
  SharedRegion() = default;

  // A zero-filled region of `bytes`, sealed with kFixedSizeSeals, mapped read-write here.
  // For the heap and the rings. `name` shows in /proc/PID/fd and /proc/PID/maps.
  static Expected<SharedRegion> create(const std::string& name, uint64_t bytes);
  // A zero-filled region of `bytes` mapped read-write here, then sealed with kReceiveRegionSeals:
  // this mapping stays writable, every later mapping (the peer's) can only be read-only.
  static Expected<SharedRegion> create_receive(const std::string& name, uint64_t bytes);
  // Takes a region fd received from the peer: checks it is a memfd of exactly `expected_bytes`
  // carrying at least `required_seals`, then maps it with `access`. INVALID_ARGUMENT (and the fd
  // closed) if any check fails.
  static Expected<SharedRegion> attach(UniqueFd fd, uint64_t expected_bytes, int required_seals,
                                       RegionAccess access);

  int fd() const { return fd_.get(); }
  std::byte* data() const { return mapping_.data(); }
  uint64_t size() const { return mapping_.size(); }
  bool valid() const { return fd_.valid(); }
  const Mapping& mapping() const { return mapping_; }

 private:
  SharedRegion(UniqueFd fd, Mapping mapping) : fd_(std::move(fd)), mapping_(std::move(mapping)) {}

  UniqueFd fd_;
  Mapping mapping_;
};

// The seals on `fd` (F_GET_SEALS), or INVALID_ARGUMENT if it is not a sealable file.
Expected<int> region_seals(int fd);
// The size of the file behind `fd` (fstat).
Expected<uint64_t> region_file_bytes(int fd);

}  // namespace mrpc::shm
