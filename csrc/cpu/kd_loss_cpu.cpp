// CPU kernels of the fused KD loss: one read of each row forward (two for JSD), one backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

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
  const Vec zero(A(0)), vinv(inv_t), vb(beta), vb1(A(1) - beta);
  const Vec ms(st[kd::kMaxS]), lzs(st[kd::kLogZS]), mt(st[kd::kMaxT]), lzt(st[kd::kLogZT]);
  Vec kt = zero, ks = zero;
  for_each_vec(0, V, [&](int64_t, int64_t, const Vec& vs, const Vec& vt) {
    const Vec lpt = (vt - mt) * vinv - lzt, lps = (vs - ms) * vinv - lzs;
    const Vec pt = vexp(lpt), ps = vexp(lps);
    const Vec lm = (vb * pt + vb1 * ps).log();
    kt += Vec::blendv(zero, pt * (lpt - lm), pt > zero);
    ks += Vec::blendv(zero, ps * (lps - lm), ps > zero);
  }, s, t);
  return {hsum(kt), hsum(ks)};
}

template <typename scalar_t>
void forward_impl(const at::Tensor& student, const at::Tensor& teacher, const int64_t* labels,
                  const Options& o, at::Tensor& rows, at::Tensor& stats) {
  using A = acc_t<scalar_t>;
  const int64_t N = student.size(0), V = student.size(1);
  const scalar_t* s = student.const_data_ptr<scalar_t>();
  const scalar_t* t = teacher.const_data_ptr<scalar_t>();
  A* out = rows.data_ptr<A>();
  A* st = stats.data_ptr<A>();
  const A inv_t = static_cast<A>(o.inv_t);
  const bool hard = o.hard_coef != 0;
  at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* si = s + i * V;
      const scalar_t* ti = t + i * V;
      A* sti = st + i * kd::kStats;
      const auto acc = hard ? accumulate_row<scalar_t, true>(V, inv_t, o.div, si, ti)
                            : accumulate_row<scalar_t, false>(V, inv_t, o.div, si, ti);
      A d = kd::finish_row(acc, o.div, sti);
      if (o.div == Div::JSD) {
        const auto [k_t, k_s] = jsd_terms(si, ti, V, sti, inv_t, static_cast<A>(o.beta));
        d = static_cast<A>(o.beta) * k_t + static_cast<A>(1 - o.beta) * k_s;
        sti[kd::kDiv] = k_s;
      }
      if (!row_counts(labels, i, o)) {
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
  using Vec = AccVec<scalar_t>;
  const int64_t N = student.size(0), V = student.size(1);
  const scalar_t* s = student.const_data_ptr<scalar_t>();
  const scalar_t* t = teacher.const_data_ptr<scalar_t>();
  const A* gr = grad_rows.const_data_ptr<A>();
  const A* st = stats.const_data_ptr<A>();
  scalar_t* g = grad.data_ptr<scalar_t>();
  const A inv_t = static_cast<A>(o.inv_t);
  at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* gi = g + i * V;
      if (!row_counts(labels, i, o)) {
        std::fill(gi, gi + V, scalar_t(0));
        continue;
      }
      const A* sti = st + i * kd::kStats;
      const A c_hard = gr[i] * static_cast<A>(o.hard_coef);
      const int64_t label = c_hard != 0 ? labels[i] : -1;
      const Vec zero(A(0)), vinv(inv_t), c_soft(gr[i] * static_cast<A>(o.soft_coef) * inv_t);
      const Vec vc_hard(c_hard), vb(static_cast<A>(o.beta)), vb1(static_cast<A>(1 - o.beta));
      const Vec ms(sti[kd::kMaxS]), lzs(sti[kd::kLogZS]), mt(sti[kd::kMaxT]),
          lzt(sti[kd::kLogZT]), lse1(sti[kd::kLse1]), dv(sti[kd::kDiv]);
      for_each_vec(0, V, [&](int64_t j, int64_t n, const Vec& vs, const Vec& vt) {
        // Gradients of D with respect to s/T; p_s = 0 entries get exactly 0.
        const Vec lps = (vs - ms) * vinv - lzs, lpt = (vt - mt) * vinv - lzt;
        const Vec ps = vexp(lps);
        Vec gs;
        if (o.div == Div::Forward) {
          gs = ps - vexp(lpt);
        } else if (o.div == Div::Reverse) {
          gs = Vec::blendv(zero, ps * (lps - lpt - dv), ps > zero);
        } else {
          const Vec lm = (vb * vexp(lpt) + vb1 * ps).log();
          gs = Vec::blendv(zero, vb1 * ps * (lps - lm - dv), ps > zero);
        }
        Vec out = gs * c_soft;
        if (c_hard != 0) out += vexp(vs - lse1) * vc_hard;
        if (label >= j && label < j + n) {  // the one-hot of the hard-label term
          __at_align__ A buf[lanes<scalar_t>()];
          out.store(buf);
          buf[label - j] -= c_hard;
          out = Vec::loadu(buf);
        }
        if (n == lanes<scalar_t>()) {
          store(gi + j, out);
        } else {
          store_partial(gi + j, out, n);
        }
      }, s + i * V, t + i * V);
    }
  });
}

Options options_for(const at::Tensor& student, const at::Tensor& teacher,
                    const std::optional<at::Tensor>& labels, double temperature,
                    c10::string_view divergence, double beta, double hard_weight,
                    double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  kd::check_inputs(student, teacher, labels);
  if (labels.has_value()) check_label_range(labels->contiguous(), student.size(1), ignore_index);
  return kd::make_options(temperature, divergence, beta, hard_weight, soft_weight, ignore_index,
                          scale_by_t2, labels.has_value());
}

std::tuple<at::Tensor, at::Tensor> kd_loss_rows_cpu(
    const at::Tensor& student_in, const at::Tensor& teacher_in,
    const std::optional<at::Tensor>& labels, double temperature, c10::string_view divergence,
    double beta, double hard_weight, double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  const Options o = options_for(student_in, teacher_in, labels, temperature, divergence, beta,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  kd::RowOutputs out = kd::empty_row_outputs(student, kd::acc_dtype(student));
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_rows_cpu", [&] {
    forward_impl<scalar_t>(student, teacher, lp, o, out.rows, out.stats);
  });
  return {out.rows, out.stats};
}

at::Tensor kd_loss_backward_cpu(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                const at::Tensor& teacher_in,
                                const std::optional<at::Tensor>& labels, const at::Tensor& stats,
                                double temperature, c10::string_view divergence, double beta,
                                double hard_weight, double soft_weight, int64_t ignore_index,
                                bool scale_by_t2) {
  const Options o = options_for(student_in, teacher_in, labels, temperature, divergence, beta,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const kd::RowGradInputs in =
      kd::backward_row_inputs(grad_rows, stats, student_in.size(0), kd::acc_dtype(student_in));
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
