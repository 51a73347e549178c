// CUDA kernels of the KD loss against a top-K teacher: a block per row, one student pass;
// the forward writes the student's gradient too when autograd will want it.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include "cuda/kd_checks.h"
#include "cuda/kd_row.cuh"

namespace ptcore::cuda {
namespace {

using kd::Div;

struct Max {  // NaN wins, as in the CPU kernel
  __device__ float operator()(float a, float b) const { return (isnan(a) || a > b) ? a : b; }
};
struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};

struct Hyper {
  float inv_t, soft_coef, hard_coef;
  int64_t ignore_index;
  bool tail;  // the tail bucket (kd_math.h: tail_term)
};

// One row's gradient (this thread's share): c_soft (p_s − q) + c_hard (softmax(s) −
// onehot(label)), q zero off the K classes, p_s scaled by 1 − r there with the tail bucket
// (r in stats kTail, 0 without it). The dense part first, then, after a barrier,
// the K classes and the label recomputed exactly (classes are distinct: validated).
template <bool kHard, typename scalar_t>
__device__ __forceinline__ void write_grad_row(const scalar_t* s, scalar_t* g, const float* v,
                                               const int64_t* idx, int64_t V, int64_t K,
                                               bool vec, const float* st, GradCoefs c,
                                               bool counts, int64_t label, const Hyper& h) {
  if (K == 0) c.c_soft = 0.f;  // a teacher that kept no class teaches nothing
  const float ms = base(st[kd::kMaxS]), lzs = st[kd::kLogZS], lse1 = st[kd::kLse1];
  const float mt = base(st[kd::kMaxT]), lzt = st[kd::kLogZT];
  const float c_dense = c.c_soft * (1.f - st[kd::kTail]);
  // On the K classes c_soft (p_s − q); elsewhere, the label included, c_dense p_s.
  auto exact = [&](int64_t j, float sj, float q, bool in_topk) {
    const float ps = expf((sj - ms) * h.inv_t - lzs);
    float val = in_topk ? c.c_soft * (ps - q) : c_dense * ps;
    if (kHard) val += c.c_hard * (expf(sj - lse1) - (j == label ? 1.f : 0.f));
    return counts ? val : 0.f;
  };
  for_each_pack(V, vec, [&](int64_t j, auto n, const auto& sv) {
    Pack<scalar_t> out;
#pragma unroll
    for (int e = 0; e < n; ++e) out.v[e] = static_cast<scalar_t>(exact(-1, sv[e], 0.f, false));
    store_at<decltype(n)::value>(g, j, out);
  }, s);
  __syncthreads();  // the K classes and the label are rewritten exactly below
  bool label_in_topk = false;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t j = idx[k];
    label_in_topk = label_in_topk || j == label;
    const float q = expf((v[k] - mt) * h.inv_t - lzt);
    g[j] = static_cast<scalar_t>(exact(j, static_cast<float>(s[j]), q, true));
  }
  if (kHard && !__syncthreads_or(label_in_topk) && threadIdx.x == 0) {
    g[label] = static_cast<scalar_t>(exact(label, static_cast<float>(s[label]), 0.f, false));
  }
}

