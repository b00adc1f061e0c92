// Checkpoint tooling below the CLI: config.json parsing, quantization-scheme detection, the
// BF16 -> NVFP4/MXFP4 converter (its bytes against formats/quantize.h run on the input, and
// untouched tensors against the input bytes), loading canonical matrices (fused parts keep
// their own global scales), and every doctor finding triggered by a planted fault.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "formats/codecs.h"
#include "formats/quantize.h"
#include "io/config.h"
#include "io/quant_scheme.h"
#include "util/test_util.h"
#include "util/tiny_checkpoint.h"
#include "weights/doctor.h"
#include "weights/linear.h"
#include "weights/names.h"
#include "weights/quantize_checkpoint.h"

namespace fp4moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

std::string errors_of(const weights::DoctorReport& r);

// ---- config.json -------------------------------------------------------------------------------
TEST(Config, TinyDeepSeekV4) {
  const io::ModelConfig m = io::parse_model_config(test::tiny_v4_config(), "config.json");
  ASSERT_TRUE(m.v4.has_value());
  const io::DeepSeekV4Config& c = *m.v4;
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.qk_rope_head_dim, 4);  // 0.125 * 32
  EXPECT_EQ(c.layer_types, (std::vector<io::AttentionType>{io::AttentionType::kSliding, io::AttentionType::kCSA, io::AttentionType::kHCA}));
  EXPECT_EQ(c.mlp_layer_types, (std::vector<io::MlpType>{io::MlpType::kHashMoe, io::MlpType::kMoe, io::MlpType::kMoe}));
  EXPECT_EQ(c.compress_rate_hca, 8);
}

TEST(Config, FlashDefaultsAndDerivedLists) {
  const io::ModelConfig m = io::parse_model_config({{"model_type", "deepseek_v4"}, {"num_hidden_layers", 6}}, "c");
  const io::DeepSeekV4Config& c = *m.v4;
  // Values of reference/deepseek_v4.md section 1.
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_attention_heads, 64);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.q_lora_rank, 1024);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.o_groups, 8);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.compress_rate_csa, 4);
  EXPECT_EQ(c.compress_rate_hca, 128);
  EXPECT_EQ(c.compress_rope_theta, 160000.0);
  EXPECT_EQ(c.index_topk, 512);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_EQ(c.scoring_func, "sqrtsoftplus");
  EXPECT_EQ(c.routed_scaling_factor, 1.5);
  EXPECT_EQ(c.swiglu_limit, 10.0);
  // Built-in pattern: layers 0,1 HCA, then layer i+2 is CSA for odd i: H H H C H C.
  using A = io::AttentionType;
  EXPECT_EQ(c.layer_types, (std::vector<A>{A::kHCA, A::kHCA, A::kHCA, A::kCSA, A::kHCA, A::kCSA}));
  EXPECT_EQ(c.mlp_layer_types[2], io::MlpType::kHashMoe);
  EXPECT_EQ(c.mlp_layer_types[3], io::MlpType::kMoe);

  // Legacy compress_ratios (one extra MTP entry, truncated), legacy qk_rope_head_dim, flat YaRN.
  const io::ModelConfig f = io::parse_model_config(
      {{"model_type", "deepseek_v4"}, {"num_hidden_layers", 4}, {"compress_ratios", {0, 0, 4, 128, 4}}, {"qk_rope_head_dim", 128},
       {"rope_scaling", {{"type", "yarn"}, {"factor", 16}, {"original_max_position_embeddings", 65536}, {"beta_fast", 32}, {"beta_slow", 1}}}},
      "c");
  EXPECT_EQ(f.v4->layer_types, (std::vector<A>{A::kSliding, A::kSliding, A::kCSA, A::kHCA}));
  EXPECT_EQ(f.v4->partial_rotary_factor, 0.25);
  EXPECT_EQ(f.v4->rope_compress.rope_type, "yarn");
  EXPECT_EQ(f.v4->rope_compress.rope_theta, 160000.0);
  EXPECT_EQ(f.v4->rope_compress.factor, 16.0);
  EXPECT_EQ(f.v4->rope_compress.attention_factor, 1.0);
  EXPECT_EQ(f.v4->rope_main.rope_type, "default");
  EXPECT_EQ(f.v4->rope_main.rope_theta, 10000.0);
}

