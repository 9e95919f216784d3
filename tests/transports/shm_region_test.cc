#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cstring>

#include "mrpc/transports/shm/region.h"

using mrpc::StatusCode;
using mrpc::shm::kFixedSizeSeals;
using mrpc::shm::kReceiveRegionSeals;
using mrpc::shm::Mapping;
using mrpc::shm::RegionAccess;
using mrpc::shm::SharedRegion;
using mrpc::shm::UniqueFd;

namespace {
constexpr uint64_t kBytes = 1 << 20;

UniqueFd duplicate(int fd) {
  return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}
}  // namespace

TEST_CASE("a created region is zero-filled, writable here, and sealed against resizing") {
  auto region = SharedRegion::create("test-heap", kBytes);
  REQUIRE(region.ok());
  CHECK(region->size() == kBytes);
  CHECK(region->data()[kBytes - 1] == std::byte{0});
  region->data()[0] = std::byte{42};
  auto seals = mrpc::shm::region_seals(region->fd());
  REQUIRE(seals.ok());
  CHECK((*seals & kFixedSizeSeals) == kFixedSizeSeals);
  CHECK(::ftruncate(region->fd(), kBytes / 2) != 0);
  CHECK(::ftruncate(region->fd(), kBytes * 2) != 0);
  CHECK(::fcntl(region->fd(), F_ADD_SEALS, F_SEAL_WRITE) != 0);  // F_SEAL_SEAL
}

TEST_CASE("the peer sees writes to a region through its own mapping") {
  auto region = SharedRegion::create("test-rings", kBytes);
  REQUIRE(region.ok());
  auto peer = SharedRegion::attach(duplicate(region->fd()), kBytes, kFixedSizeSeals,
                                   RegionAccess::kReadWrite);
  REQUIRE(peer.ok());
  CHECK(peer->data() != region->data());
  region->data()[123] = std::byte{7};
  CHECK(peer->data()[123] == std::byte{7});
  peer->data()[456] = std::byte{9};
  CHECK(region->data()[456] == std::byte{9});
}

TEST_CASE("a receive region stays writable for its creator but maps only read-only for the peer") {
  auto region = SharedRegion::create_receive("test-receive", kBytes);
  REQUIRE(region.ok());
  region->data()[10] = std::byte{5};  // the creator's mapping was made before the seal

  auto seals = mrpc::shm::region_seals(region->fd());
  REQUIRE(seals.ok());
  CHECK((*seals & kReceiveRegionSeals) == kReceiveRegionSeals);

  auto writable = SharedRegion::attach(duplicate(region->fd()), kBytes, kReceiveRegionSeals,
                                       RegionAccess::kReadWrite);
  REQUIRE_FALSE(writable.ok());
  CHECK(writable.status().code() == StatusCode::kPermissionDenied);

  auto read_only = SharedRegion::attach(duplicate(region->fd()), kBytes, kReceiveRegionSeals,
                                        RegionAccess::kReadOnly);
  REQUIRE(read_only.ok());
  CHECK(read_only->data()[10] == std::byte{5});
  // Nor can the read-only mapping be upgraded.
  CHECK(::mprotect(read_only->data(), 4096, PROT_READ | PROT_WRITE) != 0);
  CHECK(::ftruncate(read_only->fd(), kBytes / 2) != 0);
}

TEST_CASE("attach refuses a region of the wrong size") {
  auto region = SharedRegion::create("test-size", kBytes);
  REQUIRE(region.ok());
  auto attached = SharedRegion::attach(duplicate(region->fd()), kBytes * 2, kFixedSizeSeals,
                                       RegionAccess::kReadOnly);
  REQUIRE_FALSE(attached.ok());
  CHECK(attached.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("attach refuses an unsealed memfd that could shrink under the mapping") {
  UniqueFd fd(::memfd_create("test-unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  REQUIRE(fd.valid());
  REQUIRE(::ftruncate(fd.get(), kBytes) == 0);
  auto attached =
      SharedRegion::attach(std::move(fd), kBytes, kFixedSizeSeals, RegionAccess::kReadOnly);
  REQUIRE_FALSE(attached.ok());
  CHECK(attached.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("attach refuses a receive region without the future-write seal") {
  auto region = SharedRegion::create("test-no-future-write", kBytes);
  REQUIRE(region.ok());
  auto attached = SharedRegion::attach(duplicate(region->fd()), kBytes, kReceiveRegionSeals,
                                       RegionAccess::kReadOnly);
  REQUIRE_FALSE(attached.ok());
  CHECK(attached.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("attach refuses an fd that is not a file") {
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  UniqueFd write_end(pipe_fds[1]);
  auto attached =
      SharedRegion::attach(UniqueFd(pipe_fds[0]), kBytes, kFixedSizeSeals, RegionAccess::kReadOnly);
  REQUIRE_FALSE(attached.ok());
  CHECK(attached.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("a mapping moves without double unmapping") {
  auto region = SharedRegion::create("test-move", kBytes);
  REQUIRE(region.ok());
  auto mapping = Mapping::map(region->fd(), kBytes, RegionAccess::kReadOnly);
  REQUIRE(mapping.ok());
  Mapping moved = std::move(*mapping);
  CHECK(mapping->data() == nullptr);
  REQUIRE(moved.data() != nullptr);
  region->data()[1] = std::byte{3};
  CHECK(moved.data()[1] == std::byte{3});
}
