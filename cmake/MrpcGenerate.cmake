# mrpc_generate(TARGET <target> PROTOS <a.proto> ... [IMPORT_DIRS <dir> ...] [OUT_DIR <dir>]
#               [NAMESPACE <name>])
#
# Generates mrpc message classes, client stubs and server skeletons from .proto files and adds
# them to <target>, the way protobuf_generate() does for protobuf:
#
#   find_package(mrpc CONFIG REQUIRED)     # or add_subdirectory(path/to/mrpc)
#   add_library(echo_proto STATIC)
#   mrpc_generate(TARGET echo_proto PROTOS echo.proto)
#   target_link_libraries(my_app PRIVATE echo_proto mrpc::mrpc)
#
# For each <dir>/x.proto, protoc runs with protoc-gen-mrpc and writes x.mrpc.h and x.mrpc.cc under
# OUT_DIR (default ${CMAKE_CURRENT_BINARY_DIR}/mrpc_generated/<target>), keeping the path of the
# .proto relative to its import directory; OUT_DIR is added to <target>'s PUBLIC include
# directories, so code includes "x.mrpc.h" (or "sub/x.mrpc.h"). Two .proto files of the same name
# in different folders go to different targets (each has its own default OUT_DIR), or to one
# target if IMPORT_DIRS makes their relative paths differ. <target> is linked PUBLIC to the
# library generated code needs (MRPC_GENERATED_CODE_LIBS: mrpc::mrpc from an installed package,
# the message runtime in mrpc's own build).
#
# IMPORT_DIRS: where imports are looked up (protoc -I), in order. Default: the folder of each
# .proto. Every .proto must be inside one of them. Imported .proto files need their own
# mrpc_generate (their x.mrpc.h is included by the generated code that imports them).
#
# NAMESPACE: one C++ identifier; the generated classes go in <package's namespace>::<name>
# instead of the package's namespace (NAMESPACE shm: package echo gives echo::shm::EchoRequest),
# so one program can link them beside protoc's C++ classes of the same .proto (echo::EchoRequest),
# as gRPC's echo::EchoService sits beside those. Every .proto of a program (imports included) must
# be generated with the same NAMESPACE. docs/grpc-users.md.
#
# Tools: protoc is MRPC_PROTOC_EXECUTABLE (else Protobuf_PROTOC_EXECUTABLE, else `protoc` on the
# PATH); the plugin is the protoc-gen-mrpc target when mrpc is part of the build, else
# MRPC_PROTOC_GEN_MRPC (set by the installed package).
function(mrpc_generate)
  cmake_parse_arguments(G "" "TARGET;OUT_DIR;NAMESPACE" "PROTOS;IMPORT_DIRS" ${ARGN})
  if(NOT G_TARGET OR NOT G_PROTOS)
    message(FATAL_ERROR "mrpc_generate: TARGET and PROTOS are required")
  endif()
  if(NOT TARGET ${G_TARGET})
    message(FATAL_ERROR "mrpc_generate: ${G_TARGET} is not a target (add_library it first)")
  endif()

  set(protoc ${MRPC_PROTOC_EXECUTABLE})
  if(NOT protoc)
    set(protoc ${Protobuf_PROTOC_EXECUTABLE})
  endif()
  if(NOT protoc)
    find_program(MRPC_FOUND_PROTOC protoc)
    if(NOT MRPC_FOUND_PROTOC)
      message(FATAL_ERROR "mrpc_generate: protoc not found (install protobuf's compiler, or set "
                          "MRPC_PROTOC_EXECUTABLE)")
    endif()
    set(protoc ${MRPC_FOUND_PROTOC})
  endif()
  if(TARGET protoc-gen-mrpc)
    set(plugin $<TARGET_FILE:protoc-gen-mrpc>)
    set(plugin_dependency protoc-gen-mrpc)
  elseif(MRPC_PROTOC_GEN_MRPC)
    set(plugin ${MRPC_PROTOC_GEN_MRPC})
    set(plugin_dependency ${MRPC_PROTOC_GEN_MRPC})
  else()
    message(FATAL_ERROR "mrpc_generate: no protoc-gen-mrpc: find_package(mrpc CONFIG) or "
                        "add_subdirectory(mrpc) first")
  endif()
  set(libs ${MRPC_GENERATED_CODE_LIBS})
  if(NOT libs)
    set(libs mrpc_message mrpc_base)
  endif()

  set(out_dir ${G_OUT_DIR})
  if(NOT out_dir)
    set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/mrpc_generated/${G_TARGET})
  endif()
  get_filename_component(out_dir ${out_dir} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_BINARY_DIR})
  file(MAKE_DIRECTORY ${out_dir})

  set(import_dirs)
  foreach(dir IN LISTS G_IMPORT_DIRS)
    get_filename_component(dir ${dir} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
    list(APPEND import_dirs ${dir})
  endforeach()

  set(out_arg ${out_dir})
  if(G_NAMESPACE)
    set(out_arg "namespace=${G_NAMESPACE}:${out_dir}")
  endif()

  set(generated)
  set(stems)
  foreach(proto IN LISTS G_PROTOS)
    get_filename_component(proto ${proto} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
    set(dirs ${import_dirs})
    if(NOT dirs)
      get_filename_component(dirs ${proto} DIRECTORY)
    endif()
    # The .proto's path relative to the first import dir holding it names the outputs.
    set(relative)
    foreach(dir IN LISTS dirs)
      file(RELATIVE_PATH candidate ${dir} ${proto})
      if(NOT candidate MATCHES "^\\.\\./")
        set(relative ${candidate})
        break()
      endif()
    endforeach()
    if(NOT relative)
      message(FATAL_ERROR "mrpc_generate: ${proto} is in none of the IMPORT_DIRS (${dirs})")
    endif()
    string(REGEX REPLACE "\\.proto$" "" stem ${relative})
    if(stem IN_LIST stems)
      message(FATAL_ERROR "mrpc_generate: two .proto files of ${G_TARGET} would both generate "
                          "${out_dir}/${stem}.mrpc.h; put them in different targets, or give "
                          "IMPORT_DIRS under which their paths differ")
    endif()
    list(APPEND stems ${stem})
    set(outputs ${out_dir}/${stem}.mrpc.h ${out_dir}/${stem}.mrpc.cc)
    set(include_flags)
    foreach(dir IN LISTS dirs)
      list(APPEND include_flags -I${dir})
    endforeach()
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND ${protoc} --plugin=protoc-gen-mrpc=${plugin} --mrpc_out=${out_arg} ${include_flags}
              ${proto}
      DEPENDS ${proto} ${plugin_dependency} ${protoc}
      COMMENT "protoc-gen-mrpc: ${relative}"
      VERBATIM)
    list(APPEND generated ${outputs})
  endforeach()

  target_sources(${G_TARGET} PRIVATE ${generated})
  target_include_directories(${G_TARGET} PUBLIC ${out_dir})
  target_link_libraries(${G_TARGET} PUBLIC ${libs})
  target_compile_features(${G_TARGET} PUBLIC cxx_std_20)
endfunction()
