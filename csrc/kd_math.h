// Row maths of the fused KD loss, shared by the CPU and CUDA kernels.
//
// Each row is reduced in chunks with running maxima (online softmax), so a row is read
// once. With a = (t - m_t)/T and b = (s - m_s)/T (m_* the row maxima of the raw logits),
// log p_t = a - log z_t and log p_s = b - log z_s, and
//   forward KL = w / z_t - log z_t + log z_s,  w = Σ e^a (a - b)
//   reverse KL = w / z_s - log z_s + log z_t,  w = Σ e^b (b - a)
// Working relative to the maxima keeps ±3e38 logits and small T from overflowing.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <limits>

#include "common.h"

namespace ptcore::kd {

enum class Div : int { Forward = 0, Reverse = 1, JSD = 2 };

// Per-row statistics saved by the forward for the backward: [N, kStats]. kTail is the top-k
// tail bucket's q_tail / P_tail (see tail_term), 0 for every other loss.
enum Stat : int { kMaxS = 0, kLogZS = 1, kMaxT = 2, kLogZT = 3, kLse1 = 4, kDiv = 5, kTail = 6 };
constexpr int kStats = 7;

struct Options {
  double inv_t;
  double beta;
  double soft_coef;  // soft_weight · T² (when scale_by_t2)
  double hard_coef;  // hard_weight when labels are given, else 0
  int64_t ignore_index;
  Div div;
};

inline Options make_options(double temperature, c10::string_view divergence, double beta,
                            double hard_weight, double soft_weight, int64_t ignore_index,
                            bool scale_by_t2, bool has_labels) {
  check_positive_finite(temperature, "temperature");
  TORCH_CHECK_VALUE(std::isfinite(beta) && beta > 0 && beta < 1,
                    "beta must be strictly between 0 and 1, got ", beta);
  TORCH_CHECK_VALUE(std::isfinite(hard_weight) && hard_weight >= 0,
                    "hard_weight must be finite and >= 0, got ", hard_weight);
  TORCH_CHECK_VALUE(std::isfinite(soft_weight) && soft_weight >= 0,
                    "soft_weight must be finite and >= 0, got ", soft_weight);
  Div div;
  if (divergence == "forward_kl") {
    div = Div::Forward;
  } else if (divergence == "reverse_kl") {
    div = Div::Reverse;
  } else if (divergence == "jsd") {
    div = Div::JSD;
  } else {
    TORCH_CHECK_VALUE(false, "divergence must be 'forward_kl', 'reverse_kl' or 'jsd', got '",
                      std::string(divergence), "'");
  }
  const double t2 = scale_by_t2 ? temperature * temperature : 1.0;
  return {1.0 / temperature, beta, soft_weight * t2, has_labels ? hard_weight : 0.0,
          ignore_index, div};
}

// 0 · x = 0 even for x = ±inf: a term whose weight underflowed contributes nothing.
template <typename T>
C10_HOST_DEVICE inline T mul0(T f, T x) {
  return f == T(0) ? T(0) : f * x;
}

// An infinite gradient on a row's loss has no meaningful gradient for its logits (the
// reference's autograd gives NaN through the softmax): NaN, for the whole row.
template <typename T>
C10_HOST_DEVICE inline T finite_or_nan(T g) {
  return (g - g == T(0)) ? g : std::numeric_limits<T>::quiet_NaN();
}

// A row's gradient coefficients for a gradient gr on its loss: c_soft multiplies
// ∂D/∂(s/T), c_hard the hard term. An infinite gr, or a NaN among the row's statistics
// `st`, makes the whole row's gradient NaN (as the reference's autograd gives), not only
// the entries the NaN touches.
template <typename T>
struct GradCoefs {
  T c_soft, c_hard;
};

template <typename T>
C10_HOST_DEVICE inline GradCoefs<T> grad_coefs(T gr, const T* st, T soft_coef, T hard_coef,
                                               T inv_t) {
  gr = finite_or_nan(gr);
  bool nan = false;
  for (int k = 0; k < kStats; ++k) nan = nan || st[k] != st[k];
  return {nan ? std::numeric_limits<T>::quiet_NaN() : gr * soft_coef * inv_t, gr * hard_coef};
}

// new_max - old_max, with -inf - -inf = 0 (an empty or fully masked slice stays so).
template <typename T>
C10_HOST_DEVICE inline T shift(T new_max, T old_max) {
  return new_max == old_max ? T(0) : new_max - old_max;
}

template <typename T>
struct RowAcc {
  T m_s = -std::numeric_limits<T>::infinity();  // running max of student logits
  T m_t = -std::numeric_limits<T>::infinity();  // running max of teacher logits
  T z_s = 0;  // Σ exp((s - m_s)/T)
  T z_t = 0;  // Σ exp((t - m_t)/T)
  T z1 = 0;   // Σ exp(s - m_s), the softmax at T = 1 of the hard-label term
  T w = 0;    // the divergence's weighted sum (see the header comment)

