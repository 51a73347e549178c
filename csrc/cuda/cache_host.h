// The feature cache's host side on CUDA: the choice of vector width and the launches, over a
// Backend that launches the kernels (cuda/cuda_backend.cuh on a GPU, the emulation's on the
// CPU: tests/emulated). Arguments are checked by the entry points (cache_entry.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "cache_entry.h"
#include "cuda/cache_kernels.cuh"
#include "cuda/first_bad.cuh"
#include "cuda/launch_config.h"
#include "data_checks.h"

namespace ptcore::cuda::cache {

inline bool aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

template <typename Backend, typename T, int N>
void launch_quantize(const at::Tensor& x, at::Tensor& codes, at::Tensor& scales) {
  const int64_t m = x.size(0), d = x.size(1);
  Backend::launch(quantize_rows_kernel<T, N>, m, quantize_threads(d, N), x.const_data_ptr<T>(),
                  codes.data_ptr<int8_t>(), scales.data_ptr<float>(), d);
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x_in) {
  check_quantize_args(x_in);
  TORCH_CHECK(x_in.size(0) <= std::numeric_limits<int32_t>::max(),
              "x has too many rows for one grid: ", x_in.size(0));
  const auto x = x_in.contiguous();
  auto codes = at::empty(x.sizes(), x.options().dtype(at::kChar));
  auto scales = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  if (x.size(0) == 0) return {codes, scales};
  AT_DISPATCH_V2(x.scalar_type(), "quantize_rows", AT_WRAP([&] {
    constexpr int N = pack_of<scalar_t>();
    if (x.size(1) % N == 0 && aligned(x.const_data_ptr(), kVecBytes)) {
      launch_quantize<Backend, scalar_t, N>(x, codes, scales);
    } else {
      launch_quantize<Backend, scalar_t, 1>(x, codes, scales);
    }
  }), at::kFloat, at::kHalf, at::kBFloat16);
  return {codes, scales};
}

template <typename Backend, typename In, typename Out, int N>
void launch_gather(const at::Tensor& store, const float* scales, const at::Tensor& indices,
                   at::Tensor& out, unsigned long long* first_bad) {
  const int64_t b = out.size(0), d = out.size(1);
  const GatherShape shape = gather_shape(b, d, N);
  Backend::launch(gather_rows_kernel<In, Out, N>, shape.blocks,
                  dim3(shape.threads_per_row, shape.rows_per_block), store.const_data_ptr<In>(),
                  scales, indices.const_data_ptr<int64_t>(), out.data_ptr<Out>(), first_bad,
                  store.size(0), b, d);
}

// Rows `indices` (contiguous) of the store into out, both already checked. With the input
// checks on, one device-to-host read per call; a bad index then raises what the CPU raises.
template <typename Backend>
void gather_into(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                 const at::Tensor& indices, at::ScalarType dtype, at::Tensor& out) {
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
        launch_gather<Backend, In, scalar_t, N>(store, sp, indices, out, fb);
      } else {
        launch_gather<Backend, In, scalar_t, 1>(store, sp, indices, out, fb);
      }
    }), at::kFloat, at::kHalf, at::kBFloat16);
  }), at::kChar, at::kFloat, at::kHalf, at::kBFloat16);
  if (bad) {
    const int64_t pos = bad->read();
    if (pos >= 0) check_gather_index(indices[pos].item<int64_t>(), pos, store.size(0));
  }
}

}  // namespace ptcore::cuda::cache