TEST(Config, OtherArchitecturesAndErrors) {
  EXPECT_EQ(io::parse_model_config({{"model_type", "deepseek_v3"}, {"q_lora_rank", nullptr}}, "c").v3->q_lora_rank, std::nullopt);
  EXPECT_EQ(io::parse_model_config({{"model_type", "qwen3_moe"}, {"num_experts", 60}}, "c").qwen3->num_experts, 60);
  try {
    io::parse_model_config({{"model_type", "llama"}}, "dir/config.json");
    FAIL();
  } catch (const io::CheckpointError& e) {
    EXPECT_EQ(e.kind(), io::ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("unsupported architecture"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dir/config.json"), std::string::npos) << e.what();
  }
  try {
    io::parse_model_config({{"model_type", "deepseek_v4"}, {"hidden_size", "big"}}, "c");
    FAIL();
  } catch (const io::CheckpointError& e) {
    EXPECT_EQ(e.kind(), io::ErrorKind::kInvalidConfig);
    EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos) << e.what();
  }
  EXPECT_THROW(io::parse_model_config({{"model_type", "deepseek_v4"}, {"num_hidden_layers", 3}, {"layer_types", {"sliding_attention"}}}, "c"),
               io::CheckpointError);
  EXPECT_THROW(io::parse_model_config({{"model_type", "deepseek_v4"}, {"compress_ratios", {0, 7}}, {"num_hidden_layers", 2}}, "c"),
               io::CheckpointError);
  // The rotary share must be in (0, 1]: a huge one used to be cast to an integer out of range.
  for (double f : {0.0, -0.5, 1.5, 1e300}) {
    try {
      io::parse_model_config({{"model_type", "deepseek_v4"}, {"partial_rotary_factor", f}}, "c");
      ADD_FAILURE() << f;
    } catch (const io::CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("partial_rotary_factor"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(io::parse_model_config({{"model_type", "deepseek_v4"}, {"partial_rotary_factor", 1.0}}, "c").v4->qk_rope_head_dim, 512);
}

// ---- quantization schemes --------------------------------------------------------------------------
TEST(QuantScheme, ModelOptCompressedTensorsAndNative) {
  io::QuantScheme s = io::parse_quant_config(
      {{"quantization", {{"quant_algo", "NVFP4"}, {"group_size", 16}, {"exclude_modules", {"lm_head", "model.layers.*.mlp.gate"}}}}}, "h");
  EXPECT_EQ(s.kind, io::SchemeKind::kModelOptNVFP4);
  EXPECT_EQ(s.algo_for("model.layers.3.self_attn.q_a_proj"), "NVFP4");
  EXPECT_EQ(s.algo_for("model.layers.3.mlp.gate"), "");
  EXPECT_EQ(s.algo_for("layers.3.mlp.gate"), "");
  EXPECT_EQ(s.algo_for("lm_head"), "");

  s = io::parse_quant_config({{"quant_method", "modelopt"}, {"quant_algo", "MXFP4"}, {"ignore_this", 1}}, "config.json");
  EXPECT_EQ(s.kind, io::SchemeKind::kModelOptMXFP4);
  EXPECT_EQ(s.group_size, 32);
  EXPECT_EQ(s.algo_for("model.layers.0.mlp.experts.1.w2"), "MXFP4");

  s = io::parse_quant_config({{"quant_method", "modelopt"},
                              {"quantization",
                               {{"quant_algo", "MIXED_PRECISION"},
                                {"quantized_layers", {{"model.layers.0.mlp.experts.0.w1", {{"quant_algo", "NVFP4"}, {"group_size", 16}}},
                                                      {"model.layers.0.self_attn.wo_a", {{"quant_algo", "FP8"}}}}}}}},
                             "c");
  EXPECT_EQ(s.kind, io::SchemeKind::kModelOptMixed);
  EXPECT_EQ(s.algo_for("model.layers.0.mlp.experts.0.w1"), "NVFP4");
  EXPECT_EQ(s.algo_for("model.layers.0.self_attn.wo_a"), "FP8");
  EXPECT_EQ(s.algo_for("model.layers.0.mlp.experts.0.w2"), "");

  s = io::parse_quant_config({{"quant_method", "compressed-tensors"}, {"format", "nvfp4-pack-quantized"}, {"ignore", {"lm_head", "re:.*mlp\\.gate$"}}}, "c");
  EXPECT_EQ(s.kind, io::SchemeKind::kCompressedTensorsNVFP4);
  EXPECT_EQ(s.algo_for("model.layers.1.mlp.gate"), "");
  EXPECT_EQ(s.algo_for("model.layers.1.mlp.gate_proj"), "NVFP4");

  s = io::parse_quant_config({{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"scale_fmt", "ue8m0"}, {"weight_block_size", {128, 128}}}, "c");
  EXPECT_EQ(s.kind, io::SchemeKind::kDeepSeekNative);
  EXPECT_EQ(s.fp8_scale, ScaleKind::kUe8m0);

  EXPECT_THROW(io::parse_quant_config({{"quant_method", "gptq"}}, "c"), io::CheckpointError);
  EXPECT_THROW(io::parse_quant_config({{"quantization", {{"quant_algo", "NVFP4"}, {"group_size", 32}}}}, "c"), io::CheckpointError);
  EXPECT_THROW(io::parse_quant_config({{"quantization", {{"quant_algo", "MIXED_PRECISION"}}}}, "c"), io::CheckpointError);
}

TEST(Names, AllThreeNamingsMapToNative) {
  using weights::canonical_name;
  EXPECT_EQ(canonical_name("model.layers.2.self_attn.q_a_proj.weight"), "layers.2.attn.wq_a.weight");
  EXPECT_EQ(canonical_name("model.layers.2.attn.wq_a.weight"), "layers.2.attn.wq_a.weight");
  EXPECT_EQ(canonical_name("layers.2.attn.wq_a.weight"), "layers.2.attn.wq_a.weight");
  EXPECT_EQ(canonical_name("model.layers.0.self_attn.compressor.indexer.scorer.weights_proj.weight"), "layers.0.attn.indexer.weights_proj.weight");
  EXPECT_EQ(canonical_name("model.layers.0.self_attn.compressor.indexer.kv_norm.weight"), "layers.0.attn.indexer.compressor.norm.weight");
  EXPECT_EQ(canonical_name("model.layers.0.attn.norm.weight"), "layers.0.attn.kv_norm.weight");
  EXPECT_EQ(canonical_name("model.layers.0.self_attn.kv_norm.weight"), "layers.0.attn.kv_norm.weight");
  EXPECT_EQ(canonical_name("model.layers.0.mlp.shared_experts.up_proj.weight"), "layers.0.ffn.shared_experts.w3.weight");
  EXPECT_EQ(canonical_name("model.layers.0.mlp.experts.7.down_proj.weight"), "layers.0.ffn.experts.7.w2.weight");
  EXPECT_EQ(canonical_name("model.layers.0.mlp.gate.e_score_correction_bias"), "layers.0.ffn.gate.bias");
  EXPECT_EQ(canonical_name("model.layers.0.mlp.gate"), "layers.0.ffn.gate");  // a module name, without ".weight"
  EXPECT_EQ(canonical_name("model.layers.0.mlp.gate_proj"), "layers.0.mlp.gate_proj");
  EXPECT_EQ(canonical_name("model.layers.0.self_attn.q_a_proj"), "layers.0.attn.wq_a");
  EXPECT_EQ(canonical_name("model.layers.0.attn_hc.fn"), "layers.0.hc_attn_fn");
  EXPECT_EQ(canonical_name("model.embed_tokens.weight"), "embed.weight");
  EXPECT_EQ(canonical_name("lm_head.weight"), "head.weight");
  EXPECT_EQ(canonical_name("model.hc_head.hc_fn"), "hc_head_fn");
  EXPECT_EQ(weights::component_of("layers.1.ffn.experts.3.w1"), weights::Component::kRoutedExperts);
  EXPECT_EQ(weights::component_of("layers.1.attn.indexer.compressor.wkv"), weights::Component::kIndexer);
  EXPECT_EQ(weights::component_of("layers.1.ffn.gate"), weights::Component::kRouter);
}

// ---- quantize ---------------------------------------------------------------------------------------
std::vector<float> as_f32(const io::OwnedTensor& t) {
  std::vector<float> v(static_cast<size_t>(t.bytes.size() / 2));
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, t.bytes.data() + 2 * i, 2);
    v[i] = bf16_to_float(h);
  }
  return v;
}

bool span_eq(std::span<const uint8_t> a, const std::vector<uint8_t>& b) { return std::equal(a.begin(), a.end(), b.begin(), b.end()); }

struct Quantized {
  TempDir dir;
  std::vector<io::OwnedTensor> input;
  weights::QuantizeCheckpointResult result;
  fs::path in() const { return dir.path() / "bf16"; }
  fs::path out() const { return dir.path() / "q"; }
};

std::unique_ptr<Quantized> make_quantized(std::mt19937_64& rng, weights::QuantizeCheckpointOptions opt) {
  auto q = std::make_unique<Quantized>();
  q->input = test::write_tiny_v4(q->in(), rng);
  test::write_text(q->in() / "tokenizer.json", "{}");
  q->result = weights::quantize_checkpoint(io::Checkpoint::open(q->in()), q->out(), opt);
  return q;
}

TEST(QuantizeCheckpoint, Nvfp4BytesMatchTheFormatsQuantizer) {
  test::SeededRng r;
  const auto q = make_quantized(r.rng, {});
  const io::Checkpoint out = io::Checkpoint::open(q->out());
  int quantized = 0;
  for (const io::OwnedTensor& t : q->input) {
    const std::string& n = t.spec.name;
    const std::string canon = weights::canonical_name(n);
    const weights::Component c = weights::component_of(canon);
    const bool linear = t.spec.shape.size() == 2 && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0;
    const bool expect_q = linear && c != weights::Component::kEmbedding && c != weights::Component::kHead && c != weights::Component::kRouter;
    if (!expect_q) {
      ASSERT_TRUE(out.find(n)) << n;
      EXPECT_TRUE(span_eq(out.at(n).bytes(), t.bytes)) << n << " must be copied unchanged";
      continue;
    }
    const std::string m = n.substr(0, n.size() - 7);
    const std::vector<float> w = as_f32(t);
    const Matrix ref = quantize_nvfp4_weight(w.data(), t.spec.shape[0], t.spec.shape[1]);
    ASSERT_TRUE(out.find(m + ".weight_scale_2")) << m;
    EXPECT_EQ(out.at(m + ".weight").info->dtype, io::Dtype::kU8);
    EXPECT_EQ(out.at(m + ".weight").info->shape, (std::vector<int64_t>{t.spec.shape[0], t.spec.shape[1] / 2}));
    EXPECT_EQ(out.at(m + ".weight_scale").info->dtype, io::Dtype::kF8_E4M3);
    EXPECT_EQ(out.at(m + ".weight_scale").info->shape, (std::vector<int64_t>{t.spec.shape[0], t.spec.shape[1] / 16}));
    EXPECT_TRUE(out.at(m + ".weight_scale_2").info->shape.empty());
    EXPECT_TRUE(span_eq(out.at(m + ".weight").bytes(), ref.data)) << m;
    EXPECT_TRUE(span_eq(out.at(m + ".weight_scale").bytes(), ref.scales)) << m;
    EXPECT_EQ(f32_bits(io::scalar_f32(out.at(m + ".weight_scale_2"))), f32_bits(ref.ranges[0].global_scale)) << m;
    ++quantized;
  }
  EXPECT_EQ(quantized, q->result.quantized);
  EXPECT_EQ(quantized, 3 * (5 + 12 + 3) + 6 + 2);  // per layer: 5 attention, 12 expert, 3 shared; CSA 6, HCA 2 compressor/indexer
  const json h = io::read_json_file(q->out() / "hf_quant_config.json");
  EXPECT_EQ(h["quantization"]["quant_algo"], "NVFP4");
  EXPECT_EQ(h["quantization"]["group_size"], 16);
  const std::set<std::string> excl = h["quantization"]["exclude_modules"].get<std::set<std::string>>();
  EXPECT_EQ(excl, (std::set<std::string>{"head", "model.layers.0.ffn.gate", "model.layers.1.ffn.gate", "model.layers.2.ffn.gate"}));
  EXPECT_EQ(io::read_json_file(q->out() / "config.json")["quantization_config"]["quant_method"], "modelopt");
  EXPECT_TRUE(fs::exists(q->out() / "tokenizer.json"));
  // The scheme detected from the output agrees with every layer: the doctor finds no error.
  const io::ModelConfig cfg = io::load_model_config(q->out());
  const io::QuantScheme scheme = io::detect_quant_scheme(q->out(), nullptr);
  EXPECT_EQ(scheme.kind, io::SchemeKind::kModelOptNVFP4);
  const weights::DoctorReport rep = weights::run_doctor(out, &cfg, scheme);
  for (const weights::Finding& f : rep.findings)
    EXPECT_NE(f.severity, weights::Severity::kError) << f.check << " " << f.tensor << ": " << f.message;
}

TEST(QuantizeCheckpoint, ExpertsOnlyMxfp4AndShards) {
  test::SeededRng r;
  weights::QuantizeCheckpointOptions opt;
  opt.scheme = weights::TargetScheme::kMXFP4;
  opt.experts_only = true;
  opt.shard_bytes = 64 << 10;
  const auto q = make_quantized(r.rng, opt);
  EXPECT_GT(q->result.shards.size(), 1u);
  EXPECT_TRUE(fs::exists(q->out() / "model.safetensors.index.json"));
  const io::Checkpoint out = io::Checkpoint::open(q->out());
  EXPECT_EQ(q->result.quantized, 3 * 4 * 3);
  for (const io::OwnedTensor& t : q->input) {
    const std::string& n = t.spec.name;
    if (n.find("ffn.experts.") == std::string::npos) {
      EXPECT_TRUE(span_eq(out.at(n).bytes(), t.bytes)) << n;
      continue;
    }
    const std::string m = n.substr(0, n.size() - 7);
    const std::vector<float> w = as_f32(t);
    const Matrix ref = quantize_mxfp4(w.data(), t.spec.shape[0], t.spec.shape[1]);
    EXPECT_TRUE(span_eq(out.at(m + ".weight").bytes(), ref.data)) << m;
    EXPECT_EQ(out.at(m + ".weight_scale").info->dtype, io::Dtype::kF8_E8M0);
    EXPECT_TRUE(span_eq(out.at(m + ".weight_scale").bytes(), ref.scales)) << m;
    EXPECT_FALSE(out.find(m + ".weight_scale_2"));
  }
  const weights::CheckpointLayout lay = weights::scan_layout(out);
  EXPECT_TRUE(lay.problems.empty());
  const io::ModelConfig cfg = io::load_model_config(q->out());
  const weights::DoctorReport rep = weights::run_doctor(out, &cfg, io::detect_quant_scheme(q->out(), nullptr));
  EXPECT_EQ(rep.errors(), 0) << (rep.findings.empty() ? "" : rep.findings[0].message);
  for (const weights::Finding& f : rep.findings) EXPECT_NE(f.check, "stray-file") << f.file;
  // A .safetensors file the index does not name (an older shard beside the new ones) is read
  // by no command: a warning naming it.
  const fs::path stray = q->out() / "model-old-00001.safetensors";
  fs::copy_file(q->out() / q->result.shards[0], stray);
  const weights::DoctorReport with = weights::run_doctor(io::Checkpoint::open(q->out()), &cfg, io::detect_quant_scheme(q->out(), nullptr));
  std::vector<std::string> files;
  for (const weights::Finding& f : with.findings)
    if (f.check == "stray-file") {
      files.push_back(f.file);
      EXPECT_EQ(f.severity, weights::Severity::kWarning);
    }
  EXPECT_EQ(files, (std::vector<std::string>{stray.string()}));
  EXPECT_EQ(with.errors(), 0);
}

TEST(QuantizeCheckpoint, RefusesQuantizedOrNaNInput) {
  test::SeededRng r;
  const auto q = make_quantized(r.rng, {});
  TempDir d;
  EXPECT_THROW(weights::quantize_checkpoint(io::Checkpoint::open(q->out()), d.path() / "again", {}), io::CheckpointError);
  std::vector<io::OwnedTensor> in = q->input;
  for (io::OwnedTensor& t : in)
    if (t.spec.name == "model.layers.1.attn.wq_a.weight") t.bytes[6] = 0xC0, t.bytes[7] = 0x7F;  // bf16 NaN
  io::write_safetensors(d.path() / "nan.safetensors", in);
  try {
    weights::quantize_checkpoint(io::Checkpoint::open(d.path() / "nan.safetensors"), d.path() / "o", {});
    FAIL();
  } catch (const io::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.attn.wq_a.weight"), std::string::npos) << e.what();
  }
}

TEST(QuantizeCheckpoint, StackedTransformersExpertsAreSplitPerExpert) {
  test::SeededRng r;
  TempDir d;
  std::vector<io::OwnedTensor> t = test::tiny_v4_tensors(r.rng);
  // Layer 1's experts in transformers' stacked layout: gate_up [E, 2I, H] (gate rows first), down [E, H, I].
  io::OwnedTensor gu{{"model.layers.1.mlp.experts.gate_up_proj", io::Dtype::kBF16, {4, 64, 64}}, {}};
  io::OwnedTensor dn{{"model.layers.1.mlp.experts.down_proj", io::Dtype::kBF16, {4, 64, 32}}, {}};
  std::map<std::string, std::vector<uint8_t>> parts;
  for (const io::OwnedTensor& x : t) parts[x.spec.name] = x.bytes;
  for (int e = 0; e < 4; ++e) {
    const std::string p = "model.layers.1.ffn.experts." + std::to_string(e) + ".";
    for (const char* w : {"w1", "w3"}) gu.bytes.insert(gu.bytes.end(), parts[p + w + ".weight"].begin(), parts[p + w + ".weight"].end());
    dn.bytes.insert(dn.bytes.end(), parts[p + "w2.weight"].begin(), parts[p + "w2.weight"].end());
  }
  std::erase_if(t, [](const io::OwnedTensor& x) { return x.spec.name.starts_with("model.layers.1.ffn.experts."); });
  t.push_back(gu);
  t.push_back(dn);
  fs::create_directories(d.path() / "in");
  io::write_safetensors(d.path() / "in" / "model.safetensors", t);
  test::write_text(d.path() / "in" / "config.json", test::tiny_v4_config().dump());
  weights::QuantizeCheckpointOptions opt;
  opt.experts_only = true;
  const auto res = weights::quantize_checkpoint(io::Checkpoint::open(d.path() / "in"), d.path() / "out", opt);
  EXPECT_EQ(res.quantized, 3 * 4 * 3);
  const io::Checkpoint out = io::Checkpoint::open(d.path() / "out");
  EXPECT_FALSE(out.find("model.layers.1.mlp.experts.gate_up_proj"));
  for (int e = 0; e < 4; ++e) {
    const std::string p = "model.layers.1.ffn.experts." + std::to_string(e) + ".", q = "model.layers.1.mlp.experts." + std::to_string(e) + ".";
    for (const auto& [native, hf] : {std::pair{"w1", "gate_proj"}, std::pair{"w3", "up_proj"}, std::pair{"w2", "down_proj"}}) {
      const io::OwnedTensor src{{}, parts[p + native + ".weight"]};
      const std::vector<float> w = as_f32(src);
      const int64_t rows = std::string(native) == "w2" ? 64 : 32;
      const Matrix ref = quantize_nvfp4_weight(w.data(), rows, static_cast<int64_t>(w.size()) / rows);
      EXPECT_TRUE(span_eq(out.at(q + hf + ".weight").bytes(), ref.data)) << q << hf;
      EXPECT_TRUE(span_eq(out.at(q + hf + ".weight_scale").bytes(), ref.scales)) << q << hf;
      EXPECT_EQ(io::scalar_f32(out.at(q + hf + ".weight_scale_2")), ref.ranges[0].global_scale) << q << hf;
    }
  }
  const io::ModelConfig cfg = io::load_model_config(d.path() / "out");
  const weights::DoctorReport rep = weights::run_doctor(out, &cfg, io::detect_quant_scheme(d.path() / "out", nullptr));
  EXPECT_EQ(rep.errors(), 0) << (rep.findings.empty() ? "" : rep.findings[0].check + " " + rep.findings[0].tensor + " " + rep.findings[0].message);
}

// ---- loading canonical matrices ----------------------------------------------------------------------
TEST(LoadMatrix, FusedPartsKeepTheirGlobalScales) {
  test::SeededRng r;
  const auto q = make_quantized(r.rng, {});
  const io::Checkpoint out = io::Checkpoint::open(q->out());
  const weights::CheckpointLayout lay = weights::scan_layout(out);
  const weights::LinearTensors *w1 = nullptr, *w3 = nullptr;
  for (const weights::LinearTensors& l : lay.linears) {
    if (l.module == "model.layers.1.ffn.experts.2.w1") w1 = &l;
    if (l.module == "model.layers.1.ffn.experts.2.w3") w3 = &l;
  }
  ASSERT_TRUE(w1 && w3);
  const weights::LinearTensors* parts[] = {w1, w3};
  const Matrix fused = weights::load_fused(parts);
  std::vector<float> g, u;
  for (const io::OwnedTensor& t : q->input) {
    if (t.spec.name == "model.layers.1.ffn.experts.2.w1.weight") g = as_f32(t);
    if (t.spec.name == "model.layers.1.ffn.experts.2.w3.weight") u = as_f32(t);
  }
  const Matrix rg = quantize_nvfp4_weight(g.data(), 32, 64), ru = quantize_nvfp4_weight(u.data(), 32, 64);
  ASSERT_EQ(fused.ranges.size(), 2u);
  EXPECT_EQ(fused.ranges[0].row_begin, 0);
  EXPECT_EQ(fused.ranges[1].row_begin, 32);
  EXPECT_EQ(fused.ranges[0].global_scale, rg.ranges[0].global_scale);
  EXPECT_EQ(fused.ranges[1].global_scale, ru.ranges[0].global_scale);
  EXPECT_NE(fused.ranges[0].global_scale, fused.ranges[1].global_scale);
  std::vector<uint8_t> data = rg.data;
  data.insert(data.end(), ru.data.begin(), ru.data.end());
  EXPECT_EQ(fused.data, data);
}

TEST(LoadMatrix, CompressedTensorsReciprocalGlobalScale) {
  test::SeededRng r;
  TempDir d;
  const std::vector<float> w = test::random_bf16(r.rng, 8 * 32, 0.1f);
  const Matrix ref = quantize_nvfp4_weight(w.data(), 8, 32);
  const float ct_gs = modelopt_global_scale_to_ct(ref.ranges[0].global_scale);
  std::vector<uint8_t> gs(4);
  std::memcpy(gs.data(), &ct_gs, 4);
  io::write_safetensors(d.path() / "ct.safetensors", {{{"l.weight_packed", io::Dtype::kU8, {8, 16}}, ref.data},
                                                      {{"l.weight_scale", io::Dtype::kF8_E4M3, {8, 2}}, ref.scales},
                                                      {{"l.weight_global_scale", io::Dtype::kF32, {1}}, gs}});
  const io::Checkpoint c = io::Checkpoint::open(d.path() / "ct.safetensors");
  const weights::CheckpointLayout lay = weights::scan_layout(c);
  ASSERT_EQ(lay.linears.size(), 1u);
  const Matrix m = weights::load_matrix(lay.linears[0]);
  EXPECT_EQ(m.format, MatrixFormat::kNVFP4);
  EXPECT_EQ(m.cols, 32);
  EXPECT_EQ(m.data, ref.data);
  EXPECT_EQ(f32_bits(m.ranges[0].global_scale), f32_bits(ct_global_scale_to_modelopt(ct_gs)));
}

TEST(Doctor, CompressedTensorsReciprocalScales) {
  test::SeededRng r;
  TempDir d;
  const std::vector<float> w = test::random_bf16(r.rng, 8 * 32, 0.1f);
  const Matrix ref = quantize_nvfp4_weight(w.data(), 8, 32);
  auto f32 = [](float v) {
    std::vector<uint8_t> b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
  };
  auto write = [&](float gs, float igs) {
    io::write_safetensors(d.path() / "ct.safetensors", {{{"l.weight_packed", io::Dtype::kU8, {8, 16}}, ref.data},
                                                        {{"l.weight_scale", io::Dtype::kF8_E4M3, {8, 2}}, ref.scales},
                                                        {{"l.weight_global_scale", io::Dtype::kF32, {1}}, f32(gs)},
                                                        {{"l.input_global_scale", io::Dtype::kF32, {1}}, f32(igs)}});
    test::write_text(d.path() / "config.json",
                     R"({"quantization_config": {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"}})");
    const json cfg = io::read_json_file(d.path() / "config.json");
    return weights::run_doctor(io::Checkpoint::open(d.path()), nullptr, io::detect_quant_scheme(d.path(), &cfg));
  };
  // Healthy: global 2688/amax, activations calibrated at amax 10 (input_global_scale = 268.8).
  const weights::DoctorReport ok = write(modelopt_global_scale_to_ct(ref.ranges[0].global_scale), 268.8f);
  EXPECT_EQ(ok.errors(), 0) << errors_of(ok);
  std::set<std::string> got;
  for (const auto& f : write(0.0f, 1e6f).findings) got.insert(f.check + " " + f.tensor);
  EXPECT_TRUE(got.count("global-scale l.weight_global_scale"));
  EXPECT_TRUE(got.count("input-scale-saturation l.input_global_scale"));  // 1/1e6 saturates above amax 0.0027
  got.clear();
  for (const auto& f : write(3e38f, 1e-39f).findings) got.insert(f.check + " " + f.tensor);
  EXPECT_TRUE(got.count("global-scale l.weight_global_scale"));  // its reciprocal, weight_scale_2, is denormal
  EXPECT_TRUE(got.count("input-scale-overflow l.input_global_scale"));
}

