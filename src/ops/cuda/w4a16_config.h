// Kernel and tile choice for the W4A16 linear: a plain host function (tested on the CPU,
// pinnable from tests and the benchmark). Mirrors w4a16_decode.cu, w4a16_prefill.cu and
// w4a16_prefill_wgmma.cu.
//
//   decode  (M <= 64): memory-bound. One CTA = 8 warps = 8 strips of 16 rows over one
//           k-range; the activations of each 256-k chunk are staged in shared memory once
//           per CTA and serve all 8 strips. The k-range is split across CTAs (split-K) until the grid
//           fills one wave of resident CTAs; partial sums go to an fp32 workspace and the last
//           CTA of a tile adds them in split order (deterministic, no float atomics).
//   prefill (M > 64): compute-bound. CTA tile 128 rows x 128 tokens x 64 k, 8 warps,
//           activations and weight tiles through a cp.async pipeline; two kernels:
//           wgmma (weights dequantized into shared memory, asynchronous tensor cores; the
//           choice for every M > 64, by measurement) and mma.sync (pinnable).
#pragma once

#include <algorithm>
#include <cstdint>

namespace fp4moe::cuda {

enum class W4Kernel : uint8_t { kDecode, kPrefill, kPrefillWgmma };

struct W4Config {
  W4Kernel kernel = W4Kernel::kDecode;
  int mtiles = 1;  // decode: token tiles of 8 (1, 2, 4 or 8)
  int splits = 1;  // decode: CTAs along k
};

inline constexpr int kDecodeMaxM = 64;
inline constexpr int kDecodeRowsPerCta = 128;
inline constexpr int kPrefillTileRows = 128;
inline constexpr int kPrefillTileTokens = 128;

// Decode token tiles for m tokens: the closed list of instantiations.
inline int decode_mtiles(int64_t m) { return m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8; }

// CTAs of the decode kernel resident per SM (its __launch_bounds__): 3 at one token tile.
inline int decode_ctas_per_sm(int mtiles) { return mtiles == 1 ? 3 : 2; }

// Splits along k: fill one wave of resident CTAs (no tail wave), each split keeping at least
// one chunk (4 k-tiles) per warp, at most 32 splits.
inline int decode_splits(int64_t n, int64_t k, int num_sms, int mtiles) {
  const int64_t ctas = (n + kDecodeRowsPerCta - 1) / kDecodeRowsPerCta;
  const int64_t ktiles = (k + 63) / 64;
  const int64_t slots = static_cast<int64_t>(num_sms) * decode_ctas_per_sm(mtiles);
  const int64_t want = slots / ctas;
  const int64_t most = std::max<int64_t>(1, ktiles / 4);
  // The fp32 partials (splits x m x n, written then re-read) stay well below the weight
  // bytes (n x k / 2): splits <= k / (16 m).
  const int64_t by_traffic = std::max<int64_t>(1, k / (16 * 8 * mtiles));
  return static_cast<int>(std::clamp<int64_t>(std::min({want, most, by_traffic}), 1, 32));
}

inline W4Config choose_w4_config(int64_t m, int64_t n, int64_t k, int num_sms) {
  W4Config c;
  if (m <= kDecodeMaxM) {
    c.kernel = W4Kernel::kDecode;
    c.mtiles = decode_mtiles(m);
    c.splits = decode_splits(n, k, num_sms, c.mtiles);
  } else {
    // Measured on H100 (bench/RESULTS.md): the wgmma kernel is 1.4-2.2x faster than the
    // mma.sync kernel from 256 to 4096 tokens.
    c.kernel = W4Kernel::kPrefillWgmma;
  }
  return c;
}

// fp32 workspace bytes the decode split-K needs (partials for up to 64 tokens + one
// counter per CTA column; counters start at zero and the kernel leaves them at zero).
// Prefill needs none.
inline int64_t w4_decode_workspace_bytes(int64_t n, int splits) {
  const int64_t ctas = (n + kDecodeRowsPerCta - 1) / kDecodeRowsPerCta;
  if (splits <= 1) return 0;
  return static_cast<int64_t>(splits) * kDecodeMaxM * ctas * kDecodeRowsPerCta * 4 + (ctas * 4 + 15) / 16 * 16;
}
inline int64_t w4_workspace_bytes(int64_t n, int64_t k, int num_sms) {
  return w4_decode_workspace_bytes(n, decode_splits(n, k, num_sms, 1));  // mtiles 1 splits most
}

}  // namespace fp4moe::cuda
