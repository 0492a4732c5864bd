# The third-party libraries deltasync's static libraries link, as imported targets. Included by the build
# (cmake/deltasync_deps.cmake) and by the installed package config (deltasyncConfig.cmake), so a consumer of
# find_package(deltasync) resolves them the same way the build did.
#
# liburing, zstd and xxhash are linked from their static archives so that the binaries run on hosts that lack
# the shared libraries (the GPU machine has no liburing). A shared object that links them (the Python module)
# sets the target property DS_SHARED_THIRD_PARTY and gets the shared libraries instead: Debian's .a files are
# not position-independent. Each is located through its own package metadata: zstd's CMake config
# (zstd::libzstd_static / zstd::libzstd_shared), liburing's and libxxhash's pkg-config files; find_library
# only picks the .a / .so inside the directory pkg-config names.
include_guard(GLOBAL)

set(Boost_NO_WARN_NEW_VERSIONS ON)
find_package(Boost 1.81 CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# ds_static_or_shared(TARGET STATIC_LIB SHARED_LIB INCLUDE_DIRS): an interface target that links the static
# archive, or the shared library for a consumer with DS_SHARED_THIRD_PARTY (the archive when there is none).
function(ds_static_or_shared target static shared includes)
  add_library(${target} INTERFACE IMPORTED)
  if(NOT shared)
    set(shared ${static})
  endif()
  set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES
                        "$<IF:$<BOOL:$<TARGET_PROPERTY:DS_SHARED_THIRD_PARTY>>,${shared},${static}>")
  if(includes)
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${includes}")
  endif()
endfunction()

if(NOT TARGET ds_uring)
  pkg_check_modules(DS_PC_LIBURING REQUIRED QUIET liburing)
  find_library(DS_LIBURING_STATIC NAMES liburing.a HINTS ${DS_PC_LIBURING_LIBDIR} ${DS_PC_LIBURING_LIBRARY_DIRS}
               REQUIRED)
  find_library(DS_LIBURING_SHARED NAMES liburing.so HINTS ${DS_PC_LIBURING_LIBDIR} ${DS_PC_LIBURING_LIBRARY_DIRS})
  ds_static_or_shared(ds_uring ${DS_LIBURING_STATIC} "${DS_LIBURING_SHARED}" "${DS_PC_LIBURING_INCLUDE_DIRS}")
endif()

if(NOT TARGET ds_zstd)
  find_package(zstd CONFIG REQUIRED)
  if(TARGET zstd::libzstd_shared)
    ds_static_or_shared(ds_zstd zstd::libzstd_static zstd::libzstd_shared "")
  else()
    ds_static_or_shared(ds_zstd zstd::libzstd_static "" "")
  endif()
endif()

if(NOT TARGET ds_xxhash)
  pkg_check_modules(DS_PC_XXHASH REQUIRED QUIET libxxhash)
  find_library(DS_XXHASH_STATIC NAMES libxxhash.a HINTS ${DS_PC_XXHASH_LIBDIR} ${DS_PC_XXHASH_LIBRARY_DIRS} REQUIRED)
  find_library(DS_XXHASH_SHARED NAMES libxxhash.so HINTS ${DS_PC_XXHASH_LIBDIR} ${DS_PC_XXHASH_LIBRARY_DIRS})
  ds_static_or_shared(ds_xxhash ${DS_XXHASH_STATIC} "${DS_XXHASH_SHARED}" "${DS_PC_XXHASH_INCLUDE_DIRS}")
endif()
