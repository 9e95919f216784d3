# Helpers that give every target of mrpc's own code the same flags.
#
#   mrpc_strict(target)      warnings as errors; for mrpc's own code, never for generated code
#   mrpc_add_test(name SOURCES ... [LIBS ...] [LABELS ...])
#                            a doctest executable registered with CTest, one CTest test per case;
#                            LABELS soak keeps it out of the default run (ctest -LE soak);
#                            LABELS multishard also runs it under TSan (scripts/test.sh). Each
#                            label L gets a target mrpc_tests_L that builds its executables, and
#                            mrpc_tests builds every executable of the default run (tests/).

set(MRPC_WARNINGS -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor -Wold-style-cast
                  -Wimplicit-fallthrough -Wno-missing-field-initializers)

function(mrpc_strict target)
  target_compile_options(${target} PRIVATE ${MRPC_WARNINGS})
endfunction()

include(doctest OPTIONAL RESULT_VARIABLE MRPC_DOCTEST_MODULE)

function(mrpc_add_test name)
  # SHARDED: the test cases are registered a second time, run against a daemon with 3 runtime
  # threads (suffix " [3 runtime threads]", label multishard: the TSan stage runs these).
  cmake_parse_arguments(T "SHARDED" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE mrpc_doctest_main ${T_LIBS})
  mrpc_strict(${name})
  set(labels unit)
  if(T_LABELS)
    set(labels ${T_LABELS})
  endif()
  doctest_discover_tests(${name} PROPERTIES LABELS "${labels}" TIMEOUT 300
                         WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  if(T_SHARDED)
    doctest_discover_tests(${name} EXTRA_ARGS --runtime-threads=3
                           TEST_SUFFIX " [3 runtime threads]"
                           PROPERTIES LABELS "multishard;${labels}" TIMEOUT 300
                           WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
    set_property(GLOBAL APPEND PROPERTY MRPC_TEST_LABELS multishard)
    set_property(GLOBAL APPEND PROPERTY MRPC_TEST_TARGETS_multishard ${name})
  endif()
  foreach(label IN LISTS labels)
    set_property(GLOBAL APPEND PROPERTY MRPC_TEST_LABELS ${label})
    set_property(GLOBAL APPEND PROPERTY MRPC_TEST_TARGETS_${label} ${name})
  endforeach()
  if(NOT labels STREQUAL "soak")
    set_property(GLOBAL APPEND PROPERTY MRPC_TEST_TARGETS_default ${name})
  endif()
endfunction()
