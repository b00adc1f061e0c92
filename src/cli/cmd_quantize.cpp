// `fp4moe quantize IN OUT --scheme nvfp4|mxfp4 [--experts-only]`: a BF16 checkpoint in, a
// checkpoint in ModelOpt's layout out (see weights/quantize_checkpoint.h), tensor by tensor.
// A refused run (a NaN or infinite value, nothing to quantize, an unusable OUT) exits 2 with
// one line naming the file and tensor, and leaves OUT as it was.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "io/safetensors.h"
#include "weights/quantize_checkpoint.h"

#ifndef FP4MOE_VERSION
#define FP4MOE_VERSION "dev"
#endif

namespace fp4moe::cli {
namespace {

struct QuantizeArgs {
  std::string in, out, scheme = "nvfp4";
  bool experts_only = false;
  uint64_t shard_mb = 4096;
};

int run_quantize(const QuantizeArgs& a) {
  // Checked before the input is opened too (quantize_checkpoint checks it again): a failed run
  // leaves OUT as it was, so a rerun after fixing the input finds it absent or empty again.
  if (const std::string why = weights::output_folder_problem(a.out); !why.empty()) {
    std::fprintf(stderr, "fp4moe: error: %s: %s\n", a.out.c_str(), why.c_str());
    return kExitBadInput;
  }
  const io::Checkpoint in = io::Checkpoint::open(a.in);
  weights::QuantizeCheckpointOptions opt;
  opt.scheme = a.scheme == "mxfp4" ? weights::TargetScheme::kMXFP4 : weights::TargetScheme::kNVFP4;
  opt.experts_only = a.experts_only;
  opt.shard_bytes = a.shard_mb << 20;
  opt.producer_version = FP4MOE_VERSION;
  ProgressBar bar("quantizing");
  const weights::QuantizeCheckpointResult r =
      weights::quantize_checkpoint(in, a.out, opt, [&](uint64_t d, uint64_t t) { bar.update(d, t); });
  bar.done();
  std::printf("quantized %lld linear layers to %s, kept %lld tensors; %zu shard%s in %s\n", static_cast<long long>(r.quantized),
              a.scheme == "mxfp4" ? "MXFP4" : "NVFP4", static_cast<long long>(r.kept), r.shards.size(), r.shards.size() == 1 ? "" : "s",
              a.out.c_str());
  std::printf("%.2f MiB of tensors in, %.2f MiB out (%.2fx smaller)\n", double(r.bytes_in) / (1 << 20), double(r.bytes_out) / (1 << 20),
              r.bytes_out ? double(r.bytes_in) / double(r.bytes_out) : 0.0);
  return kExitOk;
}

}  // namespace

void register_quantize(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize a BF16 checkpoint to NVFP4 or MXFP4 (ModelOpt layout)");
  cmd->add_option("in", a->in, "BF16 checkpoint folder or .safetensors file")->required();
  cmd->add_option("out", a->out, "Output folder (created; must be empty)")->required();
  cmd->add_option("--scheme", a->scheme, "nvfp4 or mxfp4")->check(CLI::IsMember({"nvfp4", "mxfp4"}));
  cmd->add_flag("--experts-only", a->experts_only, "Quantize only the routed experts");
  cmd->add_option("--shard-size-mb", a->shard_mb, "Largest output shard in MiB (default 4096)")->check(CLI::Range(1, 1 << 20));
  cmd->callback([a, &exit_code] { exit_code = run_quantize(*a); });
}

}  // namespace fp4moe::cli
