// Validation, weight upload and orchestration of the CUDA MoE layer (see moe.h).
#include "ops/cuda/moe.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ops/cuda/w4a16_layout.h"

namespace fp4moe::cuda {
namespace {

std::string where(const MoeSpec& s) {
  return "MoE layer (" + std::string(to_string(s.format)) + ", hidden " + std::to_string(s.hidden) + ", inter " +
         std::to_string(s.inter) + ", " + std::to_string(s.n_local) + " local experts" + (s.has_shared ? " + shared" : "") +
         ")";
}

int64_t code_bytes(int64_t rows, int64_t cols) { return ((rows + 15) / 16) * ((cols + 63) / 64) * kTileCodeBytes; }
int64_t scale_bytes(MatrixFormat f, int64_t rows, int64_t cols) {
  return ((rows + 15) / 16) * ((cols + 63) / 64) * (f == MatrixFormat::kNVFP4 ? kNvScaleBytesPerTile : kMxScaleBytesPerTile);
}

MoeRouterKind device_kind(cpu::RouterKind k) {
  switch (k) {
    case cpu::RouterKind::kV4Scored: return MoeRouterKind::kV4Scored;
    case cpu::RouterKind::kV4Hash: return MoeRouterKind::kV4Hash;
    case cpu::RouterKind::kV3Grouped: return MoeRouterKind::kV3Grouped;
    case cpu::RouterKind::kSoftmax: return MoeRouterKind::kSoftmax;
  }
  return MoeRouterKind::kV4Scored;
}

void check_options(const MoeOptions& opt, const std::string& w) {
  if (opt.mtiles && *opt.mtiles != 1 && *opt.mtiles != 2 && *opt.mtiles != 4 && *opt.mtiles != 8 &&
      !moe_is_wgmma(*opt.mtiles))
    throw std::invalid_argument(w + ": mtiles must be 1, 2, 4, 8, 12 or 16");
  if (opt.stream_tokens && (*opt.stream_tokens < 1 || *opt.stream_tokens > 8))
    throw std::invalid_argument(w + ": stream_tokens must be in 1..8");
  if (opt.stream_warps && (*opt.stream_warps < 1 || *opt.stream_warps > 8))
    throw std::invalid_argument(w + ": stream_warps must be in 1..8");
  if (opt.down_strips && *opt.down_strips != 1 && *opt.down_strips != 2)
    throw std::invalid_argument(w + ": down_strips must be 1 or 2");
  if (opt.gate_up_ring && *opt.gate_up_ring != 1 && *opt.gate_up_ring != 2)
    throw std::invalid_argument(w + ": gate_up_ring must be 1 or 2");
}

// One-token calls run the single persistent kernel (moe_single_token.cu) where its stage fits.
bool single_token_call(const MoeLayer& L, int64_t T, const MoeOptions& opt) {
  return T == 1 && opt.single_token && !opt.mtiles && moe_single_smem_bytes(L.spec.hidden, L.spec.inter) <= kMoeStreamMaxSmem;
}

struct Plan {
  int mt_routed, mt_shared;
  int tt_routed, tt_shared;  // tokens per tile as dispatched
  bool one_launch;
  // Tokens per tile of a launch with token tiles mt (the routed or the shared expert's).
  int tile_tokens(int mt) const { return mt == mt_routed ? tt_routed : tt_shared; }
};
// Tiles of at most 8 tokens run the weight-streaming kernel (moe_stream.cuh), which stages a
// tile's activation rows for all of k in shared memory: with fewer than 8 tokens in the call
// its tiles hold at most T tokens (a slot can hold a token twice only through duplicate
// routes, which then fill more tiles). While the experts average at most 1 pair, a tile
// holds at most 4 tokens: a smaller stage leaves room for more CTAs per SM (V4-Pro gate|up:
// three 4-warp CTAs of 58 KB instead of two of 115 KB; notes step 29), and the rare expert
// with more tokens reads its weights once per tile (the tiles run side by side, so mostly
// from L2). Layers too wide for that stage use 16-token tiles.
Plan plan_for(const MoeLayer& L, int64_t T, const MoeOptions& opt) {
  const int64_t k = L.spec.router.top_k;
  const int64_t per_slot = (T * k + L.spec.n_local - 1) / L.spec.n_local;
  const bool stream_fits = moe_stream_stage_fits(std::max(L.spec.hidden, L.spec.inter), 8);
  const int stream_tt = opt.stream_tokens ? *opt.stream_tokens : T * k <= L.spec.n_local ? 4 : 8;
  const bool stream16 = opt.stream16 && moe_stream_stage_fits(std::max(L.spec.hidden, L.spec.inter), 16);
  auto fit = [&](int mt) { return mt == 1 && !stream_fits ? 2 : mt; };
  auto tokens = [&](int mt) { return mt == 1 ? static_cast<int>(std::clamp<int64_t>(T, 1, stream_tt)) : 8 * mt; };
  Plan p;
  p.mt_routed = fit(opt.mtiles ? *opt.mtiles : moe_mtiles(per_slot, stream16));
  // The shared expert holds exactly T tokens (no tile overflows by chance): the rule without the
  // 16-token margin, so that T <= 8 stays one launch (8-token tiles for every slot).
  p.mt_shared = L.spec.has_shared ? fit(std::max(p.mt_routed, moe_mtiles(T, false))) : p.mt_routed;
  p.tt_routed = tokens(p.mt_routed);
  p.tt_shared = tokens(p.mt_shared);
  p.one_launch = p.mt_shared == p.mt_routed;
  return p;
}

}  // namespace

int moe_mtiles(int64_t pairs_per_slot, bool routed_stream16) {
  // Past 48 tokens per expert the wgmma tiles (moe_grouped_wgmma.cu) win (V4-Pro T = 4096, 64
  // per expert: 19.7 ms with 128-token tiles against 20.3 with 64-token tiles). Up to 72 per
  // expert on average they are 96 tokens: one tile still holds nearly every expert's segment
  // (V4-Pro T = 4096: at most ~87), with a quarter less tensor work than 128.
  if (pairs_per_slot > 48) return pairs_per_slot <= 72 ? kMoeWgmmaTilesSmall : kMoeWgmmaTiles;
  // Where 16-token tiles run the weight-streaming kernel (both GEMMs' stages fit), they win from
  // 8 to 32 pairs per expert (7, between the sweep's points, goes with them): an expert
  // averaging 8 exceeds an 8-token tile 40% of the time and reads its weights again, and the
  // grouped kernel's 32-token tiles are slower still
  // (H200: V4-Pro T = 512, 8 pairs, 6.1 -> 5.0-5.3 ms; V4-Flash T = 768, 18 pairs, 2.53 -> 2.09 ms;
  // V4-Pro T = 2048, 32 pairs, 13.9 -> 12.8 ms; at 6 pairs 8-token tiles are 1-5% ahead; notes
  // step 45). Past 32, 64-token tiles (V4-Flash T = 2048, 48 pairs: 3.66 against 4.55 ms).
  if (routed_stream16) return pairs_per_slot <= 6 ? 1 : pairs_per_slot <= 32 ? 2 : 8;
  return pairs_per_slot <= 8 ? 1 : pairs_per_slot <= 16 ? 2 : pairs_per_slot <= 32 ? 4 : 8;
}

int moe_token_tiles(const MoeLayer& L, int64_t T, const MoeOptions& opt) {
  if (single_token_call(L, T, opt)) return 0;
  return plan_for(L, T, opt).mt_routed;
}

MoeLayer MoeLayer::create(const MoeSpec& spec) {
  const std::string w = where(spec);
  try {
    cpu::validate_router(spec.router);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(w + ": " + e.what());
  }
  if (spec.format != MatrixFormat::kNVFP4 && spec.format != MatrixFormat::kMXFP4)
    throw std::invalid_argument(w + ": experts must be NVFP4 or MXFP4");
  if (spec.hidden <= 0 || spec.hidden % 64 != 0) throw std::invalid_argument(w + ": hidden must be a positive multiple of 64");
  if (spec.inter <= 0 || spec.inter % 64 != 0) throw std::invalid_argument(w + ": inter must be a positive multiple of 64");
  if (spec.n_local <= 0) throw std::invalid_argument(w + ": needs at least one local expert");
  if (spec.n_local + (spec.has_shared ? 1 : 0) > kMoeMaxSlots)
    throw std::invalid_argument(w + ": more than " + std::to_string(kMoeMaxSlots) + " expert slots");
  if (spec.router.n_experts > kMoeMaxExperts)
    throw std::invalid_argument(w + ": more than " + std::to_string(kMoeMaxExperts) + " router experts");
  if (!(spec.swiglu_limit > 0.0f)) throw std::invalid_argument(w + ": swiglu_limit must be > 0");
  check_cuda(moe_prepare_kernels(), w + ": raising the grouped kernels' shared-memory limit");
  MoeLayer L;
  L.spec = spec;
  L.slots = spec.n_local + (spec.has_shared ? 1 : 0);
  L.gu_ktiles = (spec.hidden + 63) / 64;
  L.dn_ktiles = (spec.inter + 63) / 64;
  L.gu_code_stride = code_bytes(2 * spec.inter, spec.hidden);
  L.gu_scale_stride = scale_bytes(spec.format, 2 * spec.inter, spec.hidden);
  L.dn_code_stride = code_bytes(spec.hidden, spec.inter);
  L.dn_scale_stride = scale_bytes(spec.format, spec.hidden, spec.inter);
  auto zeroed = [&](int64_t bytes, const char* what) {
    DeviceBuffer b(static_cast<size_t>(bytes), what);
    check_cuda(cudaMemset(b.get(), 0, static_cast<size_t>(bytes)), w + ": memset");
    return b;
  };
  L.gu_codes = zeroed(L.gu_code_stride * L.slots, "MoE gate|up codes");
  L.gu_scales = zeroed(L.gu_scale_stride * L.slots, "MoE gate|up scales");
  L.dn_codes = zeroed(L.dn_code_stride * L.slots, "MoE down codes");
  L.dn_scales = zeroed(L.dn_scale_stride * L.slots, "MoE down scales");
  std::vector<float> ones(static_cast<size_t>(2 * L.slots), 1.0f);
  L.gu_gscale = DeviceBuffer(ones.size() * 4, "MoE global scales");
  L.gu_gscale.upload(ones.data(), ones.size() * 4);
  L.dn_gscale = DeviceBuffer(static_cast<size_t>(L.slots) * 4, "MoE global scales");
  L.dn_gscale.upload(ones.data(), static_cast<size_t>(L.slots) * 4);
  std::vector<int32_t> map(static_cast<size_t>(spec.router.n_experts));
  for (size_t g = 0; g < map.size(); ++g) map[g] = static_cast<int32_t>(g) < spec.n_local ? static_cast<int32_t>(g) : -1;
  L.expert_map = DeviceBuffer(map.size() * 4, "MoE expert map");
  L.set_expert_map(map);
  check_cuda(cudaDeviceSynchronize(), w + ": create");
  return L;
}

namespace {
void upload_slot(MoeLayer& L, int slot, const MatrixView& gu, const MatrixView& dn, const std::string& what) {
  const MoeSpec& s = L.spec;
  if (gu.format != s.format || dn.format != s.format)
    throw std::invalid_argument(what + ": expert format differs from the layer's " + to_string(s.format));
  if (gu.rows != 2 * s.inter || gu.cols != s.hidden)
    throw std::invalid_argument(what + ": gate_up must be " + shape_str({2 * s.inter, s.hidden}) + ", got " +
                                shape_str({gu.rows, gu.cols}));
  if (dn.rows != s.hidden || dn.cols != s.inter)
    throw std::invalid_argument(what + ": down must be " + shape_str({s.hidden, s.inter}) + ", got " +
                                shape_str({dn.rows, dn.cols}));
  float g[2];
  if (gu.num_ranges == 1) {
    g[0] = g[1] = gu.ranges[0].global_scale;
  } else if (gu.num_ranges == 2 && gu.ranges[1].row_begin == s.inter) {
    g[0] = gu.ranges[0].global_scale;
    g[1] = gu.ranges[1].global_scale;
  } else {
    throw std::invalid_argument(what + ": gate_up needs one global scale or two ranges split at row " +
                                std::to_string(s.inter));
  }
  if (dn.num_ranges != 1) throw std::invalid_argument(what + ": down needs exactly one global scale");
  const float gd = dn.ranges[0].global_scale;
  const W4Layout Lg = repack_w4(gu), Ld = repack_w4(dn);
  if (static_cast<int64_t>(Lg.codes.size()) != L.gu_code_stride || static_cast<int64_t>(Ld.codes.size()) != L.dn_code_stride)
    throw std::logic_error(what + ": repacked size differs from the slot stride");
  auto put = [&](DeviceBuffer& b, int64_t stride, const std::vector<uint8_t>& v) {
    check_cuda(cudaMemcpy(b.get<uint8_t>() + slot * stride, v.data(), v.size(), cudaMemcpyHostToDevice), what + ": upload");
  };
  put(L.gu_codes, L.gu_code_stride, Lg.codes);
  put(L.gu_scales, L.gu_scale_stride, Lg.scales);
  put(L.dn_codes, L.dn_code_stride, Ld.codes);
  put(L.dn_scales, L.dn_scale_stride, Ld.scales);
  check_cuda(cudaMemcpy(L.gu_gscale.get<float>() + 2 * slot, g, 8, cudaMemcpyHostToDevice), what + ": upload");
  check_cuda(cudaMemcpy(L.dn_gscale.get<float>() + slot, &gd, 4, cudaMemcpyHostToDevice), what + ": upload");
}
}  // namespace

void MoeLayer::upload_expert(int slot, const MatrixView& gate_up, const MatrixView& down) {
  const std::string w = where(spec) + ": expert slot " + std::to_string(slot);
  if (slot < 0 || slot >= spec.n_local) throw std::invalid_argument(w + " is not a local slot");
  upload_slot(*this, slot, gate_up, down, w);
}

void MoeLayer::upload_shared(const MatrixView& gate_up, const MatrixView& down) {
  const std::string w = where(spec) + ": shared expert";
  if (!spec.has_shared) throw std::invalid_argument(w + ": the layer was created without one");
  upload_slot(*this, spec.n_local, gate_up, down, w);
}

void MoeLayer::set_expert_map(const std::vector<int32_t>& map) {
  const std::string w = where(spec) + ": expert map";
  if (static_cast<int64_t>(map.size()) != spec.router.n_experts)
    throw std::invalid_argument(w + " has " + std::to_string(map.size()) + " entries for " +
                                std::to_string(spec.router.n_experts) + " experts");
  for (size_t g = 0; g < map.size(); ++g)
    if (map[g] < -1 || map[g] >= spec.n_local)
      throw std::invalid_argument(w + ": expert " + std::to_string(g) + " -> slot " + std::to_string(map[g]) +
                                  " (slots are 0.." + std::to_string(spec.n_local - 1) + " or -1)");
  expert_map.upload(map.data(), map.size() * 4);
  check_cuda(cudaDeviceSynchronize(), w);
}

void MoeLayer::set_bias(const std::vector<float>& b) {
  const std::string w = where(spec) + ": router bias";
  if (static_cast<int64_t>(b.size()) != spec.router.n_experts)
    throw std::invalid_argument(w + " needs one value per expert (" + std::to_string(spec.router.n_experts) + "), got " +
                                std::to_string(b.size()));
  if (bias.bytes() != b.size() * 4) bias = DeviceBuffer(b.size() * 4, "MoE router bias");  // in place once it exists
  bias.upload(b.data(), b.size() * 4);
  check_cuda(cudaDeviceSynchronize(), w);
}

void MoeLayer::set_tid2eid(const std::vector<int32_t>& t) {
  const std::string w = where(spec) + ": tid2eid";
  if (static_cast<int64_t>(t.size()) != spec.router.vocab * spec.router.top_k)
    throw std::invalid_argument(w + " must be [vocab, top_k] = " + shape_str({spec.router.vocab, spec.router.top_k}));
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i] < 0 || t[i] >= spec.router.n_experts)
      throw std::invalid_argument(w + ": token " + std::to_string(i / spec.router.top_k) + " -> expert " + std::to_string(t[i]) +
                                  " (experts are 0.." + std::to_string(spec.router.n_experts - 1) + ")");
  if (tid2eid.bytes() != t.size() * 4) tid2eid = DeviceBuffer(t.size() * 4, "MoE tid2eid");  // in place once it exists
  tid2eid.upload(t.data(), t.size() * 4);
  check_cuda(cudaDeviceSynchronize(), w);
}

