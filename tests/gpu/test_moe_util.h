// A random MoE layer held twice, as the CPU reference sees it (Matrix experts) and on the
// device (cuda::MoeLayer), for tests/gpu/test_moe*.cu.
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "formats/quantize.h"
#include "ops/cpu/moe_ref.h"
#include "ops/cuda/moe.h"
#include "util/test_util.h"

namespace fp4moe::test {

struct MoeCase {
  cpu::RouterParams router;
  MatrixFormat format = MatrixFormat::kNVFP4;
  int64_t hidden = 256, inter = 128;
  int n_local = 0;  // 0: n_experts, identity map
  bool shared = true;
  std::vector<int32_t> map;  // optional: global -> slot
  bool bias = true;
};

struct MoeFixture {
  MoeCase c;
  std::vector<Matrix> gu, dn;
  Matrix sgu, sdn;
  std::vector<float> bias;
  std::vector<int32_t> tid2eid, map;
  std::unique_ptr<cuda::MoeLayer> dev;

  // A fused gate|up whose halves carry different global scales (NVFP4), as in checkpoints.
  static Matrix gate_up(std::mt19937_64& rng, MatrixFormat f, int64_t I, int64_t H) {
    const float sd = 1.0f / std::sqrt(static_cast<float>(H));
    const auto g = random_bf16(rng, I * H, sd), u = random_bf16(rng, I * H, 3.0f * sd);
    Matrix a = f == MatrixFormat::kNVFP4 ? quantize_nvfp4_weight(g.data(), I, H) : quantize_mxfp4(g.data(), I, H);
    Matrix b = f == MatrixFormat::kNVFP4 ? quantize_nvfp4_weight(u.data(), I, H) : quantize_mxfp4(u.data(), I, H);
    const Matrix* parts[2] = {&a, &b};
    return concat_rows(parts);
  }
  static Matrix down(std::mt19937_64& rng, MatrixFormat f, int64_t H, int64_t I) {
    const auto d = random_bf16(rng, H * I, 1.0f / std::sqrt(static_cast<float>(I)));
    return f == MatrixFormat::kNVFP4 ? quantize_nvfp4_weight(d.data(), H, I) : quantize_mxfp4(d.data(), H, I);
  }

  MoeFixture(const MoeCase& mc, std::mt19937_64& rng) : c(mc) {
    const int E = c.router.n_experts;
    const int nl = c.n_local ? c.n_local : E;
    map = c.map;
    if (map.empty())
      for (int g = 0; g < E; ++g) map.push_back(g < nl ? g : -1);
    for (int s = 0; s < nl; ++s) {
      gu.push_back(gate_up(rng, c.format, c.inter, c.hidden));
      dn.push_back(down(rng, c.format, c.hidden, c.inter));
    }
    if (c.shared) {
      sgu = gate_up(rng, c.format, c.inter, c.hidden);
      sdn = down(rng, c.format, c.hidden, c.inter);
    }
    if (c.bias) bias = random_bf16(rng, E, 0.1f);
    if (c.router.kind == cpu::RouterKind::kV4Hash) {
      std::uniform_int_distribution<int32_t> d(0, E - 1);
      tid2eid.resize(static_cast<size_t>(c.router.vocab * c.router.top_k));
      for (auto& v : tid2eid) v = d(rng);
    }
    cuda::MoeSpec spec;
    spec.router = c.router;
    spec.format = c.format;
    spec.hidden = c.hidden;
    spec.inter = c.inter;
    spec.n_local = nl;
    spec.has_shared = c.shared;
    dev = std::make_unique<cuda::MoeLayer>(cuda::MoeLayer::create(spec));
    for (int s = 0; s < nl; ++s) dev->upload_expert(s, gu[static_cast<size_t>(s)].view(), dn[static_cast<size_t>(s)].view());
    if (c.shared) dev->upload_shared(sgu.view(), sdn.view());
    dev->set_expert_map(map);
    if (c.bias) dev->set_bias(bias);
    if (!tid2eid.empty()) dev->set_tid2eid(tid2eid);
  }

  cpu::MoeExpertsRef ref() const {
    cpu::MoeExpertsRef r;
    r.hidden = c.hidden;
    r.inter = c.inter;
    r.swiglu_limit = 10.0f;
    for (size_t s = 0; s < gu.size(); ++s) {
      r.gate_up.push_back(gu[s].view());
      r.down.push_back(dn[s].view());
    }
    r.expert_map = map;
    r.has_shared = c.shared;
    if (c.shared) r.shared_gate_up = sgu.view(), r.shared_down = sdn.view();
    return r;
  }

  // CPU routing and layer output for T tokens.
  void reference(const std::vector<float>& x, const std::vector<float>& logits, const std::vector<int32_t>& tok, int64_t T,
                 std::vector<int32_t>& ids, std::vector<float>& w, std::vector<float>& out) const {
    const int64_t K = c.router.top_k;
    ids.assign(static_cast<size_t>(T * K), 0);
    w.assign(static_cast<size_t>(T * K), 0.0f);
    out.assign(static_cast<size_t>(T * c.hidden), 0.0f);
    cpu::moe_route(c.router, logits.data(), T, bias.empty() ? nullptr : bias.data(), tok.empty() ? nullptr : tok.data(),
                   tid2eid.empty() ? nullptr : tid2eid.data(), ids.data(), w.data());
    cpu::moe_forward(ref(), x.data(), T, ids.data(), w.data(), K, cpu::ActDType::kBF16, out.data());
  }
};

}  // namespace fp4moe::test
