// The feature cache's ops, emulated (csrc/cuda/cache_host.h).
#include <ATen/ATen.h>

#include <cuda_runtime.h>

#include "cache_entry.h"
#include "cuda/cache_host.h"
#include "emu_backend.h"
#include "emu_ops.h"

namespace ptcore_emu {

namespace cache = ptcore::cuda::cache;

std::tuple<Tensor, Tensor> quantize_rows(const Tensor& x) {
  const GuardedScope scope;
  return cache::quantize_rows<EmuBackend>(guarded(x));
}

Tensor gather_rows(const Tensor& store, const OptionalTensor& scales, const Tensor& indices,
                   at::ScalarType dtype) {
  const GuardedScope scope;
  return ptcore::gather_rows_entry<cache::gather_into<EmuBackend>>(
      guarded(store), guarded(scales), guarded(indices), dtype);
}

void gather_rows_out(const Tensor& store, const OptionalTensor& scales, const Tensor& indices,
                     at::ScalarType dtype, Tensor& out) {
  const GuardedScope scope;
  Tensor into = guarded(out);
  ptcore::gather_rows_out_entry<cache::gather_into<EmuBackend>>(
      guarded(store), guarded(scales), guarded(indices), dtype, into);
  out.copy_(into);
}

}  // namespace ptcore_emu
