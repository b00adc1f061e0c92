// `fp4moe doctor DIR`: checks every scale of a checkpoint and its tensors against config.json,
// naming each offending tensor (the checks are listed in weights/doctor.h).
// Exit 0: clean (warnings allowed unless --strict); 1: findings; 2: unreadable.
#include <cstdio>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "io/config.h"
#include "model/config.h"
#include "io/quant_scheme.h"
#include "io/safetensors.h"
#include "weights/doctor.h"

namespace fp4moe::cli {
namespace {

struct DoctorArgs {
  std::string dir;
  bool json = false;
  bool strict = false;
  bool verbose = false;
  bool scan_weights = false;
  float typical_act_amax = 1.0f;
};

int run_doctor_cmd(const DoctorArgs& a) {
  ProgressBar bar("checking scales");
  const io::Checkpoint ckpt = io::Checkpoint::open(a.dir);
  nlohmann::json cfg_json;
  std::optional<io::ModelConfig> cfg;
  const std::filesystem::path cfg_path = ckpt.dir() / "config.json";
  if (std::filesystem::exists(cfg_path)) {
    cfg_json = io::read_json_file(cfg_path);
    cfg = io::parse_model_config(cfg_json, cfg_path.string());
  }
  const io::QuantScheme scheme = io::detect_quant_scheme(ckpt.dir(), cfg ? &cfg_json : nullptr);
  weights::DoctorOptions opt;
  opt.typical_activation_amax = a.typical_act_amax;
  opt.scan_fp8_weights = a.scan_weights;
  weights::DoctorReport r =
      weights::run_doctor(ckpt, cfg ? &*cfg : nullptr, scheme, opt, [&](uint64_t d, uint64_t t) { bar.update(d, t); });
  bar.done();
  // A DeepSeek-V4 config.json that `run` would refuse (model::validate_v4_config and the rotary
  // tables) is an error here too, so that a clean report means the checkpoint runs.
  if (cfg && cfg->v4) {
    try {
      model::validate_v4_config(*cfg->v4);
      (void)model::rope_inv_freq(cfg->v4->rope_main, cfg->v4->qk_rope_head_dim);
      (void)model::rope_inv_freq(cfg->v4->rope_compress, cfg->v4->qk_rope_head_dim);
    } catch (const std::invalid_argument& e) {
      r.findings.push_back({weights::Severity::kError, "config-invalid", "", cfg_path.string(), e.what()});
    }
  }
  const bool failed = r.errors() > 0 || (a.strict && r.warnings() > 0);
  const int code = failed ? kExitFindings : kExitOk;

  if (a.json) {
    nlohmann::ordered_json j;
    j["path"] = a.dir;
    // null without a config.json: a null const char* must not reach the json's string constructor.
    if (cfg) j["architecture"] = io::to_string(cfg->arch);
    else j["architecture"] = nullptr;
    j["scheme"] = io::to_string(scheme.kind);
    j["linears"] = r.linears;
    j["block_scales_checked"] = r.block_scales_checked;
    j["global_scales_checked"] = r.global_scales_checked;
    j["errors"] = r.errors();
    j["warnings"] = r.warnings();
    j["exit_code"] = code;
    j["findings"] = nlohmann::ordered_json::array();
    for (const weights::Finding& f : r.findings)
      j["findings"].push_back({{"severity", weights::to_string(f.severity)}, {"check", f.check}, {"tensor", f.tensor},
                               {"file", f.file}, {"message", f.message}});
    std::printf("%s\n", j.dump(2).c_str());
    return code;
  }
  std::printf("doctor        %s\n", a.dir.c_str());
  std::printf("architecture  %s\n", cfg ? io::to_string(cfg->arch) : "unknown (no config.json)");
  std::printf("scheme        %s\n", scheme.describe().c_str());
  std::printf("checked       %lld linear layers, %lld block scales, %lld global/input scales\n\n", static_cast<long long>(r.linears),
              static_cast<long long>(r.block_scales_checked), static_cast<long long>(r.global_scales_checked));
  // At most kShown findings per check unless --verbose: a real checkpoint can repeat one
  // warning for every expert.
  constexpr int kShown = 5;
  std::map<std::string, int> per_check;
  for (const weights::Finding& f : r.findings) {
    if (++per_check[f.check] > kShown && !a.verbose) continue;
    std::printf("%-8s %-22s %s", weights::to_string(f.severity), f.check.c_str(), f.tensor.empty() ? "" : f.tensor.c_str());
    std::printf("%s%s%s: %s\n", f.file.empty() ? "" : " (", f.file.c_str(), f.file.empty() ? "" : ")", f.message.c_str());
  }
  for (const auto& [check, n] : per_check)
    if (n > kShown && !a.verbose) std::printf("... and %d more %s findings (--verbose or --json lists all)\n", n - kShown, check.c_str());
  std::printf("%s%lld error%s, %lld warning%s: %s\n", r.findings.empty() ? "" : "\n", static_cast<long long>(r.errors()),
              r.errors() == 1 ? "" : "s", static_cast<long long>(r.warnings()), r.warnings() == 1 ? "" : "s",
              failed ? "NOT OK" : "ok");
  return code;
}

}  // namespace

void register_doctor(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<DoctorArgs>();
  CLI::App* cmd = app.add_subcommand("doctor", "Check every scale and tensor of a checkpoint; exit 0 clean, 1 findings, 2 unreadable");
  cmd->add_option("dir", a->dir, "Checkpoint folder (or a single .safetensors file)")->required();
  cmd->add_flag("--json", a->json, "Print a machine-readable report");
  cmd->add_flag("--strict", a->strict, "Count warnings as findings");
  cmd->add_flag("--scan-weights", a->scan_weights,
                "Also read every FP8 weight byte for e4m3 NaN codes and every BF16/F32 linear weight for NaN or Inf (reads the whole checkpoint)");
  cmd->add_flag("--verbose", a->verbose, "List every finding (the text report shows 5 per check)");
  cmd->add_option("--typical-act-amax", a->typical_act_amax,
                  "Activation magnitude that an input_scale must not saturate (default 1)")->check(CLI::PositiveNumber);
  cmd->callback([a, &exit_code] { exit_code = run_doctor_cmd(*a); });
}

}  // namespace fp4moe::cli
