// Data checks of the KD ops on CUDA: labels in range, top-k classes in range and distinct,
// found on the device (one read back per call) and raised as the CPU backend raises them.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <vector>

#include "cuda/first_bad.cuh"
#include "cuda/kd_checks.h"
#include "data_checks.h"

namespace ptcore::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
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
__global__ void __launch_bounds__(kThreads)
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

int blocks_for(int64_t work) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(work, 1), 65535));
}

}  // namespace

void check_kd_data(const at::Tensor* labels, int64_t V, int64_t ignore_index,
                   const at::Tensor* topk_indices) {
  if (!input_checks_enabled()) return;
  const bool has_topk = topk_indices != nullptr && topk_indices->numel() > 0;
  if (labels == nullptr && !has_topk) return;
  const at::Tensor& like = labels != nullptr ? *labels : *topk_indices;
  FirstBad first(like, 2);  // slot 0: top-k rows, slot 1: labels (the CPU's order)
  auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor sorted;
  if (has_topk) {
    const int64_t N = topk_indices->size(0), K = topk_indices->size(1);
    sorted = std::get<0>(topk_indices->sort(-1));
    bad_topk_kernel<<<blocks_for(N), kThreads, 0, stream>>>(sorted.const_data_ptr<int64_t>(), N,
                                                            K, V, first.ptr(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (labels != nullptr && labels->numel() > 0) {
    const int64_t N = labels->numel();
    bad_labels_kernel<<<blocks_for((N + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        labels->const_data_ptr<int64_t>(), N, V, ignore_index, first.ptr(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const std::vector<int64_t> bad = first.read_all();
  if (bad[0] >= 0) {
    const at::Tensor row = (*topk_indices)[bad[0]].cpu();
    std::vector<int64_t> scratch;
    check_topk_row(row.const_data_ptr<int64_t>(), row.numel(), bad[0], V, scratch);
  }
  if (bad[1] >= 0) check_label((*labels)[bad[1]].item<int64_t>(), bad[1], V, ignore_index);
}

}  // namespace ptcore::cuda