MoeWorkspace MoeWorkspace::create(const MoeLayer& L, int64_t max_tokens) {
  const std::string w = where(L.spec) + ": workspace for " + std::to_string(max_tokens) + " tokens";
  if (max_tokens < 0) throw std::invalid_argument(w + ": negative token count");
  const int64_t k = L.spec.router.top_k, kp = k + (L.spec.has_shared ? 1 : 0);
  const int64_t P = max_tokens * kp;
  if (P >= (int64_t{1} << 31) - kMoeDispatchChunk) throw std::invalid_argument(w + ": more than 2^31 (token, expert) pairs");
  MoeWorkspace ws;
  ws.max_tokens = max_tokens;
  ws.top_k = k;
  ws.slots = L.slots;
  ws.hidden = L.spec.hidden;
  ws.inter = L.spec.inter;
  ws.has_shared = L.spec.has_shared;
  auto buf = [&](int64_t bytes, const char* what) { return DeviceBuffer(static_cast<size_t>(std::max<int64_t>(bytes, 16)), what); };
  ws.ids = buf(max_tokens * k * 4, "MoE ids");
  ws.weights = buf(max_tokens * k * 4, "MoE weights");
  ws.chunk_counts = buf(moe_dispatch_chunks(P) * L.slots * 4, "MoE chunk counts");
  ws.seg_off = buf((L.slots + 1) * 4, "MoE offsets");
  ws.tile_off = buf((L.slots + 1) * 4, "MoE offsets");
  ws.sorted_tok = buf(P * 4, "MoE dispatch");
  ws.pair_pos = buf(P * 4, "MoE dispatch");
  ws.h = buf(P * L.spec.inter * 2, "MoE intermediate");
  ws.y = buf(P * L.spec.hidden * 2, "MoE expert outputs");
  ws.tile_ready = buf((P + L.slots) * 4, "MoE tile counters");  // tiles <= pairs + slots
  ws.sync = buf(moe_single_sync_ints(L.spec.hidden, L.spec.inter) * 4, "MoE counters");
  ws.gu_part = buf((k + 1) * 2 * L.spec.inter * 2, "MoE gate|up halves");
  check_cuda(cudaMemset(ws.sync.get(), 0, ws.sync.bytes()), w + ": memset");
  check_cuda(cudaStreamCreateWithFlags(&ws.side, cudaStreamNonBlocking), w + ": side stream");
  check_cuda(cudaEventCreateWithFlags(&ws.fork, cudaEventDisableTiming), w + ": event");
  check_cuda(cudaEventCreateWithFlags(&ws.join, cudaEventDisableTiming), w + ": event");
  check_cuda(cudaDeviceSynchronize(), w);  // the counters are zero before any stream uses them
  return ws;
}

