// CPU kernels of the fused KD loss: one online read of each row forward (two for JSD), and
// the student's gradient written in the same call when autograd will want it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/kd_row.h"

namespace ptcore::cpu {
namespace {

// Second pass for JSD: K_t = Σ p_t log(p_t/m), K_s = Σ p_s log(p_s/m), m = β p_t + (1-β) p_s.
template <typename scalar_t>
std::pair<acc_t<scalar_t>, acc_t<scalar_t>> jsd_terms(const scalar_t* s, const scalar_t* t,
                                                       int64_t V, const acc_t<scalar_t>* st,
                                                       acc_t<scalar_t> inv_t, acc_t<scalar_t> beta) {
  using A = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  const Vec zero(A(0)), vinv(inv_t), lb(std::log(beta)), lb1(std::log1p(-beta));
  const Vec ms(base(st[kd::kMaxS])), lzs(st[kd::kLogZS]), mt(base(st[kd::kMaxT])),
      lzt(st[kd::kLogZT]);
  Vec kt = zero, ks = zero;
  for_each_vec(0, V, [&](int64_t, int64_t, const Vec& vs, const Vec& vt) {
    const Vec lpt = (vt - mt) * vinv - lzt, lps = (vs - ms) * vinv - lzs;
    const Vec pt = vexp(lpt), ps = vexp(lps), lm = vlog_mix(lpt, lps, lb, lb1);
    kt += Vec::blendv(zero, pt * (lpt - lm), pt != zero);
    ks += Vec::blendv(zero, ps * (lps - lm), ps != zero);
  }, s, t);
  return {hsum(kt), hsum(ks)};
}

// One row's gradient, scaled by gr (the gradient of the row's loss): the soft term's
// c_soft · ∂D/∂(s/T) plus the hard term's c_hard · (softmax(s) − onehot(label)).
template <typename scalar_t>
void grad_row(const scalar_t* s, const scalar_t* t, int64_t V, const acc_t<scalar_t>* st,
              acc_t<scalar_t> gr, int64_t label, const Options& o, scalar_t* g) {
  using A = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  const A inv_t = static_cast<A>(o.inv_t);
  const auto [c_soft, c_hard] = grad_coefs(gr, st, o);
  const bool hard = o.hard_coef != 0;
  const Vec zero(A(0)), vinv(inv_t), vc_soft(c_soft), vc_hard(c_hard);
  const Vec lb(static_cast<A>(std::log(o.beta))), lb1(static_cast<A>(std::log1p(-o.beta)));
  const Vec vb1(static_cast<A>(1 - o.beta));
  const Vec ms(base(st[kd::kMaxS])), lzs(st[kd::kLogZS]), mt(base(st[kd::kMaxT])),
      lzt(st[kd::kLogZT]), lse1(st[kd::kLse1]), dv(st[kd::kDiv]);
  for_each_vec(0, V, [&](int64_t j, int64_t n, const Vec& vs, const Vec& vt) {
    // Gradients of D with respect to s/T; p_s = 0 entries get exactly 0.
    const Vec lps = (vs - ms) * vinv - lzs, lpt = (vt - mt) * vinv - lzt;
    const Vec ps = vexp(lps);
    Vec gs;
    if (o.div == Div::Forward) {
      gs = ps - vexp(lpt);
    } else if (o.div == Div::Reverse) {
      gs = Vec::blendv(zero, ps * (lps - lpt - dv), ps != zero);
    } else {
      gs = Vec::blendv(zero, vb1 * ps * (lps - vlog_mix(lpt, lps, lb, lb1) - dv), ps != zero);
    }
    Vec out = gs * vc_soft;
    if (hard) out += vexp(vs - lse1) * vc_hard;
    if (label >= j && label < j + n) {  // the one-hot of the hard-label term
      __at_align__ A buf[lanes<scalar_t>()];
      out.store(buf);
      buf[label - j] -= c_hard;
      out = Vec::loadu(buf);
    }
    if (n == lanes<scalar_t>()) {
      store(g + j, out);
    } else {
      store_partial(g + j, out, n);
    }
  }, s, t);
}

// Forward KL's gradient from the forward pass's cached exps (no exp per element):
// c_soft (p_s − p_t) + c_hard (softmax(s) − onehot(label)), chunk by chunk.
template <typename scalar_t>
void grad_row_cached(const ExpCache<acc_t<scalar_t>>& cache, int64_t V,
                     const acc_t<scalar_t>* st, acc_t<scalar_t> gr, int64_t label,
                     const Options& o, scalar_t* g) {
  using A = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  constexpr int64_t L = lanes<scalar_t>();
  const A inv_t = static_cast<A>(o.inv_t);
  const auto [c_soft, c_hard] = grad_coefs(gr, st, o);
  const bool hard = o.hard_coef != 0;
  const A ms = st[kd::kMaxS], mt = st[kd::kMaxT];
  for (int64_t c = 0; c < V; c += kChunk) {
    const int64_t ce = std::min(V, c + kChunk), k = c / kChunk;
    const Vec fs(c_soft * cache_scale(cache.bs[k], ms, inv_t, st[kd::kLogZS]));
    const Vec ft(c_soft * cache_scale(cache.bt[k], mt, inv_t, st[kd::kLogZT]));
    const Vec f1(hard ? c_hard * cache_scale(cache.bs[k], ms, A(1), st[kd::kLse1] - ms) : A(0));
    for (int64_t j = c; j < ce; j += L) {
      const int64_t n = std::min(L, ce - j);
      Vec out = Vec::loadu(cache.es.data() + j, n) * fs - Vec::loadu(cache.et.data() + j, n) * ft;
      if (hard) out += Vec::loadu(cache.e1.data() + j, n) * f1;
      if (label >= j && label < j + n) {  // the one-hot of the hard-label term
        __at_align__ A buf[L];
        out.store(buf);
        buf[label - j] -= c_hard;
        out = Vec::loadu(buf);
      }
      if (n == L) {
        store(g + j, out);
      } else {
        store_partial(g + j, out, n);
      }
    }
  }
}

// Rows' losses and statistics; with `grad` (not null), also each row's gradient for a
// row-loss gradient of `grad_scale` (the loss is nearly always the graph's last node, so
// the backward then only rescales, if that).
template <typename scalar_t>
void forward_impl(const at::Tensor& student, const at::Tensor& teacher, const int64_t* labels,
                  const Options& o, at::Tensor& rows, at::Tensor& stats, scalar_t* grad,
                  double grad_scale) {
  using A = acc_t<scalar_t>;
  const int64_t N = student.size(0), V = student.size(1);
  const scalar_t* s = student.const_data_ptr<scalar_t>();
  const scalar_t* t = teacher.const_data_ptr<scalar_t>();
  A* out = rows.data_ptr<A>();
  A* st = stats.data_ptr<A>();
  const A inv_t = static_cast<A>(o.inv_t);
  const bool hard = o.hard_coef != 0;
  // Forward KL's gradient reuses the forward's exps; the others need log-probabilities.
  const bool cached = grad != nullptr && o.div == Div::Forward;
  at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
    ExpCache<A> cache;
    if (cached) cache.resize(V, true, hard);
    ExpCache<A>* cp = cached ? &cache : nullptr;
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* si = s + i * V;
      const scalar_t* ti = t + i * V;
      A* sti = st + i * kd::kStats;
      const auto acc = hard ? accumulate_row<scalar_t, true>(V, inv_t, o.div, cp, si, ti)
                            : accumulate_row<scalar_t, false>(V, inv_t, o.div, cp, si, ti);
      A d = kd::finish_row(acc, o.div, sti);
      if (o.div == Div::JSD) {
        const auto [k_t, k_s] = jsd_terms(si, ti, V, sti, inv_t, static_cast<A>(o.beta));
        d = static_cast<A>(o.beta) * k_t + static_cast<A>(1 - o.beta) * k_s;
        sti[kd::kDiv] = k_s;
      }
      const bool counts = row_counts(labels, i, o);
      if (grad != nullptr) {
        const int64_t label = hard ? labels[i] : -1;
        if (counts && cached) {
          grad_row_cached(cache, V, sti, static_cast<A>(grad_scale), label, o, grad + i * V);
        } else if (counts) {
          grad_row(si, ti, V, sti, static_cast<A>(grad_scale), label, o, grad + i * V);
        } else {
          std::fill(grad + i * V, grad + (i + 1) * V, scalar_t(0));
        }
      }
      if (!counts) {
        out[i] = 0;
        continue;
      }
      A loss = static_cast<A>(o.soft_coef) * d;
      if (hard) loss += static_cast<A>(o.hard_coef) * (sti[kd::kLse1] - static_cast<A>(si[labels[i]]));
      out[i] = loss;
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_rows, const at::Tensor& student,
                   const at::Tensor& teacher, const int64_t* labels, const at::Tensor& stats,
                   const Options& o, at::Tensor& grad) {
  using A = acc_t<scalar_t>;
  const int64_t N = student.size(0), V = student.size(1);
  const scalar_t* s = student.const_data_ptr<scalar_t>();
  const scalar_t* t = teacher.const_data_ptr<scalar_t>();
  const A* gr = grad_rows.const_data_ptr<A>();
  const A* st = stats.const_data_ptr<A>();
  scalar_t* g = grad.data_ptr<scalar_t>();
  // Whether labels are read depends on the options only, never on the data: a NaN
  // incoming gradient must not send a labels=None call to a null pointer.
  const bool hard = o.hard_coef != 0;
  at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* gi = g + i * V;
      if (!row_counts(labels, i, o)) {
        std::fill(gi, gi + V, scalar_t(0));
        continue;
      }
      grad_row(s + i * V, t + i * V, V, st + i * kd::kStats, gr[i], hard ? labels[i] : -1, o, gi);
    }
  });
}

