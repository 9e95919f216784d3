#include "schema_convert.h"

#include <fmt/format.h>

#include <cstring>
#include <memory>
#include <vector>

#include "mrpc/message/region_allocator.h"

namespace mrpc {

namespace {

// One runtime thread's buffers: an encoding, and a region to decode a request into before it is
// copied into its PrivateMessage (pages are touched only as far as messages reach).
struct Scratch {
  std::vector<std::byte> wire;
  std::unique_ptr<std::byte[]> region;
  uint64_t region_size = 0;
  std::unique_ptr<RegionAllocator> allocator;
};
thread_local Scratch scratch;

codec::CodecLimits limits_of(const DaemonCore& core) {
  codec::CodecLimits limits;
  limits.max_message_bytes = core.config.max_message_bytes;
  return limits;
}

// The protobuf wire encoding of the message at `offset` of `source`, in scratch.wire.
Expected<std::span<const std::byte>> encode(const codec::MessageCodec& codec, ConstRegion source,
                                            uint64_t offset, const codec::CodecLimits& limits) {
  if (scratch.wire.empty()) scratch.wire.resize(64 << 10);
  uint64_t needed = 0;
  auto encoded = codec.encode_wire(source, offset, scratch.wire, limits, &needed);
  if (!encoded.ok() && encoded.status().code() == StatusCode::kOutOfRange &&
      needed <= 2 * limits.max_message_bytes + 4096) {
    scratch.wire.resize(needed);
    encoded = codec.encode_wire(source, offset, scratch.wire, limits, &needed);
  }
  return encoded;
}

const codec::MessageCodec* codec_of(const ServiceCodecs* codecs, uint16_t method, bool request) {
  if (codecs == nullptr || method >= codecs->methods.size()) return nullptr;
  return request ? codecs->methods[method].request : codecs->methods[method].response;
}

}  // namespace

const SchemaVariant* variant_of(DaemonCore& core, const Connection& caller, uint32_t service_id) {
  const RegisteredService* service = core.registry.find(service_id);
  if (service == nullptr) return nullptr;
  for (const SchemaVariant& variant : service->variants)
    if (variant.connection == caller.id) return &variant;
  return nullptr;
}

Status convert_request(DaemonCore& core, const Connection& caller, const SchemaVariant& variant,
                       Rpc& rpc) {
  const RegisteredService* service = core.registry.find(rpc.service_id);
  const codec::MessageCodec* from = codec_of(variant.codecs.get(), rpc.method_index, true);
  const codec::MessageCodec* to =
      service == nullptr ? nullptr : codec_of(service->codecs.get(), rpc.method_index, true);
  if (from == nullptr || to == nullptr)
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("service {:#x} method {}: no codecs to convert the request from the "
                              "caller's schema to the registration's",
                              rpc.service_id, rpc.method_index));
  const codec::CodecLimits limits = limits_of(core);
  auto wire = encode(*from, caller.heap_view(), rpc.request.offset, limits);
  if (!wire.ok())
    return Status(
        wire.status().code() == StatusCode::kOutOfRange ? StatusCode::kResourceExhausted
                                                        : wire.status().code(),
        "the request cannot be converted to the registration's schema: " + wire.status().message());
  if (scratch.region == nullptr) {
    scratch.region_size = core.config.max_message_bytes + limits::kMaxMessageNesting * 64 + 4096;
    scratch.region.reset(new std::byte[scratch.region_size]);
    scratch.allocator = std::make_unique<RegionAllocator>(scratch.region_size);
  }
  auto decoded = to->decode_wire(*wire, MutableRegion{scratch.region.get(), scratch.region_size},
                                 *scratch.allocator, limits);
  if (!decoded.ok())
    return Status(decoded.status().code(),
                  "the request cannot be converted to the registration's schema: " +
                      decoded.status().message());
  // One block: nothing of the message lies past *decoded + used.
  const uint64_t used = scratch.allocator->used_bytes();
  (void)scratch.allocator->free(*decoded);
  auto copy = std::make_shared<PrivateMessage>();
  copy->size = *decoded + used;
  copy->message_bytes = used;
  copy->bytes.reset(new std::byte[copy->size]);
  std::memcpy(copy->bytes.get(), scratch.region.get(), copy->size);
  rpc.request = MessageLocation{caller.id, RegionKind::kPrivate, *decoded, std::move(copy)};
  return {};
}

Status convert_response(DaemonCore& core, Connection& caller, const SchemaVariant& variant,
                        const Rpc& rpc, uint64_t* response) {
  const uint64_t registered = *response;
  *response = shm::kNoOffset;
  const RegisteredService* service = core.registry.find(rpc.service_id);
  const codec::MessageCodec* from =
      service == nullptr ? nullptr : codec_of(service->codecs.get(), rpc.method_index, false);
  const codec::MessageCodec* to = codec_of(variant.codecs.get(), rpc.method_index, false);
  Status status;
  if (from == nullptr || to == nullptr) {
    status = Status(StatusCode::kUnavailable,
                    "the service was unregistered before its response could be converted to the "
                    "caller's schema");
  } else {
    const codec::CodecLimits limits = limits_of(core);
    auto wire = encode(*from, ConstRegion{caller.receive.data(), caller.receive.size()}, registered,
                       limits);
    if (!wire.ok()) {
      status = wire.status();
    } else {
      auto decoded =
          to->decode_wire(*wire, caller.receive_view(), *caller.receive_allocator, limits);
      if (decoded.ok())
        *response = *decoded;
      else
        status = decoded.status();
    }
    if (!status.ok())
      status = Status(status.code(), "the response cannot be converted to the caller's schema: " +
                                         status.message());
  }
  (void)caller.free_received(registered);
  caller.report_receive_usage();
  return status;
}

}  // namespace mrpc
