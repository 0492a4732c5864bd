# Third-party dependencies, each through find_package (or its pkg-config file). Static liburing/zstd/xxhash so
# binaries run on the device machine (which has no liburing), shared ones for a shared object that sets
# DS_SHARED_THIRD_PARTY (the Python module; cmake/deltasync_find_deps.cmake); Boost 1.81 headers (+ Boost.JSON
# compiled in through its header-only source include).

include(deltasync_find_deps)  # Boost, Threads, and the static liburing / zstd / xxhash as ds_* imported targets
set(DELTASYNC_LIBURING ${DS_LIBURING_STATIC})
get_target_property(DELTASYNC_ZSTD zstd::libzstd_static LOCATION)
# The command line (CLI11, header-only; it also reads the TOML config files).
find_package(CLI11 2.1 CONFIG REQUIRED)
# sd_notify readiness for the systemd unit (libsystemd-dev); without it `serve` still runs (Type=exec units).
set(DELTASYNC_WITH_SYSTEMD AUTO CACHE STRING "Signal readiness to systemd with sd_notify: AUTO|ON|OFF")
set_property(CACHE DELTASYNC_WITH_SYSTEMD PROPERTY STRINGS AUTO ON OFF)
set(DELTASYNC_HAVE_SYSTEMD OFF)
if(NOT DELTASYNC_WITH_SYSTEMD STREQUAL "OFF")
  pkg_check_modules(DS_PC_SYSTEMD QUIET IMPORTED_TARGET libsystemd)
  if(DS_PC_SYSTEMD_FOUND)
    set(DELTASYNC_HAVE_SYSTEMD ON)
  elseif(DELTASYNC_WITH_SYSTEMD STREQUAL "ON")
    message(FATAL_ERROR "DELTASYNC_WITH_SYSTEMD=ON but libsystemd (libsystemd-dev) was not found")
  else()
    message(STATUS "libsystemd not found: serve cannot sd_notify; the unit is Type=exec (DELTASYNC_WITH_SYSTEMD=AUTO)")
  endif()
endif()

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
