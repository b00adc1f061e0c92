// Writing the tiny DeepSeek-V4 as a checkpoint folder (see tiny.h); built with fp4moe_io.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "formats/codecs.h"
#include "io/safetensors.h"
#include "model/tiny.h"

namespace fp4moe::model {
namespace {

io::OwnedTensor owned(const std::string& name, const HostTensor& t) {
  io::OwnedTensor o;
  o.spec.name = name;
  o.spec.shape = t.shape;
  switch (t.dtype) {
    case StoredDtype::kF32:
      o.spec.dtype = io::Dtype::kF32;
      o.bytes.resize(t.values.size() * 4);
      std::memcpy(o.bytes.data(), t.values.data(), o.bytes.size());
      break;
    case StoredDtype::kBF16:
      o.spec.dtype = io::Dtype::kBF16;
      o.bytes.resize(t.values.size() * 2);
      for (size_t i = 0; i < t.values.size(); ++i) {
        const uint16_t h = bf16_from_float(t.values[i]);
        std::memcpy(o.bytes.data() + i * 2, &h, 2);
      }
      break;
    case StoredDtype::kI64:
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

}  // namespace

TinyCheckpointInfo write_tiny_checkpoint(const std::filesystem::path& dir, uint64_t seed) {
  const V4Config c = tiny_v4_config();
  const InMemoryWeights w = make_tiny_weights(c, seed);
  std::vector<io::OwnedTensor> tensors;
  for (const auto& [name, m] : w.matrices) {
    io::OwnedTensor o;
    o.spec = io::TensorSpec{name, io::Dtype::kBF16, {m.rows, m.cols}};
    o.bytes = m.data;  // a kBF16 matrix's bytes are the row-major bf16 tensor
    tensors.push_back(std::move(o));
  }
  for (const auto& [name, t] : w.tensors) tensors.push_back(owned(name, t));
  std::sort(tensors.begin(), tensors.end(), [](const auto& x, const auto& y) { return x.spec.name < y.spec.name; });
  std::filesystem::create_directories(dir);
  io::write_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  std::ofstream(dir / "config.json") << v4_config_to_json(c) << "\n";
  TinyCheckpointInfo info{c, int64_t(tensors.size()), 0};
  for (const auto& t : tensors) info.bytes += int64_t(t.bytes.size());
  return info;
}

}  // namespace fp4moe::model
