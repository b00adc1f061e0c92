// Helper for the Python-safetensors interop test (tests/tools/safetensors_interop.py):
//   st_interop write PATH   writes tensors whose bytes follow a formula the script recomputes
//   st_interop dump PATH    reads a file and prints its metadata and, per tensor, dtype, shape
//                           and the FNV-1a hash of its bytes, as JSON
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace {

uint64_t fnv1a(std::span<const uint8_t> b) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t c : b) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fp4moe::io;
  if (argc != 3) {
    std::fprintf(stderr, "usage: st_interop write|dump PATH\n");
    return 2;
  }
  try {
    if (std::strcmp(argv[1], "write") == 0) {
      // Tensor k, byte i: (31 i + 7 k + 3) mod 256.
      const std::vector<TensorSpec> specs = {
          {"embed.weight", Dtype::kBF16, {4, 6}},          {"layers.0.w.weight", Dtype::kU8, {3, 8}},
          {"layers.0.w.weight_scale", Dtype::kF8_E4M3, {3, 1}}, {"layers.0.w.weight_scale_2", Dtype::kF32, {}},
          {"ids", Dtype::kI64, {5}},                       {"empty", Dtype::kF32, {0, 4}},
          {"half", Dtype::kF16, {2, 3}},                   {"mx.scale", Dtype::kF8_E8M0, {2, 2}},
      };
      std::vector<OwnedTensor> ts;
      for (size_t k = 0; k < specs.size(); ++k) {
        OwnedTensor t{specs[k], std::vector<uint8_t>(specs[k].nbytes())};
        for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>((31 * i + 7 * k + 3) & 0xFF);
        ts.push_back(std::move(t));
      }
      write_safetensors(argv[2], ts, {{"format", "pt"}, {"producer", "fp4moe"}});
      return 0;
    }
    const auto f = SafetensorsFile::open(argv[2]);
    nlohmann::json j;
    j["metadata"] = f->header().metadata;
    j["tensors"] = nlohmann::json::object();
    for (const TensorInfo& t : f->tensors())
      j["tensors"][t.name] = {{"dtype", to_string(t.dtype)}, {"shape", t.shape}, {"fnv1a", std::to_string(fnv1a(f->data(t)))}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "st_interop: %s\n", e.what());
    return 1;
  }
}
