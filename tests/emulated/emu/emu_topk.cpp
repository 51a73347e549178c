// The top-k KD ops, emulated (csrc/cuda/kd_topk_host.h).
#include <ATen/ATen.h>

#include <cuda_runtime.h>

#include "cuda/kd_topk_host.h"
#include "emu_backend.h"
#include "emu_ops.h"

namespace ptcore_emu {

std::tuple<Tensor, Tensor, Tensor> kd_loss_topk_rows(
    const Tensor& student, const Tensor& values, const Tensor& indices,
    const OptionalTensor& labels, double temperature, double hard_weight, double soft_weight,
    int64_t ignore_index, bool scale_by_t2, bool tail_bucket, double grad_scale,
    bool compute_grad) {
  const GuardedScope scope;
  return ptcore::cuda::kd_topk::kd_loss_topk_rows<EmuBackend>(
      guarded(student), guarded(values), guarded(indices), guarded(labels), temperature,
      hard_weight, soft_weight, ignore_index, scale_by_t2, tail_bucket, grad_scale, compute_grad);
}

Tensor kd_loss_topk_rows_backward(const Tensor& grad_rows, const Tensor& student,
                                  const Tensor& values, const Tensor& indices,
                                  const OptionalTensor& labels, const Tensor& stats,
                                  double temperature, double hard_weight, double soft_weight,
                                  int64_t ignore_index, bool scale_by_t2, bool tail_bucket) {
  const GuardedScope scope;
  return ptcore::cuda::kd_topk::kd_loss_topk_backward<EmuBackend>(
      guarded(grad_rows), guarded(student), guarded(values), guarded(indices), guarded(labels),
      guarded(stats), temperature, hard_weight, soft_weight, ignore_index, scale_by_t2,
      tail_bucket);
}

}  // namespace ptcore_emu
