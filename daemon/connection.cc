// Connection: posting completions to an app and freeing what the daemon placed in its receive
// region. See connection.h.
#include "connection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "mrpc/base/limits.h"

namespace mrpc {

bool Connection::post(const shm::RingEntry& entry) {
  return post_to_app(entry, /*quiet=*/false);
}

bool Connection::post_quiet(const shm::RingEntry& entry) {
  return post_to_app(entry, /*quiet=*/true);
}

bool Connection::post_to_app(const shm::RingEntry& entry, bool quiet) {
  if (broken) return false;
  if (!overflow.empty()) {
    overflow.push_back(entry);
    return true;
  }
  Status pushed = quiet ? completions.push_quiet(entry) : completions.push(entry);
  if (pushed.ok()) return true;
  if (pushed.code() == StatusCode::kResourceExhausted) {
    overflow.push_back(entry);
    return true;
  }
  spdlog::warn("connection {}: completion ring corrupt ({}); closing it", id, pushed.to_string());
  broken = true;
  return false;
}

bool Connection::flush_overflow() {
  if (overflow.empty() || broken) return false;
  bool moved = false;
  while (!overflow.empty()) {
    Status pushed = completions.push(overflow.front());
    if (!pushed.ok()) {
      if (pushed.code() != StatusCode::kResourceExhausted) broken = true;
      break;
    }
    overflow.pop_front();
    moved = true;
  }
  return moved;
}

void Connection::post_reply_done(SlotHandle delivery) {
  const IncomingCall* call = incoming.find(delivery);
  if (call != nullptr && call->replied) incoming.erase(delivery);
  post_quiet(shm::make_ring_entry(shm::EntryKind::kReplyDone, delivery));
}

void Connection::post_call_done(uint64_t call_id, const Status& status, uint64_t response) {
  shm::RingEntry done = shm::make_ring_entry(shm::EntryKind::kCallDone, call_id);
  done.status = static_cast<uint32_t>(status.code());
  done.message_offset = response;
  const std::string& text = status.message();
  if (!status.ok() && !text.empty()) {
    const uint64_t length = std::min<uint64_t>(text.size(), limits::kMaxStatusDetailBytes);
    uint64_t at = shm::kNoOffset;
    if (auto block = receive_allocator->allocate(length, 1); block.ok()) {
      at = *block;
      report_receive_usage();
    } else if (!spare_detail_blocks.empty()) {  // the region is full: the text still gets through
      at = spare_detail_blocks.back();
      spare_detail_blocks.pop_back();
      lent_detail_blocks.push_back(at);
    }
    if (at != shm::kNoOffset) {
      std::memcpy(receive.data() + at, text.data(), length);
      done.detail_offset = at;
      done.detail_length = static_cast<uint32_t>(length);
    }
  }
  if (!post(done)) {
    (void)free_received(response);
    (void)free_received(done.detail_offset);
  }
}

Status Connection::free_received(uint64_t offset) {
  if (offset == shm::kNoOffset) return {};
  for (size_t i = 0; i < lent_detail_blocks.size(); ++i) {
    if (lent_detail_blocks[i] != offset) continue;
    lent_detail_blocks[i] = lent_detail_blocks.back();
    lent_detail_blocks.pop_back();
    spare_detail_blocks.push_back(offset);  // capacity reserved at Hello: no allocation
    return {};
  }
  Status freed = receive_allocator->free(offset);
  report_receive_usage();
  return freed;
}

void Connection::report_receive_usage(bool closing) {
  if (receive_bytes_total == nullptr || receive_allocator == nullptr) return;
  // Spare error-text blocks are the daemon's own, not messages the app holds.
  uint64_t used =
      closing ? 0
              : receive_allocator->used_bytes() - spare_detail_blocks.size() * detail_block_bytes;
  if (used >= receive_bytes_reported)
    receive_bytes_total->fetch_add(used - receive_bytes_reported, std::memory_order_relaxed);
  else
    receive_bytes_total->fetch_sub(receive_bytes_reported - used, std::memory_order_relaxed);
  receive_bytes_reported = used;
}

}  // namespace mrpc