TEST(LoadMatrix, DeepSeekNativeFp8AndMxfp4) {
  test::SeededRng r;
  TempDir d;
  const std::vector<float> w = test::random_bf16(r.rng, 130 * 64, 0.1f);
  const Matrix fp8 = quantize_fp8_block(w.data(), 130, 64, ScaleKind::kUe8m0);
  const Matrix mx = quantize_mxfp4(w.data(), 130, 64);
  io::write_safetensors(d.path() / "n.safetensors", {{{"layers.0.attn.wq_a.weight", io::Dtype::kF8_E4M3, {130, 64}}, fp8.data},
                                                     {{"layers.0.attn.wq_a.scale", io::Dtype::kF8_E8M0, {2, 1}}, fp8.scales},
                                                     {{"layers.0.ffn.experts.0.w1.weight", io::Dtype::kI8, {130, 32}}, mx.data},
                                                     {{"layers.0.ffn.experts.0.w1.scale", io::Dtype::kF8_E8M0, {130, 2}}, mx.scales}});
  const io::Checkpoint ckpt = io::Checkpoint::open(d.path());
  const weights::CheckpointLayout lay = weights::scan_layout(ckpt);
  ASSERT_EQ(lay.linears.size(), 2u);
  for (const weights::LinearTensors& l : lay.linears) {
    const Matrix m = weights::load_matrix(l);
    const Matrix& ref = l.format == MatrixFormat::kFP8Block ? fp8 : mx;
    EXPECT_EQ(m.format, ref.format);
    EXPECT_EQ(m.scale_kind, ref.scale_kind);
    EXPECT_EQ(m.data, ref.data);
    EXPECT_EQ(m.scales, ref.scales);
  }
}