MoeWorkspace::MoeWorkspace(MoeWorkspace&& o) noexcept
    : max_tokens(std::exchange(o.max_tokens, 0)), top_k(o.top_k), slots(o.slots), hidden(o.hidden), inter(o.inter),
      has_shared(o.has_shared), ids(std::move(o.ids)), weights(std::move(o.weights)),
      chunk_counts(std::move(o.chunk_counts)), seg_off(std::move(o.seg_off)), tile_off(std::move(o.tile_off)),
      sorted_tok(std::move(o.sorted_tok)), pair_pos(std::move(o.pair_pos)), h(std::move(o.h)), y(std::move(o.y)),
      tile_ready(std::move(o.tile_ready)), sync(std::move(o.sync)), gu_part(std::move(o.gu_part)),
      side(std::exchange(o.side, nullptr)), fork(std::exchange(o.fork, nullptr)), join(std::exchange(o.join, nullptr)) {}

MoeWorkspace::~MoeWorkspace() {
  if (fork) cudaEventDestroy(fork);
  if (join) cudaEventDestroy(join);
  if (side) cudaStreamDestroy(side);
}

namespace {
// A workspace serves calls of up to max_tokens tokens of a layer of the shape it was sized for.
void check_workspace(const MoeLayer& L, int64_t T, const MoeWorkspace& ws, const std::string& w) {
  if (ws.top_k != L.spec.router.top_k || ws.slots != L.slots || ws.hidden != L.spec.hidden || ws.inter != L.spec.inter ||
      ws.has_shared != L.spec.has_shared)
    throw std::invalid_argument(w + ": the workspace was created for another layer shape (top_k " + std::to_string(ws.top_k) +
                                ", " + std::to_string(ws.slots) + " slots, hidden " + std::to_string(ws.hidden) + ", inter " +
                                std::to_string(ws.inter) + (ws.has_shared ? ", shared" : "") + ")");
  if (T < 0 || T > ws.max_tokens) throw std::invalid_argument(w + ": T outside the workspace's [0, " + std::to_string(ws.max_tokens) + "]");
}
}  // namespace

