// CUDA MoE layer (ops/cuda/moe.h) against the CPU reference (ops/cpu/moe_ref.h) on the same
// fresh random inputs (bf16 tokens, fp32 router logits, quantized random experts whose
// gate and up halves carry different global scales), outputs poisoned with NaN first.
//   Routing: expert ids and weights bit for bit (memcmp), ties included.
//   Layer: relative L2 ||out - out_ref|| / ||out_ref|| <= 5e-3 on the bf16 outputs (both
//   sides round at the same points; what differs is the fp32 summation order inside the
//   GEMMs, which flips an occasional bf16 rounding), and no NaN/Inf.
//   Determinism: batch invariance, run-to-run and graph-replay equality are BITWISE.
// Covered: T in {0, 1, 2, 7, 64, 1000, 8192}; NVFP4 and MXFP4; the V4 scored and hash, V3
// grouped and softmax routers; experts with zero tokens; all tokens on one expert; an expert
// map with absent experts; pinned token tiles; a wide layer mixing the grouped and streaming
// kernels at 16-token tiles; padded graph rows with stale ids; the
// single-token kernel against the grouped path; the dispatch's positions against a stable
// counting sort; and (Large, outside the sanitizer)
// T x hidden > 2^31.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <tuple>
#include <utility>

#include "gpu_test_util.h"
#include "test_moe_util.h"

