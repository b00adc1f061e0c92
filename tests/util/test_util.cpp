// Shared test helpers (see test_util.h).
#include "util/test_util.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "formats/codecs.h"

namespace fp4moe::test {

uint64_t fresh_seed() {
  if (const char* s = std::getenv("FP4MOE_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

SeededRng::SeededRng()
    : seed(fresh_seed()),
      rng(seed),
      trace(__FILE__, __LINE__, "seed=" + std::to_string(seed) + " (replay: FP4MOE_SEED=" + std::to_string(seed) + ")") {}

std::vector<float> random_bf16(std::mt19937_64& rng, int64_t n, float stddev) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = round_to_bf16(d(rng));
  return v;
}

double rel_l2(const float* a, const double* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  std::vector<double> r(ref.begin(), ref.end());
  return rel_l2(a.data(), r.data(), static_cast<int64_t>(a.size()));
}

int64_t count_non_finite(const float* a, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += !std::isfinite(a[i]);
  return c;
}

}  // namespace fp4moe::test
