// The fused KD loss's host side on CUDA: argument checks, launch configuration and the
// sequence of kernels, over a Backend that launches them (cuda/cuda_backend.cuh on a GPU, the
// emulation's on the CPU: tests/emulated).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>

#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>

#include "cuda/kd_checks.h"
#include "cuda/kd_loss_kernels.cuh"
#include "cuda/launch_config.h"

namespace ptcore::cuda::kd_full {

struct Prepared {
  kd::Options o;
  Hyper h;
};

inline Prepared prepare(const at::Tensor& student, const at::Tensor& teacher,
                 const std::optional<at::Tensor>& labels, double temperature,
                 c10::string_view divergence, double beta, double hard_weight, double soft_weight,
                 int64_t ignore_index, bool scale_by_t2) {
  kd::check_inputs(student, teacher, labels);
  TORCH_CHECK(student.size(0) <= std::numeric_limits<int32_t>::max(),
              "student_logits has too many rows for one launch: ", student.size(0));
  const kd::Options o = kd::make_options(temperature, divergence, beta, hard_weight, soft_weight,
                                         ignore_index, scale_by_t2, labels.has_value());
  const Hyper h{static_cast<float>(o.inv_t), static_cast<float>(o.beta),
                static_cast<float>(std::log(o.beta)), static_cast<float>(std::log1p(-o.beta)),
                static_cast<float>(o.soft_coef), static_cast<float>(o.hard_coef),
                o.ignore_index, o.div};
  return {o, h};
}

// The split path's workspaces are float tensors: a row's partial statistics and pair sums
// are stored as their float words.
constexpr int64_t kAccWords = sizeof(Acc) / sizeof(float);
constexpr int64_t kPairWords = sizeof(Pair) / sizeof(float);
static_assert(sizeof(Acc) % sizeof(float) == 0 && alignof(Acc) <= alignof(float));
static_assert(sizeof(Pair) % sizeof(float) == 0 && alignof(Pair) <= alignof(float));

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_rows(
    const at::Tensor& student_in, const at::Tensor& teacher_in,
    const std::optional<at::Tensor>& labels, double temperature, c10::string_view divergence,
    double beta, double hard_weight, double soft_weight, int64_t ignore_index, bool scale_by_t2,
    double grad_scale, bool compute_grad) {
  const Prepared p = prepare(student_in, teacher_in, labels, temperature, divergence, beta,
                             hard_weight, soft_weight, ignore_index, scale_by_t2);
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  const int64_t N = student.size(0), V = student.size(1);
  const kd::RowOutputs out = kd::empty_row_outputs(student, at::kFloat, compute_grad);
  if (N == 0) return {out.rows, out.stats, out.grad};
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  check_kd_data<Backend>(lp != nullptr ? &lab : nullptr, V, ignore_index, nullptr);
  // Whether the rows are read in packs depends on the inputs only, not on whether the
  // gradient is written (its kernels check that tensor themselves), so a row's statistics
  // and loss are the same bits with and without it.
  const bool vec = same_alignment({&student, &teacher});
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_rows", AT_WRAP([&] {
    const scalar_t* s = student.const_data_ptr<scalar_t>();
    const scalar_t* t = teacher.const_data_ptr<scalar_t>();
    scalar_t* g = compute_grad ? out.grad.data_ptr<scalar_t>() : nullptr;
    float* rows = out.rows.data_ptr<float>();
    float* stats = out.stats.data_ptr<float>();
    const float gs = static_cast<float>(grad_scale);
    const int threads = threads_for(V, pack_size<scalar_t>());
    const Split split = split_for(N, V, pack_size<scalar_t>(),
                                  Backend::multiprocessors(student.device().index()));
    const int64_t parts = split.parts;
    auto launch = [&](auto hard) {
      constexpr bool kHard = decltype(hard)::value;
      if (parts == 1) {
        Backend::launch(kd_forward_kernel<scalar_t, kHard>, N, threads, s, t, lp, rows, stats, g,
                        V, p.h, gs, vec);
        return;
      }
      const auto floats = student.options().dtype(at::kFloat);
      const at::Tensor acc_ws = at::empty({N, parts, kAccWords}, floats);
      Acc* acc = reinterpret_cast<Acc*>(acc_ws.data_ptr<float>());
      const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(parts));
      Backend::launch(kd_split_stats_kernel<scalar_t, kHard>, grid, threads, s, t, acc, V,
                      split.per, p.h, vec);
      at::Tensor pair_ws, row_stats_ws;  // JSD's second pass
      Pair* pairs = nullptr;
      float* row_stats = nullptr;
      if (p.h.div == Div::JSD) {
        pair_ws = at::empty({N, parts, kPairWords}, floats);
        row_stats_ws = at::empty({N, kd::kStats}, floats);
        pairs = reinterpret_cast<Pair*>(pair_ws.data_ptr<float>());
        row_stats = row_stats_ws.data_ptr<float>();
        Backend::launch(kd_split_jsd_kernel<scalar_t>, grid, threads, s, t, acc, pairs, row_stats,
                        V, split.per, p.h, vec);
      }
      // Without a gradient to write, one block per row finishes it.
      const dim3 finish(static_cast<unsigned>(N), g != nullptr ? grid.y : 1u);
      Backend::launch(kd_split_finish_kernel<scalar_t, kHard>, finish, threads, s, t, lp, acc,
                      pairs, row_stats, rows, stats, g, parts, V, split.per, p.h, gs, vec);
    };
    if (p.o.hard_coef != 0) {
      launch(std::true_type{});
    } else {
      launch(std::false_type{});
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return {out.rows, out.stats, out.grad};
}

// The forward validated labels; the backward gets the same tensors from autograd.
template <typename Backend>
at::Tensor kd_loss_backward(const at::Tensor& grad_rows, const at::Tensor& student_in,
                            const at::Tensor& teacher_in, const std::optional<at::Tensor>& labels,
                            const at::Tensor& stats_in, double temperature,
                            c10::string_view divergence, double beta, double hard_weight,
                            double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  const Prepared p = prepare(student_in, teacher_in, labels, temperature, divergence, beta,
                             hard_weight, soft_weight, ignore_index, scale_by_t2);
  const int64_t N = student_in.size(0), V = student_in.size(1);
  const kd::RowGradInputs in = kd::backward_row_inputs(grad_rows, stats_in, student_in, at::kFloat);
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  if (N == 0) return grad;
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool vec = same_alignment({&student, &teacher, &grad});
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_backward", AT_WRAP([&] {
    const Split split = split_for(N, V, pack_size<scalar_t>(),
                                  Backend::multiprocessors(student.device().index()));
    const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(split.parts));
    auto launch = [&](auto kernel) {
      Backend::launch(kernel, grid, threads_for(V, pack_size<scalar_t>()),
                      in.grad_rows.const_data_ptr<float>(), student.const_data_ptr<scalar_t>(),
                      teacher.const_data_ptr<scalar_t>(), lp, in.stats.const_data_ptr<float>(),
                      grad.data_ptr<scalar_t>(), V, split.per, p.h, vec);
    };
    if (p.o.hard_coef != 0) {
      launch(kd_backward_kernel<scalar_t, true>);
    } else {
      launch(kd_backward_kernel<scalar_t, false>);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return grad;
}

}  // namespace ptcore::cuda::kd_full