namespace fp4moe {
namespace {

using test::MoeCase;
using test::MoeFixture;
constexpr double kTol = 5e-3;

cpu::RouterParams v4_router(int E, int K) {
  cpu::RouterParams r;
  r.kind = cpu::RouterKind::kV4Scored;
  r.n_experts = E;
  r.top_k = K;
  r.routed_scaling_factor = 1.5f;
  return r;
}

// Logits with deliberate ties: some rows all equal, some pairs of experts equal.
std::vector<float> random_logits(std::mt19937_64& rng, int64_t T, int E) {
  std::vector<float> l = test::random_bf16(rng, T * E, 1.5f);
  for (int64_t t = 0; t < T; ++t) {
    if (t % 17 == 3)
      for (int e = 0; e < E; ++e) l[static_cast<size_t>(t * E + e)] = 0.25f;
    if (t % 5 == 1)
      for (int e = 0; e + 1 < E; e += 3) l[static_cast<size_t>(t * E + e + 1)] = l[static_cast<size_t>(t * E + e)];
  }
  return l;
}

struct DeviceInputs {
  cuda::DeviceBuffer x, logits, tok, out;
  DeviceInputs(const std::vector<float>& xv, const std::vector<float>& lv, const std::vector<int32_t>& tv, int64_t T, int64_t H)
      : x(test::to_device_bf16(xv)), logits(std::max<size_t>(lv.size(), 1) * 4), tok(std::max<size_t>(tv.size(), 1) * 4),
        out(static_cast<size_t>(std::max<int64_t>(T * H, 1)) * 2) {
    if (!lv.empty()) logits.upload(lv.data(), lv.size() * 4);
    if (!tv.empty()) tok.upload(tv.data(), tv.size() * 4);
    test::poison(out);
  }
};

struct RunResult {
  std::vector<float> out;
  std::vector<int32_t> ids;
  std::vector<float> w;
};

RunResult run_gpu(const MoeFixture& f, const std::vector<float>& x, const std::vector<float>& logits,
                  const std::vector<int32_t>& tok, int64_t T, const cuda::MoeOptions& opt = {}) {
  DeviceInputs d(x, logits, tok, T, f.c.hidden);
  cuda::MoeWorkspace ws = cuda::MoeWorkspace::create(*f.dev, T);
  cuda::moe_forward(*f.dev, d.x.get<__nv_bfloat16>(), T, d.logits.get<float>(), tok.empty() ? nullptr : d.tok.get<int32_t>(),
                    nullptr, d.out.get<__nv_bfloat16>(), ws, nullptr, opt);
  cuda::check_cuda(cudaDeviceSynchronize(), "moe_forward");
  RunResult r;
  r.out = test::from_device(d.out, static_cast<size_t>(T * f.c.hidden), false);
  const int64_t K = f.c.router.top_k;
  r.ids = test::download_vec<int32_t>(ws.ids, static_cast<size_t>(T * K));
  r.w = test::download_vec<float>(ws.weights, static_cast<size_t>(T * K));
  return r;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t T, int64_t vocab) {
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> v(static_cast<size_t>(T));
  for (auto& t : v) t = d(rng);
  return v;
}

// One full check: GPU layer vs CPU reference on fresh inputs.
void check_case(const MoeCase& mc, int64_t T, const cuda::MoeOptions& opt = {}) {
  test::SeededRng R;
  SCOPED_TRACE(std::string(cpu::to_string(mc.router.kind)) + " " + to_string(mc.format) + " T=" + std::to_string(T) +
               " H=" + std::to_string(mc.hidden) + " I=" + std::to_string(mc.inter));
  MoeFixture f(mc, R.rng);
  const auto x = test::random_bf16(R.rng, T * mc.hidden);
  const auto logits = random_logits(R.rng, T, mc.router.n_experts);
  std::vector<int32_t> tok;
  if (mc.router.kind == cpu::RouterKind::kV4Hash) tok = random_tokens(R.rng, T, mc.router.vocab);
  std::vector<int32_t> ids;
  std::vector<float> w, ref;
  f.reference(x, logits, tok, T, ids, w, ref);
  const RunResult g = run_gpu(f, x, logits, tok, T, opt);
  ASSERT_EQ(g.ids, ids) << "expert selection differs from the reference";
  ASSERT_EQ(0, std::memcmp(g.w.data(), w.data(), w.size() * 4)) << "routing weights differ from the reference";
  EXPECT_EQ(test::count_non_finite(g.out.data(), static_cast<int64_t>(g.out.size())), 0);
  EXPECT_LE(test::rel_l2(g.out, ref), kTol);
}

class MoeTokens : public ::testing::TestWithParam<int64_t> {};

TEST_P(MoeTokens, V4ScoredNvfp4WithSharedMatchesReference) {
  FP4MOE_REQUIRE_GPU();
  const int64_t T = GetParam();
  MoeCase c;
  c.router = v4_router(32, 6);
  if (T >= 8192) c.hidden = 128, c.inter = 64;  // keeps the CPU reference quick
  check_case(c, T);
}

TEST_P(MoeTokens, SoftmaxMxfp4NoSharedMatchesReference) {
  FP4MOE_REQUIRE_GPU();
  const int64_t T = GetParam();
  MoeCase c;
  c.router.kind = cpu::RouterKind::kSoftmax;
  c.router.n_experts = 8;
  c.router.top_k = 2;
  c.router.renormalize = true;
  c.format = MatrixFormat::kMXFP4;
  c.shared = false;
  c.bias = false;
  if (T >= 8192) c.hidden = 128, c.inter = 64;
  check_case(c, T);
}

INSTANTIATE_TEST_SUITE_P(Tokens, MoeTokens, ::testing::Values(0, 1, 2, 7, 64, 1000, 8192));

TEST(MoeRouters, EveryKindBitIdenticalToReference) {
  FP4MOE_REQUIRE_GPU();
  for (int variant = 0; variant < 6; ++variant) {
    MoeCase c;
    c.hidden = 64;
    c.inter = 64;
    c.router.n_experts = 64;
    c.router.top_k = 6;
    c.router.routed_scaling_factor = 2.5f;
    switch (variant) {
      case 0: c.router.kind = cpu::RouterKind::kV4Scored; break;
      case 1: c.router.kind = cpu::RouterKind::kV4Hash, c.router.vocab = 1000; break;
      case 2: c.router.kind = cpu::RouterKind::kV3Grouped, c.router.n_group = 8, c.router.topk_group = 4; break;
      case 3: c.router.kind = cpu::RouterKind::kV3Grouped, c.router.n_group = 8, c.router.topk_group = 3, c.router.renormalize = false; break;
      case 4: c.router.kind = cpu::RouterKind::kSoftmax; break;
      case 5: c.router.kind = cpu::RouterKind::kSoftmax, c.router.renormalize = false, c.router.n_experts = 384; break;
    }
    check_case(c, 300);
  }
}

// V3 with -inf keys inside the chosen group (experts disabled by a -inf bias, a NaN logit): the
// device picks the same experts as the reference, bit for bit, and never one outside the
// chosen group (masking the others to -inf would hand the last picks to the lowest ids).
TEST(MoeRouters, V3MinusInfKeysStayInTheChosenGroup) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  MoeCase c;
  c.hidden = 64;
  c.inter = 64;
  c.bias = false;
  c.router.kind = cpu::RouterKind::kV3Grouped;
  c.router.n_experts = 64, c.router.top_k = 6, c.router.n_group = 8, c.router.topk_group = 1;
  MoeFixture f(c, R.rng);
  f.bias.assign(64, 0.0f);
  for (int e = 0; e < 64; ++e)
    if (e % 8 >= 5) f.bias[static_cast<size_t>(e)] = -std::numeric_limits<float>::infinity();  // 5 live per group
  f.dev->set_bias(f.bias);
  const int64_t T = 64, K = 6;
  std::vector<float> logits(static_cast<size_t>(T * 64), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t g = t % 8;  // token t's best group
    for (int i = 0; i < 8; ++i) logits[static_cast<size_t>(t * 64 + g * 8 + i)] = 4.0f + 0.25f * float(i % 3);
    // A NaN logit on a disabled expert the 6 picks never reach (the picks: 5 live, then expert 5).
    if (t % 3 == 0) logits[static_cast<size_t>(t * 64 + g * 8 + 7)] = std::numeric_limits<float>::quiet_NaN();
  }
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  std::vector<float> w(static_cast<size_t>(T * K));
  cpu::moe_route(c.router, logits.data(), T, f.bias.data(), nullptr, nullptr, ids.data(), w.data());
  cuda::DeviceBuffer dl(logits.size() * 4);
  dl.upload(logits.data(), logits.size() * 4);
  cuda::MoeWorkspace ws = cuda::MoeWorkspace::create(*f.dev, T);
  cuda::moe_route(*f.dev, dl.get<float>(), T, nullptr, nullptr, ws, nullptr);
  cuda::check_cuda(cudaDeviceSynchronize(), "moe_route");
  EXPECT_EQ(test::download_vec<int32_t>(ws.ids, ids.size()), ids);
  const auto gw = test::download_vec<float>(ws.weights, w.size());
  EXPECT_EQ(0, std::memcmp(gw.data(), w.data(), w.size() * 4)) << "routing weights differ from the reference";
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < K; ++j) EXPECT_EQ(ids[static_cast<size_t>(t * K + j)] / 8, t % 8) << "token " << t << " pick " << j;
}

