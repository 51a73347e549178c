// CUDA kernels of the KD loss against a top-K teacher: a block per row, one student pass.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include "cuda/kd_row.cuh"

namespace ptcore::cuda {
namespace {

using kd::Div;

// Duplicate classes are checked in-kernel (device assert) up to this K; the check is K².
constexpr int64_t kMaxCheckedK = 128;

struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};

template <typename scalar_t, bool kHard>
__global__ void kd_topk_forward_kernel(const scalar_t* __restrict__ student,  // [N, V]
                                       const float* __restrict__ values,      // [N, K]
                                       const int64_t* __restrict__ indices,   // [N, K]
                                       const int64_t* __restrict__ labels,    // [N] or null
                                       float* __restrict__ rows,              // [N]
                                       float* __restrict__ stats,             // [N, kStats]
                                       int64_t V, int64_t K, float inv_t, float soft_coef,
                                       float hard_coef, int64_t ignore_index, bool aligned) {
  PTCORE_SHARED_ACCS(smem_acc);
  __shared__ float smem_f[kWarp];
  const int64_t i = blockIdx.x;
  const scalar_t* s = student + i * V;
  const float* v = values + i * K;
  const int64_t* idx = indices + i * K;
  // Student statistics only (JSD leaves the teacher-side sums untouched).
  Acc r;
  for_each_pack(V, aligned, [&](int64_t, auto, const auto& sv) {
    accumulate<kHard, false>(r, sv, sv, inv_t, Div::JSD);
  }, s);
  r = row_allreduce(r, inv_t, Div::JSD, smem_acc);
  float st[kd::kStats];
  kd::finish_row(r, Div::JSD, st);

  float mt = -INFINITY;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mt = fmaxf(mt, v[k]);
  mt = block_allreduce(mt, Max{}, -INFINITY, smem_f);
  float zt = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) zt += expf((v[k] - base(mt)) * inv_t);
  zt = block_allreduce(zt, Sum{}, 0.f, smem_f);
  st[kd::kMaxT] = mt;
  st[kd::kLogZT] = logf(zt);

  const float bs = base(st[kd::kMaxS]), lzs = st[kd::kLogZS];
  float d = 0.f;  // Σ q_k (log q_k − log p_s[i_k]), with 0 · log 0 = 0
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t j = idx[k];
    CUDA_KERNEL_ASSERT(j >= 0 && j < V && "teacher_indices out of range");
    const float lq = (v[k] - base(mt)) * inv_t - st[kd::kLogZT], q = expf(lq);
    if (q > 0.f) d += q * (lq - ((static_cast<float>(s[j]) - bs) * inv_t - lzs));
  }
  if (K <= kMaxCheckedK) {
    for (int64_t p = threadIdx.x; p < K * K; p += blockDim.x) {
      const int64_t a = p / K, b = p % K;
      CUDA_KERNEL_ASSERT((a >= b || idx[a] != idx[b]) && "teacher_indices repeat a class");
    }
  }
  d = block_allreduce(d, Sum{}, 0.f, smem_f);
  st[kd::kDiv] = d;
  if (threadIdx.x != 0) return;
#pragma unroll
  for (int k = 0; k < kd::kStats; ++k) stats[i * kd::kStats + k] = st[k];
  float loss = 0.f;
  if (labels == nullptr || labels[i] != ignore_index) {
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
__global__ void kd_topk_backward_kernel(const float* __restrict__ grad_rows,    // [N]
                                        const scalar_t* __restrict__ student,  // [N, V]
                                        const float* __restrict__ values,      // [N, K]
                                        const int64_t* __restrict__ indices,   // [N, K]
                                        const int64_t* __restrict__ labels,    // [N] or null
                                        const float* __restrict__ stats,       // [N, kStats]
                                        scalar_t* __restrict__ grad,           // [N, V]
                                        int64_t V, int64_t K, float inv_t, float soft_coef,
                                        float hard_coef, int64_t ignore_index, bool aligned) {
  constexpr int P = pack_size<scalar_t>();
  const int64_t i = blockIdx.x;
  const scalar_t* s = student + i * V;
  scalar_t* g = grad + i * V;
  const float* st = stats + i * kd::kStats;
  const bool counts = labels == nullptr || labels[i] != ignore_index;
  const float gr = counts ? grad_rows[i] : 0.f;
  const float c_soft = gr * soft_coef * inv_t, c_hard = gr * hard_coef;
  const int64_t label = c_hard != 0.f ? labels[i] : -1;
  const float ms = base(st[kd::kMaxS]), lzs = st[kd::kLogZS], lse1 = st[kd::kLse1];
  const float mt = base(st[kd::kMaxT]), lzt = st[kd::kLogZT];
  // g_j = c_soft (p_s,j − q_j) + c_hard (softmax(s)_j − [j = label]); q is 0 off the K classes.
  auto exact = [&](int64_t j, float sj, float q) {
    float val = c_soft * (expf((sj - ms) * inv_t - lzs) - q);
    if (c_hard != 0.f) val += c_hard * (expf(sj - lse1) - (j == label ? 1.f : 0.f));
    return counts ? val : 0.f;
  };
  for_each_pack(V, aligned, [&](int64_t j, auto n, const auto& sv) {
    Pack<scalar_t> out;
#pragma unroll
    for (int e = 0; e < n; ++e) out.v[e] = static_cast<scalar_t>(exact(-1, sv[e], 0.f));
    if constexpr (decltype(n)::value == P) {
      reinterpret_cast<Pack<scalar_t>*>(g)[j / P] = out;
    } else {
      g[j] = out.v[0];
    }
  }, s);
  __syncthreads();  // the K classes and the label are rewritten exactly below
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t j = indices[i * K + k];
    const float q = expf((values[i * K + k] - mt) * inv_t - lzt);
    g[j] = static_cast<scalar_t>(exact(j, static_cast<float>(s[j]), q));
  }
  if (threadIdx.x == 0 && label >= 0) {
    bool in_topk = false;
    for (int64_t k = 0; k < K; ++k) in_topk = in_topk || indices[i * K + k] == label;
    if (!in_topk) g[label] = static_cast<scalar_t>(exact(label, static_cast<float>(s[label]), 0.f));
  }
}

