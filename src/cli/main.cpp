// The fp4moe program: one binary, one subcommand per job (see commands.h). Errors from any
// command become one line on stderr and exit code 2, never an uncaught exception.
#include <cstdio>
#include <exception>
#include <new>

#include "cli/commands.h"

#ifndef FP4MOE_VERSION
#define FP4MOE_VERSION "dev"
#endif

int main(int argc, char** argv) {
  using namespace fp4moe::cli;
  CLI::App app{"fp4moe: FP4 Mixture-of-Experts inference for Hopper GPUs, with a CPU reference backend"};
  app.require_subcommand(1);
  int exit_code = kExitOk;

  app.add_subcommand("version", "Print the version")->callback([] { std::printf("fp4moe %s\n", FP4MOE_VERSION); });
  register_demo(app, exit_code);
  register_inspect(app, exit_code);
  register_doctor(app, exit_code);
  register_quantize(app, exit_code);
  register_make_tiny(app, exit_code);
  register_run(app, exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitBadInput;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "fp4moe: error: out of memory\n");
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fp4moe: error: %s\n", e.what());
    return kExitBadInput;
  }
  return exit_code;
}
