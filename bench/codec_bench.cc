// codec_bench: the compiled (LLVM JIT) protobuf codecs beside protoc-generated C++ on the same
// messages: ~64 B, a ~1 KiB hotel profile (nested and repeated), a 1 MiB bytes field. Prints
// ns per message, MB/s and the ratio protoc/JIT for encode and decode, the native (scatter-gather)
// codec, and compile time per schema cold and cached; per codegen tier (fast: -O0, what a
// registration waits for; optimized: O2, swapped in by the tier-up) the compile time of the
// examples' services and where it goes, and the speed of both tiers' code. Not a test: numbers
// depend on the machine.
//
//   build/bench/codec_bench [--seconds S] [--compile-runs N] [--speed-only]
//   build/bench/codec_bench --count OP ROW N    (OP: jit-encode, jit-decode, protoc-encode,
//       protoc-decode; ROW: small, hotel, blob): only runs OP N times on ROW's message with the
//       optimized tier, in measured_loop, for callgrind (bench/codec_callgrind.sh).
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/compiler/importer.h>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_START_INSTRUMENTATION
#endif

#include "codec_bench.pb.h"
#include "examples/protos/hotel/profile.pb.h"
#include "mrpc/codec/codec_cache.h"
#include "mrpc/codec/codecs.h"
#include "mrpc/jit/jit.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/region_allocator.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_per_run = 0.3;
int compile_runs = 7;
bool speed_only = false;  // --speed-only: skip the compile-time sections

double thread_cpu_ms() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e3 + static_cast<double>(now.tv_nsec) / 1e6;
}

double ms(uint64_t nanoseconds) {
  return static_cast<double>(nanoseconds) / 1e6;
}

// One compile of a schema at one tier (and, for the fast tier, its tier-up), timed.
struct CompileSample {
  double ready_ms = 0;  // wall: compile() returned, codecs usable
  double ready_cpu_ms = 0;
  double tier_up_ms = 0;  // wall: tier_up() (fast tier only)
  double tier_up_cpu_ms = 0;
  double generate_ms = 0;
  double link_ms = 0;
  mrpc::jit::ModuleTimes times;
  uint64_t types = 0;
  uint64_t instructions = 0;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Compiles `roots` `compile_runs` times at `tier` (fresh modules each time) and prints the
// min/median wall time, the median CPU time, and the median run's breakdown.
bool print_tier_compiles(mrpc::codec::CodecCompiler& compiler, const std::string& name,
                         const std::vector<const google::protobuf::Descriptor*>& roots,
                         mrpc::jit::CodegenTier tier) {
  std::vector<CompileSample> samples;
  for (int run = 0; run < compile_runs; ++run) {
    CompileSample sample;
    const double cpu_start = thread_cpu_ms();
    auto schema = compiler.compile(roots, tier);
    if (!schema.ok()) {
      fmt::print(stderr, "{}: {}\n", name, schema.status().to_string());
      return false;
    }
    sample.ready_cpu_ms = thread_cpu_ms() - cpu_start;
    sample.ready_ms = ms((*schema)->generate_nanoseconds() + (*schema)->compile_nanoseconds());
    sample.generate_ms = ms((*schema)->generate_nanoseconds());
    sample.link_ms = ms((*schema)->link_nanoseconds());
    sample.times = (*schema)->module_times();
    sample.types = (*schema)->functions() / 4;
    sample.instructions = (*schema)->instructions();
    if (tier == mrpc::jit::CodegenTier::kFast) {
      const double up_cpu_start = thread_cpu_ms();
      const mrpc::Status status = compiler.tier_up(**schema);
      if (!status.ok()) {
        fmt::print(stderr, "{}: {}\n", name, status.to_string());
        return false;
      }
      sample.tier_up_cpu_ms = thread_cpu_ms() - up_cpu_start;
      sample.tier_up_ms = ms((*schema)->tier_up_nanoseconds());
    }
    samples.push_back(sample);
  }
  std::vector<double> ready;
  std::vector<double> ready_cpu;
  std::vector<double> up;
  std::vector<double> up_cpu;
  for (const CompileSample& sample : samples) {
    ready.push_back(sample.ready_ms);
    ready_cpu.push_back(sample.ready_cpu_ms);
    up.push_back(sample.tier_up_ms);
    up_cpu.push_back(sample.tier_up_cpu_ms);
  }
  // The run whose ready time is the median, for the breakdown.
  std::vector<size_t> order(samples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return samples[a].ready_ms < samples[b].ready_ms; });
  const CompileSample& mid = samples[order[order.size() / 2]];
  fmt::print(
      "  {:<24} {:<9} {:>2} types {:>5} instrs  ready {:>7.2f} / {:>7.2f} ms (cpu {:>6.2f})"
      "   [IR {:.2f}, verify {:.2f}, opt {:.2f}, codegen {:.2f}, load {:.2f}, link {:.2f}]",
      name, mrpc::jit::codegen_tier_name(tier), mid.types, mid.instructions,
      *std::min_element(ready.begin(), ready.end()), median(ready), median(ready_cpu),
      mid.generate_ms, ms(mid.times.verify_nanoseconds), ms(mid.times.optimize_nanoseconds),
      ms(mid.times.codegen_nanoseconds), ms(mid.times.load_nanoseconds), mid.link_ms);
  if (tier == mrpc::jit::CodegenTier::kFast) {
    std::vector<double> total;
    for (const CompileSample& sample : samples)
      total.push_back(sample.ready_ms + sample.tier_up_ms);
    fmt::print(
        "\n  {:<24} {:<9} {:>26} tier-up {:>7.2f} / {:>7.2f} ms (cpu {:>6.2f});  optimized "
        "code {:.2f} / {:.2f} ms after the start",
        "", "", "", *std::min_element(up.begin(), up.end()), median(up), median(up_cpu),
        *std::min_element(total.begin(), total.end()), median(total));
  }
  fmt::print("\n");
  return true;
}

