// The fused KD loss on CUDA: the ops' device guard and registration. The kernels are in
// cuda/kd_loss_kernels.cuh, the host side (checks, launch configuration, the sequence of
// kernels) in cuda/kd_loss_host.h, launched on the current stream (cuda/cuda_backend.cuh).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cuda/cuda_backend.cuh"
#include "cuda/kd_loss_host.h"

namespace ptcore::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_rows_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const std::optional<at::Tensor>& labels,
    double temperature, c10::string_view divergence, double beta, double hard_weight,
    double soft_weight, int64_t ignore_index, bool scale_by_t2, double grad_scale,
    bool compute_grad) {
  const c10::cuda::CUDAGuard guard(student.device());
  return kd_full::kd_loss_rows<CudaBackend>(student, teacher, labels, temperature, divergence,
                                            beta, hard_weight, soft_weight, ignore_index,
                                            scale_by_t2, grad_scale, compute_grad);
}

at::Tensor kd_loss_backward_cuda(const at::Tensor& grad_rows, const at::Tensor& student,
                                 const at::Tensor& teacher,
                                 const std::optional<at::Tensor>& labels, const at::Tensor& stats,
                                 double temperature, c10::string_view divergence, double beta,
                                 double hard_weight, double soft_weight, int64_t ignore_index,
                                 bool scale_by_t2) {
  const c10::cuda::CUDAGuard guard(student.device());
  return kd_full::kd_loss_backward<CudaBackend>(grad_rows, student, teacher, labels, stats,
                                                temperature, divergence, beta, hard_weight,
                                                soft_weight, ignore_index, scale_by_t2);
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("kd_loss_rows", &kd_loss_rows_cuda);
  m.impl("_kd_loss_rows_backward", &kd_loss_backward_cuda);
}

}  // namespace ptcore::cuda
