// The top-k KD loss's host side on CUDA: argument checks, launch configuration and the
// kernels' launches, over a Backend that launches them (cuda/cuda_backend.cuh on a GPU, the
// emulation's on the CPU: tests/emulated).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>

#include <limits>
#include <optional>
#include <tuple>

#include "cuda/kd_checks.h"
#include "cuda/kd_topk_kernels.cuh"
#include "cuda/launch_config.h"

namespace ptcore::cuda::kd_topk {

struct Prepared {
  kd::Options o;
  Hyper h;
};

inline Prepared prepare(const at::Tensor& student, const at::Tensor& values,
                        const at::Tensor& indices, const std::optional<at::Tensor>& labels,
                        double temperature, double hard_weight, double soft_weight,
                        int64_t ignore_index, bool scale_by_t2, bool tail) {
  kd::check_topk_inputs(student, values, indices, labels);
  TORCH_CHECK(student.size(0) <= std::numeric_limits<int32_t>::max(),
              "student_logits has too many rows for one launch: ", student.size(0));
  const kd::Options o = kd::make_options(temperature, "forward_kl", 0.5, hard_weight, soft_weight,
                                         ignore_index, scale_by_t2, labels.has_value());
  return {o, Hyper{static_cast<float>(o.inv_t), static_cast<float>(o.soft_coef),
                   static_cast<float>(o.hard_coef), o.ignore_index, tail}};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_topk_rows(
    const at::Tensor& student_in, const at::Tensor& values_in, const at::Tensor& indices_in,
    const std::optional<at::Tensor>& labels, double temperature, double hard_weight,
    double soft_weight, int64_t ignore_index, bool scale_by_t2, bool tail_bucket,
    double grad_scale, bool compute_grad) {
  const Prepared p = prepare(student_in, values_in, indices_in, labels, temperature, hard_weight,
                             soft_weight, ignore_index, scale_by_t2, tail_bucket);
  const at::Tensor student = student_in.contiguous();
  const at::Tensor values = values_in.to(at::kFloat).contiguous(), indices = indices_in.contiguous();
  const int64_t N = student.size(0), V = student.size(1), K = values.size(1);
  const kd::RowOutputs out = kd::empty_row_outputs(student, at::kFloat, compute_grad);
  if (N == 0) return {out.rows, out.stats, out.grad};
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  // Once, not in the backward.
  check_kd_data<Backend>(lp != nullptr ? &lab : nullptr, V, ignore_index, &indices);
  const bool vec = compute_grad ? same_alignment({&student, &out.grad}) : true;
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_topk_rows", AT_WRAP([&] {
    scalar_t* g = compute_grad ? out.grad.data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel) {
      Backend::launch(kernel, N, threads_for(V, pack_size<scalar_t>()),
                      student.const_data_ptr<scalar_t>(), values.const_data_ptr<float>(),
                      indices.const_data_ptr<int64_t>(), lp, out.rows.data_ptr<float>(),
                      out.stats.data_ptr<float>(), g, V, K, p.h, static_cast<float>(grad_scale),
                      vec);
    };
    if (p.o.hard_coef != 0) {
      launch(kd_topk_forward_kernel<scalar_t, true>);
    } else {
      launch(kd_topk_forward_kernel<scalar_t, false>);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return {out.rows, out.stats, out.grad};
}

// The forward validated the indices and labels; the backward gets the same tensors.
template <typename Backend>
at::Tensor kd_loss_topk_backward(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                 const at::Tensor& values_in, const at::Tensor& indices_in,
                                 const std::optional<at::Tensor>& labels,
                                 const at::Tensor& stats_in, double temperature,
                                 double hard_weight, double soft_weight, int64_t ignore_index,
                                 bool scale_by_t2, bool tail_bucket) {
  const Prepared p = prepare(student_in, values_in, indices_in, labels, temperature, hard_weight,
                             soft_weight, ignore_index, scale_by_t2, tail_bucket);
  const int64_t N = student_in.size(0), V = student_in.size(1), K = values_in.size(1);
  const kd::RowGradInputs in = kd::backward_row_inputs(grad_rows, stats_in, student_in, at::kFloat);
  const at::Tensor student = student_in.contiguous();
  const at::Tensor values = values_in.to(at::kFloat).contiguous(), indices = indices_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  if (N == 0) return grad;
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool vec = same_alignment({&student, &grad});
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_topk_backward", AT_WRAP([&] {
    auto launch = [&](auto kernel) {
      Backend::launch(kernel, N, threads_for(V, pack_size<scalar_t>()),
                      in.grad_rows.const_data_ptr<float>(), student.const_data_ptr<scalar_t>(),
                      values.const_data_ptr<float>(), indices.const_data_ptr<int64_t>(), lp,
                      in.stats.const_data_ptr<float>(), grad.data_ptr<scalar_t>(), V, K, p.h,
                      vec);
    };
    if (p.o.hard_coef != 0) {
      launch(kd_topk_backward_kernel<scalar_t, true>);
    } else {
      launch(kd_topk_backward_kernel<scalar_t, false>);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return grad;
}

}  // namespace ptcore::cuda::kd_topk
