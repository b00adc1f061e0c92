// `fp4moe make-tiny OUT [--seed N]`: writes a deterministic tiny DeepSeek-V4 checkpoint in
// BF16 (config.json + model.safetensors, the names transformers' save_pretrained writes): four
// layers covering sliding, CSA and HCA attention, hash and scored MoE (model/tiny.h). Small
// enough to run on any CPU; the README's main job quantizes it and runs it.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "model/tiny.h"

namespace fp4moe::cli {
namespace {

struct MakeTinyArgs {
  std::string out;
  uint64_t seed = 20260101;
};

int run_make_tiny(const MakeTinyArgs& a) {
  std::error_code ec;
  if (std::filesystem::exists(a.out, ec) && !std::filesystem::is_empty(a.out, ec)) {
    std::fprintf(stderr, "fp4moe: error: %s: output folder exists and is not empty\n", a.out.c_str());
    return kExitBadInput;
  }
  const model::TinyCheckpointInfo info = model::write_tiny_checkpoint(a.out, a.seed);
  const model::V4Config& c = info.config;
  std::printf("wrote tiny DeepSeek-V4 (%lld layers: sliding/CSA/HCA/CSA, hash+scored MoE, %lld experts, hidden %lld, "
              "vocab %lld) to %s: %zu tensors, %.1f MB, seed %llu\n",
              (long long)c.num_hidden_layers, (long long)c.n_routed_experts, (long long)c.hidden_size, (long long)c.vocab_size,
              a.out.c_str(), (size_t)info.tensors, double(info.bytes) / 1e6, (unsigned long long)a.seed);
  return kExitOk;
}

}  // namespace

void register_make_tiny(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<MakeTinyArgs>();
  CLI::App* cmd = app.add_subcommand("make-tiny", "Write a deterministic tiny DeepSeek-V4 checkpoint (BF16) for tests and demos");
  cmd->add_option("OUT", a->out, "Output folder (created; must be empty)")->required();
  cmd->add_option("--seed", a->seed, "Seed of the weights");
  cmd->callback([a, &exit_code] { exit_code = run_make_tiny(*a); });
}

}  // namespace fp4moe::cli
