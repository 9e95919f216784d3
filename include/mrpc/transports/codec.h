// TransportCodecs: how a transport that leaves the host (TCP, gRPC interop) turns a registered
// service's messages into bytes and back. The daemon compiles each service's codecs when the
// service is registered (daemon/codec_compiler.h, docs/marshalling.md); a transport asks for them
// by the service id and method index a kCall carries:
//   - encode: a request (or response) in an app's heap -> protobuf wire bytes, scattered over the
//     transport's own buffers (codec::ScatteredWire: what a writev sends);
//   - decode: protobuf wire bytes -> a message in a receive region (one block: one free releases
//     it), through that region's allocator.
// The native (mrpc-to-mrpc) codecs are reachable through ServiceCodecs::schema as well.
//
// Threads: service() runs on the runtime thread that owns the registry (as the transports do).
// A ServiceCodecs is immutable and may be used on any thread while it is held.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "mrpc/base/expected.h"
#include "mrpc/codec/codecs.h"

namespace mrpc {

// The compiled codecs of one registered service, by method index.
struct ServiceCodecs {
  struct Method {
    const codec::MessageCodec* request = nullptr;
    const codec::MessageCodec* response = nullptr;
  };
  std::shared_ptr<const codec::CompiledSchema> schema;  // owns the codecs below
  std::vector<Method> methods;                          // declaration order = method index
};

enum class MessageSide : uint8_t { kRequest, kResponse };

class TransportCodecs {
 public:
  virtual ~TransportCodecs() = default;

  // The codecs of a registered service; null if no service has that id (dropped, never given).
  virtual std::shared_ptr<const ServiceCodecs> service(uint32_t service_id) const = 0;

  // The codec of one method's request or response. NOT_FOUND for an unknown service id or a
  // method index past the service's methods.
  Expected<const codec::MessageCodec*> codec(uint32_t service_id, uint16_t method_index,
                                             MessageSide side) const {
    std::shared_ptr<const ServiceCodecs> codecs = service(service_id);
    if (codecs == nullptr)
      return Status(StatusCode::kNotFound,
                    fmt::format("no registered service has id {:#x}", service_id));
    if (method_index >= codecs->methods.size())
      return Status(StatusCode::kNotFound,
                    fmt::format("service {:#x} has {} methods, not one at index {}", service_id,
                                codecs->methods.size(), method_index));
    const ServiceCodecs::Method& method = codecs->methods[method_index];
    // The codecs live as long as the service's registration (which the runtime thread drops
    // only between rounds, never while a transport runs).
    return side == MessageSide::kRequest ? method.request : method.response;
  }

  // Protobuf wire encoding of the message at `offset` of `heap` into `buffers` (see
  // MessageCodec::encode_wire's scattered form for the errors and where the bytes lie).
  Expected<codec::ScatteredWire> encode(uint32_t service_id, uint16_t method_index,
                                        MessageSide side, ConstRegion heap, uint64_t offset,
                                        std::span<const std::span<std::byte>> buffers,
                                        const codec::CodecLimits& limits,
                                        uint64_t* needed = nullptr) const {
    auto found = codec(service_id, method_index, side);
    if (!found.ok()) return found.status();
    return (*found)->encode_wire(heap, offset, buffers, limits, needed);
  }

  // Decodes protobuf wire bytes into a new block of `destination`; returns its offset.
  Expected<uint64_t> decode(uint32_t service_id, uint16_t method_index, MessageSide side,
                            std::span<const std::byte> bytes, MutableRegion destination,
                            RegionAllocator& allocator, const codec::CodecLimits& limits) const {
    auto found = codec(service_id, method_index, side);
    if (!found.ok()) return found.status();
    return (*found)->decode_wire(bytes, destination, allocator, limits);
  }
};

}  // namespace mrpc