void moe_route(const MoeLayer& L, const float* logits, int64_t T, const int32_t* token_ids, const int32_t* n_valid,
               MoeWorkspace& ws, cudaStream_t s) {
  const std::string w = where(L.spec) + ": route " + std::to_string(T) + " tokens";
  check_workspace(L, T, ws, w);
  const cpu::RouterParams& r = L.spec.router;
  if (T == 0) return;
  if (!logits) throw std::invalid_argument(w + ": null logits");
  if (r.kind == cpu::RouterKind::kV4Hash && (!token_ids || !L.tid2eid.get()))
    throw std::invalid_argument(w + ": hash routing needs token ids and tid2eid");
  MoeRouteArgs a;
  a.kind = device_kind(r.kind);
  a.n_experts = r.n_experts;
  a.top_k = r.top_k;
  a.n_group = r.n_group;
  a.topk_group = r.topk_group;
  a.renormalize = r.renormalize;
  a.round_bf16 = r.dt == cpu::ActDType::kBF16;
  a.routed_scaling_factor = r.routed_scaling_factor;
  a.vocab = r.vocab;
  a.logits = logits;
  a.bias = L.bias.get<float>();
  a.token_ids = token_ids;
  a.tid2eid = L.tid2eid.get<int32_t>();
  a.n_valid = n_valid;
  a.T = T;
  a.ids = ws.ids.get<int32_t>();
  a.weights = ws.weights.get<float>();
  a.pdl = false;  // the first kernel of the layer: its predecessor is the caller's
  check_cuda(launch_moe_route(a, s), w);
}

