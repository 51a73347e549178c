// Reading rows of logits in CUDA kernels (a block per row, 16-byte loads), and the launch
// helpers shared by the loss kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <type_traits>

#include "cuda/reduce.cuh"

namespace ptcore::cuda {

constexpr int kVecBytes = 16;

template <typename scalar_t>
constexpr int pack_size() {
  return kVecBytes / sizeof(scalar_t);
}

template <typename scalar_t>
struct alignas(kVecBytes) Pack {
  scalar_t v[pack_size<scalar_t>()];
};

template <int P>
struct Floats {
  float v[P];
  __device__ __forceinline__ float operator[](int i) const { return v[i]; }
};

template <int P, typename scalar_t>
__device__ __forceinline__ Floats<P> load_pack(const scalar_t* row, int64_t k) {
  const Pack<scalar_t> p = reinterpret_cast<const Pack<scalar_t>*>(row)[k];
  Floats<P> out;
#pragma unroll
  for (int e = 0; e < P; ++e) out.v[e] = static_cast<float>(p.v[e]);
  return out;
}

// Visits this thread's share of one or more rows of length V: f(j, n, x...) gets n (a
// compile-time constant) consecutive elements from column j of each row, as floats. Rows
// whose start is 16-byte aligned are read in packs of 16 bytes; others (and the tail) one
// element at a time.
template <typename F, typename scalar_t, typename... More>
__device__ __forceinline__ void for_each_pack(int64_t V, bool aligned, F&& f,
                                              const scalar_t* row, const More*... more) {
  constexpr int P = pack_size<scalar_t>();
  int64_t start = 0;
  if (aligned) {
    const int64_t packs = V / P;
    for (int64_t k = threadIdx.x; k < packs; k += blockDim.x) {
      f(k * P, std::integral_constant<int, P>{}, load_pack<P>(row, k), load_pack<P>(more, k)...);
    }
    start = packs * P;
  }
  for (int64_t j = start + threadIdx.x; j < V; j += blockDim.x) {
    f(j, std::integral_constant<int, 1>{}, Floats<1>{{static_cast<float>(row[j])}},
      Floats<1>{{static_cast<float>(more[j])}}...);
  }
}

// The shift applied before exp: a row max, or 0 while everything is -inf (no NaN).
__device__ __forceinline__ float base(float m) { return m == -INFINITY ? 0.f : m; }

// Threads per row-block: enough for ~4 packs each, 32..512.
inline int threads_for(int64_t V, int pack) {
  int threads = kWarp;
  while (threads < 512 && threads * pack * 4 < V) threads *= 2;
  return threads;
}

inline bool rows_aligned(const at::Tensor& x) {
  const auto bytes = x.size(1) * x.element_size();
  return reinterpret_cast<uintptr_t>(x.data_ptr()) % kVecBytes == 0 && bytes % kVecBytes == 0;
}

inline const int64_t* labels_ptr(const std::optional<at::Tensor>& labels, at::Tensor& holder) {
  if (!labels.has_value()) return nullptr;
  holder = labels->contiguous();
  return holder.const_data_ptr<int64_t>();
}

}  // namespace ptcore::cuda