// Every method input and output of every service in the examples' proto files: what the daemon
// compiles when those services register (one schema per service).
struct ServiceRoots {
  std::string name;
  std::vector<const google::protobuf::Descriptor*> roots;
};

class ErrorPrinter : public google::protobuf::compiler::MultiFileErrorCollector {
 public:
  void AddError(const std::string& file, int line, int column,
                const std::string& message) override {
    fmt::print(stderr, "{}:{}:{}: {}\n", file, line, column, message);
  }
};

std::vector<ServiceRoots> example_services(google::protobuf::compiler::Importer& importer) {
  std::vector<ServiceRoots> out;
  for (const char* file :
       {"examples/protos/hotel/profile.proto", "examples/protos/hotel/rate.proto",
        "examples/protos/hotel/reservation.proto", "examples/protos/hotel/search.proto",
        "examples/protos/hotel/user.proto", "examples/protos/shop/orders.proto"}) {
    const google::protobuf::FileDescriptor* descriptor = importer.Import(file);
    if (descriptor == nullptr) continue;
    for (int s = 0; s < descriptor->service_count(); ++s) {
      const google::protobuf::ServiceDescriptor* service = descriptor->service(s);
      ServiceRoots entry{std::string(service->full_name()), {}};
      for (int m = 0; m < service->method_count(); ++m) {
        entry.roots.push_back(service->method(m)->input_type());
        entry.roots.push_back(service->method(m)->output_type());
      }
      out.push_back(std::move(entry));
    }
  }
  return out;
}

// Runs `work` repeatedly for about seconds_per_run, in three rounds; returns the ns per run of the
// fastest round (the others two absorb a loaded machine's descheduling).
template <class Work>
double time_per_run(Work&& work) {
  for (int i = 0; i < 3; ++i) work();  // warm up
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    uint64_t runs = 0;
    const auto start = Clock::now();
    auto elapsed = Clock::duration::zero();
    uint64_t batch = 1;
    while (elapsed < std::chrono::duration<double>(seconds_per_run / 3)) {
      for (uint64_t i = 0; i < batch; ++i) work();
      runs += batch;
      batch *= 2;
      elapsed = Clock::now() - start;
    }
    const double ns =
        std::chrono::duration<double, std::nano>(elapsed).count() / static_cast<double>(runs);
    if (round == 0 || ns < best) best = ns;
  }
  return best;
}

