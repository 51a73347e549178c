// CPU kernels of the KD loss against a top-K teacher: one pass over each student row, and
// the student's gradient written in the same call when autograd will want it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/kd_row.h"

namespace ptcore::cpu {
namespace {

// Every row's K classes in [0, V) and distinct (the gradient's scatter relies on it):
// rows checked in parallel, O(K log K) each; the first bad row raises.
void check_topk_indices(const at::Tensor& idx, int64_t V) {
  const int64_t N = idx.size(0), K = idx.size(1);
  if (K == 0) return;
  const int64_t* p = idx.const_data_ptr<int64_t>();
  const int64_t bad = first_bad_row(N, std::max<int64_t>(1, 4096 / K), [&](int64_t i) {
    thread_local std::vector<int64_t> row;
    sort_topk_row(p + i * K, K, row);
    return !sorted_topk_row_ok(row, V);
  });
  if (bad >= 0) {
    std::vector<int64_t> scratch;
    check_topk_row(p + bad * K, K, bad, V, scratch);
  }
}

// The teacher's softmax over its K logits, and with `tail` over K + 1 bins (the last one
// the mass its K log-probabilities leave): fills stats kMaxT and kLogZT (-inf for K = 0
// without the tail). Returns the tail bin's log-probability at T = 1 (-inf without it).
template <typename A>
A teacher_stats(const A* v, int64_t K, A inv_t, bool tail, A* st) {
  auto nan_max = [](A a, A b) { return (std::isnan(b) || b > a) ? b : a; };  // NaN wins
  A m = -std::numeric_limits<A>::infinity(), mass = 0;
  for (int64_t k = 0; k < K; ++k) m = nan_max(m, v[k]);
  if (tail) {
    for (int64_t k = 0; k < K; ++k) mass += std::exp(v[k]);
  }
  const A lt = tail ? kd::log_teacher_rest(mass) : -std::numeric_limits<A>::infinity();
  m = nan_max(m, lt);
  A z = std::exp((lt - base(m)) * inv_t);
  for (int64_t k = 0; k < K; ++k) z += std::exp((v[k] - base(m)) * inv_t);
  st[kd::kMaxT] = m;
  st[kd::kLogZT] = std::log(z);
  return lt;
}

template <typename A>
A log_q(A v, A inv_t, const A* st) {
  return (v - base(st[kd::kMaxT])) * inv_t - st[kd::kLogZT];
}

template <typename A, typename scalar_t>
A log_ps(scalar_t s, A inv_t, const A* st) {
  return (static_cast<A>(s) - base(st[kd::kMaxS])) * inv_t - st[kd::kLogZS];
}

// One row's gradient for a row-loss gradient gr: c_soft (p_s − q) + c_hard (softmax(s) −
// onehot(label)), q zero off the K classes, where the tail bucket scales p_s by 1 − r (r in
// stats kTail, 0 without it). K = 0 keeps no teacher mass: no soft gradient.
// With `cache` (the forward's exps of this row), the dense part needs no exp per element.
template <typename scalar_t>
void grad_row(const scalar_t* si, const acc_t<scalar_t>* v, const int64_t* idx, int64_t V,
              int64_t K, const acc_t<scalar_t>* sti, acc_t<scalar_t> gr, int64_t label,
              const Options& o, scalar_t* gi, const ExpCache<acc_t<scalar_t>>* cache) {
  using A = acc_t<scalar_t>;
  using Vec = AccVec<scalar_t>;
  const A inv_t = static_cast<A>(o.inv_t);
  const kd::GradCoefs<A> coefs = grad_coefs(gr, sti, o);
  const A c_soft = K == 0 ? A(0) : coefs.c_soft, c_hard = coefs.c_hard;
  const bool hard = o.hard_coef != 0;
  // Dense part, c_soft · p_s + c_hard · softmax(s).
  const A c_dense = c_soft * (A(1) - sti[kd::kTail]);
  const Vec vc_soft(c_dense), vc_hard(c_hard), vinv(inv_t);
  const Vec ms(base(sti[kd::kMaxS])), lzs(sti[kd::kLogZS]), lse1(sti[kd::kLse1]);
  auto put = [&](int64_t j, int64_t n, const Vec& out) {
    if (n == lanes<scalar_t>()) {
      store(gi + j, out);
    } else {
      store_partial(gi + j, out, n);
    }
  };
  if (cache != nullptr) {
    constexpr int64_t L = lanes<scalar_t>();
    const A m = sti[kd::kMaxS];
    for (int64_t c = 0; c < V; c += kChunk) {
      const int64_t ce = std::min(V, c + kChunk), k = c / kChunk;
      const Vec fs(c_dense * cache_scale(cache->bs[k], m, inv_t, sti[kd::kLogZS]));
      const Vec f1(hard ? c_hard * cache_scale(cache->bs[k], m, A(1), sti[kd::kLse1] - m) : A(0));
      for (int64_t j = c; j < ce; j += L) {
        const int64_t n = std::min(L, ce - j);
        Vec out = Vec::loadu(cache->es.data() + j, n) * fs;
        if (hard) out += Vec::loadu(cache->e1.data() + j, n) * f1;
        put(j, n, out);
      }
    }
  } else {
    for_each_vec(0, V, [&](int64_t j, int64_t n, const Vec& vs) {
      Vec out = vexp((vs - ms) * vinv - lzs) * vc_soft;
      if (hard) out += vexp(vs - lse1) * vc_hard;
      put(j, n, out);
    }, si);
  }
  // The K teacher classes and the label, recomputed exactly rather than patched.
  // c_ps: c_soft on the K classes, c_dense on the label off them (q = 0 there).
  auto exact = [&](int64_t j, A c_ps, A q) {
    A val = c_ps * std::exp(log_ps<A>(si[j], inv_t, sti)) - c_soft * q;
    if (hard) val += c_hard * (std::exp(static_cast<A>(si[j]) - sti[kd::kLse1]) - A(j == label));
    gi[j] = static_cast<scalar_t>(val);
  };
  bool label_done = !hard;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t j = idx[k];
    exact(j, c_soft, std::exp(log_q(v[k], inv_t, sti)));
    label_done = label_done || j == label;
  }
  if (!label_done) exact(label, c_dense, 0);
}

template <typename scalar_t>
void forward_impl(const at::Tensor& student, const at::Tensor& values, const at::Tensor& indices,
                  const int64_t* labels, const Options& o, bool tail, at::Tensor& rows,
                  at::Tensor& stats, scalar_t* grad, double grad_scale) {
  using A = acc_t<scalar_t>;
  const int64_t N = student.size(0), V = student.size(1), K = values.size(1);
  const scalar_t* s = student.const_data_ptr<scalar_t>();
  const A* v = values.const_data_ptr<A>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  A* out = rows.data_ptr<A>();
  A* st = stats.data_ptr<A>();
  const A inv_t = static_cast<A>(o.inv_t);
  const bool hard = o.hard_coef != 0;
  at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
    ExpCache<A> cache;  // the dense part of the gradient reuses the forward's exps
    if (grad != nullptr) cache.resize(V, false, hard);
    ExpCache<A>* cp = grad != nullptr ? &cache : nullptr;
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* si = s + i * V;
      A* sti = st + i * kd::kStats;
      // Student statistics only (JSD: the teacher-side sums stay untouched).
      const auto acc = hard ? accumulate_row<scalar_t, true>(V, inv_t, Div::JSD, cp, si)
                            : accumulate_row<scalar_t, false>(V, inv_t, Div::JSD, cp, si);
      kd::finish_row(acc, Div::JSD, sti);
      const A lt = teacher_stats(v + i * K, K, inv_t, tail, sti);
      A d = 0;  // Σ q_k (log q_k − log p_s[i_k]), with 0 · log 0 = 0 (NaN q stays NaN)
      A ps_mass = 0;  // Σ p_s[i_k], for the tail bucket
      for (int64_t k = 0; k < K; ++k) {
        const A lq = log_q(v[i * K + k], inv_t, sti), q = std::exp(lq);
        const A lp = log_ps<A>(si[idx[i * K + k]], inv_t, sti);
        if (q != 0) d += q * (lq - lp);
        if (tail) ps_mass += std::exp(lp);
      }
      if (tail) sti[kd::kTail] = kd::tail_term(log_q(lt, inv_t, sti), kd::log_student_rest(ps_mass), d);
      sti[kd::kDiv] = d;
      const bool counts = row_counts(labels, i, o);
      if (grad != nullptr) {
        if (counts) {
          grad_row(si, v + i * K, idx + i * K, V, K, sti, static_cast<A>(grad_scale),
                   hard ? labels[i] : -1, o, grad + i * V, cp);
        } else {
          std::fill(grad + i * V, grad + (i + 1) * V, scalar_t(0));
        }
      }
      A loss = 0;
      if (counts) {
        loss = static_cast<A>(o.soft_coef) * d;
        if (hard) loss += static_cast<A>(o.hard_coef) * (sti[kd::kLse1] - static_cast<A>(si[labels[i]]));
      }
      out[i] = loss;
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_rows, const at::Tensor& student,
                   const at::Tensor& values, const at::Tensor& indices, const int64_t* labels,
                   const at::Tensor& stats, const Options& o, at::Tensor& grad) {
  using A = acc_t<scalar_t>;
  const int64_t N = student.size(0), V = student.size(1), K = values.size(1);
  const scalar_t* s = student.const_data_ptr<scalar_t>();
  const A* v = values.const_data_ptr<A>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  const A* gr = grad_rows.const_data_ptr<A>();
  const A* st = stats.const_data_ptr<A>();
  scalar_t* g = grad.data_ptr<scalar_t>();
  const bool hard = o.hard_coef != 0;  // never decided from the (possibly NaN) gradient
  at::parallel_for(0, N, grain(V), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* gi = g + i * V;
      if (!row_counts(labels, i, o)) {
        std::fill(gi, gi + V, scalar_t(0));
        continue;
      }
      grad_row<scalar_t>(s + i * V, v + i * K, idx + i * K, V, K, st + i * kd::kStats, gr[i],
                         hard ? labels[i] : -1, o, gi, nullptr);
    }
  });
}

