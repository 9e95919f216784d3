# mrpc_generate(TARGET <target> PROTOS <a.proto> ... [IMPORT_DIRS <dir> ...])
#
# Runs protoc with protoc-gen-mrpc on each .proto and adds the generated sources to <target>,
# the way protobuf_generate() does for protobuf. Defined by tools/protoc-gen-mrpc once that
# plugin exists; this placeholder fails loudly if called before.
if(NOT COMMAND mrpc_generate)
  function(mrpc_generate)
    message(FATAL_ERROR "mrpc_generate: protoc-gen-mrpc is not part of this build yet")
  endfunction()
endif()
