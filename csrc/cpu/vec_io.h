// Vector loads/stores between tensors of any float dtype and Vectorized<opmath> lanes.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

namespace ptcore::cpu {

using at::vec::Vectorized;

template <typename T>
using acc_t = at::opmath_type<T>;  // float for half/bfloat16/float, double for double

template <typename T>
using AccVec = Vectorized<acc_t<T>>;

// Elements per vector step for storage type T (the width of one AccVec).
template <typename T>
constexpr int64_t lanes() {
  return AccVec<T>::size();
}

inline Vectorized<float> load(const float* p) { return Vectorized<float>::loadu(p); }
inline Vectorized<double> load(const double* p) { return Vectorized<double>::loadu(p); }
inline void store(float* p, const Vectorized<float>& v) { v.store(p); }
inline void store(double* p, const Vectorized<double>& v) { v.store(p); }

// The first n (< lanes) elements; the other lanes hold `fill`.
template <typename T>
inline AccVec<T> load_partial(const T* p, int64_t n, acc_t<T> fill) {
  __at_align__ acc_t<T> buf[lanes<T>()];
  for (int64_t i = 0; i < lanes<T>(); ++i) buf[i] = i < n ? static_cast<acc_t<T>>(p[i]) : fill;
  return AccVec<T>::loadu(buf);
}

template <typename T>
inline void store_partial(T* p, const AccVec<T>& v, int64_t n) {
  __at_align__ acc_t<T> buf[lanes<T>()];
  v.store(buf);
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(buf[i]);
}

#if defined(CPU_CAPABILITY_AVX2)
inline Vectorized<float> load(const at::BFloat16* p) {
  Vectorized<float> out;
  at::vec::load_to_float(p, out);
  return out;
}
inline Vectorized<float> load(const at::Half* p) {
  Vectorized<float> out;
  at::vec::load_to_float(p, out);
  return out;
}
inline void store(at::BFloat16* p, const Vectorized<float>& v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), at::vec::cvtfp32_bf16(__m256(v)));
}
inline void store(at::Half* p, const Vectorized<float>& v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), at::vec::cvtfp32_fp16(__m256(v)));
}
#else
inline Vectorized<float> load(const at::BFloat16* p) { return load_partial(p, lanes<at::BFloat16>(), 0.f); }
inline Vectorized<float> load(const at::Half* p) { return load_partial(p, lanes<at::Half>(), 0.f); }
inline void store(at::BFloat16* p, const Vectorized<float>& v) { store_partial(p, v, lanes<at::BFloat16>()); }
inline void store(at::Half* p, const Vectorized<float>& v) { store_partial(p, v, lanes<at::Half>()); }
#endif

template <typename A>
inline A hsum(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](Vectorized<A>& x, Vectorized<A>& y) { return x + y; }, v);
}
template <typename A>
inline A hmax(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>(
      [](Vectorized<A>& x, Vectorized<A>& y) { return at::vec::maximum(x, y); }, v);
}

// exp with the accuracy torch's own CPU softmax uses (exp_u20 for float). exp_u20 clamps
// its input, which turns NaN and x > log(FLT_MAX) into finite numbers: those lanes get
// x + inf instead (NaN stays NaN, overflow becomes inf), one compare and one blend.
// Below log(FLT_MIN) it returns 0 rather than a subnormal; sums over a row (whose max
// term is 1) cannot tell.
inline Vectorized<float> vexp(const Vectorized<float>& x) {
  const Vectorized<float> in_range = x <= Vectorized<float>(88.3762626647949f);
  return Vectorized<float>::blendv(x + Vectorized<float>(INFINITY), x.exp_u20(), in_range);
}
inline Vectorized<double> vexp(const Vectorized<double>& x) { return x.exp(); }

}  // namespace ptcore::cpu