Options options_for(const at::Tensor& student, const at::Tensor& values,
                    const at::Tensor& indices, const std::optional<at::Tensor>& labels,
                    double temperature, double hard_weight, double soft_weight,
                    int64_t ignore_index, bool scale_by_t2) {
  kd::check_topk_inputs(student, values, indices, labels);
  return kd::make_options(temperature, "forward_kl", 0.5, hard_weight, soft_weight, ignore_index,
                          scale_by_t2, labels.has_value());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_topk_rows_cpu(
    const at::Tensor& student_in, const at::Tensor& values_in, const at::Tensor& indices_in,
    const std::optional<at::Tensor>& labels, double temperature, double hard_weight,
    double soft_weight, int64_t ignore_index, bool scale_by_t2, bool tail_bucket,
    double grad_scale, bool compute_grad) {
  const Options o = options_for(student_in, values_in, indices_in, labels, temperature,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const at::Tensor student = student_in.contiguous();
  const auto acc = kd::acc_dtype(student);
  const at::Tensor values = values_in.to(acc).contiguous(), indices = indices_in.contiguous();
  check_topk_indices(indices, student.size(1));
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  if (lp != nullptr) check_label_range(lab, student.size(1), ignore_index);
  kd::RowOutputs out = kd::empty_row_outputs(student, acc, compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_topk_rows_cpu", [&] {
    scalar_t* g = compute_grad ? out.grad.data_ptr<scalar_t>() : nullptr;
    forward_impl<scalar_t>(student, values, indices, lp, o, tail_bucket, out.rows, out.stats, g,
                           grad_scale);
  });
  return {out.rows, out.stats, out.grad};
}

// The forward validated the indices and labels; the backward gets the same tensors.
at::Tensor kd_loss_topk_backward_cpu(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                     const at::Tensor& values_in, const at::Tensor& indices_in,
                                     const std::optional<at::Tensor>& labels,
                                     const at::Tensor& stats, double temperature,
                                     double hard_weight, double soft_weight, int64_t ignore_index,
                                     bool scale_by_t2, bool /*tail_bucket: in stats kTail*/) {
  const Options o = options_for(student_in, values_in, indices_in, labels, temperature,
                                hard_weight, soft_weight, ignore_index, scale_by_t2);
  const auto acc = kd::acc_dtype(student_in);
  const kd::RowGradInputs in = kd::backward_row_inputs(grad_rows, stats, student_in, acc);
  const at::Tensor student = student_in.contiguous();
  const at::Tensor values = values_in.to(acc).contiguous(), indices = indices_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "kd_loss_topk_backward_cpu", [&] {
    backward_impl<scalar_t>(in.grad_rows, student, values, indices, lp, in.stats, o, grad);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CPU, m) {
  m.impl("kd_loss_topk_rows", &kd_loss_topk_rows_cpu);
  m.impl("_kd_loss_topk_rows_backward", &kd_loss_topk_backward_cpu);
}

}  // namespace ptcore::cpu
