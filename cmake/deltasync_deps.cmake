# Third-party dependencies. A shared object that links them (the Python module) sets the target property
# DS_SHARED_THIRD_PARTY and gets the shared libraries instead: Debian's .a files are not position-independent.
# Static liburing/zstd/xxhash so binaries run on the device machine (which has no
# liburing); Boost 1.81 headers (+ Boost.JSON compiled in through its header-only source include).

set(Boost_NO_WARN_NEW_VERSIONS ON)
find_package(Boost 1.81 REQUIRED)

find_path(LIBURING_INCLUDE_DIR liburing.h REQUIRED)
find_library(LIBURING_STATIC NAMES liburing.a uring REQUIRED)
add_library(ds_uring INTERFACE)
target_include_directories(ds_uring SYSTEM INTERFACE ${LIBURING_INCLUDE_DIR})
find_library(LIBURING_SHARED NAMES liburing.so)
target_link_libraries(ds_uring INTERFACE $<IF:$<BOOL:$<TARGET_PROPERTY:DS_SHARED_THIRD_PARTY>>,${LIBURING_SHARED},${LIBURING_STATIC}>)
set(DELTASYNC_LIBURING ${LIBURING_STATIC})

find_path(ZSTD_INCLUDE_DIR zstd.h REQUIRED)
find_library(ZSTD_STATIC NAMES libzstd.a zstd REQUIRED)
add_library(ds_zstd INTERFACE)
target_include_directories(ds_zstd SYSTEM INTERFACE ${ZSTD_INCLUDE_DIR})
find_library(ZSTD_SHARED NAMES libzstd.so)
target_link_libraries(ds_zstd INTERFACE $<IF:$<BOOL:$<TARGET_PROPERTY:DS_SHARED_THIRD_PARTY>>,${ZSTD_SHARED},${ZSTD_STATIC}>)
set(DELTASYNC_ZSTD ${ZSTD_STATIC})

find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(XXHASH_STATIC NAMES libxxhash.a xxhash REQUIRED)
add_library(ds_xxhash INTERFACE)
target_include_directories(ds_xxhash SYSTEM INTERFACE ${XXHASH_INCLUDE_DIR})
find_library(XXHASH_SHARED NAMES libxxhash.so)
target_link_libraries(ds_xxhash INTERFACE $<IF:$<BOOL:$<TARGET_PROPERTY:DS_SHARED_THIRD_PARTY>>,${XXHASH_SHARED},${XXHASH_STATIC}>)

find_package(Threads REQUIRED)

# CUDA / NCCL: AUTO falls back with a message; ON with the dependency missing is an error.
set(DELTASYNC_HAVE_CUDA OFF)
if(NOT DELTASYNC_WITH_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(DELTASYNC_HAVE_CUDA ON)
    # The GPU path compiles .cu files: nvcc from the toolkit found, for DELTASYNC_CUDA_ARCHITECTURES.
    if(NOT CMAKE_CUDA_COMPILER)
      set(CMAKE_CUDA_COMPILER ${CUDAToolkit_NVCC_EXECUTABLE})
    endif()
    set(CMAKE_CUDA_ARCHITECTURES ${DELTASYNC_CUDA_ARCHITECTURES})
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc 13's C++20 flag; the GPU sources need C++20 like the rest.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_EXTENSIONS OFF)
  elseif(DELTASYNC_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "DELTASYNC_WITH_CUDA=ON but the CUDA toolkit was not found")
  else()
    message(STATUS "CUDA toolkit not found: building the GPU stub (DELTASYNC_WITH_CUDA=AUTO)")
  endif()
endif()

set(DELTASYNC_HAVE_NCCL OFF)
if(NOT DELTASYNC_WITH_NCCL STREQUAL "OFF")
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND DELTASYNC_HAVE_CUDA)
    set(DELTASYNC_HAVE_NCCL ON)
  elseif(DELTASYNC_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "DELTASYNC_WITH_NCCL=ON but NCCL (or CUDA) was not found")
  else()
    message(STATUS "NCCL not found: the NCCL transport reports 'not built' (DELTASYNC_WITH_NCCL=AUTO)")
  endif()
endif()

if(DELTASYNC_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(DELTASYNC_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
