// A WeightSource over a checkpoint folder read by io and weights: any scheme those read
// (BF16, ModelOpt NVFP4/MXFP4, compressed-tensors NVFP4, DeepSeek-native FP8 block / MXFP4).
// Linear layers come from weights::scan_layout + load_matrix; small tensors are converted to
// fp32 (BF16, F32, F8 exactly; I64/I32 integers such as tid2eid exactly below 2^24).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
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

  const io::Checkpoint& checkpoint() const { return *ckpt_; }

 private:
  std::string dir_;
  std::unique_ptr<io::Checkpoint> ckpt_;
  std::map<std::string, weights::LinearTensors> linears_;  // by ".weight" name
};

// Config and weights of a checkpoint folder, ready to run.
struct LoadedCheckpoint {
  V4Config config;
  V4Weights weights;
};
LoadedCheckpoint load_v4_checkpoint(const std::filesystem::path& dir);

}  // namespace fp4moe::model
