// The feature cache's argument checks (declared in cache_entry.h), shared by the CPU and
// CUDA backends, and built into the emulated CUDA kernels' test library too.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <array>

#include "cache_entry.h"
#include "common.h"

namespace ptcore {

void check_quantize_args(const at::Tensor& x) {
  check_dim(x, 2, "x");
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16,
                   "x must be float32, float16 or bfloat16, got ", dt);
}

void check_gather_args(const at::Tensor& store, const c10::optional<at::Tensor>& scales,
                       const at::Tensor& indices, at::ScalarType dtype) {
  check_dim(store, 2, "store");
  const auto st = store.scalar_type();
  TORCH_CHECK_TYPE(st == at::kChar || st == at::kFloat || st == at::kHalf || st == at::kBFloat16,
                   "store must be int8, float32, float16 or bfloat16, got ", st);
  // A store is the cache itself: copying it to make it contiguous would double its memory.
  TORCH_CHECK_VALUE(store.is_contiguous(), "store must be contiguous");
  if (st == at::kChar) {
    TORCH_CHECK_VALUE(scales.has_value(), "scales are required when store is int8");
    const auto& s = *scales;
    TORCH_CHECK_TYPE(s.scalar_type() == at::kFloat, "scales must be float32, got ",
                     s.scalar_type());
    check_dim(s, 1, "scales");
    TORCH_CHECK_VALUE(s.size(0) == store.size(0), "scales must have one entry per store row (",
                      store.size(0), "), got ", s.size(0));
    TORCH_CHECK_VALUE(s.is_contiguous(), "scales must be contiguous");
    TORCH_CHECK(s.device() == store.device(), "scales must be on ", store.device(),
                " like store, got ", s.device());
  } else {
    TORCH_CHECK_VALUE(!scales.has_value(), "scales must be None when store is ", st,
                      " (they belong to int8 stores)");
  }
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, "indices must be int64, got ",
                   indices.scalar_type());
  check_dim(indices, 1, "indices");
  TORCH_CHECK(indices.device() == store.device(), "indices must be on ", store.device(),
              " like store, got ", indices.device());
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "dtype must be float32, float16 or bfloat16, got ", dtype);
}

void check_gather_out(const at::Tensor& out, const at::Tensor& store,
                      const c10::optional<at::Tensor>& scales, const at::Tensor& indices,
                      at::ScalarType dtype) {
  const std::array<int64_t, 2> shape{indices.size(0), store.size(1)};
  TORCH_CHECK_VALUE(out.sizes() == at::IntArrayRef(shape), "out must have shape [",
                    shape[0], ", ", shape[1], "] (indices × store columns), got ", out.sizes());
  TORCH_CHECK_TYPE(out.scalar_type() == dtype, "out must be ", dtype, " like dtype, got ",
                   out.scalar_type());
  TORCH_CHECK(out.device() == store.device(), "out must be on ", store.device(),
              " like store, got ", out.device());
  TORCH_CHECK_VALUE(out.is_contiguous(), "out must be contiguous");
  // Rows are read while out is written: an overlap would read rows already overwritten.
  const auto overlaps = [&](const at::Tensor& t) {
    return out.numel() > 0 && t.numel() > 0 &&
           at::get_overlap_status(out, t) != at::MemOverlapStatus::No;
  };
  TORCH_CHECK_VALUE(!overlaps(store), "out must not overlap store");
  TORCH_CHECK_VALUE(!(scales.has_value() && overlaps(*scales)), "out must not overlap scales");
  TORCH_CHECK_VALUE(!overlaps(indices), "out must not overlap indices");
}

}  // namespace ptcore