TEST(Layout, EmptyTensorsWithHugeDimensionsStayPlain) {
  TempDir d;
  // Valid safetensors (zero elements), but 2 x 2^62 would overflow if read as a packed FP4 weight.
  io::write_safetensors(d.path() / "e.safetensors", {{{"x.weight", io::Dtype::kU8, {0, int64_t{1} << 62}}, {}},
                                                     {{"x.weight_scale", io::Dtype::kF8_E4M3, {int64_t{1} << 62, 0}}, {}}});
  const io::Checkpoint c = io::Checkpoint::open(d.path());
  const weights::CheckpointLayout lay = weights::scan_layout(c);
  EXPECT_TRUE(lay.linears.empty());
  EXPECT_EQ(lay.problems.size(), 1u);  // the stray scale of a weight that is not a layer
  EXPECT_EQ(weights::run_doctor(c, nullptr, io::QuantScheme{}).linears, 0);
}

// ---- doctor: each finding from a planted fault ------------------------------------------------------
struct Planted {
  TempDir dir;
  std::unique_ptr<Quantized> base;
};

// Copies the quantized tiny checkpoint with `mutate` applied to its tensors, runs the doctor.
weights::DoctorReport doctor_with(const Quantized& q, const std::function<void(std::vector<io::OwnedTensor>&)>& mutate,
                                  const fs::path& at, const std::function<void(json&)>& mutate_quant = {}) {
  std::vector<io::OwnedTensor> t = test::read_all(q.out());
  mutate(t);
  fs::create_directories(at);
  io::write_safetensors(at / "model.safetensors", t);
  fs::copy_file(q.out() / "config.json", at / "config.json");
  json h = io::read_json_file(q.out() / "hf_quant_config.json");
  if (mutate_quant) mutate_quant(h);
  test::write_text(at / "hf_quant_config.json", h.dump());
  const io::ModelConfig cfg = io::load_model_config(at);
  return weights::run_doctor(io::Checkpoint::open(at), &cfg, io::detect_quant_scheme(at, nullptr));
}