TEST(MoeLayer, V3GroupedAndHashLayersMatchReference) {
  FP4MOE_REQUIRE_GPU();
  MoeCase c;
  c.router.kind = cpu::RouterKind::kV3Grouped;
  c.router.n_experts = 64;
  c.router.top_k = 8;
  c.router.n_group = 8;
  c.router.topk_group = 4;
  check_case(c, 200);
  MoeCase h;
  h.router = v4_router(32, 6);
  h.router.kind = cpu::RouterKind::kV4Hash;
  h.router.vocab = 500;
  h.format = MatrixFormat::kMXFP4;
  check_case(h, 200);
}

TEST(MoeLayer, AllTokensOnOneExpertAndZeroTokenExperts) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  MoeCase c;
  c.router = v4_router(16, 1);
  MoeFixture f(c, R.rng);
  f.bias.assign(16, -50.0f);
  f.bias[5] = 50.0f;  // every token picks expert 5; the other 15 get no tokens
  f.dev->set_bias(f.bias);
  const int64_t T = 1000;
  const auto x = test::random_bf16(R.rng, T * c.hidden);
  const auto logits = random_logits(R.rng, T, 16);
  std::vector<int32_t> ids;
  std::vector<float> w, ref;
  f.reference(x, logits, {}, T, ids, w, ref);
  for (int32_t id : ids) ASSERT_EQ(id, 5);
  const RunResult g = run_gpu(f, x, logits, {}, T);
  ASSERT_EQ(g.ids, ids);
  EXPECT_EQ(test::count_non_finite(g.out.data(), static_cast<int64_t>(g.out.size())), 0);
  EXPECT_LE(test::rel_l2(g.out, ref), kTol);
}

TEST(MoeLayer, ExpertMapWithAbsentExperts) {
  FP4MOE_REQUIRE_GPU();
  MoeCase c;
  c.router = v4_router(32, 4);
  c.n_local = 11;
  for (int g = 0; g < 32; ++g) c.map.push_back(g % 3 == 0 ? g / 3 : -1);  // 11 local, 21 elsewhere
  check_case(c, 64);
  check_case(c, 1000);
}

// The dispatch against a stable counting sort of the pairs by slot, computed here from the
// device's own routing: pair (t, j) (j = k: the shared expert) of slot e lands at
// seg_off[e] + (its rank among the earlier pairs of e), sorted_tok holds its token, dropped
// pairs (absent experts, padding rows past n_valid) get -1. Exact. T covers the one-block
// dispatch (T x (k + 1) <= 2048 pairs) and the chunked one (count, scan, scatter).
TEST(MoeDispatch, PositionsAreAStableSortBySlot) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  MoeCase c;
  c.router = v4_router(32, 6);
  c.n_local = 11;
  for (int g = 0; g < 32; ++g) c.map.push_back(g % 3 == 0 ? g / 3 : -1);
  MoeFixture f(c, R.rng);
  const int K = 6, kp = K + 1, slots = f.dev->slots, shared_slot = c.n_local;
  for (const int64_t T : {int64_t{1}, int64_t{7}, int64_t{64}, int64_t{292}, int64_t{293}, int64_t{1000}, int64_t{5000}}) {
    for (const bool padded : {false, true}) {
      SCOPED_TRACE("T=" + std::to_string(T) + (padded ? " with padding rows" : ""));
      const int32_t n_valid = padded ? static_cast<int32_t>(T - T / 3) : static_cast<int32_t>(T);
      const auto logits = random_logits(R.rng, T, 32);
      cuda::DeviceBuffer dl(logits.size() * 4), dn(4);
      dl.upload(logits.data(), logits.size() * 4);
      dn.upload(&n_valid, 4);
      cuda::MoeWorkspace ws = cuda::MoeWorkspace::create(*f.dev, T);
      // Poison what the dispatch must write (0x55555555 is no valid position, token or offset),
      // so that a value it leaves unwritten cannot pass as a stale right answer.
      for (cuda::DeviceBuffer* b : {&ws.pair_pos, &ws.sorted_tok, &ws.seg_off})
        cuda::check_cuda(cudaMemset(b->get(), 0x55, b->bytes()), "memset");
      const int32_t* nv = padded ? dn.get<int32_t>() : nullptr;
      cuda::moe_route(*f.dev, dl.get<float>(), T, nullptr, nv, ws, nullptr);
      cuda::moe_dispatch(*f.dev, T, nv, ws, nullptr);
      cuda::check_cuda(cudaDeviceSynchronize(), "moe_dispatch");
      const auto ids = test::download_vec<int32_t>(ws.ids, static_cast<size_t>(T * K));
      const auto pos = test::download_vec<int32_t>(ws.pair_pos, static_cast<size_t>(T * kp));
      const auto seg = test::download_vec<int32_t>(ws.seg_off, static_cast<size_t>(slots + 1));
      std::vector<int32_t> slot_of(static_cast<size_t>(T * kp), -1), count(static_cast<size_t>(slots), 0);
      for (int64_t t = 0; t < T && t < n_valid; ++t)
        for (int j = 0; j < kp; ++j) {
          const int32_t id = ids[static_cast<size_t>(t * K + j)];
          const int32_t sl = j == K ? shared_slot : id >= 0 && id < 32 ? f.map[static_cast<size_t>(id)] : -1;
          slot_of[static_cast<size_t>(t * kp + j)] = sl;
          if (sl >= 0) ++count[static_cast<size_t>(sl)];
        }
      std::vector<int32_t> next(static_cast<size_t>(slots + 1), 0);
      for (int e = 0; e < slots; ++e) next[static_cast<size_t>(e + 1)] = next[static_cast<size_t>(e)] + count[static_cast<size_t>(e)];
      ASSERT_EQ(seg, next) << "segment offsets";
      const auto tok = test::download_vec<int32_t>(ws.sorted_tok, static_cast<size_t>(std::max(next[static_cast<size_t>(slots)], 1)));
      for (int64_t p = 0; p < T * kp; ++p) {
        const int32_t sl = slot_of[static_cast<size_t>(p)];
        const int32_t want = sl < 0 ? -1 : next[static_cast<size_t>(sl)]++;
        ASSERT_EQ(pos[static_cast<size_t>(p)], want) << "pair " << p;
        if (want >= 0) ASSERT_EQ(tok[static_cast<size_t>(want)], p / kp) << "pair " << p;
      }
    }
  }
}

