// The online row statistics of the KD kernels (see kd_math.h), gathered by a thread block:
// shared by the full-teacher and the top-k kernels.
#pragma once

#include "cuda/reduce.cuh"
#include "cuda/row_io.cuh"
#include "kd_math.h"

namespace ptcore::cuda {

using Acc = kd::RowAcc<float>;

// Adds P student (and, with kTeacher, teacher) logits to a thread's running statistics.
template <bool kHard, bool kTeacher, int P>
__device__ __forceinline__ void accumulate(Acc& r, const Floats<P>& sv, const Floats<P>& tv,
                                           float inv_t, kd::Div div) {
  float ms = sv[0], mt = tv[0];
#pragma unroll
  for (int e = 1; e < P; ++e) {
    ms = fmaxf(ms, sv[e]);
    mt = fmaxf(mt, tv[e]);
  }
  r.rescale(fmaxf(r.m_s, ms), kTeacher ? fmaxf(r.m_t, mt) : r.m_t, inv_t, div);
  const float bs = base(r.m_s), bt = base(r.m_t);
#pragma unroll
  for (int e = 0; e < P; ++e) {
    const float b = (sv[e] - bs) * inv_t, eb = expf(b);
    r.z_s += eb;
    if (kHard) r.z1 += expf(sv[e] - bs);
    if (kTeacher) {
      const float a = (tv[e] - bt) * inv_t, ea = expf(a);
      r.z_t += ea;
      // Masked entries (weight 0) add 0, not 0 · inf = NaN; a NaN weight stays.
      if (div == kd::Div::Forward && ea != 0.f) r.w += ea * (a - b);
      if (div == kd::Div::Reverse && eb != 0.f) r.w += eb * (b - a);
    }
  }
}

// Combines every thread's statistics; all threads get the row's. smem: kWarp Accs.
__device__ __forceinline__ Acc row_allreduce(const Acc& r, float inv_t, kd::Div div, Acc* smem) {
  return block_allreduce(
      r, [=](Acc x, const Acc& y) { x.merge(y, inv_t, div); return x; }, Acc{}, smem);
}

// A row's gradient coefficients (see kd::grad_coefs); rows that do not count
// (ignore_index) get exactly zero.
using GradCoefs = kd::GradCoefs<float>;

__device__ __forceinline__ GradCoefs grad_coefs(float gr, bool counts, const float* st,
                                                float soft_coef, float hard_coef, float inv_t) {
  if (!counts) return {0.f, 0.f};
  return kd::grad_coefs(gr, st, soft_coef, hard_coef, inv_t);
}

// Row i's outputs, written by one thread: its statistics st and its loss, the soft term's
// soft_coef · d plus, with kHard, the hard term's hard_coef · (logsumexp(s) − s[label]);
// rows that do not count (ignore_index) get 0. s is row i of the student.
template <bool kHard, typename scalar_t>
__device__ __forceinline__ void store_row(int64_t i, const float* st, float d, bool counts,
                                          const scalar_t* s, int64_t label, float soft_coef,
                                          float hard_coef, float* rows, float* stats) {
#pragma unroll
  for (int k = 0; k < kd::kStats; ++k) stats[i * kd::kStats + k] = st[k];
  float loss = 0.f;
  if (counts) {
    loss = soft_coef * d;
    if (kHard) loss += hard_coef * (st[kd::kLse1] - static_cast<float>(s[label]));
  }
  rows[i] = loss;
}

// __shared__ variables cannot have constructors (Acc has initializers): raw storage.
#define PTCORE_SHARED_ACCS(name)                                                   \
  alignas(::ptcore::cuda::Acc) __shared__ unsigned char name##_raw[kWarp * sizeof(Acc)]; \
  Acc* name = reinterpret_cast<Acc*>(name##_raw)

}  // namespace ptcore::cuda
