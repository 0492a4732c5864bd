// The deltasync subcommands. Each registers itself on the CLI11 app and runs when selected; run functions
// return the process exit status.
#pragma once

namespace CLI {
class App;
}

namespace deltasync::cli {

// Registers the subcommand and returns a callback slot: the command's run() is bound to the app's callback.
void register_inspect(CLI::App& app, int& exit_status);
void register_demo(CLI::App& app, int& exit_status);
void register_publish(CLI::App& app, int& exit_status);
void register_serve(CLI::App& app, int& exit_status);
void register_serve_files(CLI::App& app, int& exit_status);  // serve_files_command.cc
void register_bench(CLI::App& app, int& exit_status);        // bench_command.cc
void register_status(CLI::App& app, int& exit_status);       // status_command.cc: the fleet view

}  // namespace deltasync::cli
