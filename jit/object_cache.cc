// ObjectCache (mrpc/jit/object_cache.h): hash-checked entries in a private directory.
#include "mrpc/jit/object_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <llvm/ADT/ArrayRef.h>
#include <llvm/Support/SHA256.h>

#include "mrpc/base/limits.h"

namespace mrpc::jit {
namespace {

constexpr char kEntryMagic[8] = {'M', 'R', 'P', 'C', 'O', 'B', 'J', '1'};
constexpr size_t kHeaderBytes = sizeof(kEntryMagic) + 32;

std::array<uint8_t, 32> sha256(std::string_view bytes) {
  return llvm::SHA256::hash(
      llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

std::string hex(const uint8_t* bytes, size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
  return out;
}

// Owned by this user and writable by no one else.
bool safe_owner_and_mode(const struct stat& info) {
  return info.st_uid == geteuid() && (info.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

}  // namespace

Expected<std::unique_ptr<ObjectCache>> ObjectCache::open(const std::string& directory) {
  if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("cannot create the object cache directory {}: {}", directory,
                              std::strerror(errno)));
  }
  struct stat info {};
  if (::lstat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode) ||
      !safe_owner_and_mode(info)) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("the object cache directory {} must be a directory owned by uid "
                              "{} and writable by no one else (it has uid {}, mode {:o})",
                              directory, geteuid(), info.st_uid, info.st_mode & 07777));
  }
  return std::unique_ptr<ObjectCache>(new ObjectCache(directory));
}

std::string ObjectCache::path_of(std::string_view key) const {
  const auto digest = sha256(key);
  return directory_ + "/" + hex(digest.data(), 16) + ".mrpcobj";
}

std::optional<std::string> ObjectCache::load(std::string_view key) {
  const std::string path = path_of(key);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    ++misses_;
    return std::nullopt;
  }
  struct stat info {};
  std::string bytes;
  const bool fits = ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode) && safe_owner_and_mode(info) &&
                    static_cast<uint64_t>(info.st_size) <= limits::kMaxCachedObjectBytes;
  if (fits) {
    bytes.resize(static_cast<size_t>(info.st_size));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    bytes.resize(done);
  }
  ::close(fd);
  if (!fits || bytes.size() < kHeaderBytes ||
      std::memcmp(bytes.data(), kEntryMagic, sizeof(kEntryMagic)) != 0) {
    ++rejected_;
    return std::nullopt;
  }
  const auto digest = sha256(std::string_view(bytes).substr(kHeaderBytes));
  if (std::memcmp(digest.data(), bytes.data() + sizeof(kEntryMagic), 32) != 0) {
    ++rejected_;
    return std::nullopt;
  }
  ++hits_;
  bytes.erase(0, kHeaderBytes);
  return bytes;
}

bool ObjectCache::store(std::string_view key, std::string_view payload) {
  const std::string path = path_of(key);
  const std::string temporary =
      fmt::format("{}.tmp.{}.{}", path, ::getpid(), temporaries_.fetch_add(1));
  const int fd =
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    ++write_failures_;
    return false;
  }
  const auto digest = sha256(payload);
  std::string bytes(kEntryMagic, sizeof(kEntryMagic));
  bytes.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  bytes.append(payload);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  const bool written = done == bytes.size() && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(temporary.c_str(), path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    ++write_failures_;
    return false;
  }
  ++stores_;
  return true;
}

ObjectCacheStats ObjectCache::stats() const {
  return ObjectCacheStats{.hits = hits_.load(),
                          .misses = misses_.load(),
                          .rejected = rejected_.load(),
                          .stores = stores_.load(),
                          .write_failures = write_failures_.load()};
}

}  // namespace mrpc::jit
