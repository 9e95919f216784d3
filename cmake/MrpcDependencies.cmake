# Every third-party package mrpc builds against; scripts/install-deps.sh installs them (Debian 12).
# ccache shortens rebuilds on developer machines and on CI reruns of the same machine.
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_C_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

find_package(Threads REQUIRED)
find_package(fmt 9 REQUIRED)
find_package(Protobuf REQUIRED)           # FindProtobuf module: protobuf::libprotobuf, protobuf::libprotoc, protobuf::protoc
# protoc by path, for mrpc_generate() called from any directory (imported targets are visible only
# in the directory that found them).
set(MRPC_PROTOC_EXECUTABLE ${Protobuf_PROTOC_EXECUTABLE} CACHE FILEPATH "protoc used by mrpc_generate")
if(MRPC_APP_ONLY)
  # The app library and protoc-gen-mrpc need nothing more.
  return()
endif()
find_package(doctest REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(spdlog REQUIRED)
find_package(tomlplusplus 3 REQUIRED)  # Debian's libtomlplusplus-dev (a compiled library): mrpcd -c FILE
find_package(antlr4-runtime REQUIRED)     # ANTLR4_INCLUDE_DIR, antlr4_shared
find_program(ANTLR4_TOOL antlr4 REQUIRED) # Debian's 4.7.2 tool; its output builds against the 4.9 runtime