// minBlocks spelled out: with the tail bucket's few extra values, ptxas for sm_80 held the
// <float, no-hard-term> instance to 32 registers and spilled. With 2 (at most 64 registers,
// two 512-thread blocks per SM), no instance spills on sm_80 or sm_90.
template <typename scalar_t, bool kHard>
__global__ void __launch_bounds__(kMaxThreads, 2)
    kd_topk_forward_kernel(const scalar_t* __restrict__ student,  // [N, V]
                           const float* __restrict__ values,      // [N, K]
                           const int64_t* __restrict__ indices,   // [N, K]
                           const int64_t* __restrict__ labels,    // [N] or null
                           float* __restrict__ rows,              // [N]
                           float* __restrict__ stats,             // [N, kStats]
                           scalar_t* __restrict__ grad,           // [N, V] or null
                           int64_t V, int64_t K, Hyper h, float grad_scale, bool vec) {
  PTCORE_SHARED_ACCS(smem_acc);
  __shared__ float smem_f[kWarp];
  const int64_t i = blockIdx.x;
  const scalar_t* s = student + i * V;
  const float* v = values + i * K;
  const int64_t* idx = indices + i * K;
  // Student statistics only (JSD leaves the teacher-side sums untouched).
  Acc r;
  for_each_pack(V, vec, [&](int64_t, auto, const auto& sv) {
    accumulate<kHard, false>(r, sv, sv, h.inv_t, Div::JSD);
  }, s);
  r = row_allreduce(r, h.inv_t, Div::JSD, smem_acc);
  float st[kd::kStats];
  kd::finish_row(r, Div::JSD, st);

  // The teacher's softmax over its K values, and the tail bin (as in the CPU kernel).
  float mt = -INFINITY, lt = -INFINITY;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mt = Max{}(mt, v[k]);
  mt = block_allreduce(mt, Max{}, -INFINITY, smem_f);
  if (h.tail) {
    float mass = 0.f;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mass += expf(v[k]);
    lt = kd::log_teacher_rest(block_allreduce(mass, Sum{}, 0.f, smem_f));
    mt = Max{}(mt, lt);
  }
  float zt = threadIdx.x == 0 ? expf((lt - base(mt)) * h.inv_t) : 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) zt += expf((v[k] - base(mt)) * h.inv_t);
  zt = block_allreduce(zt, Sum{}, 0.f, smem_f);
  st[kd::kMaxT] = mt;
  st[kd::kLogZT] = logf(zt);
  // The tail bin's log q until tail_term below replaces it (fewer live registers).
  if (h.tail) st[kd::kTail] = (lt - base(mt)) * h.inv_t - st[kd::kLogZT];

  const float bs = base(st[kd::kMaxS]), lzs = st[kd::kLogZS];
  auto log_ps = [&](int64_t k) {
    return (static_cast<float>(s[idx[k]]) - bs) * h.inv_t - lzs;
  };
  float d = 0.f;  // Σ q_k (log q_k − log p_s[i_k]), with 0 · log 0 = 0 (NaN q stays NaN)
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float lq = (v[k] - base(mt)) * h.inv_t - st[kd::kLogZT], q = expf(lq);
    if (q != 0.f) d += q * (lq - log_ps(k));
  }
  d = block_allreduce(d, Sum{}, 0.f, smem_f);
  if (h.tail) {  // Σ p_s[i_k]: K more reads of the row, only with the tail bucket
    float ps_mass = 0.f;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) ps_mass += expf(log_ps(k));
    ps_mass = block_allreduce(ps_mass, Sum{}, 0.f, smem_f);
    st[kd::kTail] = kd::tail_term(st[kd::kTail], kd::log_student_rest(ps_mass), d);
  }
  st[kd::kDiv] = d;
  const bool counts = labels == nullptr || labels[i] != h.ignore_index;
  const int64_t label = kHard ? labels[i] : -1;  // validated on the host beforehand
  if (grad != nullptr) {
    const GradCoefs c = grad_coefs(grad_scale, counts, st, h.soft_coef, h.hard_coef, h.inv_t);
    write_grad_row<kHard>(s, grad + i * V, v, idx, V, K, vec, st, c, counts, label, h);
  }
  if (threadIdx.x != 0) return;
  store_row<kHard>(i, st, d, counts, s, label, h.soft_coef, h.hard_coef, rows, stats);
}

template <typename scalar_t, bool kHard>
__global__ void __launch_bounds__(kMaxThreads)
    kd_topk_backward_kernel(const float* __restrict__ grad_rows,    // [N]
                            const scalar_t* __restrict__ student,  // [N, V]
                            const float* __restrict__ values,      // [N, K]
                            const int64_t* __restrict__ indices,   // [N, K]
                            const int64_t* __restrict__ labels,    // [N] or null
                            const float* __restrict__ stats,       // [N, kStats]
                            scalar_t* __restrict__ grad,           // [N, V]
                            int64_t V, int64_t K, Hyper h, bool vec) {
  const int64_t i = blockIdx.x;
  const float* st = stats + i * kd::kStats;
  const bool counts = labels == nullptr || labels[i] != h.ignore_index;
  // Whether labels are read depends on the options only, never on the (maybe NaN) gradient.
  const int64_t label = kHard ? labels[i] : -1;
  const GradCoefs c = grad_coefs(grad_rows[i], counts, st, h.soft_coef, h.hard_coef, h.inv_t);
  write_grad_row<kHard>(student + i * V, grad + i * V, values + i * K, indices + i * K, V, K, vec,
                        st, c, counts, label, h);
}

struct Prepared {
  kd::Options o;
  Hyper h;
};

