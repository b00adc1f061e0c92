// CPU reference RMSNorm (see rmsnorm_ref.h).
#include "ops/cpu/rmsnorm_ref.h"

#include <cmath>

namespace fp4moe::cpu {
namespace {
float inv_rms(const float* x, int64_t dim, float eps) {
  double ss = 0.0;
  for (int64_t k = 0; k < dim; ++k) ss += double(x[k]) * double(x[k]);
  const float mean = static_cast<float>(ss / double(dim));
  return 1.0f / std::sqrt(mean + eps);
}
}  // namespace

void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, ActDType dt, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    const float f = inv_rms(xr, dim, eps);
    for (int64_t k = 0; k < dim; ++k) o[k] = round_act(round_act(xr[k] * f, dt) * weight[k], dt);
  }
}

void rmsnorm_unweighted(const float* x, int64_t rows, int64_t dim, float eps, ActDType dt, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    const float f = round_act(inv_rms(xr, dim, eps), dt);
    for (int64_t k = 0; k < dim; ++k) o[k] = round_act(xr[k] * f, dt);
  }
}

}  // namespace fp4moe::cpu
