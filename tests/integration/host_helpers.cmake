# The helpers that start real daemons and apps as processes, without doctest: mrpc_local_host (one
# host: its mrpcd, its apps, its control socket) and mrpc_two_hosts (two such hosts, over TCP in
# network namespaces where possible). Included by tests/integration/ and, when the tests are not
# built, by bench/ (two_hosts_bench), so both use the same definition.
set(MRPC_HOST_HELPERS_DIR ${CMAKE_CURRENT_LIST_DIR})
add_library(mrpc_local_host STATIC ${MRPC_HOST_HELPERS_DIR}/local_host.cc)
target_include_directories(mrpc_local_host PUBLIC ${MRPC_HOST_HELPERS_DIR}
                                                  ${PROJECT_SOURCE_DIR}/daemon)
target_link_libraries(mrpc_local_host PUBLIC mrpc mrpc_daemon mrpc_base)
target_compile_definitions(mrpc_local_host PUBLIC
  MRPCD_PATH="$<TARGET_FILE:mrpcd>"
  ECHO_SERVER_PATH="$<TARGET_FILE:echo_server>"
  NESTED_SERVER_PATH="$<TARGET_FILE:nested_server>")
mrpc_strict(mrpc_local_host)
# They start these programs: build them first.
add_dependencies(mrpc_local_host mrpcd echo_server nested_server)

add_library(mrpc_two_hosts STATIC ${MRPC_HOST_HELPERS_DIR}/two_hosts.cc)
target_link_libraries(mrpc_two_hosts PUBLIC mrpc_local_host fmt::fmt)
mrpc_strict(mrpc_two_hosts)
