# mrpc_generate(TARGET <target> PROTOS <a.proto> ... [IMPORT_DIRS <dir> ...])
#
# Generates mrpc message classes, client stubs and server skeletons from .proto files and adds
# them to <target>, the way protobuf_generate() does for protobuf:
#
#   add_library(echo_proto STATIC)
#   mrpc_generate(TARGET echo_proto PROTOS echo.proto)
#   target_link_libraries(my_app PRIVATE echo_proto mrpc)   # mrpc: the client library
#
# For each <dir>/x.proto, protoc runs with protoc-gen-mrpc (built by this project) and writes
# x.mrpc.h and x.mrpc.cc under ${CMAKE_CURRENT_BINARY_DIR}/mrpc_generated/, keeping the path of
# the .proto relative to its import directory; that folder is added to <target>'s PUBLIC include
# directories, so code includes "x.mrpc.h" (or "sub/x.mrpc.h"). <target> is linked PUBLIC to
# mrpc_message (the message runtime) and mrpc_base; generated code needs nothing else of mrpc
# unless it calls a service, which needs libmrpc's Channel.
#
# IMPORT_DIRS: where imports are looked up (protoc -I), in order. Default: the folder of each
# .proto. Every .proto must be inside one of them. Imported .proto files need their own
# mrpc_generate (their x.mrpc.h is included by the generated code that imports them).
function(mrpc_generate)
  cmake_parse_arguments(G "" "TARGET" "PROTOS;IMPORT_DIRS" ${ARGN})
  if(NOT G_TARGET OR NOT G_PROTOS)
    message(FATAL_ERROR "mrpc_generate: TARGET and PROTOS are required")
  endif()
  if(NOT TARGET protoc-gen-mrpc)
    message(FATAL_ERROR "mrpc_generate: the protoc-gen-mrpc target is not defined yet "
                        "(tools/ must be added before ${CMAKE_CURRENT_SOURCE_DIR})")
  endif()
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/mrpc_generated)
  file(MAKE_DIRECTORY ${out_dir})

  set(import_dirs)
  foreach(dir IN LISTS G_IMPORT_DIRS)
    get_filename_component(dir ${dir} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
    list(APPEND import_dirs ${dir})
  endforeach()

  set(generated)
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
    set(outputs ${out_dir}/${stem}.mrpc.h ${out_dir}/${stem}.mrpc.cc)
    set(include_flags)
    foreach(dir IN LISTS dirs)
      list(APPEND include_flags -I${dir})
    endforeach()
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND protobuf::protoc --plugin=protoc-gen-mrpc=$<TARGET_FILE:protoc-gen-mrpc>
              --mrpc_out=${out_dir} ${include_flags} ${proto}
      DEPENDS ${proto} protoc-gen-mrpc protobuf::protoc
      COMMENT "protoc-gen-mrpc: ${relative}"
      VERBATIM)
    list(APPEND generated ${outputs})
  endforeach()

  target_sources(${G_TARGET} PRIVATE ${generated})
  target_include_directories(${G_TARGET} PUBLIC ${out_dir})
  target_link_libraries(${G_TARGET} PUBLIC mrpc_message mrpc_base)
endfunction()
