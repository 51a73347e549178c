// The KD ops' data checks built for the GPU (cuda/kd_checks_host.h): the one instance the
// KD ops' CUDA launchers call.
#include "cuda/cuda_backend.cuh"
#include "cuda/kd_checks_host.h"

namespace ptcore::cuda {

template void check_kd_data<CudaBackend>(const at::Tensor* labels, int64_t V,
                                         int64_t ignore_index, const at::Tensor* topk_indices);

}  // namespace ptcore::cuda
