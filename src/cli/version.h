// `deltasync --version`: the version, the git revision the binary was built from and the optional parts
// compiled in (CUDA, NCCL, io_uring, systemd readiness).
#pragma once

#include <string>

namespace deltasync::cli {

// Several lines, the first "deltasync <version> (git <revision>)".
std::string version_text();
// "<version>" and "<revision>" alone (GET /status and `deltasync status` compare them across a fleet).
const char* version_string() noexcept;
const char* git_revision() noexcept;

}  // namespace deltasync::cli
