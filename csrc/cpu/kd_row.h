// Row-level pieces of the CPU KD kernels, shared by kd_loss and kd_loss_topk.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/row_loop.h"
#include "cpu/vec_io.h"
#include "data_checks.h"
#include "kd_math.h"

namespace ptcore::cpu {

using kd::Div;
using kd::Options;
using kd::RowAcc;

// Elements per online step: a chunk of both rows stays in L1 between its max and sum passes.
constexpr int64_t kChunk = 2048;

// The exps the forward pass computes, kept for the gradient pass of the same row so that
// it needs none of its own: per element exp((s - b_c)/T), exp((t - b_c)/T) and, for the
// hard term, exp(s - b_c), with b_c the running maxima that chunk c was shifted by. The
// gradient rescales them by exp((b_c - max)/T) / z once per chunk. Per thread, reused
// across rows (3·V floats: a 32k row's cache stays in L2 between the two passes).
template <typename A>
struct ExpCache {
  std::vector<A> es, et, e1;  // [V]
  std::vector<A> bs, bt;      // [chunks]: the shifts (running maxima; -inf: nothing yet)

  void resize(int64_t V, bool teacher, bool hard) {
    const int64_t chunks = (V + kChunk - 1) / kChunk;
    es.resize(V);
    if (teacher) et.resize(V);
    if (hard) e1.resize(V);
    bs.resize(chunks);
    bt.resize(chunks);
  }
};

// One pass over a row: maxima, normalisers and the KL sum (online, chunk by chunk).
// Without a teacher row (the top-k loss), only the student's statistics are gathered.
// With `cache`, the exps are kept for the gradient (see ExpCache).
template <typename scalar_t, bool kHard, typename... Teacher>
RowAcc<acc_t<scalar_t>> accumulate_row(int64_t V, acc_t<scalar_t> inv_t, Div div,
                                       ExpCache<acc_t<scalar_t>>* cache, const scalar_t* s,
                                       const Teacher*... t) {
  using A = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr bool kTeacher = sizeof...(Teacher) > 0;
  const Vec zero(A(0)), vinv(inv_t);
  RowAcc<A> r;
  for (int64_t c = 0; c < V; c += kChunk) {
    const int64_t ce = std::min(V, c + kChunk);
    Vec vms(-std::numeric_limits<A>::infinity()), vmt = vms;
    for_each_vec(c, ce, [&](int64_t, int64_t, const Vec& vs, const auto&... vt) {
      vms = at::vec::maximum(vms, vs);
      ((vmt = at::vec::maximum(vmt, vt)), ...);
    }, s, t...);
    r.rescale(std::max(r.m_s, hmax(vms)), kTeacher ? std::max(r.m_t, hmax(vmt)) : r.m_t, inv_t,
              div);
    const Vec ms(base(r.m_s)), mt(base(r.m_t));
    if (cache != nullptr) {
      cache->bs[c / kChunk] = r.m_s;
      cache->bt[c / kChunk] = r.m_t;
    }
    Vec zs = zero, zt = zero, z1 = zero, w = zero;
    auto teacher_terms = [&](int64_t j, int64_t n, const Vec& b, const Vec& eb, const Vec& vt) {
      const Vec a = (vt - mt) * vinv, ea = vexp(a);
      if (cache != nullptr) ea.store(cache->et.data() + j, n);
      zt += ea;
      // Masked entries (weight 0) must add 0, not 0 · inf = NaN; a NaN weight stays.
      if (div == Div::Forward) w += Vec::blendv(zero, ea * (a - b), ea != zero);
      if (div == Div::Reverse) w += Vec::blendv(zero, eb * (b - a), eb != zero);
    };
    for_each_vec(c, ce, [&](int64_t j, int64_t n, const Vec& vs, const auto&... vt) {
      const Vec b = (vs - ms) * vinv, eb = vexp(b);
      zs += eb;
      if (cache != nullptr) eb.store(cache->es.data() + j, n);
      if constexpr (kHard) {
        const Vec e1 = vexp(vs - ms);
        z1 += e1;
        if (cache != nullptr) e1.store(cache->e1.data() + j, n);
      }
      (teacher_terms(j, n, b, eb, vt), ...);
    }, s, t...);
    r.z_s += hsum(zs);
    r.z_t += hsum(zt);
    r.z1 += hsum(z1);
    r.w += hsum(w);
  }
  return r;
}

// log(β e^x + (1-β) e^y) per lane, in log space (see kd::log_mix).
template <typename Vec>
inline Vec vlog_mix(const Vec& x0, const Vec& y0, const Vec& log_b, const Vec& log_b1) {
  const Vec x = x0 + log_b, y = y0 + log_b1;
  const Vec m = at::vec::maximum(x, y);  // NaN propagates
  const Vec ninf(-std::numeric_limits<typename Vec::value_type>::infinity());
  return Vec::blendv(m + vexp(Vec(0) - (x - y).abs()).log1p(), m, m == ninf);
}

// The per-chunk factor that turns a cached exp into a probability: exp((b_c - max)·k - log z),
// 0 for a chunk shifted by -inf (all of it -inf: its cached exps are 0).
template <typename A>
inline A cache_scale(A b_c, A max, A k, A log_z) {
  return b_c == -std::numeric_limits<A>::infinity() ? A(0) : std::exp((b_c - max) * k - log_z);
}

inline bool row_counts(const int64_t* labels, int64_t i, const Options& o) {
  return labels == nullptr || labels[i] != o.ignore_index;
}

// The first row in [0, n) for which bad(i) holds, or -1; rows are scanned in parallel.
template <typename F>
int64_t first_bad_row(int64_t n, int64_t grain, const F& bad) {
  FirstBadRow first;
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end && i < first.first(); ++i) {
      if (bad(i)) {
        first.report(i);
        return;
      }
    }
  });
  return first.get();
}

// Labels in [0, V) or ignore_index, whatever hard_weight is (as on CUDA).
inline void check_label_range(const at::Tensor& labels, int64_t V, int64_t ignore_index) {
  const int64_t* p = labels.const_data_ptr<int64_t>();
  const int64_t bad = first_bad_row(labels.numel(), 4096, [&](int64_t i) {
    return !label_ok(p[i], V, ignore_index);
  });
  if (bad >= 0) check_label(p[bad], bad, V, ignore_index);
}

// A row's gradient coefficients (see kd::grad_coefs) for a gradient gr on its loss.
template <typename A>
inline kd::GradCoefs<A> grad_coefs(A gr, const A* st, const Options& o) {
  return kd::grad_coefs(gr, st, static_cast<A>(o.soft_coef), static_cast<A>(o.hard_coef),
                        static_cast<A>(o.inv_t));
}

inline int64_t grain(int64_t V) { return std::max<int64_t>(1, 16384 / V); }

inline const int64_t* labels_ptr(const std::optional<at::Tensor>& labels, at::Tensor& holder) {
  if (!labels.has_value()) return nullptr;
  holder = labels->contiguous();
  return holder.const_data_ptr<int64_t>();
}

}  // namespace ptcore::cpu
