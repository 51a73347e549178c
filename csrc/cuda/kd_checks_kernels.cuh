// The KD ops' data-check kernels: bad labels, and bad rows of sorted top-k classes, each
// reported with atomicMin (cuda/first_bad.cuh). Included by one translation unit per build.
#pragma once

#include <cstdint>

#include "cuda/first_bad.cuh"
#include "cuda/launch_config.h"
#include "data_checks.h"

namespace ptcore::cuda::checks {

__global__ void __launch_bounds__(kCheckThreads)
    bad_labels_kernel(const int64_t* __restrict__ labels,  // [N]
                      int64_t N, int64_t V, int64_t ignore_index, unsigned long long* first) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t y = labels[i];
    if (!label_ok(y, V, ignore_index)) report_bad(first, i);
  }
}

// Rows of top-k classes sorted ascending: out of range at either end, or two equal
// neighbours. A block per row (grid-stride), its threads over the K entries.
__global__ void __launch_bounds__(kCheckThreads)
    bad_topk_kernel(const int64_t* __restrict__ sorted,  // [N, K]
                    int64_t N, int64_t K, int64_t V, unsigned long long* first) {
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const int64_t* row = sorted + i * K;
    bool bad = false;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
      const int64_t c = row[k];
      bad = bad || c < 0 || c >= V || (k > 0 && row[k - 1] == c);
    }
    if (bad) report_bad(first, i);
  }
}

}  // namespace ptcore::cuda::checks