  // Re-express the sums relative to larger maxima (new_s >= m_s, new_t >= m_t).
  C10_HOST_DEVICE void rescale(T new_s, T new_t, T inv_t, Div div) {
    const T ds = shift(new_s, m_s), dt = shift(new_t, m_t);
    if (ds == T(0) && dt == T(0)) return;
    const T fs = std::exp(-ds * inv_t), ft = std::exp(-dt * inv_t);
    if (div == Div::Forward) {
      if (z_t > T(0)) w = mul0(ft, w + z_t * (ds - dt) * inv_t);
    } else if (div == Div::Reverse) {
      if (z_s > T(0)) w = mul0(fs, w + z_s * (dt - ds) * inv_t);
    }
    z_s *= fs;
    z_t *= ft;
    z1 *= std::exp(-ds);
    m_s = new_s;
    m_t = new_t;
  }

  C10_HOST_DEVICE void merge(RowAcc o, T inv_t, Div div) {
    const T ms = m_s > o.m_s ? m_s : o.m_s, mt = m_t > o.m_t ? m_t : o.m_t;
    rescale(ms, mt, inv_t, div);
    o.rescale(ms, mt, inv_t, div);
    z_s += o.z_s;
    z_t += o.z_t;
    z1 += o.z1;
    w += o.w;
  }
};

// log(β e^x + (1-β) e^y) in log space (log_b = log β, log_b1 = log(1-β)): the JSD
// mixture of two subnormal probabilities rounds to 0 in linear space, its log does not.
// Both -inf gives -inf; NaN propagates.
template <typename T>
C10_HOST_DEVICE inline T log_mix(T x, T y, T log_b, T log_b1) {
  x += log_b;
  y += log_b1;
  const T m = x > y ? x : y;
  if (m == -std::numeric_limits<T>::infinity()) return m;
  const T d = x > y ? x - y : y - x;
  return m + std::log1p(std::exp(-d));
}

// Finishes a row: fills stats (except kDiv for JSD, which needs a second pass) and
// returns the divergence for forward/reverse KL.
template <typename T>
C10_HOST_DEVICE inline T finish_row(const RowAcc<T>& a, Div div, T* stats) {
  const T log_zs = std::log(a.z_s), log_zt = std::log(a.z_t);
  stats[kMaxS] = a.m_s;
  stats[kLogZS] = log_zs;
  stats[kMaxT] = a.m_t;
  stats[kLogZT] = log_zt;
  stats[kLse1] = a.m_s + std::log(a.z1);
  T d = 0;
  if (div == Div::Forward) d = a.w / a.z_t - log_zt + log_zs;
  if (div == Div::Reverse) d = a.w / a.z_s - log_zs + log_zt;
  stats[kDiv] = d;
  stats[kTail] = 0;
  return d;
}

// The top-k tail bucket. A teacher kept as K log-probabilities leaves the mass
// 1 − Σ_k p_t[i_k] on the other classes; as one more bin against the student's remaining
// mass P_tail = 1 − Σ_k p_s[i_k] it adds q_tail (log q_tail − log P_tail) to the divergence,
// and the student's gradient off the K classes becomes (1 − r) p_s, r = q_tail / P_tail (on
// the K classes it stays p_s − q). Sums of K rounded probabilities are only good to about
// 2^-20 near 1, so the teacher's tail counts as empty below that (-inf: the values held all
// the mass, or more, e.g. logits instead of log-probs), and the student's is floored there.
constexpr double kEmptyTail = 1.0 / (1 << 20);

template <typename T>
C10_HOST_DEVICE inline T log_teacher_rest(T mass) {
  return T(1) - mass < T(kEmptyTail) ? -std::numeric_limits<T>::infinity() : std::log1p(-mass);
}

template <typename T>
C10_HOST_DEVICE inline T log_student_rest(T mass) {
  const T most = T(1) - T(kEmptyTail);
  return std::log1p(-(mass > most ? most : mass));  // NaN stays NaN
}

// Adds the tail bin to the divergence d; returns r (0 when the teacher's tail is empty,
// whatever the student's; NaN goes on).
template <typename T>
C10_HOST_DEVICE inline T tail_term(T log_q_tail, T log_p_tail, T& d) {
  if (log_q_tail == -std::numeric_limits<T>::infinity()) return T(0);
  const T log_r = log_q_tail - log_p_tail;
  d += std::exp(log_q_tail) * log_r;
  return std::exp(log_r);
}

}  // namespace ptcore::kd

