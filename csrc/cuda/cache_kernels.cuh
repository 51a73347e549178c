// The feature cache's CUDA kernels: block-per-row int8 quantization and a row-parallel fused
// gather + dequantize, both reading 16 bytes per thread per step. Launched by
// cuda/cache_host.h; compiled by nvcc for the GPU and by the host compiler for the emulation
// (tests/emulated).
#pragma once

#include <cstdint>

#include "cuda/first_bad.cuh"
#include "cuda/launch_config.h"
#include "cuda/reduce.cuh"
#include "data_checks.h"

namespace ptcore::cuda::cache {

constexpr int kVecBytes = 16;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements of T in one 16-byte load.
template <typename T>
constexpr int pack_of() {
  return kVecBytes / sizeof(T);
}

// A max that lets NaN win (fmaxf drops it), so a row holding NaN gets a NaN scale.
struct NanMax {
  __device__ float operator()(float a, float b) const { return (a != a || a > b) ? a : b; }
};

// One block per row: a NaN-aware max|x| reduction, then the codes. N: elements per load
// (1 when the rows are not 16-byte aligned).
template <typename T, int N>
__global__ void quantize_rows_kernel(const T* __restrict__ x,      // [M, D]
                                     int8_t* __restrict__ codes,   // [M, D]
                                     float* __restrict__ scales,   // [M]
                                     int64_t d) {
  __shared__ float smem[kCacheThreads / kWarp];
  const T* xr = x + static_cast<int64_t>(blockIdx.x) * d;
  int8_t* cr = codes + static_cast<int64_t>(blockIdx.x) * d;
  const int64_t step = static_cast<int64_t>(blockDim.x) * N;
  float amax = 0.f;
  for (int64_t j = threadIdx.x * N; j < d; j += step) {
    const auto p = *reinterpret_cast<const Pack<T, N>*>(xr + j);
#pragma unroll
    for (int k = 0; k < N; ++k) amax = NanMax{}(amax, fabsf(static_cast<float>(p.v[k])));
  }
  amax = block_allreduce(amax, NanMax{}, 0.f, smem);
  const float scale = amax / 127.f;  // IEEE division (no fast-math): matches the reference
  const bool usable = isfinite(scale) && scale > 0.f;  // else: zero codes, see the docs
  if (threadIdx.x == 0) scales[blockIdx.x] = scale;
  for (int64_t j = threadIdx.x * N; j < d; j += step) {
    const auto p = *reinterpret_cast<const Pack<T, N>*>(xr + j);
    Pack<int8_t, N> c;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float q = fminf(127.f, fmaxf(-127.f, static_cast<float>(p.v[k]) / scale));
      c.v[k] = usable ? static_cast<int8_t>(rintf(q)) : int8_t(0);  // rintf: half to even
    }
    *reinterpret_cast<Pack<int8_t, N>*>(cr + j) = c;
  }
}

// blockDim = (threads per row, rows per block); a grid-stride loop over output rows. An
// out-of-range index is never read: its output row is filled with NaN and, when
// `first_bad` is given, its position is reported there for the host to raise on.
template <typename In, typename Out, int N>
__global__ void gather_rows_kernel(const In* __restrict__ store,         // [M, D]
                                   const float* __restrict__ scales,     // [M] or null
                                   const int64_t* __restrict__ indices,  // [B]
                                   Out* __restrict__ out,                // [B, D]
                                   unsigned long long* first_bad,        // [1] or null
                                   int64_t m, int64_t b, int64_t d) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * N;
  const int64_t rows_per_grid = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; i < b;
       i += rows_per_grid) {
    const int64_t r = indices[i];
    const bool ok = gather_index_ok(r, m);
    if (!ok && first_bad != nullptr && threadIdx.x == 0) report_bad(first_bad, i);
    const In* src = store + (ok ? r : 0) * d;
    const float s = scales != nullptr && ok ? scales[r] : 1.f;
    Out* dst = out + i * d;
    for (int64_t j = threadIdx.x * N; j < d; j += step) {
      Pack<Out, N> o;
      if (ok) {
        const auto p = *reinterpret_cast<const Pack<In, N>*>(src + j);
#pragma unroll
        for (int k = 0; k < N; ++k) o.v[k] = static_cast<Out>(static_cast<float>(p.v[k]) * s);
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) o.v[k] = static_cast<Out>(NAN);
      }
      *reinterpret_cast<Pack<Out, N>*>(dst + j) = o;
    }
  }
}

}  // namespace ptcore::cuda::cache
