# The third-party libraries deltasync's static libraries link, as imported targets. Included by the build
# (cmake/deltasync_deps.cmake) and by the installed package config (deltasyncConfig.cmake), so a consumer of
# find_package(deltasync) resolves them the same way the build did.
#
# liburing, zstd and xxhash are linked from their static archives so that the binaries run on hosts that lack
# the shared libraries (the GPU machine has no liburing). Each is located through its own package metadata:
# zstd's CMake config (zstd::libzstd_static), liburing's and libxxhash's pkg-config files; find_library only
# picks the .a inside the directory pkg-config names.
include_guard(GLOBAL)

set(Boost_NO_WARN_NEW_VERSIONS ON)
find_package(Boost 1.81 CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

if(NOT TARGET ds_uring)
  pkg_check_modules(DS_PC_LIBURING REQUIRED QUIET liburing)
  find_library(DS_LIBURING_STATIC NAMES liburing.a HINTS ${DS_PC_LIBURING_LIBDIR} ${DS_PC_LIBURING_LIBRARY_DIRS}
               REQUIRED)
  add_library(ds_uring STATIC IMPORTED)
  set_target_properties(ds_uring PROPERTIES IMPORTED_LOCATION ${DS_LIBURING_STATIC})
  if(DS_PC_LIBURING_INCLUDE_DIRS)
    set_target_properties(ds_uring PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${DS_PC_LIBURING_INCLUDE_DIRS}")
  endif()
endif()

if(NOT TARGET ds_zstd)
  find_package(zstd CONFIG REQUIRED)
  add_library(ds_zstd INTERFACE IMPORTED)
  set_target_properties(ds_zstd PROPERTIES INTERFACE_LINK_LIBRARIES zstd::libzstd_static)
endif()

if(NOT TARGET ds_xxhash)
  pkg_check_modules(DS_PC_XXHASH REQUIRED QUIET libxxhash)
  find_library(DS_XXHASH_STATIC NAMES libxxhash.a HINTS ${DS_PC_XXHASH_LIBDIR} ${DS_PC_XXHASH_LIBRARY_DIRS} REQUIRED)
  add_library(ds_xxhash STATIC IMPORTED)
  set_target_properties(ds_xxhash PROPERTIES IMPORTED_LOCATION ${DS_XXHASH_STATIC})
  if(DS_PC_XXHASH_INCLUDE_DIRS)
    set_target_properties(ds_xxhash PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${DS_PC_XXHASH_INCLUDE_DIRS}")
  endif()
endif()
