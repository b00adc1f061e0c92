// Shared test helpers: fresh random seeds (printed on failure, replayable with FP4MOE_SEED),
// random data generators, and the error metrics tests assert on.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace fp4moe::test {

// A fresh seed per run, or FP4MOE_SEED from the environment to replay a failure.
uint64_t fresh_seed();

// Seeds an RNG and attaches "seed=N (replay: FP4MOE_SEED=N)" to every failure in scope.
struct SeededRng {
  SeededRng();
  uint64_t seed;
  std::mt19937_64 rng;
  ::testing::ScopedTrace trace;
};

// Normal(0, stddev) values rounded to bf16 (what checkpoints and activations hold).
std::vector<float> random_bf16(std::mt19937_64& rng, int64_t n, float stddev = 1.0f);

// ||a - ref|| / ||ref|| in fp64; 0/0 = 0, NaN anywhere gives +inf.
double rel_l2(const float* a, const double* ref, int64_t n);
double rel_l2(const std::vector<float>& a, const std::vector<float>& ref);
// Number of NaN or Inf values.
int64_t count_non_finite(const float* a, int64_t n);

}  // namespace fp4moe::test
