// `fp4moe inspect PATH`: what a checkpoint is (architecture, quantization scheme) and where its
// bytes go: one row per component (attention, routed experts, ...) with the number of tensors,
// their formats, the bytes they take and what the same weights would take in BF16.
#include <cstdio>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "io/config.h"
#include "io/quant_scheme.h"
#include "io/safetensors.h"
#include "weights/linear.h"
#include "weights/names.h"

namespace fp4moe::cli {
namespace {

struct Row {
  int64_t tensors = 0;
  std::set<std::string> formats;
  int64_t bytes = 0;
  int64_t bf16_bytes = 0;
};

std::string human(int64_t b) {
  char s[32];
  const double v = static_cast<double>(b);
  if (v >= 1024.0 * 1024 * 1024) std::snprintf(s, sizeof s, "%.2f GiB", v / (1024.0 * 1024 * 1024));
  else if (v >= 1024.0 * 1024) std::snprintf(s, sizeof s, "%.2f MiB", v / (1024.0 * 1024));
  else if (v >= 1024.0) std::snprintf(s, sizeof s, "%.1f KiB", v / 1024.0);
  else std::snprintf(s, sizeof s, "%lld B", static_cast<long long>(b));
  return s;
}

bool is_float(io::Dtype d) {
  return d == io::Dtype::kBF16 || d == io::Dtype::kF16 || d == io::Dtype::kF32 || d == io::Dtype::kF64;
}

int run_inspect(const std::string& path) {
  ProgressBar bar("reading headers");
  const io::Checkpoint ckpt = io::Checkpoint::open(path, [&](size_t i, size_t n, const std::string&) { bar.update(i + 1, n); });
  bar.done();

  std::string arch = "unknown (no config.json)";
  nlohmann::json cfg_json;
  const std::filesystem::path cfg_path = ckpt.dir() / "config.json";
  if (std::filesystem::exists(cfg_path)) {
    cfg_json = io::read_json_file(cfg_path);
    const io::ModelConfig cfg = io::parse_model_config(cfg_json, cfg_path.string());
    arch = std::string(io::to_string(cfg.arch)) + " (" + std::to_string(cfg.num_layers()) + " layers, hidden " +
           std::to_string(cfg.hidden_size()) + ", " + std::to_string(cfg.num_routed_experts()) + " routed experts)";
  }
  const io::QuantScheme scheme = io::detect_quant_scheme(ckpt.dir(), cfg_json.is_null() ? nullptr : &cfg_json);
  const weights::CheckpointLayout layout = weights::scan_layout(ckpt);

  std::map<weights::Component, Row> rows;
  for (const weights::LinearTensors& l : layout.linears) {
    Row& r = rows[weights::component_of(weights::canonical_name(l.module))];
    ++r.tensors;
    r.formats.insert(l.format == MatrixFormat::kBF16 ? std::string(io::to_string(l.weight->info->dtype)) : to_string(l.format));
    r.bytes += weights::linear_bytes(l);
    r.bf16_bytes += weights::linear_bf16_bytes(l);
  }
  for (const io::TensorRef& t : layout.plain) {
    Row& r = rows[weights::component_of(weights::canonical_name(t.info->name))];
    ++r.tensors;
    r.formats.insert(io::to_string(t.info->dtype));
    r.bytes += static_cast<int64_t>(t.info->nbytes());
    r.bf16_bytes += is_float(t.info->dtype) ? t.info->numel() * 2 : static_cast<int64_t>(t.info->nbytes());
  }

  std::printf("checkpoint    %s (%zu file%s, %zu tensors, %s)\n", path.c_str(), ckpt.files().size(),
              ckpt.files().size() == 1 ? "" : "s", ckpt.names().size(), human(static_cast<int64_t>(ckpt.total_tensor_bytes())).c_str());
  std::printf("architecture  %s\n", arch.c_str());
  std::printf("scheme        %s%s\n", scheme.describe().c_str(), scheme.source.empty() ? "" : (" from " + scheme.source).c_str());
  std::printf("\n%-22s %8s  %-22s %12s %12s %7s\n", "component", "weights", "format", "bytes", "as BF16", "ratio");
  Row total;
  for (const auto& [c, r] : rows) {
    std::string f;
    for (const std::string& s : r.formats) f += (f.empty() ? "" : "+") + s;
    std::printf("%-22s %8lld  %-22s %12s %12s %6.2fx\n", weights::to_string(c), static_cast<long long>(r.tensors), f.c_str(),
                human(r.bytes).c_str(), human(r.bf16_bytes).c_str(), r.bytes ? double(r.bf16_bytes) / double(r.bytes) : 0.0);
    total.tensors += r.tensors;
    total.bytes += r.bytes;
    total.bf16_bytes += r.bf16_bytes;
  }
  std::printf("%-22s %8lld  %-22s %12s %12s %6.2fx\n", "total", static_cast<long long>(total.tensors), "", human(total.bytes).c_str(),
              human(total.bf16_bytes).c_str(), total.bytes ? double(total.bf16_bytes) / double(total.bytes) : 0.0);
  if (!layout.problems.empty())
    std::printf("\n%zu tensor%s do not fit their layer's layout: run `fp4moe doctor` for details\n", layout.problems.size(),
                layout.problems.size() == 1 ? "" : "s");
  return kExitOk;
}

}  // namespace

void register_inspect(CLI::App& app, int& exit_code) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("inspect", "Architecture, quantization scheme and bytes per component of a checkpoint");
  cmd->add_option("path", *path, "Checkpoint folder or a single .safetensors file")->required();
  cmd->callback([path, &exit_code] { exit_code = run_inspect(*path); });
}

}  // namespace fp4moe::cli
