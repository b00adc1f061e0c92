// WeightSource over a checkpoint folder (see checkpoint_source.h).
#include "model/checkpoint_source.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace fp4moe::model {

CheckpointWeights::CheckpointWeights(const std::filesystem::path& dir)
    : dir_(dir.string()), ckpt_(std::make_unique<io::Checkpoint>(io::Checkpoint::open(dir))) {
  weights::CheckpointLayout layout = weights::scan_layout(*ckpt_);
  if (!layout.problems.empty()) {
    const auto& p = layout.problems.front();
    throw std::invalid_argument(p.file + ": tensor " + p.tensor + ": " + p.message +
                                (layout.problems.size() > 1
                                     ? " (and " + std::to_string(layout.problems.size() - 1) + " more problems; run fp4moe doctor)"
                                     : ""));
  }
  for (auto& l : layout.linears) linears_.emplace(l.module + ".weight", std::move(l));
}

bool CheckpointWeights::contains(const std::string& name) const {
  return linears_.count(name) != 0 || ckpt_->find(name).has_value();
}

void CheckpointWeights::count(std::initializer_list<const std::optional<io::TensorRef>*> read) const {
  for (const auto* t : read)
    if (*t) bytes_read_ += (*t)->info->nbytes();
  if (progress_) progress_(bytes_read_, total_bytes_);
}

std::string CheckpointWeights::locate(const std::string& name) const {
  const auto ref = ckpt_->find(name);
  return ref ? ref->file->path() : describe();
}

Matrix CheckpointWeights::matrix(const std::string& name) const {
  const auto it = linears_.find(name);
  if (it == linears_.end()) {
    if (ckpt_->find(name)) throw std::invalid_argument("tensor " + name + " in " + describe() + " is not a 2-D linear weight");
    throw std::invalid_argument("missing tensor " + name + " in " + describe());
  }
  Matrix m = weights::load_matrix(it->second);
  const weights::LinearTensors& l = it->second;
  count({&l.weight, &l.scale, &l.global_scale, &l.input_scale});
  return m;
}

HostTensor CheckpointWeights::tensor(const std::string& name) const {
  const auto ref = ckpt_->find(name);
  if (!ref) throw std::invalid_argument("missing tensor " + name + " in " + describe());
  HostTensor t;
  t.shape = ref->info->shape;
  const io::Dtype d = ref->info->dtype;
  if (d == io::Dtype::kI64 || d == io::Dtype::kI32) {
    const auto bytes = ref->bytes();
    const int64_t n = ref->info->numel(), sz = d == io::Dtype::kI64 ? 8 : 4;
    t.values.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      int64_t v = 0;
      if (sz == 8) std::memcpy(&v, bytes.data() + i * 8, 8);
      else {
        int32_t v32;
        std::memcpy(&v32, bytes.data() + i * 4, 4);
        v = v32;
      }
      t.values[static_cast<size_t>(i)] = static_cast<float>(v);
    }
    t.dtype = StoredDtype::kI64;
    count({&ref});
    return t;
  }
  t.values = io::tensor_to_f32(*ref);
  t.dtype = d == io::Dtype::kBF16 ? StoredDtype::kBF16 : StoredDtype::kF32;
  count({&ref});
  return t;
}

uint64_t cpu_weight_bytes(const io::Checkpoint& ckpt) {
  const weights::CheckpointLayout layout = weights::scan_layout(ckpt);
  uint64_t n = 0;
  for (const weights::LinearTensors& l : layout.linears)
    for (const auto* t : {&l.weight, &l.scale, &l.global_scale, &l.input_scale})
      if (*t) n += (*t)->info->nbytes();
  for (const auto& list : {layout.plain, layout.broken})
    for (const io::TensorRef& t : list) n += static_cast<uint64_t>(t.info->numel()) * 4;
  return n;
}

std::optional<uint64_t> available_memory_bytes(const std::string& meminfo) {
  auto field = [&](const std::string& key) -> std::optional<uint64_t> {
    for (size_t pos = 0; pos < meminfo.size();) {
      const size_t end = std::min(meminfo.find('\n', pos), meminfo.size());
      const std::string line = meminfo.substr(pos, end - pos);
      pos = end + 1;
      if (line.rfind(key + ":", 0) != 0) continue;
      unsigned long long kb = 0;
      char unit[8] = {};
      if (std::sscanf(line.c_str() + key.size() + 1, "%llu %7s", &kb, unit) != 2 || std::strcmp(unit, "kB") != 0) return std::nullopt;
      return static_cast<uint64_t>(kb) * 1024;
    }
    return std::nullopt;
  };
  const auto avail = field("MemAvailable"), swap = field("SwapFree");
  if (!avail || !swap) return std::nullopt;
  return *avail + *swap;
}

void check_memory_for(const std::filesystem::path& dir, uint64_t needed, uint64_t available) {
  if (needed <= available) return;
  char msg[256];
  std::snprintf(msg, sizeof msg,
                ": the CPU backend needs %.2f GiB for these weights, and this machine has %.2f GiB available (MemAvailable + "
                "SwapFree): `run` holds every weight in memory",
                static_cast<double>(needed) / (1u << 30), static_cast<double>(available) / (1u << 30));
  throw std::invalid_argument(dir.string() + msg);
}

LoadedCheckpoint load_v4_checkpoint(const std::filesystem::path& dir, const CheckpointWeights::Progress& progress) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(dir, ec))
    throw std::invalid_argument(dir.string() + ": a file; a checkpoint is a folder holding config.json and its .safetensors files");
  LoadedCheckpoint lc;
  lc.config = load_v4_config(dir.string());
  CheckpointWeights src(dir);
  src.on_progress(progress);
  lc.weights = load_v4_weights(lc.config, src);
  // Tensors the model does not use (e.g. multi-token-prediction layers) are not read.
  if (progress) progress(src.checkpoint().total_tensor_bytes(), src.checkpoint().total_tensor_bytes());
  return lc;
}

}  // namespace fp4moe::model
