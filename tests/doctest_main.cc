// The test binaries' main: doctest's, after taking `--runtime-threads=N` (the multi-shard pass of
// the daemon suites; see runtime_threads.h) into the environment.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
  constexpr const char* kFlag = "--runtime-threads=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], kFlag, std::strlen(kFlag)) == 0)
      ::setenv("MRPC_TEST_RUNTIME_THREADS", argv[i] + std::strlen(kFlag), 1);
  }
  doctest::Context context(argc, argv);
  return context.run();
}