struct Region {
  explicit Region(uint64_t bytes)
      : words(new uint64_t[bytes / 8]()), size(bytes), allocator(bytes) {}
  std::unique_ptr<uint64_t[]> words;
  uint64_t size;
  mrpc::RegionAllocator allocator;
  std::byte* base() const { return reinterpret_cast<std::byte*>(words.get()); }
};

std::string text(size_t length, char fill) {
  return std::string(length, fill);
}

hotel::ProfileResult hotel_profiles() {
  hotel::ProfileResult result;
  for (int h = 0; h < 2; ++h) {
    hotel::Hotel* hotel = result.add_hotels();
    hotel->set_id(fmt::format("hotel-{}", h));
    hotel->set_name("The Grand Budapest Hotel");
    hotel->set_phone_number("+36 1 555 0199");
    hotel->set_description(text(180, 'd'));
    hotel::Address* address = hotel->mutable_address();
    address->set_street_number("1");
    address->set_street_name("Zubrowka Street");
    address->set_city("Nebelsbad");
    address->set_state("Zubrowka");
    address->set_country("Republic of Zubrowka");
    address->set_postal_code("12345");
    address->set_lat(47.4979f);
    address->set_lon(19.0402f);
    for (int i = 0; i < 4; ++i) {
      hotel::Image* image = hotel->add_images();
      image->set_url(fmt::format("https://images.example.com/hotel-{}/{}.jpg", h, i));
      image->set_is_default(i == 0);
    }
  }
  return result;
}

// The loop bench/codec_callgrind.sh counts instructions in (--toggle-collect=*measured_loop*).
template <class Work>
[[gnu::noinline]] void measured_loop(uint64_t runs, Work& work) {
  for (uint64_t i = 0; i < runs; ++i) work();
}

struct Row {
  std::string name;
  const google::protobuf::Message* message;
  google::protobuf::Message* scratch;  // a parse target of the same type
};

void print_row(const char* what, const std::string& name, uint64_t bytes, double jit_ns,
               double protoc_ns) {
  const auto mbps = [&](double ns) { return static_cast<double>(bytes) / ns * 1e3; };
  fmt::print("{:<8} {:<22} {:>9} {:>11.1f} {:>10.1f} {:>11.1f} {:>10.1f} {:>8.2f}\n", what, name,
             bytes, jit_ns, mbps(jit_ns), protoc_ns, mbps(protoc_ns), protoc_ns / jit_ns);
}

