// Instantiations of the grouped MoE GEMM for gate|up + SwiGLU: {1, 2, 4, 8} token tiles x
// {NVFP4, MXFP4} (see moe_grouped.cuh).
#include "ops/cuda/moe_grouped.cuh"

namespace fp4moe::cuda {

cudaError_t launch_moe_gate_up(const MoeGroupedArgs& a, cudaStream_t s) {
  return moe_is_wgmma(a.mtiles) ? launch_moe_wgmma(a, true, s) : moe_detail::launch_grouped<true>(a, s);
}
cudaError_t moe_prepare_gate_up() { return moe_detail::prepare_grouped<true>(); }

}  // namespace fp4moe::cuda
