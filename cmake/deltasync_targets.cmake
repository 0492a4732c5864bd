# Helpers that give every target the same warnings, include root and sanitizer flags.

set(DS_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion -Wnon-virtual-dtor
    -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough)

set(DS_SANITIZE_FLAGS "")
if(DELTASYNC_SANITIZE STREQUAL "address")
  set(DS_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(DELTASYNC_SANITIZE STREQUAL "thread")
  set(DS_SANITIZE_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT DELTASYNC_SANITIZE STREQUAL "")
  message(FATAL_ERROR "DELTASYNC_SANITIZE must be empty, 'address' or 'thread'")
endif()
# libFuzzer builds instrument every library (coverage feedback + ASan/UBSan), not just the fuzz executables.
if(DELTASYNC_BUILD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DELTASYNC_BUILD_FUZZ needs clang (CC=clang CXX=clang++)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
endif()
if(DS_SANITIZE_FLAGS)
  add_compile_options(${DS_SANITIZE_FLAGS})
  add_link_options(${DS_SANITIZE_FLAGS})
endif()

# ds_library(NAME SOURCES... [DEPS ...] [PRIVATE_DEPS ...]) -> static library deltasync_NAME, alias deltasync::NAME,
# recorded in the global property DELTASYNC_LIBRARIES for the install rules.
function(ds_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(deltasync_${name} STATIC ${A_SOURCES})
  add_library(deltasync::${name} ALIAS deltasync_${name})
  target_include_directories(deltasync_${name} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/src>
                             $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>
                             $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/deltasync>)
  # Installed and exported as deltasync::NAME (CMakeLists.txt's install rules; deltasync::deltasync is all of them).
  set_target_properties(deltasync_${name} PROPERTIES EXPORT_NAME ${name})
  set_property(GLOBAL APPEND PROPERTY DELTASYNC_LIBRARIES deltasync_${name})
  target_compile_options(deltasync_${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${DS_WARNINGS}>)
  target_link_libraries(deltasync_${name} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
endfunction()

# ds_test(NAME SOURCES... DEPS ...) -> a GoogleTest binary registered with CTest.
function(ds_test name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${DS_WARNINGS}>)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main Threads::Threads)
  target_compile_definitions(${name} PRIVATE DS_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
  include(GoogleTest)
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "${A_LABELS}")
endfunction()
