// The feature cache's argument checks and gather_rows entry points, shared by the CPU and
// CUDA backends: both check the same things the same way and differ only in how the rows
// are copied (`Into`). The checks are defined in cpu/cache_cpu.cpp.
#pragma once

#include <ATen/ATen.h>

namespace ptcore {

void check_quantize_args(const at::Tensor& x);
void check_gather_args(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                       const at::Tensor& indices, at::ScalarType dtype);
void check_gather_out(const at::Tensor& out, const at::Tensor& store,
                      const c10::optional<at::Tensor>& scales, const at::Tensor& indices,
                      at::ScalarType dtype);

// Rows `indices` (contiguous) of the store into out, both already checked.
using GatherInto = void (*)(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                            const at::Tensor& indices, at::ScalarType dtype, at::Tensor& out);

template <GatherInto Into>
at::Tensor gather_rows_entry(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                             const at::Tensor& indices, at::ScalarType dtype) {
  check_gather_args(store, scales, indices, dtype);
  auto out = at::empty({indices.size(0), store.size(1)}, store.options().dtype(dtype));
  Into(store, scales, indices.contiguous(), dtype, out);
  return out;
}

template <GatherInto Into>
void gather_rows_out_entry(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                           const at::Tensor& indices_in, at::ScalarType dtype,
                           at::Tensor& out) {
  check_gather_args(store, scales, indices_in, dtype);
  const auto indices = indices_in.contiguous();
  check_gather_out(out, store, scales, indices, dtype);
  Into(store, scales, indices, dtype, out);
}

}  // namespace ptcore
