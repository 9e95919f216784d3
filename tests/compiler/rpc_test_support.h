// Test helpers shared by the evaluator and policy JIT tests: messages built in one region by
// their layout, a call view with its strings kept alive, and seeded random messages (well-formed
// or garbage, lying references included).
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "mrpc/base/random.h"
#include "mrpc/compiler/evaluator.h"
#include "mrpc/dataflow/rpc_view.h"
#include "mrpc/message/layout.h"

namespace mrpc::compiler::testing {

// Builds messages in one region by their layout, the way generated code lays them out.
class Region {
 public:
  Region() { bytes_.reserve(1 << 20); }

  uint64_t alloc(uint64_t n) {
    uint64_t at = (bytes_.size() + 7) & ~uint64_t{7};
    bytes_.resize(at + n, 0);
    return at;
  }
  uint64_t body(const MessageLayout& l) { return alloc(l.body_size()); }

  template <typename T>
  void put(uint64_t at, T v) {
    std::memcpy(bytes_.data() + at, &v, sizeof v);
  }
  void presence(uint64_t body, const FieldLayout& f) {
    if (f.presence_bit < 0) return;
    uint64_t at = body + 4 * static_cast<uint64_t>(f.presence_bit / 32);
    uint32_t w = 0;
    std::memcpy(&w, bytes_.data() + at, 4);
    put<uint32_t>(at, w | (1u << (f.presence_bit % 32)));
  }
  void set_int(uint64_t body, const MessageLayout& l, const char* name, int64_t v) {
    const FieldLayout& f = *l.field_by_name(name);
    if (f.size == 4) put<int32_t>(body + f.offset, static_cast<int32_t>(v));
    if (f.size == 8) put<int64_t>(body + f.offset, v);
    if (f.size == 1) put<uint8_t>(body + f.offset, v != 0);
    presence(body, f);
  }
  void set_string(uint64_t body, const MessageLayout& l, const char* name, const std::string& s) {
    const FieldLayout& f = *l.field_by_name(name);
    uint64_t at = alloc(s.size());
    std::memcpy(bytes_.data() + at, s.data(), s.size());
    put(body + f.offset,
        RegionRef{at, static_cast<uint32_t>(s.size()), static_cast<uint32_t>(s.size())});
    presence(body, f);
  }
  uint64_t set_message(uint64_t body, const MessageLayout& l, const char* name) {
    const FieldLayout& f = *l.field_by_name(name);
    uint64_t sub = this->body(*f.message);
    put(body + f.offset, RegionRef{sub, f.message->body_size(), f.message->body_size()});
    presence(body, f);
    return sub;
  }
  // `n` inline element bodies of a repeated message field (a map field's entries too).
  uint64_t set_elements(uint64_t body, const MessageLayout& l, const char* name, uint32_t n) {
    const FieldLayout& f = *l.field_by_name(name);
    uint64_t array = alloc(uint64_t{f.element_size} * n);
    put(body + f.offset, RegionRef{array, n, n});
    return array;
  }

  mrpc_message_view view(uint64_t body, const MessageLayout& l) {
    return mrpc_message_view{bytes_.data(), bytes_.size(), body, l.fingerprint()};
  }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

inline mrpc_str s(const std::string& text) {
  return mrpc_str{text.data(), static_cast<uint32_t>(text.size())};
}

// A call with its strings kept alive.
struct Call {
  std::string service = "shop.Orders", method = "PlaceOrder", app = "frontend", host = "host-1",
              endpoint;
  std::string metadata, endpoints;
  mrpc_rpc_view view{};

  mrpc_rpc_view& get() {
    view.service = s(service);
    view.method = s(method);
    view.caller_app = s(app);
    view.caller_host = s(host);
    view.endpoint = s(endpoint);
    view.metadata = reinterpret_cast<const uint8_t*>(metadata.data());
    view.metadata_size = static_cast<uint32_t>(metadata.size());
    view.endpoints = reinterpret_cast<const uint8_t*>(endpoints.data());
    view.endpoints_size = static_cast<uint32_t>(endpoints.size());
    view.ops = encoded_block_ops();
    view.ops_context = &metadata;  // metadata writes rewrite `metadata`
    return view;
  }
};

// Random RPCs: random caller, metadata, status and times; the request and response are either
// well-formed messages with random fields or random bytes (lying references included).
inline void random_message(Region& r, const MessageLayout& l, SeededRandom& rng,
                           mrpc_message_view& out) {
  uint64_t body = r.body(l);
  if (rng.next_u64() % 3 == 0) {
    // Garbage: random bytes over the body and some more.
    uint64_t extra = r.alloc(64);
    for (uint64_t i = body; i < extra + 64; ++i)
      r.bytes()[i] = static_cast<uint8_t>(rng.next_u64());
  } else {
    for (const FieldLayout& f : l.fields()) {
      if (rng.next_u64() % 2 == 0) continue;
      if (f.repeated) {
        uint32_t n = static_cast<uint32_t>(rng.next_u64() % 4);
        uint64_t array = r.set_elements(body, l, f.name.c_str(), n);
        if (f.kind == FieldKind::kMessage) {
          for (uint32_t i = 0; i < n; ++i) {
            uint64_t e = array + uint64_t{i} * f.element_size;
            for (const FieldLayout& sub : f.message->fields()) {
              if (sub.kind == FieldKind::kString)
                r.set_string(e, *f.message, sub.name.c_str(), rng.next_u64() % 2 ? "a" : "b");
            }
          }
        }
      } else if (f.kind == FieldKind::kString || f.kind == FieldKind::kBytes) {
        r.set_string(body, l, f.name.c_str(), std::string(rng.next_u64() % 8, 'a'));
      } else if (f.kind == FieldKind::kMessage) {
        r.set_message(body, l, f.name.c_str());
      } else {
        r.set_int(body, l, f.name.c_str(), static_cast<int64_t>(rng.next_u64()));
      }
    }
  }
  out = r.view(body, l);
}

}  // namespace mrpc::compiler::testing
