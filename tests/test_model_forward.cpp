// Whole-model tests of the DeepSeek-V4 CPU forward on the tiny model (all three attention
// types, hash and scored MoE): decode and chunked runs equal a full prefill, later tokens
// never change earlier logits, batches equal single runs, and bad configs or weights give
// errors that name the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/model.h"
#include "formats/codecs.h"
#include "formats/quantize.h"
#include "model/tiny.h"
#include "ops/cpu/linear_ref.h"
#include "util/test_util.h"

namespace fp4moe::model {
namespace {

V4Model tiny_model(cpu::ActDType dt, uint64_t seed = 7) {
  const V4Config c = tiny_v4_config();
  const InMemoryWeights w = make_tiny_weights(c, seed);
  return V4Model(c, load_v4_weights(c, w), ModelOptions{dt, nullptr});
}

std::vector<int32_t> random_ids(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& v : ids) v = d(rng);
  return ids;
}

std::vector<float> run_chunks(const V4Model& m, const std::vector<int32_t>& ids, const std::vector<int>& chunks) {
  SequenceState st = m.new_state();
  std::vector<float> out;
  size_t at = 0;
  for (size_t c = 0; at < ids.size(); ++c) {
    const size_t n = std::min<size_t>(size_t(chunks[c % chunks.size()]), ids.size() - at);
    const std::vector<float> l = m.forward(st, std::span<const int32_t>(ids.data() + at, n));
    out.insert(out.end(), l.begin(), l.end());
    at += n;
  }
  EXPECT_EQ(st.length, int64_t(ids.size()));
  return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// 45 tokens: past the sliding window (16), 11 CSA windows (ratio 4, top-k 4 of them), 5 HCA
// windows (ratio 8). Chunked, token-by-token and whole runs must agree bit for bit: every
// per-token computation is the same, whatever the chunking.
TEST(ModelForward, DecodeAndChunksEqualPrefill) {
  test::SeededRng r;
  for (cpu::ActDType dt : {cpu::ActDType::kF32, cpu::ActDType::kBF16}) {
    SCOPED_TRACE(cpu::to_string(dt));
    const V4Model m = tiny_model(dt, r.seed);
    const std::vector<int32_t> ids = random_ids(r.rng, 45, m.config().vocab_size);
    const std::vector<float> full = run_chunks(m, ids, {45});
    ASSERT_EQ(test::count_non_finite(full.data(), int64_t(full.size())), 0);
    EXPECT_EQ(max_abs_diff(run_chunks(m, ids, {1}), full), 0.0f);
    EXPECT_EQ(max_abs_diff(run_chunks(m, ids, {13, 1, 7, 19}), full), 0.0f);
    EXPECT_EQ(max_abs_diff(run_chunks(m, ids, {16, 1, 1, 1, 1, 4, 16}), full), 0.0f);
  }
}

TEST(ModelForward, LaterTokensNeverChangeEarlierLogits) {
  test::SeededRng r;
  const V4Model m = tiny_model(cpu::ActDType::kBF16, r.seed);
  const int64_t V = m.config().vocab_size;
  std::vector<int32_t> ids = random_ids(r.rng, 40, V);
  const std::vector<float> a = run_chunks(m, ids, {40});
  for (int64_t k : {3, 17, 33}) {
    std::vector<int32_t> changed = ids;
    changed[static_cast<size_t>(k)] = (ids[static_cast<size_t>(k)] + 1 + int32_t(k)) % int32_t(V);
    const std::vector<float> b = run_chunks(m, changed, {40});
    const std::vector<float> a_pre(a.begin(), a.begin() + k * V), b_pre(b.begin(), b.begin() + k * V);
    EXPECT_EQ(max_abs_diff(a_pre, b_pre), 0.0f) << "changing token " << k;
    // ... and the changed position itself does change (the test can fail).
    const std::vector<float> a_k(a.begin() + k * V, a.begin() + (k + 1) * V), b_k(b.begin() + k * V, b.begin() + (k + 1) * V);
    EXPECT_GT(max_abs_diff(a_k, b_k), 0.0f);
  }
}

TEST(ModelForward, BatchEqualsSingleSequences) {
  test::SeededRng r;
  const V4Model m = tiny_model(cpu::ActDType::kF32, r.seed);
  std::vector<std::vector<int32_t>> ids = {random_ids(r.rng, 9, m.config().vocab_size),
                                           random_ids(r.rng, 21, m.config().vocab_size)};
  std::vector<SequenceState> states = {m.new_state(), m.new_state()};
  const auto out = m.forward_batch(states, ids);
  for (size_t b = 0; b < 2; ++b) EXPECT_EQ(max_abs_diff(out[b], run_chunks(m, ids[b], {100})), 0.0f);
}

TEST(ModelForward, LogitsAreNotFlat) {
  // A model whose logits do not depend on the input would pass every test above.
  test::SeededRng r;
  const V4Model m = tiny_model(cpu::ActDType::kF32, r.seed);
  const std::vector<float> l = run_chunks(m, random_ids(r.rng, 20, m.config().vocab_size), {20});
  const int64_t V = m.config().vocab_size;
  const auto [lo, hi] = std::minmax_element(l.begin(), l.begin() + V);
  EXPECT_GT(*hi - *lo, 1.0f);
  const std::vector<float> p0(l.begin(), l.begin() + V), p19(l.end() - V, l.end());
  EXPECT_GT(max_abs_diff(p0, p19), 0.1f);
}

// Every weight format runs through the same forward: MXFP4 and FP8-block weights (e2m1 or
// e4m3 times a power of two: exact in bf16) give bit for bit the logits of BF16 matrices
// holding their dequantized values. The FP8 case also covers expert gate/up pairs that cannot
// be stacked (32 rows, not a multiple of 128) and output-projection groups sliced inside one
// 128-row scale block.
TEST(ModelForward, QuantizedFormatsEqualTheirDequantizedWeights) {
  test::SeededRng r;
  const V4Config c = tiny_v4_config();
  const InMemoryWeights w = make_tiny_weights(c, r.seed);
  const std::vector<int32_t> ids = random_ids(r.rng, 30, c.vocab_size);
  for (MatrixFormat f : {MatrixFormat::kMXFP4, MatrixFormat::kFP8Block}) {
    SCOPED_TRACE(to_string(f));
    InMemoryWeights q = w, deq = w;
    for (auto& [name, m] : q.matrices) {
      std::vector<float> v(static_cast<size_t>(m.rows * m.cols));
      cpu::dequantize(m.view(), v.data());
      m = f == MatrixFormat::kMXFP4 ? quantize_mxfp4(v.data(), m.rows, m.cols)
                                    : quantize_fp8_block(v.data(), m.rows, m.cols, ScaleKind::kUe8m0);
      cpu::dequantize(m.view(), v.data());
      deq.matrices[name] = make_bf16_matrix(v.data(), m.rows, m.cols);
      for (size_t i = 0; i < v.size(); i += 97) ASSERT_EQ(round_to_bf16(v[i]), v[i]) << name << " not exact in bf16";
    }
    const V4Model mq(c, load_v4_weights(c, q), ModelOptions{cpu::ActDType::kBF16, nullptr});
    const V4Model md(c, load_v4_weights(c, deq), ModelOptions{cpu::ActDType::kBF16, nullptr});
    if (f == MatrixFormat::kFP8Block) {
      EXPECT_TRUE(mq.weights().layers[0].moe.gate_up[0].split);
    }
    EXPECT_EQ(mq.weights().layers[0].attn.wo_a[1].format, f);
    EXPECT_EQ(max_abs_diff(run_chunks(mq, ids, {30}), run_chunks(md, ids, {30})), 0.0f);
  }
}

// transformers' in-memory naming with stacked 3-D expert tensors loads the same model.
TEST(ModelForward, StackedExpertTensorsLoadTheSameModel) {
  test::SeededRng r;
  const V4Config c = tiny_v4_config();
  const InMemoryWeights w = make_tiny_weights(c, r.seed);
  InMemoryWeights st = w;
  const int64_t E = c.n_routed_experts, I = c.moe_intermediate_size, H = c.hidden_size;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    HostTensor gu{{E, 2 * I, H}, {}, StoredDtype::kBF16}, dn{{E, H, I}, {}, StoredDtype::kBF16};
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = p + "ffn.experts." + std::to_string(e) + ".";
      for (const char* part : {"w1", "w3", "w2"}) {
        const Matrix& m = w.matrices.at(x + part + ".weight");
        std::vector<float> v(static_cast<size_t>(m.rows * m.cols));
        cpu::dequantize(m.view(), v.data());
        (std::string(part) == "w2" ? dn : gu).values.insert((std::string(part) == "w2" ? dn : gu).values.end(), v.begin(), v.end());
        st.matrices.erase(x + part + ".weight");
      }
    }
    st.tensors[p + "mlp.experts.gate_up_proj"] = gu;
    st.tensors[p + "mlp.experts.down_proj"] = dn;
  }
  const std::vector<int32_t> ids = random_ids(r.rng, 25, c.vocab_size);
  const V4Model a(c, load_v4_weights(c, w), ModelOptions{cpu::ActDType::kBF16, nullptr});
  const V4Model b(c, load_v4_weights(c, st), ModelOptions{cpu::ActDType::kBF16, nullptr});
  EXPECT_EQ(max_abs_diff(run_chunks(a, ids, {25}), run_chunks(b, ids, {25})), 0.0f);
}

