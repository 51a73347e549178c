// Argument checks shared by every op and backend: each names the argument at fault.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

namespace ptcore {

// Logits and features: float32/16, bfloat16; float64 on CPU (for gradcheck).
inline void check_float_input(const at::Tensor& x, const char* name) {
  const auto dt = x.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 ||
                  (dt == at::kDouble && x.device().is_cpu());
  TORCH_CHECK_TYPE(ok, name, " must be float32, float16 or bfloat16 (float64 on CPU), got ",
                   dt, " on ", x.device());
}

inline void check_same(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                       const char* b_name) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), a_name, " and ", b_name,
                    " must have the same shape, got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), a_name, " and ", b_name,
                   " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.device() == b.device(), a_name, " and ", b_name,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_dim(const at::Tensor& x, int64_t dim, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == dim, name, " must be ", dim, "-D, got shape ", x.sizes());
}

inline void check_index_tensor(const at::Tensor& idx, int64_t rows, const at::Tensor& like,
                               const char* name) {
  TORCH_CHECK_TYPE(idx.scalar_type() == at::kLong, name, " must be int64, got ",
                   idx.scalar_type());
  check_dim(idx, 1, name);
  TORCH_CHECK_VALUE(idx.size(0) == rows, name, " must have ", rows, " entries, got ",
                    idx.size(0));
  TORCH_CHECK(idx.device() == like.device(), name, " must be on ", like.device(), ", got ",
              idx.device());
}

inline void check_positive_finite(double v, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(v) && v > 0, name, " must be finite and > 0, got ", v);
}

}  // namespace ptcore
