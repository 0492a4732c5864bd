# cmake -P script, run at every build (target ds_git_revision): writes OUT (generated/cli/git_revision.h) with
# the source tree's `git describe --always --dirty` (or "unknown" outside a git checkout), rewriting the
# file only when the revision changed so that unchanged builds stay up to date.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR rev STREQUAL "")
  set(rev "unknown")
endif()
set(text "// Generated at build time by cmake/deltasync_git_revision.cmake.\n#pragma once\n#define DELTASYNC_GIT_REVISION \"${rev}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
else()
  set(old "")
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
