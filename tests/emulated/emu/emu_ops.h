// The ops of ptcore's CUDA backend, run by the emulation: the same host code and kernels
// (csrc/cuda/*_host.h), with every tensor copied into guarded memory first.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace ptcore_emu {

using Tensor = at::Tensor;
using OptionalTensor = std::optional<at::Tensor>;

std::tuple<Tensor, Tensor, Tensor> kd_loss_rows(const Tensor& student, const Tensor& teacher,
                                                const OptionalTensor& labels, double temperature,
                                                std::string_view divergence, double beta,
                                                double hard_weight, double soft_weight,
                                                int64_t ignore_index, bool scale_by_t2,
                                                double grad_scale, bool compute_grad);
Tensor kd_loss_rows_backward(const Tensor& grad_rows, const Tensor& student, const Tensor& teacher,
                             const OptionalTensor& labels, const Tensor& stats,
                             double temperature, std::string_view divergence, double beta,
                             double hard_weight, double soft_weight, int64_t ignore_index,
                             bool scale_by_t2);
std::tuple<Tensor, Tensor, Tensor> kd_loss_topk_rows(
    const Tensor& student, const Tensor& values, const Tensor& indices,
    const OptionalTensor& labels, double temperature, double hard_weight, double soft_weight,
    int64_t ignore_index, bool scale_by_t2, bool tail_bucket, double grad_scale,
    bool compute_grad);
Tensor kd_loss_topk_rows_backward(const Tensor& grad_rows, const Tensor& student,
                                  const Tensor& values, const Tensor& indices,
                                  const OptionalTensor& labels, const Tensor& stats,
                                  double temperature, double hard_weight, double soft_weight,
                                  int64_t ignore_index, bool scale_by_t2, bool tail_bucket);
std::tuple<Tensor, Tensor> quantize_rows(const Tensor& x);
Tensor gather_rows(const Tensor& store, const OptionalTensor& scales, const Tensor& indices,
                   at::ScalarType dtype);
// Into `out` (the kernel writes a guarded copy of it, copied back).
void gather_rows_out(const Tensor& store, const OptionalTensor& scales, const Tensor& indices,
                     at::ScalarType dtype, Tensor& out);

// Runs one of the emulation's own test kernels (emu_selftest.cpp) on x (float32, [n]).
Tensor run_selftest(const std::string& name, const Tensor& x);

// ptcore's switch of the CUDA input checks, as the emulated host code sees it.
bool set_input_checks(bool on);

}  // namespace ptcore_emu
