# What `cmake --install` puts into a prefix, and the package an outside project finds there:
#
#   include/mrpc/{base,message,client}/   the app library's public headers
#   lib/libmrpc.so, lib/libmrpc.a         the app library (client, shm transport, message runtime,
#                                         base), shared and static, each one self-contained
#   lib/cmake/mrpc/                       find_package(mrpc CONFIG): mrpc::mrpc (shared),
#                                         mrpc::mrpc_static, mrpc_generate()
#   lib/pkgconfig/mrpc.pc                 pkg-config --cflags --libs mrpc
#   bin/protoc-gen-mrpc, bin/mrpcd, bin/mrpc-polc
#
# Components: `app` (headers, libraries, package files, protoc-gen-mrpc) and `daemon` (mrpcd,
# mrpc-polc). An app's build needs only what the app library needs: C++20, Threads, protobuf and
# (static library only) fmt. In-tree and through add_subdirectory(), mrpc::mrpc is an alias of the
# static target `mrpc`.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(NOT TARGET mrpc)
  message(FATAL_ERROR "MrpcInstall: the app library target `mrpc` (client/) is not defined")
endif()
add_library(mrpc::mrpc ALIAS mrpc)
target_compile_features(mrpc PUBLIC cxx_std_20)

# The libraries' objects: each installed library carries all of them, so an app links one file.
set(mrpc_app_objects
    $<TARGET_OBJECTS:mrpc> $<TARGET_OBJECTS:mrpc_shm> $<TARGET_OBJECTS:mrpc_shm_proto>
    $<TARGET_OBJECTS:mrpc_message> $<TARGET_OBJECTS:mrpc_base>)
set(mrpc_install_include $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

add_library(mrpc_app_shared SHARED ${mrpc_app_objects})
set_target_properties(mrpc_app_shared PROPERTIES OUTPUT_NAME mrpc EXPORT_NAME mrpc
                      VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
target_link_libraries(mrpc_app_shared PRIVATE protobuf::libprotobuf fmt::fmt PUBLIC Threads::Threads)
target_include_directories(mrpc_app_shared INTERFACE ${mrpc_install_include})
target_compile_features(mrpc_app_shared INTERFACE cxx_std_20)

add_library(mrpc_app_static STATIC ${mrpc_app_objects})
set_target_properties(mrpc_app_static PROPERTIES OUTPUT_NAME mrpc EXPORT_NAME mrpc_static)
target_link_libraries(mrpc_app_static INTERFACE protobuf::libprotobuf fmt::fmt Threads::Threads)
target_include_directories(mrpc_app_static INTERFACE ${mrpc_install_include})
target_compile_features(mrpc_app_static INTERFACE cxx_std_20)

install(TARGETS mrpc_app_shared mrpc_app_static EXPORT mrpcTargets COMPONENT app
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
foreach(area base message client)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/mrpc/${area}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mrpc COMPONENT app)
endforeach()
install(TARGETS protoc-gen-mrpc RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT app)
foreach(tool mrpcd mrpc-polc)
  if(TARGET ${tool})
    set_target_properties(${tool} PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
    install(TARGETS ${tool} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT daemon)
  endif()
endforeach()

set(mrpc_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/mrpc)
install(EXPORT mrpcTargets NAMESPACE mrpc:: DESTINATION ${mrpc_cmake_dir} COMPONENT app)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/mrpcConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/package/mrpcConfig.cmake
                              INSTALL_DESTINATION ${mrpc_cmake_dir}
                              PATH_VARS CMAKE_INSTALL_BINDIR)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/mrpcConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/mrpcConfig.cmake
              ${PROJECT_BINARY_DIR}/package/mrpcConfigVersion.cmake
              ${CMAKE_CURRENT_LIST_DIR}/MrpcGenerate.cmake
        DESTINATION ${mrpc_cmake_dir} COMPONENT app)

# The prefix as seen from the .pc file, so the prefix can be chosen at install time.
file(RELATIVE_PATH MRPC_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" MRPC_PC_TO_PREFIX "${MRPC_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/mrpc.pc.in ${PROJECT_BINARY_DIR}/package/mrpc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/package/mrpc.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT app)