io::OwnedTensor& named(std::vector<io::OwnedTensor>& t, const std::string& n) {
  for (io::OwnedTensor& x : t)
    if (x.spec.name == n) return x;
  throw std::runtime_error("no tensor " + n);
}

void set_f32(io::OwnedTensor& t, float v) { std::memcpy(t.bytes.data(), &v, 4); }

// Expects exactly one finding of this check on this tensor, with this severity.
void expect_finding(const weights::DoctorReport& r, const std::string& check, const std::string& tensor,
                    weights::Severity sev = weights::Severity::kError, const std::string& needle = "") {
  int hits = 0;
  for (const weights::Finding& f : r.findings)
    if (f.check == check && f.tensor == tensor) {
      ++hits;
      EXPECT_EQ(f.severity, sev) << f.message;
      if (!needle.empty()) {
        EXPECT_NE(f.message.find(needle), std::string::npos) << f.message;
      }
    }
  EXPECT_EQ(hits, 1) << "finding " << check << " on " << tensor;
  std::string all;
  for (const weights::Finding& f : r.findings)
    if (f.severity == weights::Severity::kError) all += "\n  " + f.check + " " + f.tensor + ": " + f.message;
  EXPECT_EQ(r.errors(), sev == weights::Severity::kError ? 1 : 0) << "only the planted fault may be an error:" << all;
}