Options options_for(const at::Tensor& student, const at::Tensor& teacher,
                    const std::optional<at::Tensor>& labels, double temperature,
                    c10::string_view divergence, double beta, double hard_weight,
                    double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  kd::check_inputs(student, teacher, labels);
  return kd::make_options(temperature, divergence, beta, hard_weight, soft_weight, ignore_index,
                          scale_by_t2, labels.has_value());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_rows_cpu(
    const at::Tensor& student_in, const at::Tensor& teacher_in,
    const std::optional<at::Tensor>& labels, double temperature, c10::string_view divergence,
    double beta, double hard_weight, double soft_weight, int64_t ignore_index, bool scale_by_t2,
    double grad_scale, bool compute_grad) {
  const Options o = options_for(student_in, teacher_in, labels, temperature, divergence, beta,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  if (lp != nullptr) check_label_range(lab, student_in.size(1), ignore_index);
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  kd::RowOutputs out = kd::empty_row_outputs(student, kd::acc_dtype(student), compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_rows_cpu", [&] {
    scalar_t* g = compute_grad ? out.grad.data_ptr<scalar_t>() : nullptr;
    forward_impl<scalar_t>(student, teacher, lp, o, out.rows, out.stats, g, grad_scale);
  });
  return {out.rows, out.stats, out.grad};
}

// The forward validated labels; the backward gets the same tensors from autograd.
at::Tensor kd_loss_backward_cpu(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                const at::Tensor& teacher_in,
                                const std::optional<at::Tensor>& labels, const at::Tensor& stats,
                                double temperature, c10::string_view divergence, double beta,
                                double hard_weight, double soft_weight, int64_t ignore_index,
                                bool scale_by_t2) {
  const Options o = options_for(student_in, teacher_in, labels, temperature, divergence, beta,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const kd::RowGradInputs in =
      kd::backward_row_inputs(grad_rows, stats, student_in, kd::acc_dtype(student_in));
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_backward_cpu", [&] {
    backward_impl<scalar_t>(in.grad_rows, student, teacher, lp, in.stats, o, grad);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CPU, m) {
  m.impl("kd_loss_rows", &kd_loss_rows_cpu);
  m.impl("_kd_loss_rows_backward", &kd_loss_backward_cpu);
}

}  // namespace ptcore::cpu
