// Reading rows of logits in CUDA kernels (a block per row or per slice of a row, 16-byte
// loads), and the launch helpers shared by the loss kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <type_traits>

#include "cuda/launch_config.h"
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

// The columns of a row one block visits when several blocks share it: its packs (or, read
// element by element, its elements) are cut into slices of `per` packs (per · P elements),
// block `index` of `count` takes slice `index`, and the last block also whatever is left.
// Part{0, 1, 0} is the whole row. No division: 64-bit ones are calls that made ptxas spill.
struct Part {
  int64_t index, count, per;
};

// Visits this thread's share of part `part` of one or more rows of length V: f(j, n, x...)
// gets n (a compile-time constant) consecutive elements from column j of each row, as
// floats. With `vec` (every row pointer has the same offset modulo 16 bytes), a row is read
// as a scalar head up to its first 16-byte boundary, 16-byte packs, and a scalar tail, so
// odd V and misaligned rows keep vector loads; without it, one element at a time. Each of
// the three is sliced as above (whole packs: loads stay aligned; the head and tail, shorter
// than a pack, fall to the first block), so the parts cover every column once.
template <typename F, typename scalar_t, typename... More>
__device__ __forceinline__ void for_each_pack(int64_t V, bool vec, Part part, F&& f,
                                              const scalar_t* row, const More*... more) {
  constexpr int P = pack_size<scalar_t>();
  int64_t head = V, packs = 0;
  if (vec) {
    const auto mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % kVecBytes);
    head = mis == 0 ? 0 : (kVecBytes - mis) / static_cast<int64_t>(sizeof(scalar_t));
    head = head < V ? head : V;
    packs = (V - head) / P;
  }
  // This part's [lo, hi) of n things cut in slices of `per` (empty when lo >= hi).
  auto slice = [&](int64_t n, int64_t per, int64_t& lo, int64_t& hi) {
    lo = part.index * per;
    hi = part.index == part.count - 1 ? n : (lo + per < n ? lo + per : n);
  };
  auto scalar = [&](int64_t j) {
    f(j, std::integral_constant<int, 1>{}, Floats<1>{{static_cast<float>(row[j])}},
      Floats<1>{{static_cast<float>(more[j])}}...);
  };
  int64_t lo, hi;
  slice(head, part.per * P, lo, hi);
  for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) scalar(j);
  slice(packs, part.per, lo, hi);
  for (int64_t k = lo + threadIdx.x; k < hi; k += blockDim.x) {
    f(head + k * P, std::integral_constant<int, P>{}, load_pack<P>(row + head, k),
      load_pack<P>(more + head, k)...);
  }
  const int64_t tail = head + packs * P;  // the scalar tail's first column
  slice(V - tail, part.per * P, lo, hi);
  for (int64_t j = tail + lo + threadIdx.x; j < tail + hi; j += blockDim.x) scalar(j);
}

// The whole row, read by one block.
template <typename F, typename scalar_t, typename... More>
__device__ __forceinline__ void for_each_pack(int64_t V, bool vec, F&& f, const scalar_t* row,
                                              const More*... more) {
  for_each_pack(V, vec, Part{0, 1, 0}, static_cast<F&&>(f), row, more...);
}

// Whether two tensors' base pointers lie at the same offset modulo 16 bytes (then their rows
// can be read and written in packs together).
__device__ __forceinline__ bool same_offset(const void* a, const void* b) {
  return reinterpret_cast<uintptr_t>(a) % kVecBytes == reinterpret_cast<uintptr_t>(b) % kVecBytes;
}

// Stores n values at column j of a row read by for_each_pack (a pack when n == P).
template <int n, typename scalar_t>
__device__ __forceinline__ void store_at(scalar_t* row, int64_t j, const Pack<scalar_t>& out) {
  if constexpr (n == pack_size<scalar_t>()) {
    *reinterpret_cast<Pack<scalar_t>*>(row + j) = out;
  } else {
    row[j] = out.v[0];
  }
}

// The shift applied before exp: a row max, or 0 while everything is -inf (no NaN).
__device__ __forceinline__ float base(float m) { return m == -INFINITY ? 0.f : m; }

// Whether rows of these [N, V] tensors can be read in packs together: every base pointer
// at the same offset modulo 16 bytes (then row i of each is too).
inline bool same_alignment(std::initializer_list<const at::Tensor*> xs) {
  const auto first = reinterpret_cast<uintptr_t>((*xs.begin())->const_data_ptr()) % kVecBytes;
  for (const at::Tensor* x : xs) {
    if (reinterpret_cast<uintptr_t>(x->const_data_ptr()) % kVecBytes != first) return false;
  }
  return true;
}

inline const int64_t* labels_ptr(const std::optional<at::Tensor>& labels, at::Tensor& holder) {
  if (!labels.has_value()) return nullptr;
  holder = labels->contiguous();
  return holder.const_data_ptr<int64_t>();
}

}  // namespace ptcore::cuda
