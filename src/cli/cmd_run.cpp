// `fp4moe run --model DIR --prompt-ids "1,2,3" --max-new-tokens N [--logits-out FILE]
//  [--dtype bf16|fp32]`: greedy generation with the DeepSeek-V4 forward on the CPU backend.
// The prompt is one prefill; each new token is one decode step against the per-layer state.
// Prints the generated ids and tokens/s (prefill and decode separately). Refused (exit 2)
// before loading: a --logits-out file that cannot be written; at load: stored values that would
// make outputs NaN or infinite; before the generation: prompt + N past max_position_embeddings.
// A quantization config that cannot be read is a warning: the tensors decide the formats. On a
// terminal, a progress bar on stderr follows the load.
//
// --logits-out writes an fp32 safetensors file: "logits" [P + N, vocab], row i being the
// logits after token i of prompt + generated (every generated token is fed back, the last
// one too), and "ids" I64 [P + N], the tokens those rows were computed on.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "io/config.h"
#include "io/quant_scheme.h"
#include "io/safetensors.h"
#include "model/checkpoint_source.h"
#include "model/model.h"

namespace fp4moe::cli {
namespace {

struct RunArgs {
  std::string model, prompt_ids, logits_out, dtype = "bf16";
  int64_t max_new_tokens = 16;
};

// Comma-separated token ids; spaces around an id are allowed, an empty item (",,", a leading or
// trailing comma) is refused rather than skipped: it is most often a lost id.
std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  for (size_t pos = 0, n = 1;; ++n) {
    const size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) {
      if (comma == std::string::npos && n == 1) break;  // nothing at all: reported below
      throw std::invalid_argument("--prompt-ids '" + s + "': item " + std::to_string(n) +
                                  " is empty (comma-separated non-negative integers, e.g. \"1,2,3\")");
    }
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > INT32_MAX)
      throw std::invalid_argument("--prompt-ids: '" + item + "' is not a token id (comma-separated non-negative integers)");
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (ids.empty()) throw std::invalid_argument("--prompt-ids: no token ids given");
  return ids;
}

int32_t argmax(const float* v, int64_t n) { return static_cast<int32_t>(std::max_element(v, v + n) - v); }

// The last resort behind the load checks: a NaN or infinite logit would make the greedy pick
// meaningless (argmax over NaN picks whatever comes first), so the run stops there instead of
// printing it. rows: the positions these logits belong to, first at `first_pos`.
void check_logits(const std::vector<float>& logits, int64_t V, int64_t first_pos) {
  for (size_t i = 0; i < logits.size(); ++i)
    if (!std::isfinite(logits[i]))
      throw std::runtime_error("the logits of position " + std::to_string(first_pos + int64_t(i) / V) + " (token " +
                               std::to_string(int64_t(i) % V) + ") are " + (std::isnan(logits[i]) ? "NaN" : "infinite") +
                               ": the forward overflowed (every stored value was finite at load, so some weights or scales "
                               "are too large for the activations they meet; `fp4moe doctor --scan-weights` lists those that "
                               "overflow fp32 by themselves)");
}

// --logits-out is written after the generation: a folder that does not exist, or a file that
// cannot be written there, is refused before it. The probe opens the file for appending (an
// existing file keeps its bytes) and removes it again if it did not exist.
void check_logits_out(const std::string& path) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::invalid_argument("--logits-out " + path + ": folder " + dir.string() + " does not exist");
  if (fs::is_directory(p, ec)) throw std::invalid_argument("--logits-out " + path + ": is a folder, not a file name");
  const bool existed = fs::exists(p, ec);
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (!f) throw std::invalid_argument("--logits-out " + path + ": cannot be written (" + std::strerror(errno) + ")");
  std::fclose(f);
  if (!existed) fs::remove(p, ec);
}

// Each layer's format comes from its tensors (weights/linear.h), so a quantization config that
// cannot be read does not stop the run; it is said, since the doctor refuses such a checkpoint.
void warn_on_unreadable_quant_config(const std::string& dir) {
  try {
    const std::filesystem::path cfg_path = std::filesystem::path(dir) / "config.json";
    const nlohmann::json cfg = io::read_json_file(cfg_path);
    (void)io::detect_quant_scheme(dir, &cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "fp4moe: warning: %s; the weights were read by their own tensors' layout (fp4moe doctor checks the "
                 "quantization config against them)\n",
                 e.what());
  }
}