namespace {
// The dispatch kernels for the tile sizes of plan p (checked by the caller).
void dispatch_planned(const MoeLayer& L, int64_t T, const int32_t* n_valid, MoeWorkspace& ws, cudaStream_t s, const Plan& p,
                      const std::string& w) {
  MoeDispatchArgs a;
  a.ids = ws.ids.get<int32_t>();
  a.T = T;
  a.k = L.spec.router.top_k;
  a.kp = a.k + (L.spec.has_shared ? 1 : 0);
  a.expert_map = L.expert_map.get<int32_t>();
  a.n_global = L.spec.router.n_experts;
  a.slots = L.slots;
  a.shared_slot = L.spec.has_shared ? L.spec.n_local : -1;
  a.n_valid = n_valid;
  a.tile_tokens = p.tt_routed;
  a.shared_tile_tokens = p.tt_shared;
  a.chunk_counts = ws.chunk_counts.get<int32_t>();
  a.seg_off = ws.seg_off.get<int32_t>();
  a.tile_off = ws.tile_off.get<int32_t>();
  a.sorted_tok = ws.sorted_tok.get<int32_t>();
  a.pair_pos = ws.pair_pos.get<int32_t>();
  a.tile_ready = ws.tile_ready.get<int32_t>();
  a.pdl = true;  // every dispatch kernel waits for its predecessor before reading
  check_cuda(launch_moe_dispatch(a, s), w);
}
}  // namespace