TEST(MoeLayer, PinnedTokenTilesGiveIdenticalBits) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  // The second shape leaves the wgmma kernels' row blocks partly past the matrix (inter an
  // odd multiple of 64: half a 128-column gate|up block; hidden not a multiple of 256).
  // The third runs the same shape with MXFP4 experts.
  for (const auto& [H, I, mx] : {std::tuple<int64_t, int64_t, bool>{256, 128, false}, {320, 192, false}, {320, 192, true}}) {
    MoeCase c;
    c.router = v4_router(16, 4);
    c.hidden = H;
    c.inter = I;
    if (mx) c.format = MatrixFormat::kMXFP4;
    MoeFixture f(c, R.rng);
    const int64_t T = 300;
    const auto x = test::random_bf16(R.rng, T * c.hidden);
    const auto logits = random_logits(R.rng, T, 16);
    const RunResult base = run_gpu(f, x, logits, {}, T);
    for (int mt : {1, 2, 4, 8, 12, 16}) {  // 12, 16: the wgmma kernels (96- and 128-token tiles)
      const RunResult r = run_gpu(f, x, logits, {}, T, cuda::MoeOptions{mt});
      ASSERT_EQ(0, std::memcmp(r.out.data(), base.out.data(), base.out.size() * 4)) << "H " << H << " I " << I << " mx " << mx << " mtiles " << mt;
    }
    // 16-token tiles on the grouped kernel (mtiles 2 above ran the streaming kernel: these
    // stages fit), and on the streaming kernel with pinned widths (3: a last CTA with fewer
    // items than warps; 8).
    for (const auto& [s16, wp] : {std::pair<bool, int>{false, 0}, {true, 3}, {true, 8}}) {
      cuda::MoeOptions o{2};
      o.stream16 = s16;
      if (wp) o.stream_warps = wp;
      const RunResult r = run_gpu(f, x, logits, {}, T, o);
      ASSERT_EQ(0, std::memcmp(r.out.data(), base.out.data(), base.out.size() * 4))
          << "H " << H << " I " << I << " mx " << mx << " 16-token tiles, stream16 " << s16 << " warps " << wp;
    }
    // The weight-streaming kernel's tile tokens and CTA widths (3 tokens: partial tiles of
    // every row count; 5 and 7 warps: a last CTA with fewer items than warps).
    // Each with down items of two strips and of one, and gate|up rings of 2 and 1 chunks.
    for (const auto& [tt, wp] : {std::pair<int, int>{1, 1}, {3, 5}, {4, 6}, {8, 7}, {8, 8}, {5, 2}, {8, 0}}) {
      for (const auto& [ds, gr] : {std::pair<int, int>{2, 2}, {1, 2}, {2, 1}, {1, 1}}) {
        cuda::MoeOptions o{1};
        o.stream_tokens = tt;
        if (wp) o.stream_warps = wp;
        o.down_strips = ds;
        o.gate_up_ring = gr;
        const RunResult r = run_gpu(f, x, logits, {}, T, o);
        ASSERT_EQ(0, std::memcmp(r.out.data(), base.out.data(), base.out.size() * 4))
            << "H " << H << " I " << I << " mx " << mx << " stream tokens " << tt << " warps " << wp << " down strips " << ds
            << " gate|up ring " << gr;
      }
    }
  }
}

