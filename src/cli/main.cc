// deltasync's entry point: parses the command line and runs one subcommand. Start-up errors (bad flags,
// bad config) are caught here and reported with a clear message and exit status 2.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/version.h"

int main(int argc, char** argv) {
  CLI::App app{"deltasync: ship only the weights that changed, from an RL trainer to its rollout fleet"};
  // Version, git revision and the build's features (cli/version.h); exits 0.
  app.set_version_flag("--version", [] {
    std::string text = deltasync::cli::version_text();
    if (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  });
  // One log line per event on stderr: text, or one JSON object per line (base/log.h). A top-level option, so
  // it applies to every subcommand (fallthrough: `deltasync serve --log-format json` works too).
  app.add_option_function<std::string>(
         "--log-format",
         [](const std::string& f) {
           deltasync::log_format fmt;
           if (!deltasync::parse_log_format(f, fmt)) throw CLI::ValidationError("--log-format", "must be text or json, got '" + f + "'");
           deltasync::set_log_format(fmt);
         },
         "Log lines as text or json (one object per line: ts, level, module, msg, version, event fields)")
      ->default_str("text");
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
  deltasync::cli::register_status(app, exit_status);
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
