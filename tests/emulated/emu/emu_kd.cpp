// The full-teacher KD ops and the KD data checks, emulated (csrc/cuda/kd_loss_host.h,
// csrc/cuda/kd_checks_host.h).
#include <ATen/ATen.h>

#include <cuda_runtime.h>

#include <utility>

#include "cuda/kd_checks_host.h"
#include "cuda/kd_loss_host.h"
#include "emu_backend.h"
#include "emu_ops.h"

namespace ptcore {

namespace {
bool g_input_checks = true;
}  // namespace

bool input_checks_enabled() { return g_input_checks; }

namespace cuda {
template void check_kd_data<ptcore_emu::EmuBackend>(const at::Tensor* labels, int64_t V,
                                                    int64_t ignore_index,
                                                    const at::Tensor* topk_indices);
}  // namespace cuda

}  // namespace ptcore

namespace ptcore_emu {

bool set_input_checks(bool on) { return std::exchange(ptcore::g_input_checks, on); }

std::tuple<Tensor, Tensor, Tensor> kd_loss_rows(const Tensor& student, const Tensor& teacher,
                                                const OptionalTensor& labels, double temperature,
                                                std::string_view divergence, double beta,
                                                double hard_weight, double soft_weight,
                                                int64_t ignore_index, bool scale_by_t2,
                                                double grad_scale, bool compute_grad) {
  const GuardedScope scope;
  return ptcore::cuda::kd_full::kd_loss_rows<EmuBackend>(
      guarded(student), guarded(teacher), guarded(labels), temperature, divergence, beta,
      hard_weight, soft_weight, ignore_index, scale_by_t2, grad_scale, compute_grad);
}

Tensor kd_loss_rows_backward(const Tensor& grad_rows, const Tensor& student, const Tensor& teacher,
                             const OptionalTensor& labels, const Tensor& stats,
                             double temperature, std::string_view divergence, double beta,
                             double hard_weight, double soft_weight, int64_t ignore_index,
                             bool scale_by_t2) {
  const GuardedScope scope;
  return ptcore::cuda::kd_full::kd_loss_backward<EmuBackend>(
      guarded(grad_rows), guarded(student), guarded(teacher), guarded(labels), guarded(stats),
      temperature, divergence, beta, hard_weight, soft_weight, ignore_index, scale_by_t2);
}

}  // namespace ptcore_emu
