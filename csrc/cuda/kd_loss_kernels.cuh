// The fused KD loss's CUDA kernels and their device functions: a block per row (or, when the
// rows are too few to fill the GPU, several, whose partial statistics are merged in a fixed
// order), 16-byte loads, online softmax. Launched by cuda/kd_loss_host.h; compiled by nvcc for
// the GPU and by the host compiler for the emulation (tests/emulated).
#pragma once

#include <cstdint>

#include "cuda/kd_row.cuh"

namespace ptcore::cuda::kd_full {

using kd::Div;

struct Pair {
  float a, b;
};

// The hyperparameters every kernel of this op takes.
struct Hyper {
  float inv_t, beta, log_b, log_b1;  // 1/T, β, log β, log(1-β)
  float soft_coef, hard_coef;
  int64_t ignore_index;
  Div div;
};

// Writes part `part` of one row's gradient g (this thread's share) for coefficients c: the
// soft term's c_soft · ∂D/∂(s/T) plus the hard term's c_hard · (softmax(s) − onehot(label)).
template <bool kHard, typename scalar_t>
__device__ __forceinline__ void write_grad_row(const scalar_t* s, const scalar_t* t, scalar_t* g,
                                               int64_t V, bool vec, Part part, const float* st,
                                               GradCoefs c, bool counts, int64_t label,
                                               const Hyper& h) {
  const float ms = base(st[kd::kMaxS]), lzs = st[kd::kLogZS], mt = base(st[kd::kMaxT]),
              lzt = st[kd::kLogZT], lse1 = st[kd::kLse1], dv = st[kd::kDiv];
  for_each_pack(V, vec, part, [&](int64_t j, auto n, const auto& sv, const auto& tv) {
    Pack<scalar_t> out;
#pragma unroll
    for (int e = 0; e < n; ++e) {
      // Gradient of D with respect to s/T; p_s = 0 entries get exactly 0.
      const float lps = (sv[e] - ms) * h.inv_t - lzs, lpt = (tv[e] - mt) * h.inv_t - lzt;
      const float ps = expf(lps);
      float gs;
      if (h.div == Div::Forward) {
        gs = ps - expf(lpt);
      } else if (h.div == Div::Reverse) {
        gs = ps != 0.f ? ps * (lps - lpt - dv) : 0.f;
      } else {
        const float lm = kd::log_mix(lpt, lps, h.log_b, h.log_b1);
        gs = ps != 0.f ? (1.f - h.beta) * ps * (lps - lm - dv) : 0.f;
      }
      float v = gs * c.c_soft;
      if (kHard) v += c.c_hard * (expf(sv[e] - lse1) - (j + e == label ? 1.f : 0.f));
      out.v[e] = static_cast<scalar_t>(counts ? v : 0.f);
    }
    store_at<decltype(n)::value>(g, j, out);
  }, s, t);
}

// JSD's second pass over part `part` of a row, with the row's statistics st: this thread's
// shares of Σ p_t (log p_t − log m) and Σ p_s (log p_s − log m).
template <typename scalar_t>
__device__ __forceinline__ Pair jsd_pair(const scalar_t* s, const scalar_t* t, int64_t V,
                                         bool vec, Part part, const float* st, const Hyper& h) {
  const float lzs = st[kd::kLogZS], lzt = st[kd::kLogZT];
  const float bs = base(st[kd::kMaxS]), bt = base(st[kd::kMaxT]);
  Pair k{0.f, 0.f};
  for_each_pack(V, vec, part, [&](int64_t, auto n, const auto& sv, const auto& tv) {
#pragma unroll
    for (int e = 0; e < n; ++e) {
      const float lpt = (tv[e] - bt) * h.inv_t - lzt, lps = (sv[e] - bs) * h.inv_t - lzs;
      const float pt = expf(lpt), ps = expf(lps);
      const float lm = kd::log_mix(lpt, lps, h.log_b, h.log_b1);
      if (pt != 0.f) k.a += pt * (lpt - lm);
      if (ps != 0.f) k.b += ps * (lps - lm);
    }
  }, s, t);
  return k;
}

__device__ __forceinline__ Pair pair_allreduce(Pair k, Pair* smem) {
  return block_allreduce(
      k, [](Pair x, const Pair& y) { return Pair{x.a + y.a, x.b + y.b}; }, Pair{0.f, 0.f}, smem);
}

// JSD from a row's pair sums; kDiv keeps Σ p_s (log p_s − log m), which the gradient uses.
__device__ __forceinline__ float jsd_divergence(Pair k, const Hyper& h, float* st) {
  st[kd::kDiv] = k.b;
  return h.beta * k.a + (1.f - h.beta) * k.b;
}

// What follows once row i's statistics st and divergence d are known: part `part` of its
// gradient (when grad is given), and, from the first part's thread 0, its statistics and loss.
// s and t are row i.
template <bool kHard, typename scalar_t>
__device__ __forceinline__ void write_row_outputs(int64_t i, Part part, const scalar_t* s,
                                                  const scalar_t* t, const int64_t* labels,
                                                  float* rows, float* stats, scalar_t* grad,
                                                  int64_t V, bool vec, const float* st, float d,
                                                  const Hyper& h, float grad_scale) {
  const bool counts = labels == nullptr || labels[i] != h.ignore_index;
  const int64_t label = kHard ? labels[i] : -1;  // validated on the host beforehand
  if (grad != nullptr) {
    const GradCoefs c = grad_coefs(grad_scale, counts, st, h.soft_coef, h.hard_coef, h.inv_t);
    scalar_t* g = grad + i * V;  // in packs only if it lies at the inputs' offset (vec)
    write_grad_row<kHard>(s, t, g, V, vec && same_offset(g, s), part, st, c, counts, label, h);
  }
  if (part.index != 0 || threadIdx.x != 0) return;
  store_row<kHard>(i, st, d, counts, s, label, h.soft_coef, h.hard_coef, rows, stats);
}

template <typename scalar_t, bool kHard>
__global__ void __launch_bounds__(kMaxThreads)
    kd_forward_kernel(const scalar_t* __restrict__ student,  // [N, V]
                      const scalar_t* __restrict__ teacher,  // [N, V]
                      const int64_t* __restrict__ labels,    // [N] or null
                      float* __restrict__ rows,              // [N]
                      float* __restrict__ stats,             // [N, kStats]
                      scalar_t* __restrict__ grad,           // [N, V] or null
                      int64_t V, Hyper h, float grad_scale, bool vec) {
  PTCORE_SHARED_ACCS(smem_acc);
  __shared__ Pair smem_pair[kWarp];
  const int64_t i = blockIdx.x;
  const scalar_t* s = student + i * V;
  const scalar_t* t = teacher + i * V;
  Acc r;
  for_each_pack(V, vec, [&](int64_t, auto, const auto& sv, const auto& tv) {
    accumulate<kHard, true>(r, sv, tv, h.inv_t, h.div);
  }, s, t);
  r = row_allreduce(r, h.inv_t, h.div, smem_acc);

  float st[kd::kStats];
  float d = kd::finish_row(r, h.div, st);
  if (h.div == Div::JSD) {
    d = jsd_divergence(pair_allreduce(jsd_pair(s, t, V, vec, Part{0, 1, 0}, st, h), smem_pair), h,
                       st);
  }
  write_row_outputs<kHard>(i, Part{0, 1, 0}, s, t, labels, rows, stats, grad, V, vec, st, d, h,
                           grad_scale);
}

// Several blocks per row (split_for picks how many): grid (N, parts), block (i, p) reads
// part p of row i (slices of `per` packs) in each of up to three passes, one kernel each:
// the part's statistics; for JSD, the row's statistics and the part's pair sums; the row's
// loss and the part's gradient. Every block merges a row's parts in index order, so all
// blocks of a row, and every run, get the same bits.
__device__ __forceinline__ Part grid_part(int64_t per) { return {blockIdx.y, gridDim.y, per}; }

__device__ __forceinline__ Acc merge_parts(const Acc* acc, int64_t parts, const Hyper& h) {
  Acc r = acc[0];
  for (int64_t p = 1; p < parts; ++p) r.merge(acc[p], h.inv_t, h.div);
  return r;
}

template <typename scalar_t, bool kHard>
__global__ void __launch_bounds__(kMaxThreads)
    kd_split_stats_kernel(const scalar_t* __restrict__ student,  // [N, V]
                          const scalar_t* __restrict__ teacher,  // [N, V]
                          Acc* __restrict__ acc,                 // [N, parts]
                          int64_t V, int64_t per, Hyper h, bool vec) {
  PTCORE_SHARED_ACCS(smem_acc);
  const int64_t i = blockIdx.x;
  const Part part = grid_part(per);
  Acc r;
  for_each_pack(V, vec, part, [&](int64_t, auto, const auto& sv, const auto& tv) {
    accumulate<kHard, true>(r, sv, tv, h.inv_t, h.div);
  }, student + i * V, teacher + i * V);
  r = row_allreduce(r, h.inv_t, h.div, smem_acc);
  if (threadIdx.x == 0) acc[i * part.count + part.index] = r;
}

// The first part keeps the row's statistics in row_stats: the last pass reads them instead
// of merging again, so the gradient uses the very statistics the pair sums were made with.
template <typename scalar_t>
__global__ void __launch_bounds__(kMaxThreads)
    kd_split_jsd_kernel(const scalar_t* __restrict__ student,  // [N, V]
                        const scalar_t* __restrict__ teacher,  // [N, V]
                        const Acc* __restrict__ acc,           // [N, parts]
                        Pair* __restrict__ pairs,              // [N, parts]
                        float* __restrict__ row_stats,         // [N, kStats]
                        int64_t V, int64_t per, Hyper h, bool vec) {
  __shared__ Pair smem_pair[kWarp];
  const int64_t i = blockIdx.x;
  const Part part = grid_part(per);
  float st[kd::kStats];
  kd::finish_row(merge_parts(acc + i * part.count, part.count, h), h.div, st);
  const Pair k =
      pair_allreduce(jsd_pair(student + i * V, teacher + i * V, V, vec, part, st, h), smem_pair);
  if (threadIdx.x != 0) return;
  pairs[i * part.count + part.index] = k;
  if (part.index != 0) return;
#pragma unroll
  for (int q = 0; q < kd::kStats; ++q) row_stats[i * kd::kStats + q] = st[q];
}

// `parts` is the number of partial results per row; the grid has that many parts when it
// writes the gradient, else one.
template <typename scalar_t, bool kHard>
__global__ void __launch_bounds__(kMaxThreads)
    kd_split_finish_kernel(const scalar_t* __restrict__ student,  // [N, V]
                           const scalar_t* __restrict__ teacher,  // [N, V]
                           const int64_t* __restrict__ labels,    // [N] or null
                           const Acc* __restrict__ acc,           // [N, parts]
                           const Pair* __restrict__ pairs,        // [N, parts] (JSD) or null
                           const float* __restrict__ row_stats,   // [N, kStats] (JSD) or null
                           float* __restrict__ rows,              // [N]
                           float* __restrict__ stats,             // [N, kStats]
                           scalar_t* __restrict__ grad,           // [N, V] or null
                           int64_t parts, int64_t V, int64_t per, Hyper h, float grad_scale,
                           bool vec) {
  const int64_t i = blockIdx.x;
  float st[kd::kStats];
  float d;
  if (h.div == Div::JSD) {
#pragma unroll
    for (int q = 0; q < kd::kStats; ++q) st[q] = row_stats[i * kd::kStats + q];
    Pair k = pairs[i * parts];
    for (int64_t p = 1; p < parts; ++p) {
      k.a += pairs[i * parts + p].a;
      k.b += pairs[i * parts + p].b;
    }
    d = jsd_divergence(k, h, st);
  } else {
    d = kd::finish_row(merge_parts(acc + i * parts, parts, h), h.div, st);
  }
  write_row_outputs<kHard>(i, grid_part(per), student + i * V, teacher + i * V, labels, rows,
                           stats, grad, V, vec, st, d, h, grad_scale);
}

template <typename scalar_t, bool kHard>
__global__ void __launch_bounds__(kMaxThreads)
    kd_backward_kernel(const float* __restrict__ grad_rows,  // [N]
                       const scalar_t* __restrict__ student,  // [N, V]
                       const scalar_t* __restrict__ teacher,  // [N, V]
                       const int64_t* __restrict__ labels,    // [N] or null
                       const float* __restrict__ stats,       // [N, kStats]
                       scalar_t* __restrict__ grad,           // [N, V]
                       int64_t V, int64_t per, Hyper h, bool vec) {
  const int64_t i = blockIdx.x;  // part blockIdx.y of row i: grid (N, parts), as above
  const float* st = stats + i * kd::kStats;
  const bool counts = labels == nullptr || labels[i] != h.ignore_index;
  // Whether labels are read depends on the options only, never on the (maybe NaN) gradient.
  const int64_t label = kHard ? labels[i] : -1;
  const GradCoefs c = grad_coefs(grad_rows[i], counts, st, h.soft_coef, h.hard_coef, h.inv_t);
  write_grad_row<kHard>(student + i * V, teacher + i * V, grad + i * V, V, vec, grid_part(per),
                        st, c, counts, label, h);
}

}  // namespace ptcore::cuda::kd_full
