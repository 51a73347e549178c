// The CUDA kernels of the KD loss against a top-K teacher and their device functions: a block
// per row, one student pass. Launched by cuda/kd_topk_host.h; compiled by nvcc for the GPU and
// by the host compiler for the emulation (tests/emulated).
#pragma once

#include <cstdint>

#include "cuda/kd_row.cuh"

namespace ptcore::cuda::kd_topk {

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
  // An ignored row's label (ignore_index, e.g. -100) is no column: its gradient is all zeros
  // already. `counts` is the same for the whole block, so every thread reaches the barrier.
  if (kHard && counts && !__syncthreads_or(label_in_topk) && threadIdx.x == 0) {
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

}  // namespace ptcore::cuda::kd_topk
