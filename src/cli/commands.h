// Subcommands of the fp4moe program. Each lives in its own cmd_*.cpp and registers itself
// on the CLI11 app; main.cpp lists them in one place.
//
// Exit codes shared by every command: 0 success, 1 findings (doctor), 2 bad or unreadable
// input (the message names the file and what is wrong).
#pragma once

#include <CLI/CLI.hpp>

namespace fp4moe::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFindings = 1;
inline constexpr int kExitBadInput = 2;

// Each register_* adds a subcommand whose callback sets `exit_code`.
void register_demo(CLI::App& app, int& exit_code);
void register_inspect(CLI::App& app, int& exit_code);
void register_doctor(CLI::App& app, int& exit_code);
void register_quantize(CLI::App& app, int& exit_code);
void register_make_tiny(CLI::App& app, int& exit_code);
void register_run(CLI::App& app, int& exit_code);

}  // namespace fp4moe::cli
