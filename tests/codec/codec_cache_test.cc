// CodecCache: a second registration of the same schema gets the compiled schema already there.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include "codec_harness.h"
#include "mrpc/codec/codec_cache.h"

using namespace mrpc::codec_testing;

TEST_CASE("a second request for the same schema is a cache hit and compiles nothing") {
  mrpc::codec::CodecCache cache(*harness().compiler);
  const pb::Descriptor& document = harness().protos.message("nested.proto", "nested.Document");
  const pb::Descriptor& orders =
      harness().protos.message("examples/protos/shop/orders.proto", "shop.OrderRequest");
  auto first = cache.get({&document});
  REQUIRE_MESSAGE(first.ok(), first.status().to_string());
  CHECK((*first)->compile_nanoseconds() > 0);
  auto second = cache.get({&document});
  REQUIRE(second.ok());
  CHECK(second->get() == first->get());
  auto other = cache.get({&orders});
  REQUIRE(other.ok());
  CHECK(other->get() != first->get());
  CHECK((*other)->key() != (*first)->key());
  auto stats = cache.stats();
  CHECK(stats.hits == 1);
  CHECK(stats.compiles == 2);
  CHECK(stats.schemas == 2);
  CHECK(stats.compile_nanoseconds > 0);

  // Types reached from a root are in its schema (nested.Point through Document).
  CHECK((*first)->find("nested.Point") != nullptr);
  CHECK((*first)->find("shop.OrderRequest") == nullptr);

  // Unused schemas are dropped (and their JIT modules unloaded) on prune.
  const size_t modules = harness().jit->module_count();
  other = mrpc::Status(mrpc::StatusCode::kCancelled, "released");
  CHECK(cache.prune() == 1);
  CHECK(harness().jit->module_count() == modules - 1);
  CHECK(cache.stats().schemas == 1);
}

namespace {

// A pool holding `message M { <type> x = 1; }` in package p.
std::unique_ptr<pb::DescriptorPool> pool_with_field(pb::FieldDescriptorProto::Type type) {
  pb::FileDescriptorProto file;
  file.set_name("p.proto");
  file.set_package("p");
  file.set_syntax("proto3");
  pb::DescriptorProto* message = file.add_message_type();
  message->set_name("M");
  pb::FieldDescriptorProto* field = message->add_field();
  field->set_name("x");
  field->set_number(1);
  field->set_type(type);
  field->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
  auto pool = std::make_unique<pb::DescriptorPool>();
  REQUIRE(pool->BuildFile(file) != nullptr);
  return pool;
}

}  // namespace

TEST_CASE("the codec key tells apart schemas whose layouts agree but wire types differ") {
  auto plain = pool_with_field(pb::FieldDescriptorProto::TYPE_INT32);
  auto zigzag = pool_with_field(pb::FieldDescriptorProto::TYPE_SINT32);
  const pb::Descriptor* a = plain->FindMessageTypeByName("p.M");
  const pb::Descriptor* b = zigzag->FindMessageTypeByName("p.M");
  mrpc::LayoutSet layouts_a;
  mrpc::LayoutSet layouts_b;
  CHECK(layouts_a.add(*a).fingerprint() == layouts_b.add(*b).fingerprint());
  CHECK(mrpc::codec::CodecCompiler::key_of({a}) == mrpc::codec::CodecCompiler::key_of({a}));
  CHECK(mrpc::codec::CodecCompiler::key_of({a}) != mrpc::codec::CodecCompiler::key_of({b}));
}

TEST_CASE("a second JIT with the same object cache directory loads compiled codecs from disk") {
  char name[] = "/tmp/mrpc-codec-cache-XXXXXX";
  REQUIRE(::mkdtemp(name) != nullptr);
  const std::string dir = name;
  const pb::Descriptor& type = harness().protos.message("nested.proto", "nested.Document");
  RandomCase c = random_case(type, 31337);
  const std::string expected = c.message->SerializeAsString();
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    auto jit = mrpc::jit::Jit::create({dir});
    REQUIRE_MESSAGE(jit.ok(), jit.status().to_string());
    auto compiler = mrpc::codec::CodecCompiler::create(**jit);
    REQUIRE(compiler.ok());
    auto schema = (*compiler)->compile({&type});
    REQUIRE_MESSAGE(schema.ok(), schema.status().to_string());
    const mrpc::jit::JitStats stats = (*jit)->stats();
    CHECK(stats.cache_hits == (round == 0 ? 0u : 1u));
    CHECK(stats.modules_compiled == (round == 0 ? 1u : 0u));
    const MessageCodec& codec = *(*schema)->find("nested.Document");
    Region heap(1 << 20);
    const uint64_t root = build(codec.layout(), *c.message, heap);
    std::vector<std::byte> out(1 << 16);
    auto encoded = codec.encode_wire(heap.view(), root, out, CodecLimits{});
    REQUIRE(encoded.ok());
    CHECK(std::string(reinterpret_cast<const char*>(encoded->data()), encoded->size()) == expected);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("a schema past the compile budget fails with RESOURCE_EXHAUSTED before LLVM runs") {
  auto jit = mrpc::jit::Jit::create();
  REQUIRE(jit.ok());
  const pb::Descriptor& hotel =
      harness().protos.message("examples/protos/hotel/profile.proto", "hotel.ProfileResult");
  // The same schema within the default budget: its size is what the budget counts.
  auto measured = harness().compiler->compile({&hotel});
  REQUIRE_MESSAGE(measured.ok(), measured.status().to_string());
  CHECK((*measured)->functions() > 0);
  CHECK((*measured)->instructions() < mrpc::limits::kMaxCodecInstructions);

  auto compiler = mrpc::codec::CodecCompiler::create(
      **jit, mrpc::codec::CodecCompileLimits{.max_instructions = (*measured)->instructions() - 1});
  REQUIRE(compiler.ok());
  auto refused = (*compiler)->compile({&hotel});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == mrpc::StatusCode::kResourceExhausted);
  const std::string text = refused.status().message();
  CHECK_MESSAGE(text.find(std::to_string((*measured)->instructions())) != std::string::npos, text);
  CHECK_MESSAGE(text.find("compile budget") != std::string::npos, text);
  CHECK((*jit)->module_count() == 0);
  CHECK((*jit)->stats().modules_compiled == 0);
}