void moe_dispatch(const MoeLayer& L, int64_t T, const int32_t* n_valid, MoeWorkspace& ws, cudaStream_t s,
                  const MoeOptions& opt) {
  const std::string w = where(L.spec) + ": dispatch " + std::to_string(T) + " tokens";
  check_workspace(L, T, ws, w);
  check_options(opt, w);
  dispatch_planned(L, T, n_valid, ws, s, plan_for(L, T, opt), w);
}

namespace {
// A one-token call after its router: the single persistent kernel (moe_single_token.cu).
void forward_single_token(const MoeLayer& L, const __nv_bfloat16* x, const int32_t* n_valid, __nv_bfloat16* out,
                          MoeWorkspace& ws, cudaStream_t s, const std::string& w) {
  const MoeSpec& sp = L.spec;
  const int64_t k = sp.router.top_k;
  MoeSingleArgs a;
  a.nvfp4 = sp.format == MatrixFormat::kNVFP4;
  a.gu_codes = L.gu_codes.get<uint8_t>();
  a.gu_scales = L.gu_scales.get<uint8_t>();
  a.dn_codes = L.dn_codes.get<uint8_t>();
  a.dn_scales = L.dn_scales.get<uint8_t>();
  a.gu_code_stride = L.gu_code_stride;
  a.gu_scale_stride = L.gu_scale_stride;
  a.dn_code_stride = L.dn_code_stride;
  a.dn_scale_stride = L.dn_scale_stride;
  a.gu_ktiles = L.gu_ktiles;
  a.dn_ktiles = L.dn_ktiles;
  a.gu_gscale = L.gu_gscale.get<float>();
  a.dn_gscale = L.dn_gscale.get<float>();
  a.hidden = sp.hidden;
  a.inter = sp.inter;
  a.swiglu_limit = sp.swiglu_limit;
  a.x = x;
  a.ids = ws.ids.get<int32_t>();
  a.weights = ws.weights.get<float>();
  a.k = static_cast<int>(k);
  a.expert_map = L.expert_map.get<int32_t>();
  a.n_global = sp.router.n_experts;
  a.shared_slot = sp.has_shared ? sp.n_local : -1;
  a.n_valid = n_valid;
  a.gu_part = ws.gu_part.get<__nv_bfloat16>();
  a.h = ws.h.get<__nv_bfloat16>();
  a.y = ws.y.get<__nv_bfloat16>();
  a.out = out;
  a.sync = ws.sync.get<int32_t>();
  a.sms = device_sm_count();
  a.pdl = true;  // after the router, which lets it start at once
  check_cuda(launch_moe_single(a, s), w + " (single-token kernel)");
}
}  // namespace