TEST(Doctor, EveryFindingFromAPlantedFault) {
  test::SeededRng r;
  const auto q = make_quantized(r.rng, {});
  TempDir d;
  int n = 0;
  auto run = [&](auto mutate, std::function<void(json&)> mq = {}) { return doctor_with(*q, mutate, d.path() / std::to_string(n++), mq); };
  const std::string m = "model.layers.1.ffn.experts.2.w1";
  using weights::Severity;

  for (float bad : {NAN, INFINITY, 0.0f, -0.01f, 1e-39f, 2e35f}) {  // 2e35: 6 x 448 x 2e35 overflows fp32
    const auto rep = run([&](auto& t) { set_f32(named(t, m + ".weight_scale_2"), bad); });
    SCOPED_TRACE(bad);
    expect_finding(rep, "global-scale", m + ".weight_scale_2");
  }
  const std::pair<uint8_t, const char*> block_faults[] = {{0x7F, "block-scale-nan"}, {0xFF, "block-scale-nan"}, {0xB8, "block-scale-negative"},
                                                          {0x00, "block-scale-zero"}, {0x80, "block-scale-zero"}};
  for (const auto& [code, check] : block_faults) {
    const auto rep = run([&](auto& t) { named(t, m + ".weight_scale").bytes[5] = code; });
    expect_finding(rep, check, m + ".weight_scale", Severity::kError, "first at [1, 1]");
  }
  expect_finding(run([&](auto& t) { named(t, m + ".weight_scale").bytes[2] = 0x03; }), "block-scale-denormal", m + ".weight_scale",
                 Severity::kWarning);

  // input_scale: unusable, reciprocal overflow, saturation.
  auto with_input = [&](float v) {
    return [=](std::vector<io::OwnedTensor>& t) {
      std::vector<uint8_t> b(4);
      std::memcpy(b.data(), &v, 4);
      t.push_back({{m + ".input_scale", io::Dtype::kF32, {}}, b});
    };
  };
  expect_finding(run(with_input(NAN)), "input-scale", m + ".input_scale");
  expect_finding(run(with_input(-1.0f)), "input-scale", m + ".input_scale");
  expect_finding(run(with_input(1e-39f)), "input-scale-overflow", m + ".input_scale");
  expect_finding(run(with_input(1e-5f)), "input-scale-saturation", m + ".input_scale", Severity::kWarning, "0.02688");
  {
    const auto rep = run(with_input(0.01f));
    EXPECT_EQ(rep.errors(), 0);
  }

  // Fused parts: w3's global scale planted at exactly 2x w1's.
  {
    const auto rep = run([&](auto& t) {
      float g;
      std::memcpy(&g, named(t, m + ".weight_scale_2").bytes.data(), 4);
      set_f32(named(t, "model.layers.1.ffn.experts.2.w3.weight_scale_2"), 2 * g);
    });
    int hits = 0;
    for (const auto& f : rep.findings)
      if (f.check == "fused-global-scale" && f.tensor == m + ".weight_scale_2") {
        ++hits;
        EXPECT_NE(f.message.find("off by 100%"), std::string::npos) << f.message;
      }
    EXPECT_EQ(hits, 1);
  }

  // Missing / extra tensors and shapes.
  auto drop = [&](const std::string& prefix) {
    return [=](std::vector<io::OwnedTensor>& t) {
      std::erase_if(t, [&](const io::OwnedTensor& x) { return x.spec.name.rfind(prefix, 0) == 0; });
    };
  };
  expect_finding(run(drop("model.layers.2.ffn.experts.3.w2.")), "missing-tensor", "layers.2.ffn.experts.3.w2.weight");
  expect_finding(run(drop("model.layers.0.attn.norm.")), "missing-tensor", "layers.0.attn.kv_norm.weight");
  expect_finding(run(drop(m + ".weight_scale_2")), "missing-tensor", m + ".weight");
  expect_finding(run(drop(m + ".weight_scale")), "missing-tensor", m + ".weight");
  expect_finding(run([&](auto& t) { t.push_back({{"model.layers.0.attn.extra_bias", io::Dtype::kBF16, {2}}, std::vector<uint8_t>(4)}); }),
                 "extra-tensor", "model.layers.0.attn.extra_bias");
  expect_finding(run([&](auto& t) { t.push_back({{"model.layers.0.attn.ghost.weight_scale_2", io::Dtype::kF32, {}}, std::vector<uint8_t>(4)}); }),
                 "extra-tensor", "model.layers.0.attn.ghost.weight_scale_2");
  expect_finding(run([&](auto& t) { t.push_back({{"model.layers.9.attn_norm.weight", io::Dtype::kBF16, {64}}, std::vector<uint8_t>(128)}); }),
                 "extra-tensor", "model.layers.9.attn_norm.weight");
  expect_finding(run([&](auto& t) { named(t, "model.norm.weight") = {{"model.norm.weight", io::Dtype::kBF16, {32}}, std::vector<uint8_t>(64)}; }),
                 "shape-mismatch", "model.norm.weight");
  expect_finding(run([&](auto& t) { named(t, "head.weight") = {{"head.weight", io::Dtype::kBF16, {64, 32}}, std::vector<uint8_t>(64 * 32 * 2)}; }),
                 "shape-mismatch", "head.weight");
  // A plain tensor's size-1 dimensions are not a different layout (run reads [1, n] as [n]);
  // the same values transposed are.
  {
    const std::string sink = "model.layers.1.attn.attn_sink", fn = "model.layers.0.hc_attn_fn";
    const auto one = run([&](auto& t) {
      ASSERT_EQ(named(t, sink).spec.shape.size(), 1u);
      named(t, sink).spec.shape.insert(named(t, sink).spec.shape.begin(), 1);
    });
    EXPECT_EQ(one.errors(), 0) << errors_of(one);
    expect_finding(run([&](auto& t) {
                     std::vector<int64_t>& sh = named(t, fn).spec.shape;
                     ASSERT_EQ(sh.size(), 2u);
                     std::swap(sh[0], sh[1]);
                   }),
                   "shape-mismatch", fn);
  }
  expect_finding(run([&](auto& t) {
                   io::OwnedTensor& s = named(t, m + ".weight_scale");
                   s.spec.shape = {16, 8};
                 }),
                 "scale-shape", m + ".weight_scale");
  expect_finding(run([&](auto& t) { named(t, m + ".weight_scale").spec.dtype = io::Dtype::kI8; }), "dtype", m + ".weight_scale");

  // Config disagrees with the tensors: a layer stored BF16 that the quant config says is NVFP4.
  expect_finding(run([](auto&) {}, [](json& h) { h["quantization"]["exclude_modules"] = {"head", "*.layers.[01].ffn.gate"}; }),
                 "scheme-mismatch", "model.layers.2.ffn.gate.weight");
}

// A weight whose code x block scale overflows fp32 is an error (weight-overflow, naming the
// weight `run` would refuse at load), found without --scan-weights where a scale allows it:
// MXFP4 ue8m0 2^127 over codes >= 2, FP8-block fp32 scale 1e36 over e4m3 codes >= 2^9 / 1e36.
// A 2^126 block whose codes stay below 4 overflows nothing (only the range warning).
TEST(Doctor, WeightsThatOverflowFp32) {
  test::SeededRng r;
  TempDir d;
  const std::vector<float> w = test::random_bf16(r.rng, 256 * 512, 0.1f);
  Matrix mx = quantize_mxfp4(w.data(), 128, 64), ok = mx;
  Matrix f8 = quantize_fp8_block(w.data(), 256, 512, ScaleKind::kF32);
  mx.scales[13] = 0xFE;              // row 6, block 1: 2^127
  std::fill_n(mx.data.begin() + 13 * 16, 16, uint8_t{0});
  mx.data[13 * 16 + 2] = 0x14;       // elements [6, 36], [6, 37]: codes 4 (2.0) and 1 (0.5)
  ok.scales[13] = 0xFD;              // 2^126
  for (int i = 0; i < 16; ++i) ok.data[13 * 16 + i] = 0x55;  // code 5 (3.0): 1.5 x 2^127, finite
  const float big = 1e36f;
  std::memcpy(f8.scales.data() + 4 * 6, &big, 4);  // block [1, 2]: rows 128.., columns 256..
  for (int64_t row = 128; row < 256; ++row) std::fill_n(f8.data.begin() + row * 512 + 256, 128, uint8_t{0});
  f8.data[200 * 512 + 300] = 0x7E;                  // e4m3 448 there: 4.48e38
  io::write_safetensors(d.path() / "m.safetensors", {{{"a.weight", io::Dtype::kU8, {128, 32}}, mx.data},
                                                     {{"a.scale", io::Dtype::kU8, {128, 2}}, mx.scales},
                                                     {{"c.weight", io::Dtype::kU8, {128, 32}}, ok.data},
                                                     {{"c.scale", io::Dtype::kU8, {128, 2}}, ok.scales},
                                                     {{"b.weight", io::Dtype::kF8_E4M3, {256, 512}}, f8.data},
                                                     {{"b.weight_scale_inv", io::Dtype::kF32, {2, 4}}, f8.scales}});
  for (bool scan : {false, true}) {
    weights::DoctorOptions opt;
    opt.scan_fp8_weights = scan;
    const weights::DoctorReport rep = weights::run_doctor(io::Checkpoint::open(d.path()), nullptr, io::QuantScheme{}, opt);
    std::map<std::string, weights::Finding> got;
    for (const auto& f : rep.findings) got[f.check + " " + f.tensor] = f;
    ASSERT_TRUE(got.count("weight-overflow a.weight")) << "scan " << scan;
    EXPECT_EQ(got["weight-overflow a.weight"].severity, weights::Severity::kError);
    EXPECT_NE(got["weight-overflow a.weight"].message.find("weight [6, 36] overflows fp32 (2 x block scale 1.70141e+38)"), std::string::npos)
        << got["weight-overflow a.weight"].message;
    ASSERT_TRUE(got.count("weight-overflow b.weight")) << "scan " << scan;
    EXPECT_NE(got["weight-overflow b.weight"].message.find("weight [200, 300] overflows fp32 (448 x block scale 1e+36)"), std::string::npos)
        << got["weight-overflow b.weight"].message;
    EXPECT_FALSE(got.count("weight-overflow c.weight")) << got["weight-overflow c.weight"].message;
    EXPECT_TRUE(got.count("block-scale-range c.scale"));
  }
}