Prepared prepare(const at::Tensor& student, const at::Tensor& values, const at::Tensor& indices,
                 const std::optional<at::Tensor>& labels, double temperature, double hard_weight,
                 double soft_weight, int64_t ignore_index, bool scale_by_t2, bool tail) {
  kd::check_topk_inputs(student, values, indices, labels);
  TORCH_CHECK(student.size(0) <= std::numeric_limits<int32_t>::max(),
              "student_logits has too many rows for one launch: ", student.size(0));
  const kd::Options o = kd::make_options(temperature, "forward_kl", 0.5, hard_weight, soft_weight,
                                         ignore_index, scale_by_t2, labels.has_value());
  return {o, Hyper{static_cast<float>(o.inv_t), static_cast<float>(o.soft_coef),
                   static_cast<float>(o.hard_coef), o.ignore_index, tail}};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_topk_rows_cuda(
    const at::Tensor& student_in, const at::Tensor& values_in, const at::Tensor& indices_in,
    const std::optional<at::Tensor>& labels, double temperature, double hard_weight,
    double soft_weight, int64_t ignore_index, bool scale_by_t2, bool tail_bucket,
    double grad_scale, bool compute_grad) {
  const Prepared p = prepare(student_in, values_in, indices_in, labels, temperature, hard_weight,
                             soft_weight, ignore_index, scale_by_t2, tail_bucket);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const at::Tensor student = student_in.contiguous();
  const at::Tensor values = values_in.to(at::kFloat).contiguous(), indices = indices_in.contiguous();
  const int64_t N = student.size(0), V = student.size(1), K = values.size(1);
  const kd::RowOutputs out = kd::empty_row_outputs(student, at::kFloat, compute_grad);
  if (N == 0) return {out.rows, out.stats, out.grad};
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  check_kd_data(lp != nullptr ? &lab : nullptr, V, ignore_index, &indices);  // once, not in backward
  const bool vec = compute_grad ? same_alignment({&student, &out.grad}) : true;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_topk_rows_cuda", AT_WRAP([&] {
    scalar_t* g = compute_grad ? out.grad.data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel) {
      kernel<<<N, threads_for(V, pack_size<scalar_t>()), 0, stream>>>(
          student.const_data_ptr<scalar_t>(), values.const_data_ptr<float>(),
          indices.const_data_ptr<int64_t>(), lp, out.rows.data_ptr<float>(),
          out.stats.data_ptr<float>(), g, V, K, p.h, static_cast<float>(grad_scale), vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
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
at::Tensor kd_loss_topk_backward_cuda(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                      const at::Tensor& values_in, const at::Tensor& indices_in,
                                      const std::optional<at::Tensor>& labels,
                                      const at::Tensor& stats_in, double temperature,
                                      double hard_weight, double soft_weight,
                                      int64_t ignore_index, bool scale_by_t2,
                                      bool tail_bucket) {
  const Prepared p = prepare(student_in, values_in, indices_in, labels, temperature, hard_weight,
                             soft_weight, ignore_index, scale_by_t2, tail_bucket);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const int64_t N = student_in.size(0), V = student_in.size(1), K = values_in.size(1);
  const kd::RowGradInputs in = kd::backward_row_inputs(grad_rows, stats_in, student_in, at::kFloat);
  const at::Tensor student = student_in.contiguous();
  const at::Tensor values = values_in.to(at::kFloat).contiguous(), indices = indices_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  if (N == 0) return grad;
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool vec = same_alignment({&student, &grad});
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_topk_backward_cuda", AT_WRAP([&] {
    auto launch = [&](auto kernel) {
      kernel<<<N, threads_for(V, pack_size<scalar_t>()), 0, stream>>>(
          in.grad_rows.const_data_ptr<float>(), student.const_data_ptr<scalar_t>(),
          values.const_data_ptr<float>(), indices.const_data_ptr<int64_t>(), lp,
          in.stats.const_data_ptr<float>(), grad.data_ptr<scalar_t>(), V, K, p.h, vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (p.o.hard_coef != 0) {
      launch(kd_topk_backward_kernel<scalar_t, true>);
    } else {
      launch(kd_topk_backward_kernel<scalar_t, false>);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("kd_loss_topk_rows", &kd_loss_topk_rows_cuda);
  m.impl("_kd_loss_topk_rows_backward", &kd_loss_topk_backward_cuda);
}

}  // namespace ptcore::cuda