// Runs `op` `runs` times on `row` (optimized tier) inside measured_loop; 0 on success.
int count_runs(mrpc::codec::CodecCompiler& compiler, const Row& row, const std::string& op,
               uint64_t runs) {
  const google::protobuf::Descriptor* type = row.message->GetDescriptor();
  auto schema = compiler.compile({type}, mrpc::jit::CodegenTier::kOptimized);
  if (!schema.ok()) {
    fmt::print(stderr, "{}\n", schema.status().to_string());
    return 2;
  }
  const mrpc::codec::MessageCodec& codec = *(*schema)->find(type->full_name());
  const mrpc::codec::CodecLimits limits;
  const std::string wire = row.message->SerializeAsString();
  const auto wire_span = std::span(reinterpret_cast<const std::byte*>(wire.data()), wire.size());
  Region heap(8 << 20);
  auto root = codec.decode_wire(wire_span, {heap.base(), heap.size}, heap.allocator, limits);
  if (!root.ok()) return 2;
  std::vector<std::byte> out(wire.size() + 64);
  std::vector<uint8_t> protoc_out(wire.size());
  Region receive(8 << 20);
  auto jit_encode = [&] {
    auto encoded = codec.encode_wire({heap.base(), heap.size}, *root, out, limits);
    if (!encoded.ok() || encoded->size() != wire.size()) std::abort();
  };
  auto jit_decode = [&] {
    auto decoded =
        codec.decode_wire(wire_span, {receive.base(), receive.size}, receive.allocator, limits);
    if (!decoded.ok()) std::abort();
    (void)receive.allocator.free(*decoded);
  };
  auto protoc_encode = [&] {
    if (!row.message->SerializeToArray(protoc_out.data(), static_cast<int>(protoc_out.size())))
      std::abort();
  };
  auto protoc_decode = [&] {
    if (!row.scratch->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) std::abort();
  };
  auto run = [&](auto& work) {
    // Instrumentation starts here (codec_callgrind.sh runs valgrind with --instr-atstart=no, so
    // the compile before runs at full speed); only measured_loop is counted.
    CALLGRIND_START_INSTRUMENTATION;
    for (int i = 0; i < 16; ++i) work();  // warm up, outside measured_loop (not counted)
    measured_loop(runs, work);
  };
  if (op == "jit-encode") {
    run(jit_encode);
  } else if (op == "jit-decode") {
    run(jit_decode);
  } else if (op == "protoc-encode") {
    run(protoc_encode);
  } else if (op == "protoc-decode") {
    run(protoc_decode);
  } else {
    fmt::print(stderr, "unknown op {}\n", op);
    return 2;
  }
  fmt::print("{} {} x {} done ({} wire bytes)\n", op, row.name, runs, wire.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--speed-only") == 0) speed_only = true;
    if (i + 1 >= argc) break;
    if (std::strcmp(argv[i], "--seconds") == 0) seconds_per_run = std::atof(argv[i + 1]);
    if (std::strcmp(argv[i], "--compile-runs") == 0) {
      compile_runs = std::max(1, std::atoi(argv[i + 1]));
    }
  }
  auto jit = mrpc::jit::Jit::create();
  if (!jit.ok()) {
    fmt::print(stderr, "{}\n", jit.status().to_string());
    return 2;
  }
  auto compiler = mrpc::codec::CodecCompiler::create(**jit);
  if (!compiler.ok()) {
    fmt::print(stderr, "{}\n", compiler.status().to_string());
    return 2;
  }
  // Tiered, as in mrpcd: a cold get() returns the fast tier; the optimized one follows.
  mrpc::codec::CodecCache cache(
      **compiler, mrpc::codec::CodecCacheOptions{.first_tier = mrpc::jit::CodegenTier::kFast});

  codec_bench::Small small;
  small.set_id(123456789);
  small.set_name("alice@example.com");
  small.set_count(42);
  small.set_price(19.99);
  small.set_active(true);
  for (int i = 0; i < 5; ++i) small.add_tags(i * 7);
  small.set_region("eu-west");
  hotel::ProfileResult profiles = hotel_profiles();
  codec_bench::Blob blob;
  blob.set_name("blob");
  blob.set_data(text(1 << 20, 'x'));
  codec_bench::Small small_scratch;
  hotel::ProfileResult profiles_scratch;
  codec_bench::Blob blob_scratch;
  std::vector<Row> rows = {{"small (64 B)", &small, &small_scratch},
                           {"hotel ProfileResult", &profiles, &profiles_scratch},
                           {"bytes 1 MiB", &blob, &blob_scratch}};
  for (int i = 1; i + 3 < argc; ++i) {
    if (std::strcmp(argv[i], "--count") != 0) continue;
    const std::string op = argv[i + 1];
    const std::string row_name = argv[i + 2];
    const uint64_t runs = std::strtoull(argv[i + 3], nullptr, 10);
    const size_t index = row_name == "small" ? 0 : row_name == "hotel" ? 1 : 2;
    return count_runs(**compiler, rows[index], op, runs);
  }

  if (!speed_only) {
    fmt::print(
        "compile time per schema through a tiered CodecCache (as mrpcd registers): cold = the fast "
        "tier ready (IR generation + -O0 machine code + link; the optimized tier follows on the "
        "cache's thread), and a cached hit:\n");
    for (const Row& row : rows) {
      const google::protobuf::Descriptor* type = row.message->GetDescriptor();
      auto cold = cache.get({type});
      if (!cold.ok()) {
        fmt::print(stderr, "{}\n", cold.status().to_string());
        return 2;
      }
      const auto start = Clock::now();
      auto cached = cache.get({type});
      const double cached_us =
          std::chrono::duration<double, std::micro>(Clock::now() - start).count();
      fmt::print(
          "  {:<22} cold {:>7.2f} ms (IR {:.2f} ms, compile {:.2f} ms; {} functions, {} IR "
          "instructions, {:.1f} us each)   cached {:>7.2f} us\n",
          row.name,
          static_cast<double>((*cold)->generate_nanoseconds() + (*cold)->compile_nanoseconds()) /
              1e6,
          static_cast<double>((*cold)->generate_nanoseconds()) / 1e6,
          static_cast<double>((*cold)->compile_nanoseconds()) / 1e6, (*cold)->functions(),
          (*cold)->instructions(),
          static_cast<double>((*cold)->compile_nanoseconds()) / 1e3 /
              static_cast<double>(std::max<uint64_t>((*cold)->instructions(), 1)),
          cached_us);
    }
    cache.wait_for_tier_ups();

    // Per tier: what a registration waits for (fast, then the tier-up in the background) against
    // compiling optimized at once. Each schema compiled compile_runs times (the first run of the
    // whole bench also pays the JIT's warm-up: it is in the first row's max, not its median).
    {
      google::protobuf::compiler::DiskSourceTree sources;
      sources.MapPath("", MRPC_SOURCE_DIR);
      ErrorPrinter errors;
      google::protobuf::compiler::Importer importer(&sources, &errors);
      std::vector<ServiceRoots> services = example_services(importer);
      for (const Row& row : rows) services.push_back({row.name, {row.message->GetDescriptor()}});
      fmt::print(
          "\ncompile per schema and tier, {} runs each: wall min / median, this thread's CPU "
          "median; the median run's parts in ms\n",
          compile_runs);
      for (const ServiceRoots& service : services) {
        for (mrpc::jit::CodegenTier tier :
             {mrpc::jit::CodegenTier::kFast, mrpc::jit::CodegenTier::kOptimized}) {
          if (!print_tier_compiles(**compiler, service.name, service.roots, tier)) return 2;
        }
      }
      fmt::print("\n");
    }

    // The JIT's on-disk object cache: a first JIT fills it, a second (as a restarted daemon would)
    // loads from it.
    char cache_dir[] = "/tmp/mrpc-codec-bench-XXXXXX";
    if (::mkdtemp(cache_dir) != nullptr) {
      fmt::print("the same schemas with the JIT's object cache ({}), filled then read:\n",
                 cache_dir);
      for (int round = 0; round < 2; ++round) {
        auto cached_jit = mrpc::jit::Jit::create({cache_dir});
        auto cached_compiler = mrpc::codec::CodecCompiler::create(**cached_jit);
        for (const Row& row : rows) {
          auto schema = (*cached_compiler)->compile({row.message->GetDescriptor()});
          if (!schema.ok()) return 2;
          fmt::print("  {:<22} {:<6} {:>7.2f} ms (IR {:.2f} ms, load {:.2f} ms)\n", row.name,
                     round == 0 ? "fill" : "disk",
                     static_cast<double>((*schema)->generate_nanoseconds() +
                                         (*schema)->compile_nanoseconds()) /
                         1e6,
                     static_cast<double>((*schema)->generate_nanoseconds()) / 1e6,
                     static_cast<double>((*schema)->compile_nanoseconds()) / 1e6);
        }
      }
      std::filesystem::remove_all(cache_dir);
    }
  }  // !speed_only

  fmt::print(
      "\nper tier (O2: optimized, what runs after the tier-up; O0: fast, what runs until then):");
  fmt::print("\n{:<8} {:<22} {:>9} {:>11} {:>10} {:>11} {:>10} {:>8}\n", "", "message", "bytes",
             "JIT ns", "JIT MB/s", "protoc ns", "protoc MB/s", "protoc/JIT");
  const mrpc::codec::CodecLimits limits;
  for (const mrpc::jit::CodegenTier tier :
       {mrpc::jit::CodegenTier::kOptimized, mrpc::jit::CodegenTier::kFast}) {
    for (const Row& base_row : rows) {
      Row row = base_row;
      row.name += tier == mrpc::jit::CodegenTier::kFast ? " O0" : " O2";
      const google::protobuf::Descriptor* type = row.message->GetDescriptor();
      auto schema = (*compiler)->compile({type}, tier);
      if (!schema.ok()) {
        fmt::print(stderr, "{}\n", schema.status().to_string());
        return 2;
      }
      const mrpc::codec::MessageCodec& codec = *(*schema)->find(type->full_name());
      const std::string wire = row.message->SerializeAsString();
      const auto wire_span =
          std::span(reinterpret_cast<const std::byte*>(wire.data()), wire.size());
      // The message in a "heap": decoded into a region by the JIT decoder itself.
      Region heap(8 << 20);
      auto root = codec.decode_wire(wire_span, {heap.base(), heap.size}, heap.allocator, limits);
      if (!root.ok()) {
        fmt::print(stderr, "{}\n", root.status().to_string());
        return 2;
      }
      std::vector<std::byte> out(wire.size() + 64);
      const double jit_encode = time_per_run([&] {
        auto encoded = codec.encode_wire({heap.base(), heap.size}, *root, out, limits);
        if (!encoded.ok() || encoded->size() != wire.size()) std::abort();
      });
      std::vector<uint8_t> protoc_out(wire.size());
      const double protoc_encode = time_per_run([&] {
        if (!row.message->SerializeToArray(protoc_out.data(), static_cast<int>(protoc_out.size())))
          std::abort();
      });
      print_row("encode", row.name, wire.size(), jit_encode, protoc_encode);
      Region receive(8 << 20);
      const double jit_decode = time_per_run([&] {
        auto decoded =
            codec.decode_wire(wire_span, {receive.base(), receive.size}, receive.allocator, limits);
        if (!decoded.ok()) std::abort();
        (void)receive.allocator.free(*decoded);
      });
      const double protoc_decode = time_per_run([&] {
        if (!row.scratch->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) std::abort();
      });
      print_row("decode", row.name, wire.size(), jit_decode, protoc_decode);
      std::vector<mrpc::codec::NativeSpan> spans;
      uint64_t native_bytes = 0;
      const double native_encode = time_per_run([&] {
        spans.clear();
        auto size = codec.encode_native({heap.base(), heap.size}, *root, spans, limits);
        if (!size.ok()) std::abort();
        native_bytes = *size;
      });
      std::vector<std::byte> gathered;
      for (const auto& span : spans)
        gathered.insert(gathered.end(), span.data, span.data + span.size);
      const double native_decode = time_per_run([&] {
        auto decoded = codec.decode_native(gathered, {receive.base(), receive.size},
                                           receive.allocator, limits);
        if (!decoded.ok()) std::abort();
        (void)receive.allocator.free(*decoded);
      });
      fmt::print("{:<8} {:<22} {:>9} {:>11.1f} {:>10.1f}   ({} spans, no copy)\n", "native-e",
                 row.name, native_bytes, native_encode,
                 static_cast<double>(native_bytes) / native_encode * 1e3, spans.size());
      fmt::print("{:<8} {:<22} {:>9} {:>11.1f} {:>10.1f}   (one copy into the receive region)\n",
                 "native-d", row.name, native_bytes, native_decode,
                 static_cast<double>(native_bytes) / native_decode * 1e3);
    }
  }
  return 0;
}
