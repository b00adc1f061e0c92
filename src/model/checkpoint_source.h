// A WeightSource over a checkpoint folder read by io and weights: any scheme those read
// (BF16, ModelOpt NVFP4/MXFP4, compressed-tensors NVFP4, DeepSeek-native FP8 block / MXFP4).
// Linear layers come from weights::scan_layout + load_matrix; small tensors are converted to
// fp32 (BF16, F32, F8 exactly; I64/I32 integers such as tid2eid exactly below 2^24).
#pragma once

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/weight_source.h"
#include "model/weights.h"
#include "weights/linear.h"

namespace fp4moe::model {

class CheckpointWeights final : public WeightSource {
 public:
  explicit CheckpointWeights(const std::filesystem::path& dir);

  bool contains(const std::string& name) const override;
  HostTensor tensor(const std::string& name) const override;
  Matrix matrix(const std::string& name) const override;
  std::string describe() const override { return "checkpoint " + dir_; }
  std::string locate(const std::string& name) const override;

  const io::Checkpoint& checkpoint() const { return *ckpt_; }

  // Progress of a load: f(bytes read, the checkpoint's tensor bytes) after every tensor or
  // linear layer read (a linear's bytes are its weight and scale tensors).
  using Progress = std::function<void(uint64_t, uint64_t)>;
  void on_progress(Progress f) {
    progress_ = std::move(f);
    total_bytes_ = ckpt_->total_tensor_bytes();
  }

 private:
  void count(std::initializer_list<const std::optional<io::TensorRef>*> read) const;

  std::string dir_;
  std::unique_ptr<io::Checkpoint> ckpt_;
  std::map<std::string, weights::LinearTensors> linears_;  // by ".weight" name
  Progress progress_;
  uint64_t total_bytes_ = 0;
  mutable uint64_t bytes_read_ = 0;
};

// What the CPU backend holds in memory for a checkpoint's weights, from its headers alone: each
// linear layer's stored bytes (codes, scales, global and input scales: load_matrix copies them
// as they are), every other tensor as fp32 (4 bytes per value), without reading a weight. The
// sequence state and activations come on top (small beside the weights of a real checkpoint).
uint64_t cpu_weight_bytes(const io::Checkpoint& ckpt);
// MemAvailable + SwapFree of a /proc/meminfo text, in bytes; nullopt when either is missing.
std::optional<uint64_t> available_memory_bytes(const std::string& meminfo);
// Throws std::invalid_argument naming the checkpoint and both sizes when its weights need more
// memory than `available` (checked before loading: an oversized load would otherwise end in
// the kernel's OOM killer, minutes in, with no message).
void check_memory_for(const std::filesystem::path& dir, uint64_t needed, uint64_t available);

// Config and weights of a checkpoint folder, ready to run.
struct LoadedCheckpoint {
  V4Config config;
  V4Weights weights;
};
// progress (optional): as CheckpointWeights::on_progress, ending at (total, total).
LoadedCheckpoint load_v4_checkpoint(const std::filesystem::path& dir, const CheckpointWeights::Progress& progress = {});

}  // namespace fp4moe::model
