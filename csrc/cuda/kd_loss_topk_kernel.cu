// The KD loss against a top-K teacher on CUDA: the ops' device guard and registration. The
// kernels are in cuda/kd_topk_kernels.cuh, the host side in cuda/kd_topk_host.h, launched on
// the current stream (cuda/cuda_backend.cuh).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cuda/cuda_backend.cuh"
#include "cuda/kd_topk_host.h"

namespace ptcore::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_topk_rows_cuda(
    const at::Tensor& student, const at::Tensor& values, const at::Tensor& indices,
    const std::optional<at::Tensor>& labels, double temperature, double hard_weight,
    double soft_weight, int64_t ignore_index, bool scale_by_t2, bool tail_bucket,
    double grad_scale, bool compute_grad) {
  const c10::cuda::CUDAGuard guard(student.device());
  return kd_topk::kd_loss_topk_rows<CudaBackend>(student, values, indices, labels, temperature,
                                                 hard_weight, soft_weight, ignore_index,
                                                 scale_by_t2, tail_bucket, grad_scale,
                                                 compute_grad);
}

at::Tensor kd_loss_topk_backward_cuda(const at::Tensor& grad_rows, const at::Tensor& student,
                                      const at::Tensor& values, const at::Tensor& indices,
                                      const std::optional<at::Tensor>& labels,
                                      const at::Tensor& stats, double temperature,
                                      double hard_weight, double soft_weight,
                                      int64_t ignore_index, bool scale_by_t2, bool tail_bucket) {
  const c10::cuda::CUDAGuard guard(student.device());
  return kd_topk::kd_loss_topk_backward<CudaBackend>(grad_rows, student, values, indices, labels,
                                                     stats, temperature, hard_weight,
                                                     soft_weight, ignore_index, scale_by_t2,
                                                     tail_bucket);
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("kd_loss_topk_rows", &kd_loss_topk_rows_cuda);
  m.impl("_kd_loss_topk_rows_backward", &kd_loss_topk_backward_cuda);
}

}  // namespace ptcore::cuda
