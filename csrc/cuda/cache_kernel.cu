// CUDA kernels of the feature-cache ops: block-per-row int8 quantization and a
// row-parallel fused gather + dequantize, both reading 16 bytes per thread per step.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "cuda/first_bad.cuh"
#include "cuda/reduce.cuh"
#include "cache_entry.h"
#include "data_checks.h"

namespace ptcore {

namespace cuda {
namespace {

constexpr int kVecBytes = 16;
constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements of T in one 16-byte load.
template <typename T>
constexpr int pack_of() {
  return kVecBytes / sizeof(T);
}

bool aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
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
  __shared__ float smem[kThreads / kWarp];
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

// Threads per row: the power of two covering a row's loads, at most a block.
int threads_per_row(int64_t d, int n) {
  const int64_t loads = (d + n - 1) / n;
  int t = 1;
  while (t < kThreads && t < loads) t *= 2;
  return t;
}

template <typename T, int N>
void launch_quantize(const at::Tensor& x, at::Tensor& codes, at::Tensor& scales) {
  const int64_t m = x.size(0), d = x.size(1);
  const int threads = std::max(kWarp, threads_per_row(d, N));  // block_allreduce: whole warps
  quantize_rows_kernel<T, N><<<m, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<T>(), codes.data_ptr<int8_t>(), scales.data_ptr<float>(), d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_cuda(const at::Tensor& x_in) {
  check_quantize_args(x_in);
  TORCH_CHECK(x_in.size(0) <= std::numeric_limits<int32_t>::max(),
              "x has too many rows for one grid: ", x_in.size(0));
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  auto codes = at::empty(x.sizes(), x.options().dtype(at::kChar));
  auto scales = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  if (x.size(0) == 0) return {codes, scales};
  AT_DISPATCH_V2(x.scalar_type(), "quantize_rows", AT_WRAP([&] {
    constexpr int N = pack_of<scalar_t>();
    if (x.size(1) % N == 0 && aligned(x.const_data_ptr(), kVecBytes)) {
      launch_quantize<scalar_t, N>(x, codes, scales);
    } else {
      launch_quantize<scalar_t, 1>(x, codes, scales);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return {codes, scales};
}

template <typename In, typename Out, int N>
void launch_gather(const at::Tensor& store, const float* scales, const at::Tensor& indices,
                   at::Tensor& out, unsigned long long* first_bad) {
  const int64_t b = out.size(0), d = out.size(1);
  const int tpr = threads_per_row(d, N);
  const dim3 block(tpr, kThreads / tpr);
  const int64_t blocks = std::min<int64_t>((b + block.y - 1) / block.y, 1 << 20);
  gather_rows_kernel<In, Out, N><<<blocks, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
      store.const_data_ptr<In>(), scales, indices.const_data_ptr<int64_t>(),
      out.data_ptr<Out>(), first_bad, store.size(0), b, d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Rows `indices` (contiguous) of the store into out, both already checked. With the input
// checks on, one device-to-host read per call; a bad index then raises what the CPU raises.
void gather_into(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                 const at::Tensor& indices, at::ScalarType dtype, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(store.device());
  if (indices.numel() == 0) return;
  c10::optional<FirstBad> bad;
  if (input_checks_enabled()) bad.emplace(indices);
  const float* sp = scales.has_value() ? scales->const_data_ptr<float>() : nullptr;
  AT_DISPATCH_V2(store.scalar_type(), "gather_rows", AT_WRAP([&] {
    using In = scalar_t;
    AT_DISPATCH_V2(dtype, "gather_rows", AT_WRAP([&] {
      constexpr int N = pack_of<In>();
      const bool vec = store.size(1) % N == 0 && aligned(store.const_data_ptr(), kVecBytes) &&
                       aligned(out.const_data_ptr(), N * sizeof(scalar_t));
      unsigned long long* fb = bad ? bad->ptr() : nullptr;
      if (vec) {
        launch_gather<In, scalar_t, N>(store, sp, indices, out, fb);
      } else {
        launch_gather<In, scalar_t, 1>(store, sp, indices, out, fb);
      }
    }), at::kFloat, at::kHalf, at::kBFloat16);
  }), at::kChar, at::kFloat, at::kHalf, at::kBFloat16);
  if (bad) {
    const int64_t pos = bad->read();
    if (pos >= 0) check_gather_index(indices[pos].item<int64_t>(), pos, store.size(0));
  }
}

}  // namespace
}  // namespace cuda
}  // namespace ptcore

TORCH_LIBRARY_IMPL(ptcore, CUDA, m) {
  m.impl("quantize_rows", &ptcore::cuda::quantize_rows_cuda);
  m.impl("gather_rows", &ptcore::gather_rows_entry<ptcore::cuda::gather_into>);
  m.impl("gather_rows.out", &ptcore::gather_rows_out_entry<ptcore::cuda::gather_into>);
}