TEST(ModelForward, TokenOutsideTheVocabularyIsAnError) {
  const V4Model m = tiny_model(cpu::ActDType::kF32);
  SequenceState st = m.new_state();
  const std::vector<int32_t> ids = {1, 512};
  try {
    m.forward(st, ids);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("512"), std::string::npos) << e.what();
  }
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// An FP8 block-scaled wo_a whose output groups cut a 128-row scale block (o_lora_rank 96: the
// second group starts at row 96 and ends past 128) cannot be split per group: refused naming
// the tensor and the config values, not with a bare slicing error.
TEST(ModelForward, Fp8WoAGroupsAcrossAScaleBlockAreRefusedByName) {
  V4Config c = tiny_v4_config();
  c.o_lora_rank = 96;
  InMemoryWeights w = make_tiny_weights(c, 5);
  const std::string n = "model.layers.0.attn.wo_a.weight";
  Matrix& m = w.matrices.at(n);
  ASSERT_EQ(m.rows, 2 * 96);
  std::vector<float> v(static_cast<size_t>(m.rows * m.cols));
  cpu::dequantize(m.view(), v.data());
  m = quantize_fp8_block(v.data(), m.rows, m.cols, ScaleKind::kF32);
  expect_error([&] { load_v4_weights(c, w); }, "tensor " + n + " in in-memory weights: its 2 groups of o_lora_rank 96 rows cannot be split");
}

