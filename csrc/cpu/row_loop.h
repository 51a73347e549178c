// Vectorized walks over rows of logits, shared by the CPU loss kernels.
#pragma once

#include <limits>

#include "cpu/vec_io.h"

namespace ptcore::cpu {

// Calls f(j, n, v...) for the vectors of each row[begin:end], one v per row pointer. The
// tail vector is padded with -inf, which adds nothing to any sum; n counts its real elements.
template <typename F, typename scalar_t, typename... More>
inline void for_each_vec(int64_t begin, int64_t end, F&& f, const scalar_t* row,
                         const More*... more) {
  constexpr int64_t L = lanes<scalar_t>();
  const auto ninf = -std::numeric_limits<acc_t<scalar_t>>::infinity();
  int64_t j = begin;
  for (; j + L <= end; j += L) f(j, L, load(row + j), load(more + j)...);
  if (j < end) {
    const int64_t n = end - j;
    f(j, n, load_partial(row + j, n, ninf), load_partial(more + j, n, ninf)...);
  }
}

// The shift applied before exp: a row max, or 0 while everything so far is -inf (an
// all -inf prefix has nothing to rescale, and -inf - -inf would be NaN).
template <typename A>
inline A base(A m) {
  return m == -std::numeric_limits<A>::infinity() ? A(0) : m;
}

}  // namespace ptcore::cpu
