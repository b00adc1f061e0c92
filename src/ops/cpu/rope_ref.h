// CPU reference rotary position embedding as DeepSeek-V4 applies it (spec section 5):
// partial (only the TRAILING rope_dim dims of each head rotate), interleaved pairs (2i, 2i+1),
// one frequency per pair. cos/sin are computed in fp32 and rounded to the activation dtype
// before use; the rotation itself is fp32 and its result is rounded once.
//
//   out[2i]   = x[2i]   * c_i - x[2i+1] * s_i
//   out[2i+1] = x[2i+1] * c_i + x[2i]   * s_i        c_i = cos(p * f_i), s_i = sin(p * f_i)
//
// `inverse` rotates by -p (s -> -s): V4 de-rotates the attention output at the query position.
// Frequencies: default f_i = theta^(-2i/d); YaRN blends theta^(-2i/d) and theta^(-2i/d)/factor
// with a linear ramp between the correction dims of beta_fast and beta_slow (transformers'
// _compute_yarn_parameters; V4 forces its attention factor to 1, so there is no mscale).
#pragma once

#include <cstdint>
#include <vector>

#include "ops/cpu/act_dtype.h"

namespace fp4moe::cpu {

struct YarnParams {
  double factor = 1.0;
  double original_max_position = 4096.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  bool truncate = true;
};

// rope_dim/2 frequencies, computed in fp32 as torch does.
std::vector<float> rope_inv_freq_default(double theta, int64_t rope_dim);
std::vector<float> rope_inv_freq_yarn(double theta, int64_t rope_dim, const YarnParams& y);

// Rotates the trailing rope_dim dims of `heads` consecutive vectors of width head_dim, in place.
void rope_apply(float* x, int64_t heads, int64_t head_dim, int64_t rope_dim, const float* inv_freq, int64_t pos,
                bool inverse, ActDType dt);

}  // namespace fp4moe::cpu