TEST(ModelForward, BadConfigsAreClearErrors) {
  V4Config c = tiny_v4_config();
  c.o_groups = 3;
  expect_error([&] { validate_v4_config(c); }, "o_groups");
  c = tiny_v4_config();
  c.num_experts_per_tok = 9;
  expect_error([&] { validate_v4_config(c); }, "num_experts_per_tok");
  c = tiny_v4_config();
  c.qk_rope_head_dim = 7;
  expect_error([&] { validate_v4_config(c); }, "rotary");
  c = tiny_v4_config();
  c.layer_types.pop_back();
  expect_error([&] { validate_v4_config(c); }, "num_hidden_layers");
  // Real-valued settings outside the ranges the forward can use (each gave NaN logits, argmax 0,
  // or a clamp with crossed bounds, before these checks), and a Sinkhorn count that would hang.
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::pair<std::function<void(V4Config&)>, std::string>> bad = {
      {[](V4Config& x) { x.rms_norm_eps = 0; }, "rms_norm_eps must be > 0 and < 1, got 0"},
      {[](V4Config& x) { x.rms_norm_eps = -1e-6; }, "rms_norm_eps must be > 0 and < 1, got -1e-06"},
      {[](V4Config& x) { x.rms_norm_eps = 1e300; }, "rms_norm_eps must be > 0 and < 1"},
      {[](V4Config& x) { x.hc_eps = -1; }, "hc_eps must be >= 0 and < 1"},
      {[](V4Config& x) { x.swiglu_limit = 0; }, "swiglu_limit must be > 0, got 0"},
      {[](V4Config& x) { x.swiglu_limit = -10; }, "swiglu_limit must be > 0"},
      {[&](V4Config& x) { x.swiglu_limit = inf; }, "swiglu_limit must be > 0, got inf"},
      {[](V4Config& x) { x.routed_scaling_factor = -1.5; }, "routed_scaling_factor must be > 0"},
      {[](V4Config& x) { x.rope_main.rope_theta = 0; }, "rope_theta must be > 1, got 0"},
      {[](V4Config& x) { x.rope_compress.rope_theta = -160000; }, "compress_rope_theta must be > 1"},
      {[](V4Config& x) { x.rope_compress.rope_type = "yarn", x.rope_compress.factor = 0; }, "YaRN factor"},
      {[](V4Config& x) { x.rope_compress.rope_type = "yarn", x.rope_compress.beta_slow = -1; }, "YaRN beta_slow"},
      {[](V4Config& x) { x.hc_sinkhorn_iters = kMaxSinkhornIters + 1; }, "hc_sinkhorn_iters must be at most 1000"},
      {[](V4Config& x) { x.max_position_embeddings = -5; }, "max_position_embeddings must be positive (or absent), got -5"},
      {[](V4Config& x) { x.num_hash_layers = -1; }, "num_hash_layers must be >= 0, got -1"},
      {[](V4Config& x) { x.hidden_size = int64_t(1) << 40; }, "hidden_size must be at most 1048576, got 1099511627776"},
      {[](V4Config& x) { x.hc_mult = kMaxConfigDimension + 1; }, "hc_mult must be at most 1048576, got 1048577"},
  };
  for (const auto& [set, needle] : bad) {
    c = tiny_v4_config();
    set(c);
    expect_error([&] { validate_v4_config(c); }, needle);
  }
  // The edges that stay valid.
  c = tiny_v4_config();
  c.hc_eps = 0;
  c.hc_sinkhorn_iters = kMaxSinkhornIters;
  c.vocab_size = kMaxConfigDimension;
  EXPECT_NO_THROW(validate_v4_config(c));
}

TEST(ModelForward, MissingOrMisshapenTensorsAreClearErrors) {
  const V4Config c = tiny_v4_config();
  InMemoryWeights w = make_tiny_weights(c, 1);
  InMemoryWeights missing = w;
  missing.matrices.erase("model.layers.1.attn.indexer.wq_b.weight");
  expect_error([&] { load_v4_weights(c, missing); }, "model.layers.1.attn.indexer.wq_b.weight");
  InMemoryWeights bad_shape = w;
  bad_shape.tensors["model.layers.2.attn.attn_sink"].shape = {3};
  bad_shape.tensors["model.layers.2.attn.attn_sink"].values.resize(3);
  expect_error([&] { load_v4_weights(c, bad_shape); }, "model.layers.2.attn.attn_sink");
  // A config that calls a compressed layer sliding does not match the weights.
  V4Config wrong = c;
  wrong.layer_types[2] = AttnType::kSliding;
  expect_error([&] { load_v4_weights(wrong, w); }, "layer 2");
}

}  // namespace
}  // namespace fp4moe::model
