// Instantiations of the grouped MoE GEMM for the down projection: {1, 2, 4, 8} token tiles x
// {NVFP4, MXFP4} (see moe_grouped.cuh).
#include "ops/cuda/moe_grouped.cuh"

namespace fp4moe::cuda {

cudaError_t launch_moe_down(const MoeGroupedArgs& a, cudaStream_t s) {
  return moe_is_wgmma(a.mtiles) ? launch_moe_wgmma(a, false, s) : moe_detail::launch_grouped<false>(a, s);
}
cudaError_t moe_prepare_down() { return moe_detail::prepare_grouped<false>(); }
cudaError_t moe_prepare_kernels() {
  cudaError_t e = moe_prepare_gate_up();
  if (e == cudaSuccess) e = moe_prepare_down();
  if (e == cudaSuccess) e = moe_prepare_single();
  return e != cudaSuccess ? e : moe_prepare_wgmma();
}

}  // namespace fp4moe::cuda
