// The feature-cache ops on CUDA: their device guard and registration. The kernels are in
// cuda/cache_kernels.cuh, the host side in cuda/cache_host.h, launched on the current stream
// (cuda/cuda_backend.cuh).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "cache_entry.h"
#include "cuda/cache_host.h"
#include "cuda/cuda_backend.cuh"

namespace ptcore::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> quantize_rows_cuda(const at::Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  return cache::quantize_rows<CudaBackend>(x);
}

void gather_into_cuda(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                      const at::Tensor& indices, at::ScalarType dtype, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(store.device());
  cache::gather_into<CudaBackend>(store, scales, indices, dtype, out);
}

}  // namespace
}  // namespace ptcore::cuda

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("quantize_rows", &ptcore::cuda::quantize_rows_cuda);
  m.impl("gather_rows", &ptcore::gather_rows_entry<ptcore::cuda::gather_into_cuda>);
  m.impl("gather_rows.out", &ptcore::gather_rows_out_entry<ptcore::cuda::gather_into_cuda>);
}
