// The DeepSeek-V4 model fed from checkpoint files: the tiny model written by make-tiny and
// read back gives the in-memory model's logits bit for bit; quantized to NVFP4 and MXFP4 it
// gives exactly the logits of the same weights quantized in memory; config and tensor problems in a
// checkpoint are errors that name the file, field or tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <tuple>

#include "io/safetensors.h"
#include "model/checkpoint_source.h"
#include "model/model.h"
#include "model/tiny.h"
#include "ops/cpu/linear_ref.h"
#include "formats/quantize.h"
#include "util/test_util.h"
#include "util/tiny_checkpoint.h"
#include "weights/quantize_checkpoint.h"

namespace fp4moe::model {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("fp4moe_model_" + std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<float> logits_of(const V4Config& c, V4Weights w, const std::vector<int32_t>& ids) {
  const V4Model m(c, std::move(w), ModelOptions{cpu::ActDType::kBF16, nullptr});
  SequenceState st = m.new_state();
  return m.forward(st, ids);
}

const std::vector<int32_t> kIds = {5, 77, 300, 12, 12, 499, 1, 0, 64, 128, 256, 3, 9, 27, 81, 243, 7, 49, 343, 2, 4, 8};

TEST(ModelCheckpoint, MakeTinyRoundTripsExactly) {
  TempDir d;
  const TinyCheckpointInfo info = write_tiny_checkpoint(d.path / "tiny", 11);
  const LoadedCheckpoint lc = load_v4_checkpoint(d.path / "tiny");
  EXPECT_EQ(lc.config.layer_types, info.config.layer_types);
  EXPECT_EQ(lc.config.mlp_layer_types, info.config.mlp_layer_types);
  EXPECT_EQ(lc.config.qk_rope_head_dim, info.config.qk_rope_head_dim);
  const V4Config c = tiny_v4_config();
  const std::vector<float> mem = logits_of(c, load_v4_weights(c, make_tiny_weights(c, 11)), kIds);
  const std::vector<float> file = logits_of(lc.config, lc.weights, kIds);
  ASSERT_EQ(mem.size(), file.size());
  for (size_t i = 0; i < mem.size(); ++i) ASSERT_EQ(mem[i], file[i]) << "logit " << i;
}

// Independent path to the same weights: quantize the in-memory BF16 matrices with the format
// quantizers (every linear except the embedding, the head and the router, as `quantize` does).
InMemoryWeights quantized_in_memory(const InMemoryWeights& w, weights::TargetScheme scheme) {
  InMemoryWeights q = w;
  for (auto& [name, m] : q.matrices) {
    if (name.find("embed") != std::string::npos || name == "head.weight" || name.ends_with("ffn.gate.weight")) continue;
    std::vector<float> f(static_cast<size_t>(m.rows * m.cols));
    cpu::dequantize(m.view(), f.data());
    m = scheme == weights::TargetScheme::kNVFP4 ? quantize_nvfp4_weight(f.data(), m.rows, m.cols)
                                                : quantize_mxfp4(f.data(), m.rows, m.cols);
  }
  return q;
}

TEST(ModelCheckpoint, QuantizedCheckpointsEqualQuantizingInMemory) {
  TempDir d;
  write_tiny_checkpoint(d.path / "tiny", 12);
  const V4Config c = tiny_v4_config();
  const InMemoryWeights mem = make_tiny_weights(c, 12);
  for (auto scheme : {weights::TargetScheme::kNVFP4, weights::TargetScheme::kMXFP4}) {
    const fs::path out = d.path / (scheme == weights::TargetScheme::kNVFP4 ? "nvfp4" : "mxfp4");
    weights::QuantizeCheckpointOptions opt;
    opt.scheme = scheme;
    weights::quantize_checkpoint(io::Checkpoint::open(d.path / "tiny"), out, opt);
    // The load's progress: bytes read rise with each tensor or linear layer, against the
    // checkpoint's tensor bytes, and end at (total, total); this model reads every tensor.
    std::vector<std::pair<uint64_t, uint64_t>> steps;
    const LoadedCheckpoint q = load_v4_checkpoint(out, [&](uint64_t done, uint64_t total) { steps.emplace_back(done, total); });
    const uint64_t total = io::Checkpoint::open(out).total_tensor_bytes();
    ASSERT_GT(steps.size(), 68u);  // at least one call per quantized linear layer
    for (size_t i = 0; i < steps.size(); ++i) {
      ASSERT_EQ(steps[i].second, total) << i;
      ASSERT_LE(steps[i].first, total) << i;
      if (i + 2 < steps.size()) ASSERT_LT(steps[i].first, steps[i + 1].first) << i;
    }
    EXPECT_EQ(steps.back().first, total);
    EXPECT_EQ(steps[steps.size() - 2].first, total) << "a tensor of the checkpoint was not read, or read twice";
    EXPECT_EQ(q.weights.layers[1].moe.gate_up[0].fused.format,
              scheme == weights::TargetScheme::kNVFP4 ? MatrixFormat::kNVFP4 : MatrixFormat::kMXFP4);
    // NVFP4 experts keep one global scale per part of the fused gate|up matrix.
    if (scheme == weights::TargetScheme::kNVFP4) {
      EXPECT_EQ(q.weights.layers[1].moe.gate_up[0].fused.ranges.size(), 2u);
    }
    const std::vector<float> l = logits_of(q.config, q.weights, kIds);
    ASSERT_EQ(test::count_non_finite(l.data(), int64_t(l.size())), 0);
    const std::vector<float> ref = logits_of(c, load_v4_weights(c, quantized_in_memory(mem, scheme)), kIds);
    ASSERT_EQ(l.size(), ref.size());
    for (size_t i = 0; i < l.size(); ++i) ASSERT_EQ(l[i], ref[i]) << out << " logit " << i;
  }
}

TEST(ModelCheckpoint, ProblemsNameTheFileFieldOrTensor) {
  TempDir d;
  write_tiny_checkpoint(d.path / "tiny", 13);
  // A config whose layer types do not match the tensors.
  {
    std::ifstream f(d.path / "tiny" / "config.json");
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::string from = "\"heavily_compressed_attention\"", to = "\"sliding_attention\"";
    s.replace(s.find(from, s.find("\"layer_types\"")), from.size(), to);
    std::ofstream(d.path / "tiny" / "config.json") << s;
  }
  try {
    load_v4_checkpoint(d.path / "tiny");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("layer 2"), std::string::npos) << e.what();
  }
  // A file given where the checkpoint folder belongs.
  try {
    load_v4_checkpoint(d.path / "tiny" / "model.safetensors");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors: a file; a checkpoint is a folder"), std::string::npos) << e.what();
  }
  // No config.json at all.
  fs::remove(d.path / "tiny" / "config.json");
  try {
    load_v4_checkpoint(d.path / "tiny");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
}

// A NaN or infinite stored value (a norm weight, a BF16 linear weight) is refused at load with
// the tensor's name, instead of a model whose every logit is NaN.
TEST(ModelCheckpoint, NonFiniteWeightsAreRefusedNamingTheTensor) {
  TempDir d;
  write_tiny_checkpoint(d.path / "tiny", 17);
  ASSERT_NO_THROW(load_v4_checkpoint(d.path / "tiny"));
  const std::vector<io::OwnedTensor> clean = test::read_all(d.path / "tiny" / "model.safetensors");
  // bf16 0x7FC0 (NaN) and 0xFF80 (-inf), little-endian, into the middle of one tensor.
  for (const auto& [suffix, hi, lo] : {std::tuple{std::string("attn_norm.weight"), 0x7F, 0xC0}, std::tuple{std::string("attn.wkv.weight"), 0xFF, 0x80}}) {
    std::vector<io::OwnedTensor> t = clean;
    std::string planted;
    for (io::OwnedTensor& x : t)
      if (planted.empty() && x.spec.name.size() > suffix.size() && x.spec.name.ends_with(suffix) && x.spec.dtype == io::Dtype::kBF16) {
        const size_t i = (x.bytes.size() / 4) * 2;
        x.bytes[i] = static_cast<uint8_t>(lo), x.bytes[i + 1] = static_cast<uint8_t>(hi);
        planted = x.spec.name;
      }
    ASSERT_FALSE(planted.empty()) << suffix;
    io::write_safetensors(d.path / "tiny" / "model.safetensors", t);
    try {
      load_v4_checkpoint(d.path / "tiny");
      FAIL() << "no error for " << planted;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(planted), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
    }
  }
}

// Routed experts under transformers' per-expert names (mlp.experts.E.gate_proj / up_proj /
// down_proj, which quantize writes for a checkpoint of stacked experts) load as the saved names
// do: the same logits bit for bit, in BF16 and, with their scale companions, in NVFP4.
TEST(ModelCheckpoint, PerExpertTransformersNamesLoadAsTheSavedNames) {
  TempDir d;
  write_tiny_checkpoint(d.path / "tiny", 19);
  weights::QuantizeCheckpointOptions opt;
  opt.scheme = weights::TargetScheme::kNVFP4;
  weights::quantize_checkpoint(io::Checkpoint::open(d.path / "tiny"), d.path / "nvfp4", opt);
  for (const char* name : {"tiny", "nvfp4"}) {
    const fs::path dir = d.path / name;
    const LoadedCheckpoint saved = load_v4_checkpoint(dir);
    std::vector<io::OwnedTensor> t = test::read_all(dir / "model.safetensors");
    int renamed = 0;
    for (io::OwnedTensor& x : t) {
      std::string& n = x.spec.name;
      const size_t at = n.find(".ffn.experts.");
      if (at == std::string::npos || n.find(".w", at) == std::string::npos) continue;
      n.replace(at, 5, ".mlp.");
      for (const auto& [from, to] : {std::pair{".w1.", ".gate_proj."}, {".w3.", ".up_proj."}, {".w2.", ".down_proj."}})
        if (const size_t w = n.find(from); w != std::string::npos) n.replace(w, 4, to);
      ++renamed;
    }
    ASSERT_GE(renamed, 3 * 4 * 3) << name;  // 3 MoE layers x 4 experts x 3 matrices (more with scales)
    io::write_safetensors(dir / "model.safetensors", t);
    const LoadedCheckpoint hf = load_v4_checkpoint(dir);
    const std::vector<float> a = logits_of(saved.config, saved.weights, kIds), b = logits_of(hf.config, hf.weights, kIds);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << name << " logit " << i;
  }
}

// A plain tensor whose dtype or shape does not fit what it holds is refused by name: float
// parameters stored as integers (they were read as the integers' values), expert ids stored
// as floats (they were truncated), and shapes with the right element count but another layout.
TEST(ModelCheckpoint, PlainTensorsOfAnotherDtypeOrLayoutAreRefused) {
  TempDir d;
  write_tiny_checkpoint(d.path / "tiny", 23);
  const fs::path file = d.path / "tiny" / "model.safetensors";
  const std::vector<io::OwnedTensor> clean = test::read_all(file);
  auto plant = [&](const std::string& name, const std::function<void(io::OwnedTensor&)>& change, const std::string& needle) {
    std::vector<io::OwnedTensor> t = clean;
    bool found = false;
    for (io::OwnedTensor& x : t)
      if (x.spec.name == name) change(x), found = true;
    ASSERT_TRUE(found) << name;
    io::write_safetensors(file, t);
    try {
      load_v4_checkpoint(d.path / "tiny");
      ADD_FAILURE() << "no error for " << name << " (" << needle << ")";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("tensor " + name + " in " + file.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string sink = "model.layers.1.attn.attn_sink", ids = "model.layers.0.ffn.gate.tid2eid";
  // F32 -> I32 with the same bytes (4 per value).
  plant(sink, [](io::OwnedTensor& x) { ASSERT_EQ(x.spec.dtype, io::Dtype::kF32); x.spec.dtype = io::Dtype::kI32; },
        "is stored as integers");
  // I64 ids -> F32 values.
  plant(ids, [](io::OwnedTensor& x) {
          ASSERT_EQ(x.spec.dtype, io::Dtype::kI64);
          std::vector<uint8_t> f(x.bytes.size() / 2);
          for (size_t i = 0; i < f.size() / 4; ++i) {
            int64_t v;
            std::memcpy(&v, x.bytes.data() + i * 8, 8);
            const float fv = static_cast<float>(v);
            std::memcpy(f.data() + i * 4, &fv, 4);
          }
          x.bytes = f, x.spec.dtype = io::Dtype::kF32;
        }, "is stored as floats");
  // The same element count in another layout.
  plant(ids, [](io::OwnedTensor& x) { std::swap(x.spec.shape[0], x.spec.shape[1]); }, "has shape [2, 512], expected [512, 2]");
  plant("model.norm.weight", [](io::OwnedTensor& x) { x.spec.shape = {8, 8}; }, "has shape [8, 8], expected [64]");
  // A size-1 dimension is not a different layout.
  std::vector<io::OwnedTensor> t = clean;
  for (io::OwnedTensor& x : t)
    if (x.spec.name == "model.norm.weight") x.spec.shape = {1, 64};
  io::write_safetensors(file, t);
  EXPECT_NO_THROW(load_v4_checkpoint(d.path / "tiny"));
}

// The memory `run` checks before loading: a linear keeps its stored bytes (BF16 2, NVFP4 codes
// + e4m3 scales + the fp32 global), every other tensor becomes fp32; the numbers below are
// counted by hand from the shapes.
TEST(ModelCheckpoint, CpuWeightBytesCountsStoredLinearsAndFp32Tensors) {
  test::SeededRng r;
  test::TempDir d;
  const Matrix q = quantize_nvfp4_weight(test::random_bf16(r.rng, 32 * 64).data(), 32, 64);
  const float gs = q.ranges[0].global_scale;
  std::vector<uint8_t> g(4);
  std::memcpy(g.data(), &gs, 4);
  io::write_safetensors(d.path() / "m.safetensors",
                        {test::random_tensor(r.rng, "a.weight", io::Dtype::kBF16, {64, 32}, 1.0f),
                         test::random_tensor(r.rng, "n.weight", io::Dtype::kBF16, {32}, 1.0f),
                         {{"b.weight", io::Dtype::kU8, {32, 32}}, q.data},
                         {{"b.weight_scale", io::Dtype::kF8_E4M3, {32, 4}}, q.scales},
                         {{"b.weight_scale_2", io::Dtype::kF32, {}}, g}});
  EXPECT_EQ(cpu_weight_bytes(io::Checkpoint::open(d.path())), 64u * 32 * 2 + 32 * 4 + (32 * 32 + 32 * 4 + 4));
}

TEST(ModelCheckpoint, AvailableMemoryAndTheRefusal) {
  const std::string mi = "MemTotal:       263921768 kB\nMemFree:          123 kB\nMemAvailable:   1048576 kB\nSwapTotal: 0 kB\nSwapFree:        2048 kB\n";
  EXPECT_EQ(available_memory_bytes(mi), std::optional<uint64_t>((1048576ull + 2048) * 1024));
  EXPECT_EQ(available_memory_bytes("MemTotal: 5 kB\n"), std::nullopt);                     // no MemAvailable
  EXPECT_EQ(available_memory_bytes("MemAvailable: x kB\nSwapFree: 0 kB\n"), std::nullopt);  // not a number
  EXPECT_EQ(available_memory_bytes(""), std::nullopt);
  EXPECT_NO_THROW(check_memory_for("ck", 100, 100));
  try {
    check_memory_for("ck", uint64_t{3} << 30, uint64_t{1} << 30);
    ADD_FAILURE() << "3 GiB fit in 1";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ck: the CPU backend needs 3.00 GiB for these weights, and this machine has 1.00 GiB"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace fp4moe::model