TEST(Doctor, Ue8m0AndFp32BlockScales) {
  test::SeededRng r;
  TempDir d;
  const std::vector<float> w = test::random_bf16(r.rng, 256 * 512, 0.1f);
  Matrix mx = quantize_mxfp4(w.data(), 128, 64);
  Matrix f8 = quantize_fp8_block(w.data(), 256, 512, ScaleKind::kF32);  // 2 x 4 fp32 block scales
  mx.scales[7] = 0xFF;
  mx.scales[9] = 0x00;   // 2^-127, row 4 block 1: outside what the CUDA kernels hold
  mx.scales[12] = 0xFE;  // 2^127
  const float planted[] = {NAN, INFINITY, -1.0f, 0.0f, 1e-40f};
  for (int i = 0; i < 5; ++i) std::memcpy(f8.scales.data() + 4 * (i + 1), &planted[i], 4);
  io::write_safetensors(d.path() / "m.safetensors", {{{"a.weight", io::Dtype::kU8, {128, 32}}, mx.data},
                                                     {{"a.scale", io::Dtype::kU8, {128, 2}}, mx.scales},
                                                     {{"b.weight", io::Dtype::kF8_E4M3, {256, 512}}, f8.data},
                                                     {{"b.weight_scale_inv", io::Dtype::kF32, {2, 4}}, f8.scales}});
  const weights::DoctorReport rep = weights::run_doctor(io::Checkpoint::open(d.path()), nullptr, io::QuantScheme{});
  std::map<std::string, std::string> got;
  for (const auto& f : rep.findings) got[f.check + " " + f.tensor] = f.message;
  EXPECT_TRUE(got.count("block-scale-nan a.scale"));
  EXPECT_NE(got["block-scale-range a.scale"].find("2 ue8m0 block scales, first at [4, 1] (2^-127) outside 2^-63..2^63"), std::string::npos)
      << got["block-scale-range a.scale"];
  for (const auto& f : rep.findings) {
    if (f.check == "block-scale-range") {
      EXPECT_EQ(f.severity, weights::Severity::kWarning);
    }
  }
  EXPECT_NE(got["block-scale-nan b.weight_scale_inv"].find("first at [0, 1]"), std::string::npos) << got["block-scale-nan b.weight_scale_inv"];
  EXPECT_NE(got["block-scale-inf b.weight_scale_inv"].find("first at [0, 2]"), std::string::npos);
  EXPECT_NE(got["block-scale-negative b.weight_scale_inv"].find("first at [0, 3]"), std::string::npos);
  EXPECT_NE(got["block-scale-zero b.weight_scale_inv"].find("first at [1, 0]"), std::string::npos);
  EXPECT_NE(got["block-scale-denormal b.weight_scale_inv"].find("first at [1, 1]"), std::string::npos);
  EXPECT_TRUE(got.count("scheme-mismatch a.weight"));  // no quant config, yet quantized tensors
  EXPECT_TRUE(got.count("no-config "));
  EXPECT_EQ(rep.block_scales_checked, 128 * 2 + 8);
  EXPECT_FALSE(got.count("weight-nan b.weight"));

  // An e4m3 NaN code in the FP8 weight itself, and non-finite BF16 / F32 / F8 values (an
  // unquantized weight, a norm, a bias), found when the weights are scanned.
  f8.data[3 * 512 + 7] = 0xFF;
  std::vector<uint8_t> bfw(4 * 8 * 2, 0x3F), norm(16 * 4, 0);
  bfw[2 * (2 * 8 + 3)] = 0x80, bfw[2 * (2 * 8 + 3) + 1] = 0x7F;  // bf16 0x7F80 = +inf at [2, 3]
  const float qnan = NAN;
  std::memcpy(norm.data() + 5 * 4, &qnan, 4);
  io::write_safetensors(d.path() / "m.safetensors", {{{"b.weight", io::Dtype::kF8_E4M3, {256, 512}}, f8.data},
                                                     {{"b.weight_scale_inv", io::Dtype::kF32, {2, 4}}, f8.scales},
                                                     {{"c.weight", io::Dtype::kBF16, {4, 8}}, bfw},
                                                     {{"n.weight", io::Dtype::kF32, {16}}, norm},
                                                     {{"p.bias", io::Dtype::kF8_E4M3, {8}}, {0x38, 0x38, 0x7F, 0x38, 0, 0, 0, 0}},
                                                     {{"s.experts.down_proj", io::Dtype::kF32, {2, 2, 4}}, norm}});
  weights::DoctorOptions scan;
  scan.scan_fp8_weights = true;
  const weights::DoctorReport rep2 = weights::run_doctor(io::Checkpoint::open(d.path()), nullptr, io::QuantScheme{}, scan);
  int hits = 0;
  for (const auto& f : rep2.findings)
    if (f.check == "weight-nan") {
      ++hits;
      EXPECT_EQ(f.tensor, "b.weight");
      EXPECT_NE(f.message.find("first at [3, 7]"), std::string::npos) << f.message;
    }
  EXPECT_EQ(hits, 1);
  std::map<std::string, std::string> found;
  for (const auto& f : rep2.findings)
    if (f.check == "weight-nonfinite") found[f.tensor] = f.message;
  EXPECT_EQ(found.size(), 4u);
  EXPECT_NE(found["s.experts.down_proj"].find("1 NaN or infinite F32 value"), std::string::npos) << found["s.experts.down_proj"];
  EXPECT_NE(found["p.bias"].find("1 NaN or infinite F8_E4M3 value, first at [2]"), std::string::npos) << found["p.bias"];
  EXPECT_NE(found["c.weight"].find("1 NaN or infinite BF16 value, first at [2, 3]"), std::string::npos) << found["c.weight"];
  EXPECT_NE(found["n.weight"].find("1 NaN or infinite F32 value, first at [5]"), std::string::npos) << found["n.weight"];
  // Without --scan-weights the linear weights and 3-D stacked experts are not read; plain
  // tensors (the norm, the bias) always are.
  std::vector<std::string> unscanned;
  for (const auto& f : weights::run_doctor(io::Checkpoint::open(d.path()), nullptr, io::QuantScheme{}).findings)
    if (f.check == "weight-nonfinite") unscanned.push_back(f.tensor);
  EXPECT_EQ(unscanned, (std::vector<std::string>{"n.weight", "p.bias"}));
}

