// deltasync's entry point: parses the command line and runs one subcommand. Start-up errors (bad flags,
// bad config) are caught here and reported with a clear message and exit status 2.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "base/features.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"deltasync: ship only the weights that changed, from an RL trainer to its rollout fleet"};
  app.set_version_flag("--version", std::string("deltasync ") + DELTASYNC_VERSION);
  app.require_subcommand(1);
  // Every flag of a subcommand can also be set in its [section] of a TOML config file (flags win);
  // fallthrough lets `deltasync serve --config FILE` name the file after the subcommand.
  app.set_config("--config", "", "A TOML config file (see config/deltasync.toml)");
  app.fallthrough();
  int exit_status = 0;
  deltasync::cli::register_inspect(app, exit_status);
  deltasync::cli::register_demo(app, exit_status);
  deltasync::cli::register_serve(app, exit_status);
  deltasync::cli::register_publish(app, exit_status);
  deltasync::cli::register_serve_files(app, exit_status);
  deltasync::cli::register_bench(app, exit_status);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "deltasync: %s\n", e.what());
    return 2;
  }
  return exit_status;
}
