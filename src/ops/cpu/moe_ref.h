// CPU reference MoE layer: the routers of DeepSeek-V4 (scored sqrt-softplus and hash),
// DeepSeek-V3 (sigmoid, group-limited) and softmax top-k (Qwen3-MoE, Mixtral), and the layer
// itself (routed FP4 experts with the clamped SwiGLU, an optional shared expert, a combine in
// a fixed order). The CUDA MoE (ops/cuda/moe.h) is tested against these functions: its
// expert selection must match bit for bit, its outputs within a relative L2 tolerance.
//
// Determinism contract shared with the device (both sides compute it the same way):
//   - Top-k ties go to the LOWER expert id (and, for V3, groups: the lower group id).
//   - Transcendentals (softplus, sigmoid, exp) are evaluated in fp64 and rounded once to fp32,
//     so the host libm and the device's differ only where a fp64 result sits within 1 ulp of
//     an fp32 rounding boundary (about 2^-29 per value); every other step is a single IEEE
//     fp32 operation (+, *, /, sqrt), identical on both sides.
//   - Softmax routing selects on the logits (softmax is monotonic), so selection is exact.
//     Its normalizer sums exp in the order of a 32-lane butterfly (lane l holds experts
//     l, l+32, ...; then xor 16, 8, 4, 2, 1), the order of the device's warp reduction.
//   - V3: the top-k is taken among the chosen groups' experts only. Masking the others to -inf
//     (vLLM's form) is the same except where a chosen expert's key is itself -inf (a -inf bias,
//     a NaN logit): then a masked expert of a lower id would win the tie; here it never does.
//     A group score that is NaN (+inf and -inf keys in one group) ranks as -inf.
//   - Non-finite inputs: a NaN key ranks as -inf, so ids stay in range and deterministic; the
//     weights are not sanitized: a selected NaN score, or a +inf one (inf / inf), and softmax
//     over +inf or all -inf logits give NaN weights, so bad logits show in the output rather
//     than being hidden by a plausible routing.
//
// Layer numerics (DeepSeek-V4 spec section 8):
//   [g|u] = rd(x . gate_up^T);  a = swiglu_clamped(g, u);  y = rd(a . down^T)
//   routed = rd(sum_k y_k * w_k)  (fp32 products, fp32 sum in routing order);  out = rd(routed + rd(shared))
// with rd the activation dtype's rounding. transformers' grouped_mm path (and the model's CPU
// forward, model/moe.cpp, which follows it) rounds each product y_k * w_k to the activation
// dtype before the fp32 sum; this layer does not, so in bf16 the two differ by rounding (up to
// ~4e-3 relative L2 over a random layer's outputs).
#pragma once

#include <cstdint>
#include <vector>

#include "formats/matrix.h"
#include "ops/cpu/act_dtype.h"

namespace fp4moe::cpu {

enum class RouterKind : uint8_t {
  kV4Scored,   // s = sqrt(softplus(l)); select by rd(s + bias); w = s / (sum s + 1e-20) * rsf
  kV4Hash,     // ids = tid2eid[token]; weights as kV4Scored
  kV3Grouped,  // s = sigmoid(l); groups by the sum of their top-2 rd(s + bias); top-k inside the chosen groups
  kSoftmax,    // select by logit; w = softmax (renormalized over the chosen k if renormalize)
};
const char* to_string(RouterKind k);

struct RouterParams {
  RouterKind kind = RouterKind::kV4Scored;
  int32_t n_experts = 0;  // global expert count (logits per token)
  int32_t top_k = 0;
  float routed_scaling_factor = 1.0f;
  int32_t n_group = 1;     // V3 only
  int32_t topk_group = 1;  // V3 only
  bool renormalize = true; // V3 and softmax (V4 always renormalizes)
  ActDType dt = ActDType::kBF16;
  int64_t vocab = 0;       // hash: rows of tid2eid
};

// Throws std::invalid_argument naming the problem.
void validate_router(const RouterParams& p);

// Per token t: ids[t*k + j] (global expert ids, or -1 for a hash token id outside the vocab)
// and weights[t*k + j]. logits: [T, n_experts] fp32; bias: [n_experts] or null;
// token_ids [T] and tid2eid [vocab, k] for hash routing (null otherwise).
void moe_route(const RouterParams& p, const float* logits, int64_t T, const float* bias, const int32_t* token_ids,
               const int32_t* tid2eid, int32_t* ids, float* weights);

// Scores of one token in the router's score function (for the tests' tie construction).
float router_score(RouterKind kind, float logit, ActDType dt);

// The experts of one layer as the CPU reference sees them. Experts are LOCAL slots;
// expert_map[global id] gives the slot or -1 (absent: the pair contributes nothing here, as
// under expert parallelism where another device owns it).
struct MoeExpertsRef {
  int64_t hidden = 0, inter = 0;
  float swiglu_limit = 10.0f;
  std::vector<MatrixView> gate_up;  // [2*inter, hidden] per slot (gate rows first)
  std::vector<MatrixView> down;     // [hidden, inter] per slot
  std::vector<int32_t> expert_map;  // global id -> slot or -1
  bool has_shared = false;
  MatrixView shared_gate_up, shared_down;
};

// out [T, hidden] (values of the activation dtype) from x [T, hidden] and the routing of
// moe_route (k pairs per token).
void moe_forward(const MoeExpertsRef& e, const float* x, int64_t T, const int32_t* ids, const float* weights,
                 int64_t k, ActDType dt, float* out);

}  // namespace fp4moe::cpu
