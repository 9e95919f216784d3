#include "mrpc/transports/shm/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace mrpc::shm {

static_assert(kFixedSizeSeals == (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW));
static_assert(kReceiveRegionSeals == (kFixedSizeSeals | F_SEAL_FUTURE_WRITE));

namespace {

Status errno_status(StatusCode code, const std::string& what) {
  return Status(code, fmt::format("{}: {}", what, std::strerror(errno)));
}

Expected<UniqueFd> create_memfd(const std::string& name, uint64_t bytes) {
  if (bytes == 0) return Status(StatusCode::kInvalidArgument, "a region of 0 bytes");
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd)
    return errno_status(StatusCode::kResourceExhausted, fmt::format("memfd_create {}", name));
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return errno_status(StatusCode::kResourceExhausted,
                        fmt::format("sizing region {} to {} bytes", name, bytes));
  }
  return fd;
}

Status add_seals(int fd, int seals) {
  if (::fcntl(fd, F_ADD_SEALS, seals) != 0) {
    return errno_status(StatusCode::kInternal, fmt::format("adding seals {:#x}", seals));
  }
  return Status();
}

}  // namespace

// ---- Mapping ----

Expected<Mapping> Mapping::map(int fd, uint64_t bytes, RegionAccess access) {
  if (bytes == 0) return Status(StatusCode::kInvalidArgument, "mapping 0 bytes");
  const bool writable = access == RegionAccess::kReadWrite;
  const int protection = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* address = ::mmap(nullptr, bytes, protection, MAP_SHARED, fd, 0);
  if (address == MAP_FAILED) {
    const StatusCode code = errno == EPERM || errno == EACCES ? StatusCode::kPermissionDenied
                                                              : StatusCode::kResourceExhausted;
    return errno_status(
        code, fmt::format("mapping {} bytes {}", bytes, writable ? "read-write" : "read-only"));
  }
  return Mapping(static_cast<std::byte*>(address), bytes, writable);
}

Mapping::~Mapping() {
  unmap();
}

Mapping::Mapping(Mapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      writable_(other.writable_) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    unmap();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    writable_ = other.writable_;
  }
  return *this;
}

void Mapping::unmap() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

// ---- SharedRegion ----

Expected<SharedRegion> SharedRegion::create(const std::string& name, uint64_t bytes) {
  auto fd = create_memfd(name, bytes);
  if (!fd) return fd.status();
  MRPC_TRY_STATUS(add_seals(fd->get(), kFixedSizeSeals));
  auto mapping = Mapping::map(fd->get(), bytes, RegionAccess::kReadWrite);
  if (!mapping) return mapping.status();
  return SharedRegion(std::move(*fd), std::move(*mapping));
}

Expected<SharedRegion> SharedRegion::create_receive(const std::string& name, uint64_t bytes) {
  auto fd = create_memfd(name, bytes);
  if (!fd) return fd.status();
  // Map writable first: F_SEAL_FUTURE_WRITE keeps existing mappings writable and refuses new ones.
  auto mapping = Mapping::map(fd->get(), bytes, RegionAccess::kReadWrite);
  if (!mapping) return mapping.status();
  MRPC_TRY_STATUS(add_seals(fd->get(), kReceiveRegionSeals));
  return SharedRegion(std::move(*fd), std::move(*mapping));
}

Expected<SharedRegion> SharedRegion::attach(UniqueFd fd, uint64_t expected_bytes,
                                            int required_seals, RegionAccess access) {
  auto size = region_file_bytes(fd.get());
  if (!size) return size.status();
  if (*size != expected_bytes) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("region is {} bytes, expected {}", *size, expected_bytes));
  }
  auto seals = region_seals(fd.get());
  if (!seals) return seals.status();
  if ((*seals & required_seals) != required_seals) {
    return Status(
        StatusCode::kInvalidArgument,
        fmt::format("region seals are {:#x}, expected at least {:#x}", *seals, required_seals));
  }
  auto mapping = Mapping::map(fd.get(), expected_bytes, access);
  if (!mapping) return mapping.status();
  return SharedRegion(std::move(fd), std::move(*mapping));
}

Expected<int> region_seals(int fd) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) return errno_status(StatusCode::kInvalidArgument, "reading region seals");
  return seals;
}

Expected<uint64_t> region_file_bytes(int fd) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) return errno_status(StatusCode::kInvalidArgument, "fstat of region");
  if (!S_ISREG(info.st_mode)) {
    return Status(StatusCode::kInvalidArgument, "region fd is not a regular file (memfd)");
  }
  return static_cast<uint64_t>(info.st_size);
}

}  // namespace mrpc::shm
