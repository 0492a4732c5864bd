# Install, export and package rules (included last by CMakeLists.txt):
#   cmake --install BUILD [--prefix P]   bin/deltasync, include/deltasync/<module>/*.h, lib/libdeltasync_*.a,
#                                       lib/cmake/deltasync (find_package(deltasync) -> deltasync::deltasync),
#                                       lib/pkgconfig/deltasync.pc, lib/systemd/system/deltasync-serve@.service,
#                                       etc/deltasync/deltasync.toml (/etc/deltasync when the prefix is /usr)
#   cpack -G DEB  (in BUILD)             deltasync_<version>_<arch>.deb of the same tree under /usr
# Paths that name the prefix (the unit's ExecStart, the .pc file, the config's /etc) are written at install time
# from the prefix actually used, so `--prefix` and cpack's /usr get correct files.
include(CMakePackageConfigHelpers)

get_property(ds_libraries GLOBAL PROPERTY DELTASYNC_LIBRARIES)
# The Python module's own core library (src/python) installs with the module, not as a C++ library.
list(REMOVE_ITEM ds_libraries deltasync_python_core)
# deltasync::deltasync: every library of the project (link this one).
add_library(deltasync_all INTERFACE)
set_target_properties(deltasync_all PROPERTIES EXPORT_NAME deltasync)
target_link_libraries(deltasync_all INTERFACE ${ds_libraries})
add_library(deltasync::deltasync ALIAS deltasync_all)

set(DS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/deltasync)
install(TARGETS deltasync RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS ${ds_libraries} deltasync_all EXPORT deltasync_targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT deltasync_targets NAMESPACE deltasync:: DESTINATION ${DS_CMAKE_DIR} FILE deltasyncTargets.cmake)
configure_package_config_file(packaging/deltasyncConfig.cmake.in ${PROJECT_BINARY_DIR}/packaging/deltasyncConfig.cmake
                              INSTALL_DESTINATION ${DS_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/packaging/deltasyncConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/packaging/deltasyncConfig.cmake
              ${PROJECT_BINARY_DIR}/packaging/deltasyncConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/deltasync_find_deps.cmake
        DESTINATION ${DS_CMAKE_DIR})

# Public headers: every module header except the internal ones and those that include a third-party header
# (DESIGN.md: Boost, CUDA, liburing do not leak out of their module).
foreach(module base codec io gpu sync http)
  file(GLOB ds_headers ${PROJECT_SOURCE_DIR}/src/${module}/*.h)
  list(FILTER ds_headers EXCLUDE REGEX "(_internal|/asio_context|/cuda_check)\\.h$")
  install(FILES ${ds_headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/deltasync/${module})
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/generated/base/features.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/deltasync/base)

# The link line of deltasync.pc: our archives in dependency order, then the third-party ones.
set(DS_PC_LIBS "-ldeltasync_http -ldeltasync_sync -ldeltasync_io -ldeltasync_gpu -ldeltasync_nccl -ldeltasync_codec -ldeltasync_base")
set(DS_PC_PRIVATE "-l:liburing.a -l:libzstd.a -l:libxxhash.a -pthread")
if(DELTASYNC_HAVE_CUDA)
  string(APPEND DS_PC_PRIVATE " -L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -ldl -lrt")
endif()
if(DELTASYNC_HAVE_NCCL)
  string(APPEND DS_PC_PRIVATE " ${NCCL_LIBRARY}")
endif()
if(DELTASYNC_HAVE_SYSTEMD)
  set(DS_UNIT_TYPE notify)
else()
  set(DS_UNIT_TYPE exec)
endif()
configure_file(packaging/install_prefixed.cmake.in ${PROJECT_BINARY_DIR}/packaging/install_prefixed.cmake @ONLY)
install(SCRIPT ${PROJECT_BINARY_DIR}/packaging/install_prefixed.cmake)
install(FILES README.md docs/api.md docs/openapi.json docs/service.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

# cpack -G DEB: one package, dependencies computed by dpkg-shlibdeps; postinst/postrm reload systemd.
set(CPACK_PACKAGE_NAME deltasync)
set(CPACK_PACKAGE_VENDOR "deltasync")
set(CPACK_PACKAGE_CONTACT "deltasync maintainers <deltasync@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Delta weight sync for RL trainers and their rollout fleets")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_SET_DESTDIR OFF)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
if(DELTASYNC_HAVE_NCCL)
  # NVIDIA's libnccl.so.2 is linked dynamically and belongs to no Debian package: dpkg-shlibdeps is told where it
  # is and records no dependency for it (a CPU-only package: -DDELTASYNC_WITH_CUDA=OFF -DDELTASYNC_WITH_NCCL=OFF).
  get_filename_component(ds_nccl_dir ${NCCL_LIBRARY} DIRECTORY)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${ds_nccl_dir})
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
                                       ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
                                       ${PROJECT_SOURCE_DIR}/packaging/debian/postrm
                                       ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_GENERATOR DEB)
include(CPack)