// Calls of 2..8 tokens run one streaming launch per GEMM with the per-tile handoff, where the
// down items' strips and gate|up's ring are chosen per call: every choice, and the automatic
// one, gives the bits of the grouped mma.sync kernel (16-token tiles, a different kernel with
// the same mma chains), for NVFP4 and MXFP4 experts.
TEST(MoeLayer, StreamShapesAtFewTokensGiveGroupedKernelBits) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  for (const bool mx : {false, true}) {
    MoeCase c;
    c.router = v4_router(16, 4);
    c.hidden = 320;
    c.inter = 192;
    if (mx) c.format = MatrixFormat::kMXFP4;
    MoeFixture f(c, R.rng);
    for (const int64_t T : {2, 5, 8}) {
      const auto x = test::random_bf16(R.rng, T * c.hidden);
      const auto logits = random_logits(R.rng, T, 16);
      cuda::MoeOptions grouped{2};
      grouped.stream16 = false;
      const RunResult base = run_gpu(f, x, logits, {}, T, grouped);
      for (const auto& [ds, gr] : {std::pair<int, int>{0, 0}, {2, 2}, {1, 2}, {2, 1}, {1, 1}}) {
        cuda::MoeOptions o;
        if (ds) o.down_strips = ds;
        if (gr) o.gate_up_ring = gr;
        const RunResult r = run_gpu(f, x, logits, {}, T, o);
        ASSERT_EQ(0, std::memcmp(r.out.data(), base.out.data(), base.out.size() * 4))
            << "mx " << mx << " T " << T << " down strips " << ds << " gate|up ring " << gr << " (0: automatic)";
      }
    }
  }
}

// One launch (no shared expert) with 16-token tiles, where gate|up's whole-k stage is too wide
// for the weight-streaming kernel (hidden 7680: 16 x 7688 x 2 bytes > the shared-memory limit)
// but down's fits: gate|up runs the grouped kernel, down the streaming kernel, and down must
// not wait for per-tile counts that the grouped kernel never makes (it once hung here).
TEST(MoeLayer, WideLayerWithoutSharedMixesKernelsAtSixteenTokenTiles) {
  FP4MOE_REQUIRE_GPU();
  MoeCase c;
  c.router = v4_router(4, 2);
  c.hidden = 7680;
  c.inter = 64;
  c.shared = false;
  for (const int64_t T : {24, 30}) check_case(c, T);  // 12 and 15 pairs per expert: 16-token tiles
}

TEST(MoeLayer, BatchInvariantAndRunToRunIdentical) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  MoeCase c;
  c.router = v4_router(32, 6);
  MoeFixture f(c, R.rng);
  const int64_t T = 1000, H = c.hidden, E = 32;
  const auto x = test::random_bf16(R.rng, T * H);
  const auto logits = random_logits(R.rng, T, 32);
  const RunResult a = run_gpu(f, x, logits, {}, T);
  const RunResult b = run_gpu(f, x, logits, {}, T);
  ASSERT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4)) << "two runs differ";
  for (int64_t row : {int64_t{0}, int64_t{17}, int64_t{511}, T - 1}) {
    const std::vector<float> x1(x.begin() + row * H, x.begin() + (row + 1) * H);
    const std::vector<float> l1(logits.begin() + row * E, logits.begin() + (row + 1) * E);
    const RunResult one = run_gpu(f, x1, l1, {}, 1);
    ASSERT_EQ(0, std::memcmp(one.out.data(), a.out.data() + row * H, H * 4)) << "row " << row << " alone differs";
  }
}

