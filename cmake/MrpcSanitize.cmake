# MRPC_SANITIZE: build every target of the project (libraries, tools, daemon, tests) under
# sanitizers. A comma list handed to -fsanitize=, e.g.
#   -DMRPC_SANITIZE=address,undefined     (scripts/test.sh: build-asan)
#   -DMRPC_SANITIZE=thread                (scripts/test.sh: build-tsan)
# Every finding is fatal: UBSan does not recover (-fno-sanitize-recover=all) and scripts/test.sh
# runs with halt_on_error=1, so a report fails the test that caused it.
# Third-party libraries (protobuf, ANTLR, LLVM, spdlog) are Debian's uninstrumented builds.
set(MRPC_SANITIZE "" CACHE STRING
    "Sanitizers for every target, as -fsanitize= takes them (address,undefined or thread); empty: none")

if(MRPC_SANITIZE)
  string(REPLACE "," ";" mrpc_sanitizers "${MRPC_SANITIZE}")
  foreach(s IN LISTS mrpc_sanitizers)
    if(NOT s MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "MRPC_SANITIZE: '${s}' is not one of address, undefined, thread, leak")
    endif()
  endforeach()
  if("thread" IN_LIST mrpc_sanitizers AND ("address" IN_LIST mrpc_sanitizers OR "leak" IN_LIST mrpc_sanitizers))
    message(FATAL_ERROR "MRPC_SANITIZE: thread cannot be combined with address or leak")
  endif()
  set(mrpc_sanitize_flags -fsanitize=${MRPC_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_compile_options(${mrpc_sanitize_flags})
  add_link_options(-fsanitize=${MRPC_SANITIZE})
  message(STATUS "mrpc: every target built with -fsanitize=${MRPC_SANITIZE}")
endif()

# MRPC_BUILD_FUZZERS: every target of the project gets libFuzzer's coverage instrumentation
# (-fsanitize=fuzzer-no-link), not only the fuzz harnesses, so a fuzzer's feedback reaches into
# the daemon engine, the codecs and the front end it drives. Combine with
# -DMRPC_SANITIZE=address,undefined for memory and UB checks in those libraries (docs/fuzzing.md).
if(MRPC_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "MRPC_BUILD_FUZZERS needs clang (libFuzzer): configure with "
                        "-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
