// Host entry of the KD ops' data checks on CUDA (defined in cuda/kd_checks_host.h, built for
// the GPU in cuda/kd_checks.cu).
#pragma once

#include <ATen/ATen.h>

namespace ptcore::cuda {

// Raises what the CPU backend raises for out-of-range labels (if given: contiguous [N]) or
// out-of-range / repeated top-k classes (if given: contiguous [N, K]); a no-op when the
// input checks are switched off. Costs one small device-to-host read.
template <typename Backend>
void check_kd_data(const at::Tensor* labels, int64_t V, int64_t ignore_index,
                   const at::Tensor* topk_indices);

}  // namespace ptcore::cuda
