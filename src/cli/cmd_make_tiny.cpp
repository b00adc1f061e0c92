// `fp4moe make-tiny OUT [--seed N]`: writes a deterministic tiny DeepSeek-V4 checkpoint in
// BF16 (config.json + model.safetensors, the names transformers' save_pretrained writes): four
// layers covering sliding, CSA and HCA attention, hash and scored MoE (model/tiny.h). Small
// enough to run on any CPU; the README's main job quantizes it and runs it.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "formats/codecs.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/tiny.h"

namespace fp4moe::cli {
namespace {

struct MakeTinyArgs {
  std::string out;
  uint64_t seed = 20260101;
};

io::OwnedTensor owned(const std::string& name, const model::HostTensor& t) {
  io::OwnedTensor o;
  o.spec.name = name;
  o.spec.shape = t.shape;
  switch (t.dtype) {
    case model::StoredDtype::kF32:
      o.spec.dtype = io::Dtype::kF32;
      o.bytes.resize(t.values.size() * 4);
      std::memcpy(o.bytes.data(), t.values.data(), o.bytes.size());
      break;
    case model::StoredDtype::kBF16:
      o.spec.dtype = io::Dtype::kBF16;
      o.bytes.resize(t.values.size() * 2);
      for (size_t i = 0; i < t.values.size(); ++i) {
        const uint16_t h = bf16_from_float(t.values[i]);
        std::memcpy(o.bytes.data() + i * 2, &h, 2);
      }
      break;
    case model::StoredDtype::kI64:
      o.spec.dtype = io::Dtype::kI64;
      o.bytes.resize(t.values.size() * 8);
      for (size_t i = 0; i < t.values.size(); ++i) {
        const int64_t v = static_cast<int64_t>(t.values[i]);
        std::memcpy(o.bytes.data() + i * 8, &v, 8);
      }
      break;
  }
  return o;
}

int run_make_tiny(const MakeTinyArgs& a) {
  std::error_code ec;
  if (std::filesystem::exists(a.out, ec) && !std::filesystem::is_empty(a.out, ec)) {
    std::fprintf(stderr, "fp4moe: error: %s: output folder exists and is not empty\n", a.out.c_str());
    return kExitBadInput;
  }
  std::filesystem::create_directories(a.out);
  const model::V4Config c = model::tiny_v4_config();
  const model::InMemoryWeights w = model::make_tiny_weights(c, a.seed);
  std::vector<io::OwnedTensor> tensors;
  for (const auto& [name, m] : w.matrices) {
    io::OwnedTensor o;
    o.spec = io::TensorSpec{name, io::Dtype::kBF16, {m.rows, m.cols}};
    o.bytes = m.data;  // kBF16 matrix bytes are the row-major bf16 tensor
    tensors.push_back(std::move(o));
  }
  for (const auto& [name, t] : w.tensors) tensors.push_back(owned(name, t));
  std::sort(tensors.begin(), tensors.end(), [](const auto& x, const auto& y) { return x.spec.name < y.spec.name; });
  const std::filesystem::path dir(a.out);
  io::write_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  std::ofstream(dir / "config.json") << model::v4_config_to_json(c) << "\n";
  uint64_t bytes = 0;
  for (const auto& t : tensors) bytes += t.bytes.size();
  std::printf("wrote tiny DeepSeek-V4 (%lld layers: sliding/CSA/HCA/CSA, hash+scored MoE, %lld experts, hidden %lld, "
              "vocab %lld) to %s: %zu tensors, %.1f MB, seed %llu\n",
              (long long)c.num_layers, (long long)c.n_routed_experts, (long long)c.hidden_size, (long long)c.vocab_size,
              a.out.c_str(), tensors.size(), double(bytes) / 1e6, (unsigned long long)a.seed);
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