void moe_forward(const MoeLayer& L, const __nv_bfloat16* x, int64_t T, const float* logits, const int32_t* token_ids,
                 const int32_t* n_valid, __nv_bfloat16* out, MoeWorkspace& ws, cudaStream_t s, const MoeOptions& opt) {
  const std::string w = where(L.spec) + ": forward " + std::to_string(T) + " tokens";
  check_workspace(L, T, ws, w);
  check_options(opt, w);
  if (T == 0) return;
  if (!x || !out) throw std::invalid_argument(w + ": null input or output");
  // The kernels move rows in 16-byte pieces (every row is a multiple of 64 bf16 values).
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0)
    throw std::invalid_argument(w + ": x and out must be 16-byte aligned");
  const MoeSpec& sp = L.spec;
  const int64_t k = sp.router.top_k;
  const bool single = single_token_call(L, T, opt);
  const Plan p = plan_for(L, T, opt);
  // A GEMM launch's tiles: each slot's last tile may be partial. Checked before anything is
  // enqueued, so that a refused call leaves the stream (or a capture) as it found it.
  const int64_t row_blocks = std::max<int64_t>(sp.inter / 64, (sp.hidden + 127) / 128);
  auto max_tiles = [&](int mt, int64_t pairs, int64_t nslots) {
    const int64_t tt = p.tile_tokens(mt);
    return std::min<int64_t>(pairs, (pairs + tt - 1) / tt + nslots);
  };
  const int64_t tiles_needed = p.one_launch ? max_tiles(p.mt_routed, T * (k + (sp.has_shared ? 1 : 0)), L.slots)
                                            : std::max(max_tiles(p.mt_shared, T, 1), max_tiles(p.mt_routed, T * k, sp.n_local));
  if (!single && tiles_needed * row_blocks >= (int64_t{1} << 31))
    throw std::invalid_argument(w + ": grid too large (" + std::to_string(tiles_needed) + " tiles of " +
                                std::to_string(row_blocks) + " row blocks)");
  moe_route(L, logits, T, token_ids, n_valid, ws, s);
  if (single) {
    forward_single_token(L, x, n_valid, out, ws, s, w);
    return;
  }
  dispatch_planned(L, T, n_valid, ws, s, p, w);  // the plan this call's launches use

  MoeGroupedArgs gu;
  gu.nvfp4 = sp.format == MatrixFormat::kNVFP4;
  gu.codes = L.gu_codes.get<uint8_t>();
  gu.scales = L.gu_scales.get<uint8_t>();
  gu.code_stride = L.gu_code_stride;
  gu.scale_stride = L.gu_scale_stride;
  gu.ktiles = L.gu_ktiles;
  gu.gscale = L.gu_gscale.get<float>();
  gu.n = 2 * sp.inter;
  gu.k = sp.hidden;
  gu.inter = sp.inter;
  gu.swiglu_limit = sp.swiglu_limit;
  gu.x = x;
  gu.sorted_tok = ws.sorted_tok.get<int32_t>();
  gu.y = ws.h.get<__nv_bfloat16>();
  gu.seg_off = ws.seg_off.get<int32_t>();
  gu.tile_off = ws.tile_off.get<int32_t>();
  gu.sms = device_sm_count();  // cached (cuda_check.h)
  gu.stream_warps = opt.stream_warps.value_or(0);
  gu.stream16 = opt.stream16;
  gu.gate_up_ring = opt.gate_up_ring.value_or(0);
  // The per-tile gate|up -> down handoff (moe_stream.cuh) when one launch covers every slot (T <= 8
  // on the V4 layers: 2-5 waves of gate|up CTAs, measured 3-10% faster at T = 2 and 8); with the
  // shared expert beside on the side stream (T = 32..128) it measured 0.5-1% slower, so down then
  // waits for the whole gate|up kernel as before (notes step 35).
  // Only with 8-token tiles: there both GEMMs run the streaming kernel, whose gate|up counts what
  // its down polls (16-token tiles may run gate|up on the grouped kernel, which counts nothing).
  gu.tile_ready = p.one_launch && p.mt_routed == 1 ? ws.tile_ready.get<int32_t>() : nullptr;
  MoeGroupedArgs dn = gu;
  dn.codes = L.dn_codes.get<uint8_t>();
  dn.scales = L.dn_scales.get<uint8_t>();
  dn.code_stride = L.dn_code_stride;
  dn.scale_stride = L.dn_scale_stride;
  dn.ktiles = L.dn_ktiles;
  dn.gscale = L.dn_gscale.get<float>();
  dn.down_strips = opt.down_strips.value_or(0);
  dn.n = sp.hidden;
  dn.k = sp.inter;
  dn.x = ws.h.get<__nv_bfloat16>();
  dn.sorted_tok = nullptr;
  dn.y = ws.y.get<__nv_bfloat16>();

  // pdl: gate|up directly after the dispatch on the same stream (one launch), down after gate|up.
  auto run = [&](int slot_begin, int slot_end, int mt, int64_t pairs, int64_t nslots, cudaStream_t st, bool pdl) {
    for (MoeGroupedArgs* g : {&gu, &dn}) {
      g->slot_begin = slot_begin;
      g->slot_end = slot_end;
      g->max_tiles = max_tiles(mt, pairs, nslots);  // within the grid limit: checked above
      g->mtiles = mt;
      g->tile_tokens = p.tile_tokens(mt);
    }
    gu.pdl = pdl;
    dn.pdl = true;
    check_cuda(launch_moe_gate_up(gu, st), w + " (gate|up, " + std::to_string(mt) + " token tiles)");
    check_cuda(launch_moe_down(dn, st), w + " (down, " + std::to_string(mt) + " token tiles)");
  };
  if (p.one_launch) {
    run(0, L.slots, p.mt_routed, T * (k + (sp.has_shared ? 1 : 0)), L.slots, s, true);
  } else {
    // The shared expert (T tokens, bigger tiles) on the side stream, beside the routed experts.
    check_cuda(cudaEventRecord(ws.fork, s), w + ": fork");
    check_cuda(cudaStreamWaitEvent(ws.side, ws.fork, 0), w + ": fork");
    run(sp.n_local, sp.n_local + 1, p.mt_shared, T, 1, ws.side, false);
    run(0, sp.n_local, p.mt_routed, T * k, sp.n_local, s, false);
    check_cuda(cudaEventRecord(ws.join, ws.side), w + ": join");
    check_cuda(cudaStreamWaitEvent(s, ws.join, 0), w + ": join");
  }
  MoeCombineArgs c;
  c.y = ws.y.get<__nv_bfloat16>();
  c.pair_pos = ws.pair_pos.get<int32_t>();
  c.weights = ws.weights.get<float>();
  c.k = static_cast<int>(k);
  c.kp = static_cast<int>(k + (sp.has_shared ? 1 : 0));
  c.has_shared = sp.has_shared;
  c.T = T;
  c.H = sp.hidden;
  c.out = out;
  c.pdl = p.one_launch;  // otherwise the stream's previous operation is the join
  check_cuda(launch_moe_combine(c, s), w + " (combine)");
}

}  // namespace fp4moe::cuda