// Tiny Qwen3-MoE and DeepSeek-V3 checkpoints in transformers naming, names written by hand from
// the transformers modeling files: the doctor finds them complete, then finds planted faults.
std::vector<io::OwnedTensor> tiny_qwen3_tensors(std::mt19937_64& rng) {
  std::vector<io::OwnedTensor> t;
  auto bf = [&](std::string n, std::vector<int64_t> s) { t.push_back(test::random_tensor(rng, std::move(n), io::Dtype::kBF16, std::move(s), 0.05f)); };
  bf("model.embed_tokens.weight", {32, 64});
  bf("lm_head.weight", {32, 64});
  bf("model.norm.weight", {64});
  for (int L = 0; L < 2; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    bf(p + "input_layernorm.weight", {64});
    bf(p + "post_attention_layernorm.weight", {64});
    bf(p + "self_attn.q_proj.weight", {64, 64});  // 4 heads x 16
    bf(p + "self_attn.k_proj.weight", {32, 64});  // 2 kv heads x 16
    bf(p + "self_attn.v_proj.weight", {32, 64});
    bf(p + "self_attn.o_proj.weight", {64, 64});
    bf(p + "self_attn.q_norm.weight", {16});
    bf(p + "self_attn.k_norm.weight", {16});
    if (L == 0) {  // mlp_only_layers: [0]
      bf(p + "mlp.gate_proj.weight", {96, 64});
      bf(p + "mlp.up_proj.weight", {96, 64});
      bf(p + "mlp.down_proj.weight", {64, 96});
      continue;
    }
    bf(p + "mlp.gate.weight", {3, 64});
    for (int e = 0; e < 3; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      bf(q + "gate_proj.weight", {32, 64});
      bf(q + "up_proj.weight", {32, 64});
      bf(q + "down_proj.weight", {64, 32});
    }
  }
  return t;
}

weights::DoctorReport doctor_on(const TempDir& d, const std::string& sub, const std::vector<io::OwnedTensor>& t, const json& cfg) {
  const fs::path p = d.path() / sub;
  fs::create_directories(p);
  io::write_safetensors(p / "model.safetensors", t);
  test::write_text(p / "config.json", cfg.dump());
  const io::ModelConfig mc = io::load_model_config(p);
  return weights::run_doctor(io::Checkpoint::open(p), &mc, io::QuantScheme{});
}

std::string errors_of(const weights::DoctorReport& r) {
  std::string s;
  for (const auto& f : r.findings)
    if (f.severity == weights::Severity::kError) s += f.check + " " + f.tensor + "; ";
  return s;
}

TEST(Doctor, Qwen3MoeTensorSetAndShapes) {
  test::SeededRng r;
  TempDir d;
  const json cfg = {{"model_type", "qwen3_moe"}, {"vocab_size", 32}, {"hidden_size", 64}, {"intermediate_size", 96},
                    {"moe_intermediate_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                    {"head_dim", 16}, {"num_experts", 3}, {"num_experts_per_tok", 2}, {"mlp_only_layers", {0}}};
  std::vector<io::OwnedTensor> t = tiny_qwen3_tensors(r.rng);
  const weights::DoctorReport clean = doctor_on(d, "clean", t, cfg);
  EXPECT_EQ(clean.errors(), 0) << errors_of(clean);
  EXPECT_EQ(clean.warnings(), 0);
  std::erase_if(t, [](const io::OwnedTensor& x) { return x.spec.name == "model.layers.1.mlp.experts.1.down_proj.weight"; });
  named(t, "model.layers.0.self_attn.k_proj.weight") = test::random_tensor(r.rng, "model.layers.0.self_attn.k_proj.weight", io::Dtype::kBF16, {64, 64}, 0.05f);
  const weights::DoctorReport bad = doctor_on(d, "bad", t, cfg);
  EXPECT_EQ(bad.errors(), 2) << errors_of(bad);
  std::set<std::string> got;
  for (const auto& f : bad.findings) got.insert(f.check + " " + f.tensor);
  EXPECT_TRUE(got.count("missing-tensor layers.1.ffn.experts.1.w2.weight")) << errors_of(bad);
  EXPECT_TRUE(got.count("shape-mismatch model.layers.0.self_attn.k_proj.weight")) << errors_of(bad);
}

TEST(Doctor, DeepSeekV3TensorSetIgnoresTheMtpLayer) {
  test::SeededRng r;
  TempDir d;
  const json cfg = {{"model_type", "deepseek_v3"}, {"vocab_size", 32}, {"hidden_size", 64}, {"intermediate_size", 96},
                    {"moe_intermediate_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"num_key_value_heads", 2},
                    {"q_lora_rank", 32}, {"kv_lora_rank", 16}, {"qk_nope_head_dim", 16}, {"qk_rope_head_dim", 8}, {"v_head_dim", 16},
                    {"n_routed_experts", 2}, {"n_shared_experts", 1}, {"num_experts_per_tok", 1}, {"first_k_dense_replace", 1}};
  std::vector<io::OwnedTensor> t;
  auto bf = [&](std::string n, std::vector<int64_t> s) { t.push_back(test::random_tensor(r.rng, std::move(n), io::Dtype::kBF16, std::move(s), 0.05f)); };
  bf("model.embed_tokens.weight", {32, 64});
  bf("lm_head.weight", {32, 64});
  bf("model.norm.weight", {64});
  for (int L = 0; L < 3; ++L) {  // layer 2 is the MTP module
    const std::string p = "model.layers." + std::to_string(L) + ".";
    bf(p + "input_layernorm.weight", {64});
    bf(p + "post_attention_layernorm.weight", {64});
    bf(p + "self_attn.q_a_proj.weight", {32, 64});
    bf(p + "self_attn.q_a_layernorm.weight", {32});
    bf(p + "self_attn.q_b_proj.weight", {48, 32});
    bf(p + "self_attn.kv_a_proj_with_mqa.weight", {24, 64});
    bf(p + "self_attn.kv_a_layernorm.weight", {16});
    bf(p + "self_attn.kv_b_proj.weight", {64, 16});
    bf(p + "self_attn.o_proj.weight", {64, 32});
    if (L == 0) {
      bf(p + "mlp.gate_proj.weight", {96, 64});
      bf(p + "mlp.up_proj.weight", {96, 64});
      bf(p + "mlp.down_proj.weight", {64, 96});
      continue;
    }
    bf(p + "mlp.gate.weight", {2, 64});
    t.push_back(test::random_tensor(r.rng, p + "mlp.gate.e_score_correction_bias", io::Dtype::kF32, {2}, 0.1f));
    for (int e = 0; e < 2; ++e)
      for (const auto& [n, s] : {std::pair{"gate_proj", std::vector<int64_t>{32, 64}}, std::pair{"up_proj", std::vector<int64_t>{32, 64}},
                                 std::pair{"down_proj", std::vector<int64_t>{64, 32}}})
        bf(p + "mlp.experts." + std::to_string(e) + "." + n + ".weight", s);
    bf(p + "mlp.shared_experts.gate_proj.weight", {32, 64});
    bf(p + "mlp.shared_experts.up_proj.weight", {32, 64});
    bf(p + "mlp.shared_experts.down_proj.weight", {64, 32});
  }
  const weights::DoctorReport clean = doctor_on(d, "clean", t, cfg);
  EXPECT_EQ(clean.errors(), 0) << errors_of(clean);
  named(t, "model.layers.1.self_attn.kv_b_proj.weight") =
      test::random_tensor(r.rng, "model.layers.1.self_attn.kv_b_proj.weight", io::Dtype::kBF16, {48, 16}, 0.05f);
  const weights::DoctorReport bad = doctor_on(d, "bad", t, cfg);
  EXPECT_EQ(errors_of(bad), "shape-mismatch model.layers.1.self_attn.kv_b_proj.weight; ");
}

}  // namespace
}  // namespace fp4moe