namespace ptcore::kd {

// Checks shared by both backends' kd_loss_rows / _kd_loss_rows_backward ([N, V] logits).
inline void check_inputs(const at::Tensor& student, const at::Tensor& teacher,
                         const std::optional<at::Tensor>& labels) {
  check_float_input(student, "student_logits");
  check_dim(student, 2, "student_logits");
  check_same(student, "student_logits", teacher, "teacher_logits");
  TORCH_CHECK_VALUE(student.size(1) >= 1, "student_logits must have at least one class (V >= 1)");
  if (labels.has_value()) {
    check_index_tensor(*labels, student.size(0), student, "labels");
  }
}

inline void check_topk_inputs(const at::Tensor& student, const at::Tensor& values,
                              const at::Tensor& indices, const std::optional<at::Tensor>& labels) {
  check_float_input(student, "student_logits");
  check_dim(student, 2, "student_logits");
  TORCH_CHECK_VALUE(student.size(1) >= 1, "student_logits must have at least one class (V >= 1)");
  check_float_input(values, "teacher_values");
  check_dim(values, 2, "teacher_values");
  TORCH_CHECK_VALUE(values.size(0) == student.size(0), "teacher_values must have ",
                    student.size(0), " rows, got ", values.size(0));
  TORCH_CHECK_VALUE(values.size(1) <= student.size(1), "teacher_values has K=", values.size(1),
                    " classes but the student only V=", student.size(1));
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, "teacher_indices must be int64, got ",
                   indices.scalar_type());
  TORCH_CHECK_VALUE(indices.sizes() == values.sizes(), "teacher_indices must have the shape of "
                    "teacher_values ", values.sizes(), ", got ", indices.sizes());
  TORCH_CHECK(values.device() == student.device() && indices.device() == student.device(),
              "teacher_values and teacher_indices must be on ", student.device());
  if (labels.has_value()) check_index_tensor(*labels, student.size(0), student, "labels");
}

// The backward's own inputs: one gradient per row, and the forward's statistics.
inline void check_backward_args(const at::Tensor& grad_rows, const at::Tensor& stats, int64_t N,
                                at::ScalarType acc, const at::Device& device) {
  TORCH_CHECK(grad_rows.device() == device, "grad_rows must be on ", device, ", got ",
              grad_rows.device());
  TORCH_CHECK(stats.device() == device, "stats must be on ", device, ", got ", stats.device());
  TORCH_CHECK_VALUE(grad_rows.numel() == N, "grad_rows must have ", N, " entries, got ",
                    grad_rows.numel());
  TORCH_CHECK_VALUE(stats.dim() == 2 && stats.size(0) == N && stats.size(1) == kStats &&
                        stats.scalar_type() == acc,
                    "stats must be the [N, ", kStats, "] statistics of the forward pass");
}

inline at::ScalarType acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// A forward's outputs: the loss of each row [N] and the row statistics [N, kStats] that
// the backward reuses, in the accumulation dtype `acc`; and the student's gradient [N, V]
// in its own dtype when the forward computes it, else an empty [0] tensor.
struct RowOutputs {
  at::Tensor rows, stats, grad;
};

inline RowOutputs empty_row_outputs(const at::Tensor& student, at::ScalarType acc,
                                    bool with_grad) {
  const auto options = student.options().dtype(acc);
  return {at::empty({student.size(0)}, options), at::empty({student.size(0), kStats}, options),
          with_grad ? at::empty_like(student, at::MemoryFormat::Contiguous)
                    : at::empty({0}, student.options())};
}

// A backward's per-row inputs, checked and contiguous: the gradient of each row's loss as
// [N] in `acc`, and the forward's statistics.
struct RowGradInputs {
  at::Tensor grad_rows, stats;
};

inline RowGradInputs backward_row_inputs(const at::Tensor& grad_rows, const at::Tensor& stats,
                                         const at::Tensor& student, at::ScalarType acc) {
  const int64_t N = student.size(0);
  check_backward_args(grad_rows, stats, N, acc, student.device());
  return {grad_rows.reshape({N}).to(acc).contiguous(), stats.contiguous()};
}

}  // namespace ptcore::kd