// Capture for a fixed T, replay with new inputs: equal to eager, bit for bit. Rows past
// n_valid are padding with stale token ids (hash routing) and must come out zero.
TEST(MoeGraph, ReplayEqualsEagerWithPaddedRows) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  for (bool hash : {false, true}) {
    MoeCase c;
    c.router = v4_router(16, 4);  // T=64: routed tiles of 16, shared tiles of 64 (side stream)
    if (hash) c.router.kind = cpu::RouterKind::kV4Hash, c.router.vocab = 100;
    MoeFixture f(c, R.rng);
    const int64_t T = 64, H = c.hidden;
    cuda::DeviceBuffer x(T * H * 2), logits(T * 16 * 4), tok(T * 4), nvalid(4), out(T * H * 2), out_eager(T * H * 2);
    cuda::MoeWorkspace ws = cuda::MoeWorkspace::create(*f.dev, T), ws_e = cuda::MoeWorkspace::create(*f.dev, T);
    cuda::Stream s;
    auto fill = [&](int32_t nv) {
      test::upload_bf16(x, test::random_bf16(R.rng, T * H));
      const auto l = random_logits(R.rng, T, 16);
      logits.upload(l.data(), l.size() * 4);
      auto tv = random_tokens(R.rng, T, 100);
      for (int64_t t = nv; t < T; ++t) tv[static_cast<size_t>(t)] = (t % 2) ? -7 : (1 << 30);  // stale garbage
      tok.upload(tv.data(), tv.size() * 4);
      nvalid.upload(&nv, 4);
      cuda::check_cuda(cudaDeviceSynchronize(), "fill");
    };
    auto fwd = [&](cuda::DeviceBuffer& o, cuda::MoeWorkspace& w, int64_t n, const int32_t* nv) {
      cuda::moe_forward(*f.dev, x.get<__nv_bfloat16>(), n, logits.get<float>(), tok.get<int32_t>(), nv, o.get<__nv_bfloat16>(),
                        w, s.get());
    };
    fill(T);
    fwd(out, ws, T, nvalid.get<int32_t>());  // eager warm-up
    s.sync();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cuda::check_cuda(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeGlobal), "begin capture");
    fwd(out, ws, T, nvalid.get<int32_t>());
    cuda::check_cuda(cudaStreamEndCapture(s.get(), &graph), "end capture");
    cuda::check_cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    for (int32_t nv : {int32_t{64}, int32_t{40}, int32_t{1}, int32_t{0}}) {
      SCOPED_TRACE("hash=" + std::to_string(hash) + " n_valid=" + std::to_string(nv));
      fill(nv);
      test::poison(out);
      test::poison(out_eager);
      cuda::check_cuda(cudaGraphLaunch(exec, s.get()), "graph launch");
      s.sync();
      if (nv > 0) fwd(out_eager, ws_e, nv, nullptr);
      s.sync();
      const auto g = test::from_device(out, static_cast<size_t>(T * H), false);
      const auto e = test::from_device(out_eager, static_cast<size_t>(nv * H), false);
      ASSERT_EQ(0, std::memcmp(g.data(), e.data(), e.size() * 4)) << "replay differs from eager";
      for (int64_t i = nv * H; i < T * H; ++i) ASSERT_EQ(g[static_cast<size_t>(i)], 0.0f) << "padded row " << i / H;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

// ---- one token: the single persistent kernel against the grouped path ---------------------
// The single-token kernel (moe_single_token.cu) must give the grouped path's bits (memcmp),
// in both of its shapes (one-strip units; strip pairs when the layer has more gate|up strips
// than 16 warps per SM: inter 4096), over many routings: ties, hash routing with repeated experts and stale token ids, absent
// experts (some calls route every pair away), no shared expert, MXFP4; back to back on one
// workspace (its counters must reset themselves); for a padding token (n_valid = 0: zero
// output); and replayed from a CUDA graph with new inputs.
TEST(MoeSingleToken, SameBitsAsGroupedPath) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  for (int variant = 0; variant < 6; ++variant) {
    MoeCase c;
    c.router = v4_router(32, 6);
    c.hidden = 512;
    c.inter = 256;
    switch (variant) {
      case 1:  // 4 of 8 experts per token from a table: repeated experts are common
        c.router.kind = cpu::RouterKind::kV4Hash, c.router.vocab = 50, c.router.n_experts = 8, c.router.top_k = 4;
        break;
      case 2:
        c.router.kind = cpu::RouterKind::kSoftmax, c.router.n_experts = 8, c.router.top_k = 2;
        c.format = MatrixFormat::kMXFP4, c.shared = false, c.bias = false, c.hidden = 320, c.inter = 192;
        break;
      case 3:  // 11 local experts of 32
        c.router.top_k = 4, c.n_local = 11;
        for (int g = 0; g < 32; ++g) c.map.push_back(g % 3 == 0 ? g / 3 : -1);
        break;
      case 4:  // 2 local experts of 32 and no shared expert: most calls route every pair away
        c.router.top_k = 2, c.n_local = 2, c.shared = false;
        for (int g = 0; g < 32; ++g) c.map.push_back(g < 2 ? g : -1);
        break;
      case 5:  // 7 x 512 gate|up strips: more than 16 warps per SM, so strip-pair units
        c.hidden = 128, c.inter = 4096;
        break;
    }
    SCOPED_TRACE("variant " + std::to_string(variant));
    MoeFixture f(c, R.rng);
    const int64_t H = c.hidden, E = c.router.n_experts;
    cuda::MoeWorkspace ws1 = cuda::MoeWorkspace::create(*f.dev, 1), wsg = cuda::MoeWorkspace::create(*f.dev, 1);
    cuda::DeviceBuffer x(H * 2), logits(E * 4), tok(4), nvalid(4), out1(H * 2), outg(H * 2);
    cuda::Stream s;
    const auto lrows = random_logits(R.rng, 20, static_cast<int>(E));  // rows 1, 3, 6, ...: ties
    auto fill = [&](int call) {
      test::upload_bf16(x, test::random_bf16(R.rng, H));
      logits.upload(lrows.data() + (call % 20) * E, E * 4);
      int32_t t = random_tokens(R.rng, 1, 50)[0];
      if (call % 4 == 3) t = call % 8 == 3 ? -5 : (1 << 30);  // stale: the hash router drops the token's routes
      tok.upload(&t, 4);
      const int32_t nv = call % 6 == 5 ? 0 : 1;
      nvalid.upload(&nv, 4);
      cuda::check_cuda(cudaDeviceSynchronize(), "fill");
      test::poison(out1);
      test::poison(outg);
      return nv;
    };
    auto fwd = [&](cuda::DeviceBuffer& o, cuda::MoeWorkspace& w, bool single) {
      cuda::MoeOptions opt;
      opt.single_token = single;
      cuda::moe_forward(*f.dev, x.get<__nv_bfloat16>(), 1, logits.get<float>(), tok.get<int32_t>(), nvalid.get<int32_t>(),
                        o.get<__nv_bfloat16>(), w, s.get(), opt);
    };
    auto compare = [&](int32_t nv, const char* what) {
      s.sync();
      const auto a = test::from_device(out1, static_cast<size_t>(H), false);
      const auto b = test::from_device(outg, static_cast<size_t>(H), false);
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << what << ": differs from the grouped path";
      EXPECT_EQ(test::count_non_finite(a.data(), H), 0) << what;
      if (nv == 0)
        for (float v : a) ASSERT_EQ(v, 0.0f) << what << ": padding token";
    };
    for (int call = 0; call < 24; ++call) {  // back to back on the same workspaces
      SCOPED_TRACE("call " + std::to_string(call));
      const int32_t nv = fill(call);
      fwd(out1, ws1, true);
      fwd(outg, wsg, false);
      compare(nv, "eager");
    }
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cuda::check_cuda(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeGlobal), "begin capture");
    fwd(out1, ws1, true);
    cuda::check_cuda(cudaStreamEndCapture(s.get(), &graph), "end capture");
    cuda::check_cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    for (int call = 0; call < 8; ++call) {
      SCOPED_TRACE("replay " + std::to_string(call));
      const int32_t nv = fill(call + 2);
      cuda::check_cuda(cudaGraphLaunch(exec, s.get()), "graph launch");
      fwd(outg, wsg, false);
      compare(nv, "graph replay");
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

TEST(MoeLayer, RejectsBadInput) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  MoeCase c;
  c.router = v4_router(8, 2);
  MoeFixture f(c, R.rng);
  EXPECT_THROW(f.dev->set_expert_map(std::vector<int32_t>(8, 9)), std::invalid_argument);
  EXPECT_THROW(f.dev->upload_expert(0, f.dn[0].view(), f.dn[0].view()), std::invalid_argument);
  cuda::MoeSpec bad = f.dev->spec;
  bad.inter = 96;
  EXPECT_THROW(cuda::MoeLayer::create(bad), std::invalid_argument);
  cuda::MoeWorkspace ws = cuda::MoeWorkspace::create(*f.dev, 4);
  EXPECT_THROW(cuda::moe_forward(*f.dev, nullptr, 5, nullptr, nullptr, nullptr, nullptr, ws, nullptr), std::invalid_argument);
  for (auto set : {+[](cuda::MoeOptions& o) { o.mtiles = 3; }, +[](cuda::MoeOptions& o) { o.stream_tokens = 0; },
                   +[](cuda::MoeOptions& o) { o.stream_tokens = 9; }, +[](cuda::MoeOptions& o) { o.stream_warps = 0; },
                   +[](cuda::MoeOptions& o) { o.stream_warps = 9; }, +[](cuda::MoeOptions& o) { o.down_strips = 0; },
                   +[](cuda::MoeOptions& o) { o.down_strips = 3; }, +[](cuda::MoeOptions& o) { o.gate_up_ring = 0; },
                   +[](cuda::MoeOptions& o) { o.gate_up_ring = 3; }}) {
    cuda::MoeOptions o;
    set(o);
    EXPECT_THROW(cuda::moe_forward(*f.dev, nullptr, 0, nullptr, nullptr, nullptr, nullptr, ws, nullptr, o), std::invalid_argument);
  }
  // Rows are moved in 16-byte pieces: an input or output 8 bytes into a buffer is refused.
  cuda::DeviceBuffer x(4 * c.hidden * 2 + 16), logits(4 * 8 * 4), out(4 * c.hidden * 2 + 16);
  cuda::Stream s;
  auto* xb = x.get<__nv_bfloat16>();
  auto* ob = out.get<__nv_bfloat16>();
  EXPECT_THROW(cuda::moe_forward(*f.dev, xb + 4, 2, logits.get<float>(), nullptr, nullptr, ob, ws, s.get()), std::invalid_argument);
  EXPECT_THROW(cuda::moe_forward(*f.dev, xb, 2, logits.get<float>(), nullptr, nullptr, ob + 4, ws, s.get()), std::invalid_argument);
  // A workspace sized for another layer shape (here: no shared expert, wider hidden) is refused
  // before anything is enqueued; so is a moved-from workspace.
  MoeCase c2 = c;
  c2.shared = false;
  c2.hidden = 512;
  MoeFixture f2(c2, R.rng);
  cuda::MoeWorkspace ws2 = cuda::MoeWorkspace::create(*f2.dev, 4);
  EXPECT_THROW(cuda::moe_forward(*f.dev, xb, 2, logits.get<float>(), nullptr, nullptr, ob, ws2, s.get()), std::invalid_argument);
  EXPECT_THROW(cuda::moe_route(*f.dev, logits.get<float>(), 2, nullptr, nullptr, ws2, s.get()), std::invalid_argument);
  EXPECT_THROW(cuda::moe_dispatch(*f.dev, 2, nullptr, ws2, s.get()), std::invalid_argument);
  cuda::MoeWorkspace moved(std::move(ws));
  EXPECT_THROW(cuda::moe_forward(*f.dev, xb, 2, logits.get<float>(), nullptr, nullptr, ob, ws, s.get()), std::invalid_argument);
  s.sync();
  // The bias is updated in place (a graph captured after the first set_bias sees later ones);
  // a hash table naming an expert outside [0, n_experts) is refused.
  const void* bias_before = f.dev->bias.get();
  f.dev->set_bias(std::vector<float>(8, 0.25f));
  EXPECT_EQ(bias_before, f.dev->bias.get());
  EXPECT_THROW(f.dev->set_bias(std::vector<float>(7, 0.0f)), std::invalid_argument);
  MoeCase ch;
  ch.router = v4_router(8, 2);
  ch.router.kind = cpu::RouterKind::kV4Hash, ch.router.vocab = 5;
  MoeFixture fh(ch, R.rng);
  std::vector<int32_t> table(10, 3);
  fh.dev->set_tid2eid(table);
  table[7] = 8;
  EXPECT_THROW(fh.dev->set_tid2eid(table), std::invalid_argument);
  table[7] = -1;
  EXPECT_THROW(fh.dev->set_tid2eid(table), std::invalid_argument);
}

// ---- T x hidden > 2^31 (int32 offsets would overflow); outside the sanitizer ---------------
__global__ void fill_inputs(__nv_bfloat16* x, int64_t nx, float* l, int64_t nl, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < nx + nl;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint64_t z = (static_cast<uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    z ^= z >> 31;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 29;
    const float v = (static_cast<float>(z & 0xFFFF) / 65536.0f - 0.5f) * 4.0f;
    if (i < nx) x[i] = __float2bfloat16_rn(v);
    else l[i - nx] = __bfloat162float(__float2bfloat16_rn(v));
  }
}

TEST(MoeLarge, TokensTimesHiddenAbove2Pow31) {
  FP4MOE_REQUIRE_GPU();
  test::SeededRng R;
  MoeCase c;
  c.router.kind = cpu::RouterKind::kSoftmax;
  c.router.n_experts = 4;
  c.router.top_k = 1;
  c.hidden = 128;
  c.inter = 64;
  c.shared = false;
  c.bias = false;
  MoeFixture f(c, R.rng);
  const int64_t H = c.hidden, E = 4;
  const int64_t T = (int64_t{1} << 31) / H + 4096;  // T * H = 2^31 + 2^19
  cuda::DeviceBuffer x(T * H * 2), logits(T * E * 4), out(T * H * 2);
  fill_inputs<<<2048, 256>>>(x.get<__nv_bfloat16>(), T * H, logits.get<float>(), T * E, R.seed);
  test::poison(out);
  cuda::MoeWorkspace ws = cuda::MoeWorkspace::create(*f.dev, T);
  cuda::moe_forward(*f.dev, x.get<__nv_bfloat16>(), T, logits.get<float>(), nullptr, nullptr, out.get<__nv_bfloat16>(), ws,
                    nullptr);
  cuda::check_cuda(cudaDeviceSynchronize(), "moe_forward (large)");
  const int64_t edge = (int64_t{1} << 31) / H;
  for (int64_t row : {int64_t{0}, int64_t{1}, T / 2, edge - 1, edge, edge + 1, T - 2, T - 1}) {
    SCOPED_TRACE("row " + std::to_string(row));
    std::vector<uint16_t> xb(static_cast<size_t>(H)), ob(static_cast<size_t>(H));
    std::vector<float> l(static_cast<size_t>(E));
    cuda::check_cuda(cudaMemcpy(xb.data(), x.get<uint8_t>() + row * H * 2, H * 2, cudaMemcpyDeviceToHost), "row");
    cuda::check_cuda(cudaMemcpy(ob.data(), out.get<uint8_t>() + row * H * 2, H * 2, cudaMemcpyDeviceToHost), "row");
    cuda::check_cuda(cudaMemcpy(l.data(), logits.get<uint8_t>() + row * E * 4, E * 4, cudaMemcpyDeviceToHost), "row");
    std::vector<float> xr(static_cast<size_t>(H)), gr(static_cast<size_t>(H));
    for (int64_t i = 0; i < H; ++i) xr[static_cast<size_t>(i)] = bf16_to_float(xb[static_cast<size_t>(i)]), gr[static_cast<size_t>(i)] = bf16_to_float(ob[static_cast<size_t>(i)]);
    std::vector<int32_t> ids;
    std::vector<float> w, ref;
    f.reference(xr, l, {}, 1, ids, w, ref);
    EXPECT_EQ(test::count_non_finite(gr.data(), H), 0);
    EXPECT_LE(test::rel_l2(gr, ref), kTol);
  }
}

}  // namespace
}  // namespace fp4moe
