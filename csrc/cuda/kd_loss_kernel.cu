// CUDA kernels of the fused KD loss: a block per row, 16-byte loads, online softmax.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <type_traits>

#include "cuda/kd_row.cuh"

namespace ptcore::cuda {
namespace {

using kd::Div;

struct Pair {
  float a, b;
};

template <typename scalar_t, bool kHard>
__global__ void kd_forward_kernel(const scalar_t* __restrict__ student,  // [N, V]
                                  const scalar_t* __restrict__ teacher,  // [N, V]
                                  const int64_t* __restrict__ labels,    // [N] or null
                                  float* __restrict__ rows,              // [N]
                                  float* __restrict__ stats,             // [N, kStats]
                                  int64_t V, float inv_t, Div div, float beta, float soft_coef,
                                  float hard_coef, int64_t ignore_index, bool aligned) {
  PTCORE_SHARED_ACCS(smem_acc);
  __shared__ Pair smem_pair[kWarp];
  const int64_t i = blockIdx.x;
  const scalar_t* s = student + i * V;
  const scalar_t* t = teacher + i * V;
  Acc r;
  for_each_pack(V, aligned, [&](int64_t, auto, const auto& sv, const auto& tv) {
    accumulate<kHard, true>(r, sv, tv, inv_t, div);
  }, s, t);
  r = row_allreduce(r, inv_t, div, smem_acc);

  float st[kd::kStats];
  float d = kd::finish_row(r, div, st);
  if (div == Div::JSD) {
    const float lzs = st[kd::kLogZS], lzt = st[kd::kLogZT];
    const float bs = base(st[kd::kMaxS]), bt = base(st[kd::kMaxT]);
    Pair k{0.f, 0.f};
    for_each_pack(V, aligned, [&](int64_t, auto n, const auto& sv, const auto& tv) {
#pragma unroll
      for (int e = 0; e < n; ++e) {
        const float lpt = (tv[e] - bt) * inv_t - lzt, lps = (sv[e] - bs) * inv_t - lzs;
        const float pt = expf(lpt), ps = expf(lps);
        const float lm = logf(beta * pt + (1.f - beta) * ps);
        if (pt > 0.f) k.a += pt * (lpt - lm);
        if (ps > 0.f) k.b += ps * (lps - lm);
      }
    }, s, t);
    k = block_allreduce(
        k, [](Pair x, const Pair& y) { return Pair{x.a + y.a, x.b + y.b}; }, Pair{0.f, 0.f},
        smem_pair);
    d = beta * k.a + (1.f - beta) * k.b;
    st[kd::kDiv] = k.b;
  }
  if (threadIdx.x != 0) return;
#pragma unroll
  for (int k = 0; k < kd::kStats; ++k) stats[i * kd::kStats + k] = st[k];
  const bool counts = labels == nullptr || labels[i] != ignore_index;
  float loss = 0.f;
  if (counts) {
    loss = soft_coef * d;
    if (kHard) {
      const int64_t y = labels[i];
      CUDA_KERNEL_ASSERT(y >= 0 && y < V && "labels out of range");
      loss += hard_coef * (st[kd::kLse1] - static_cast<float>(s[y]));
    }
  }
  rows[i] = loss;
}

template <typename scalar_t>
__global__ void kd_backward_kernel(const float* __restrict__ grad_rows,  // [N]
                                   const scalar_t* __restrict__ student,  // [N, V]
                                   const scalar_t* __restrict__ teacher,  // [N, V]
                                   const int64_t* __restrict__ labels,    // [N] or null
                                   const float* __restrict__ stats,       // [N, kStats]
                                   scalar_t* __restrict__ grad,           // [N, V]
                                   int64_t V, float inv_t, Div div, float beta, float soft_coef,
                                   float hard_coef, int64_t ignore_index, bool aligned) {
  constexpr int P = pack_size<scalar_t>();
  const int64_t i = blockIdx.x;
  const scalar_t* s = student + i * V;
  const scalar_t* t = teacher + i * V;
  scalar_t* g = grad + i * V;
  const float* st = stats + i * kd::kStats;
  const bool counts = labels == nullptr || labels[i] != ignore_index;
  const float gr = counts ? grad_rows[i] : 0.f;
  const float c_soft = gr * soft_coef * inv_t, c_hard = gr * hard_coef;
  const int64_t label = c_hard != 0.f ? labels[i] : -1;
  const float ms = base(st[kd::kMaxS]), lzs = st[kd::kLogZS], mt = base(st[kd::kMaxT]),
              lzt = st[kd::kLogZT], lse1 = st[kd::kLse1], dv = st[kd::kDiv];
  for_each_pack(V, aligned, [&](int64_t j, auto n, const auto& sv, const auto& tv) {
    Pack<scalar_t> out;
#pragma unroll
    for (int e = 0; e < n; ++e) {
      // Gradient of D with respect to s/T; p_s = 0 entries get exactly 0.
      const float lps = (sv[e] - ms) * inv_t - lzs, lpt = (tv[e] - mt) * inv_t - lzt;
      const float ps = expf(lps);
      float gs;
      if (div == Div::Forward) {
        gs = ps - expf(lpt);
      } else if (div == Div::Reverse) {
        gs = ps > 0.f ? ps * (lps - lpt - dv) : 0.f;
      } else {
        const float lm = logf(beta * expf(lpt) + (1.f - beta) * ps);
        gs = ps > 0.f ? (1.f - beta) * ps * (lps - lm - dv) : 0.f;
      }
      float v = gs * c_soft;
      if (c_hard != 0.f) v += c_hard * (expf(sv[e] - lse1) - (j + e == label ? 1.f : 0.f));
      out.v[e] = static_cast<scalar_t>(counts ? v : 0.f);
    }
    if constexpr (decltype(n)::value == P) {
      reinterpret_cast<Pack<scalar_t>*>(g)[j / P] = out;
    } else {
      g[j] = out.v[0];
    }
  }, s, t);
}

kd::Options prepare(const at::Tensor& student, const at::Tensor& teacher,
                    const std::optional<at::Tensor>& labels, double temperature,
                    c10::string_view divergence, double beta, double hard_weight,
                    double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  kd::check_inputs(student, teacher, labels);
  TORCH_CHECK(student.size(0) <= std::numeric_limits<int32_t>::max(),
              "student_logits has too many rows for one launch: ", student.size(0));
  return kd::make_options(temperature, divergence, beta, hard_weight, soft_weight, ignore_index,
                          scale_by_t2, labels.has_value());
}

std::tuple<at::Tensor, at::Tensor> kd_loss_rows_cuda(
    const at::Tensor& student_in, const at::Tensor& teacher_in,
    const std::optional<at::Tensor>& labels, double temperature, c10::string_view divergence,
    double beta, double hard_weight, double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  const kd::Options o = prepare(student_in, teacher_in, labels, temperature, divergence, beta,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  const int64_t N = student.size(0), V = student.size(1);
  const kd::RowOutputs out = kd::empty_row_outputs(student, at::kFloat);
  if (N == 0) return {out.rows, out.stats};
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool aligned = rows_aligned(student) && rows_aligned(teacher);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_rows_cuda", [&] {
    const int threads = threads_for(V, pack_size<scalar_t>());
    auto launch = [&](auto kernel) {
      kernel<<<N, threads, 0, stream>>>(
          student.const_data_ptr<scalar_t>(), teacher.const_data_ptr<scalar_t>(), lp,
          out.rows.data_ptr<float>(), out.stats.data_ptr<float>(), V,
          static_cast<float>(o.inv_t), o.div, static_cast<float>(o.beta),
          static_cast<float>(o.soft_coef), static_cast<float>(o.hard_coef), o.ignore_index,
          aligned);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (o.hard_coef != 0) {
      launch(kd_forward_kernel<scalar_t, true>);
    } else {
      launch(kd_forward_kernel<scalar_t, false>);
    }
  });
  return {out.rows, out.stats};
}

at::Tensor kd_loss_backward_cuda(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                 const at::Tensor& teacher_in,
                                 const std::optional<at::Tensor>& labels,
                                 const at::Tensor& stats_in, double temperature,
                                 c10::string_view divergence, double beta, double hard_weight,
                                 double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  const kd::Options o = prepare(student_in, teacher_in, labels, temperature, divergence, beta,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const int64_t N = student_in.size(0), V = student_in.size(1);
  const kd::RowGradInputs in = kd::backward_row_inputs(grad_rows, stats_in, N, at::kFloat);
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  if (N == 0) return grad;
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool aligned = rows_aligned(student) && rows_aligned(teacher) && rows_aligned(grad);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_backward_cuda", [&] {
    kd_backward_kernel<scalar_t><<<N, threads_for(V, pack_size<scalar_t>()), 0, stream>>>(
        in.grad_rows.const_data_ptr<float>(), student.const_data_ptr<scalar_t>(),
        teacher.const_data_ptr<scalar_t>(), lp, in.stats.const_data_ptr<float>(),
        grad.data_ptr<scalar_t>(), V, static_cast<float>(o.inv_t), o.div,
        static_cast<float>(o.beta), static_cast<float>(o.soft_coef),
        static_cast<float>(o.hard_coef), o.ignore_index, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("kd_loss_rows", &kd_loss_rows_cuda);
  m.impl("_kd_loss_rows_backward", &kd_loss_backward_cuda);
}

}  // namespace ptcore::cuda