int run_run(const RunArgs& a) {
  const std::vector<int32_t> prompt = parse_ids(a.prompt_ids);
  check_logits_out(a.logits_out);
  const bool keep_logits = !a.logits_out.empty();  // else only the last row is needed
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  {  // refused before loading when the weights cannot fit (a missing /proc/meminfo skips it)
    std::ifstream mi("/proc/meminfo");
    const std::string text((std::istreambuf_iterator<char>(mi)), std::istreambuf_iterator<char>());
    if (const auto avail = model::available_memory_bytes(text); avail && std::filesystem::is_directory(a.model))
      model::check_memory_for(a.model, model::cpu_weight_bytes(io::Checkpoint::open(a.model)), *avail);
  }
  ProgressBar bar("loading weights");
  model::LoadedCheckpoint lc = model::load_v4_checkpoint(a.model, [&](uint64_t d, uint64_t t) { bar.update(d, t); });
  bar.done();
  const model::V4Config cfg = lc.config;
  warn_on_unreadable_quant_config(a.model);
  // Positions past the model's context would run with rotary frequencies it was not trained
  // for: refused before the generation (the prompt and every new token, each fed back, take one
  // position each).
  const int64_t positions = static_cast<int64_t>(prompt.size()) + a.max_new_tokens;
  if (cfg.max_position_embeddings > 0 && positions > cfg.max_position_embeddings)
    throw std::invalid_argument("--max-new-tokens " + std::to_string(a.max_new_tokens) + ": " + std::to_string(prompt.size()) +
                                " prompt tokens + " + std::to_string(a.max_new_tokens) + " new ones = " + std::to_string(positions) +
                                " positions, past the model's context of " + std::to_string(cfg.max_position_embeddings) +
                                " (max_position_embeddings, " + a.model + "/config.json)");
  const cpu::ActDType dt = a.dtype == "fp32" ? cpu::ActDType::kF32 : cpu::ActDType::kBF16;
  const model::V4Model m(cfg, std::move(lc.weights), model::ModelOptions{dt, nullptr});
  const double load_s = std::chrono::duration<double>(clock::now() - t0).count();
  const int64_t V = cfg.vocab_size;
  std::printf("model %s: DeepSeek-V4, %lld layers, hidden %lld, %lld experts, vocab %lld; activations %s; loaded in %.2f s\n",
              a.model.c_str(), (long long)cfg.num_hidden_layers, (long long)cfg.hidden_size, (long long)cfg.n_routed_experts,
              (long long)V, cpu::to_string(dt), load_s);

  model::SequenceState st = m.new_state();
  std::vector<float> all_logits;
  std::vector<int32_t> all_ids = prompt;
  const auto p0 = clock::now();
  std::vector<float> logits = m.forward(st, prompt);
  check_logits(logits, V, int64_t(prompt.size()) - int64_t(logits.size()) / V);
  const double prefill_s = std::chrono::duration<double>(clock::now() - p0).count();
  if (keep_logits) all_logits.insert(all_logits.end(), logits.begin(), logits.end());

  std::vector<int32_t> generated;
  const auto d0 = clock::now();
  for (int64_t i = 0; i < a.max_new_tokens; ++i) {
    const int32_t next = argmax(&logits[logits.size() - size_t(V)], V);
    generated.push_back(next);
    all_ids.push_back(next);
    const int32_t one[1] = {next};
    logits = m.forward(st, one);
    check_logits(logits, V, int64_t(prompt.size()) + i);
    if (keep_logits) all_logits.insert(all_logits.end(), logits.begin(), logits.end());
  }
  const double decode_s = std::chrono::duration<double>(clock::now() - d0).count();

  std::printf("generated:");
  for (int32_t id : generated) std::printf(" %d", id);
  std::printf("\nprefill: %zu tokens in %.3f s (%.1f tokens/s); decode: %lld tokens in %.3f s (%.1f tokens/s)\n",
              prompt.size(), prefill_s, double(prompt.size()) / std::max(prefill_s, 1e-9), (long long)a.max_new_tokens,
              decode_s, a.max_new_tokens ? double(a.max_new_tokens) / std::max(decode_s, 1e-9) : 0.0);

  if (!a.logits_out.empty()) {
    const int64_t rows = int64_t(all_ids.size());
    io::OwnedTensor lt, it;
    lt.spec = io::TensorSpec{"logits", io::Dtype::kF32, {rows, V}};
    lt.bytes.resize(all_logits.size() * 4);
    std::memcpy(lt.bytes.data(), all_logits.data(), lt.bytes.size());
    it.spec = io::TensorSpec{"ids", io::Dtype::kI64, {rows}};
    it.bytes.resize(size_t(rows) * 8);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t v = all_ids[size_t(i)];
      std::memcpy(it.bytes.data() + i * 8, &v, 8);
    }
    io::write_safetensors(a.logits_out, {it, lt}, {{"dtype", cpu::to_string(dt)}, {"prompt_tokens", std::to_string(prompt.size())}});
    std::printf("logits of %lld positions written to %s\n", (long long)rows, a.logits_out.c_str());
  }
  return kExitOk;
}

}  // namespace

void register_run(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Greedy generation with a DeepSeek-V4 checkpoint on the CPU backend");
  cmd->add_option("--model", a->model, "Checkpoint folder (config.json + safetensors; BF16, NVFP4, MXFP4, FP8)")->required();
  cmd->add_option("--prompt-ids", a->prompt_ids, "Prompt token ids, comma-separated, e.g. \"1,2,3\"")->required();
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "Tokens to generate")->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_option("--logits-out", a->logits_out, "Write the logits of every position to this fp32 safetensors file");
  cmd->add_option("--dtype", a->dtype, "Activation dtype the CPU backend emulates")->check(CLI::IsMember({"bf16", "fp32"}));
  cmd->callback([a, &exit_code] { exit_code = run_run(*a); });
}

}  // namespace fp4moe::cli
