// CUDA kernels of the fused KD loss: a block per row (or, when the rows are too few to fill
// the GPU, several, whose partial statistics are merged in a fixed order), 16-byte loads,
// online softmax; the forward writes the student's gradient too when autograd will want it.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <type_traits>

#include "cuda/kd_checks.h"
#include "cuda/kd_row.cuh"

namespace ptcore::cuda {
namespace {

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
    write_grad_row<kHard>(s, t, grad + i * V, V, vec, part, st, c, counts, label, h);
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

struct Prepared {
  kd::Options o;
  Hyper h;
};

Prepared prepare(const at::Tensor& student, const at::Tensor& teacher,
                 const std::optional<at::Tensor>& labels, double temperature,
                 c10::string_view divergence, double beta, double hard_weight, double soft_weight,
                 int64_t ignore_index, bool scale_by_t2) {
  kd::check_inputs(student, teacher, labels);
  TORCH_CHECK(student.size(0) <= std::numeric_limits<int32_t>::max(),
              "student_logits has too many rows for one launch: ", student.size(0));
  const kd::Options o = kd::make_options(temperature, divergence, beta, hard_weight, soft_weight,
                                         ignore_index, scale_by_t2, labels.has_value());
  const Hyper h{static_cast<float>(o.inv_t), static_cast<float>(o.beta),
                static_cast<float>(std::log(o.beta)), static_cast<float>(std::log1p(-o.beta)),
                static_cast<float>(o.soft_coef), static_cast<float>(o.hard_coef),
                o.ignore_index, o.div};
  return {o, h};
}

// Cached per device: this runs on every call.
int multiprocessors(c10::DeviceIndex device) {
  static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> cache{};
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

// Blocks per row: one, unless the rows are too few to fill the GPU (fewer than two blocks
// per SM); then about two blocks per SM, as long as each part keeps ~4 packs per thread of
// a full block (as threads_for gives a whole row), so the merges stay negligible. Only
// N < 2 · SMs splits: the parts (at most 2 · SMs) fit gridDim.y (65535).
struct Split {
  int64_t parts, per;  // blocks per row, packs per block (Part)
};

Split split_for(int64_t N, int64_t V, int pack, c10::DeviceIndex device) {
  const int64_t blocks = 2 * int64_t{multiprocessors(device)};
  const int64_t most = V / (int64_t{kMaxThreads} * pack * 4);
  const int64_t parts = std::max<int64_t>(1, std::min((blocks + N - 1) / N, most));
  return {parts, (V + pack * parts - 1) / (pack * parts)};  // per · pack · parts >= V
}

// The split path's workspaces are float tensors: a row's partial statistics and pair sums
// are stored as their float words.
constexpr int64_t kAccWords = sizeof(Acc) / sizeof(float);
constexpr int64_t kPairWords = sizeof(Pair) / sizeof(float);
static_assert(sizeof(Acc) % sizeof(float) == 0 && alignof(Acc) <= alignof(float));
static_assert(sizeof(Pair) % sizeof(float) == 0 && alignof(Pair) <= alignof(float));

std::tuple<at::Tensor, at::Tensor, at::Tensor> kd_loss_rows_cuda(
    const at::Tensor& student_in, const at::Tensor& teacher_in,
    const std::optional<at::Tensor>& labels, double temperature, c10::string_view divergence,
    double beta, double hard_weight, double soft_weight, int64_t ignore_index, bool scale_by_t2,
    double grad_scale, bool compute_grad) {
  const Prepared p = prepare(student_in, teacher_in, labels, temperature, divergence, beta,
                             hard_weight, soft_weight, ignore_index, scale_by_t2);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  const int64_t N = student.size(0), V = student.size(1);
  const kd::RowOutputs out = kd::empty_row_outputs(student, at::kFloat, compute_grad);
  if (N == 0) return {out.rows, out.stats, out.grad};
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  check_kd_data(lp != nullptr ? &lab : nullptr, V, ignore_index, nullptr);
  const bool vec = compute_grad ? same_alignment({&student, &teacher, &out.grad})
                                : same_alignment({&student, &teacher});
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_rows_cuda", AT_WRAP([&] {
    const scalar_t* s = student.const_data_ptr<scalar_t>();
    const scalar_t* t = teacher.const_data_ptr<scalar_t>();
    scalar_t* g = compute_grad ? out.grad.data_ptr<scalar_t>() : nullptr;
    float* rows = out.rows.data_ptr<float>();
    float* stats = out.stats.data_ptr<float>();
    const float gs = static_cast<float>(grad_scale);
    const int threads = threads_for(V, pack_size<scalar_t>());
    const Split split = split_for(N, V, pack_size<scalar_t>(), student.device().index());
    const int64_t parts = split.parts;
    auto launch = [&](auto hard) {
      constexpr bool kHard = decltype(hard)::value;
      if (parts == 1) {
        kd_forward_kernel<scalar_t, kHard><<<N, threads, 0, stream>>>(s, t, lp, rows, stats, g,
                                                                      V, p.h, gs, vec);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      const auto floats = student.options().dtype(at::kFloat);
      const at::Tensor acc_ws = at::empty({N, parts, kAccWords}, floats);
      Acc* acc = reinterpret_cast<Acc*>(acc_ws.data_ptr<float>());
      const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(parts));
      kd_split_stats_kernel<scalar_t, kHard><<<grid, threads, 0, stream>>>(s, t, acc, V,
                                                                          split.per, p.h, vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor pair_ws, row_stats_ws;  // JSD's second pass
      Pair* pairs = nullptr;
      float* row_stats = nullptr;
      if (p.h.div == Div::JSD) {
        pair_ws = at::empty({N, parts, kPairWords}, floats);
        row_stats_ws = at::empty({N, kd::kStats}, floats);
        pairs = reinterpret_cast<Pair*>(pair_ws.data_ptr<float>());
        row_stats = row_stats_ws.data_ptr<float>();
        kd_split_jsd_kernel<scalar_t><<<grid, threads, 0, stream>>>(s, t, acc, pairs, row_stats,
                                                                     V, split.per, p.h, vec);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      // Without a gradient to write, one block per row finishes it.
      const dim3 finish(static_cast<unsigned>(N), g != nullptr ? grid.y : 1u);
      kd_split_finish_kernel<scalar_t, kHard><<<finish, threads, 0, stream>>>(
          s, t, lp, acc, pairs, row_stats, rows, stats, g, parts, V, split.per, p.h, gs, vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (p.o.hard_coef != 0) {
      launch(std::true_type{});
    } else {
      launch(std::false_type{});
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return {out.rows, out.stats, out.grad};
}

// The forward validated labels; the backward gets the same tensors from autograd.
at::Tensor kd_loss_backward_cuda(const at::Tensor& grad_rows, const at::Tensor& student_in,
                                 const at::Tensor& teacher_in,
                                 const std::optional<at::Tensor>& labels,
                                 const at::Tensor& stats_in, double temperature,
                                 c10::string_view divergence, double beta, double hard_weight,
                                 double soft_weight, int64_t ignore_index, bool scale_by_t2) {
  const Prepared p = prepare(student_in, teacher_in, labels, temperature, divergence, beta,
                             hard_weight, soft_weight, ignore_index, scale_by_t2);
  const c10::cuda::CUDAGuard guard(student_in.device());
  const int64_t N = student_in.size(0), V = student_in.size(1);
  const kd::RowGradInputs in = kd::backward_row_inputs(grad_rows, stats_in, student_in, at::kFloat);
  const at::Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  at::Tensor grad = at::empty_like(student, at::MemoryFormat::Contiguous);
  if (N == 0) return grad;
  at::Tensor lab;
  const int64_t* lp = labels_ptr(labels, lab);
  const bool vec = same_alignment({&student, &teacher, &grad});
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(student.scalar_type(), "kd_loss_backward_cuda", AT_WRAP([&] {
    const Split split = split_for(N, V, pack_size<scalar_t>(), student.device().index());
    const dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>(split.parts));
    auto launch = [&](auto kernel) {
      kernel<<<grid, threads_for(V, pack_size<scalar_t>()), 0, stream>>>(
          in.grad_rows.const_data_ptr<float>(), student.const_data_ptr<scalar_t>(),
          teacher.const_data_ptr<scalar_t>(), lp, in.stats.const_data_ptr<float>(),
          grad.data_ptr<scalar_t>(), V, split.per, p.h, vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (p.o.hard_coef != 0) {
      launch(kd_backward_kernel<scalar_t, true>);
    } else {
      launch(kd_backward_kernel<scalar_t, false>);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("kd_loss_rows", &kd_loss_rows_cuda);
  m.impl("_kd_loss_rows_backward", &kd_loss_backward_cuda);
}

}  // namespace ptcore::cuda