kd::Options prepare(const at::Tensor& student, const at::Tensor& values,
                    const at::Tensor& indices, const std::optional<at::Tensor>& labels,
                    double temperature, double hard_weight, double soft_weight,
                    int64_t ignore_index, bool scale_by_t2) {
  kd::check_topk_inputs(student, values, indices, labels);
  TORCH_CHECK(student.size(0) <= std::numeric_limits<int32_t>::max(),
              "student_logits has too many rows for one launch: ", student.size(0));
  return kd::make_options(temperature, "forward_kl", 0.5, hard_weight, soft_weight, ignore_index,
                          scale_by_t2, labels.has_value());
}

std::tuple<at::Tensor, at::Tensor> kd_loss_topk_rows_cuda(
    const at::Tensor& student_in, const at::Tensor& values_in, const at::Tensor& indices_in,
    const std::optional<at::Tensor>& labels, double temperature, double hard_weight,
    double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  const kd::Options o = prepare(student_in, values_in, indices_in, labels, temperature,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const at::Tensor student = student_in.contiguous();
  const at::Tensor values = values_in.to(at::kFloat).contiguous(), indices = indices_in.contiguous();
  const int64_t N = student.size(0), V = student.size(1), K = values.size(1);
  const kd::RowOutputs out = kd::empty_row_outputs(student, at::kFloat);
  if (N == 0) return {out.rows, out.stats};
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool aligned = rows_aligned(student);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_topk_rows_cuda", [&] {
    const int threads = threads_for(V, pack_size<scalar_t>());
    auto launch = [&](auto kernel) {
      kernel<<<N, threads, 0, stream>>>(
          student.const_data_ptr<scalar_t>(), values.const_data_ptr<float>(),
          indices.const_data_ptr<int64_t>(), lp, out.rows.data_ptr<float>(),
          out.stats.data_ptr<float>(),
          V, K, static_cast<float>(o.inv_t), static_cast<float>(o.soft_coef),
          static_cast<float>(o.hard_coef), o.ignore_index, aligned);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (o.hard_coef != 0) {
      launch(kd_topk_forward_kernel<scalar_t, true>);
    } else {
      launch(kd_topk_forward_kernel<scalar_t, false>);
    }
  });
  return {out.rows, out.stats};
}

at::Tensor kd_loss_topk_backward_cuda(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                      const at::Tensor& values_in, const at::Tensor& indices_in,
                                      const std::optional<at::Tensor>& labels,
                                      const at::Tensor& stats_in, double temperature,
                                      double hard_weight, double soft_weight,
                                      int64_t ignore_index, bool scale_by_t2) {
  const kd::Options o = prepare(student_in, values_in, indices_in, labels, temperature,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const int64_t N = student_in.size(0), V = student_in.size(1), K = values_in.size(1);
  const kd::RowGradInputs in = kd::backward_row_inputs(grad_rows, stats_in, N, at::kFloat);
  const at::Tensor student = student_in.contiguous();
  const at::Tensor values = values_in.to(at::kFloat).contiguous(), indices = indices_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  if (N == 0) return grad;
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool aligned = rows_aligned(student) && rows_aligned(grad);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_topk_backward_cuda", [&] {
    kd_topk_backward_kernel<scalar_t><<<N, threads_for(V, pack_size<scalar_t>()), 0, stream>>>(
        in.grad_rows.const_data_ptr<float>(), student.const_data_ptr<scalar_t>(),
        values.const_data_ptr<float>(), indices.const_data_ptr<int64_t>(), lp,
        in.stats.const_data_ptr<float>(), grad.data_ptr<scalar_t>(), V, K,
        static_cast<float>(o.inv_t), static_cast<float>(o.soft_coef),
        static_cast<float>(o.hard_coef), o.ignore_index, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("kd_loss_topk_rows", &kd_loss_topk_rows_cuda);
  m.impl("_kd_loss_topk_rows_backward", &kd_loss_topk_backward_cuda);
}

}  // namespace ptcore::cuda
