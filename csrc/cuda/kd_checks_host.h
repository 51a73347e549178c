// The KD ops' data checks on CUDA: labels in range, top-k classes in range and distinct,
// found on the device (one read back per call) and raised as the CPU backend raises them.
// Over a Backend that launches the kernels (cuda/cuda_backend.cuh, or the emulation's).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "cuda/first_bad.cuh"
#include "cuda/kd_checks.h"
#include "cuda/kd_checks_kernels.cuh"
#include "cuda/launch_config.h"
#include "data_checks.h"

namespace ptcore::cuda {

template <typename Backend>
void check_kd_data(const at::Tensor* labels, int64_t V, int64_t ignore_index,
                   const at::Tensor* topk_indices) {
  if (!input_checks_enabled()) return;
  const bool has_topk = topk_indices != nullptr && topk_indices->numel() > 0;
  if (labels == nullptr && !has_topk) return;
  const at::Tensor& like = labels != nullptr ? *labels : *topk_indices;
  FirstBad first(like, 2);  // slot 0: top-k rows, slot 1: labels (the CPU's order)
  at::Tensor sorted;
  if (has_topk) {
    const int64_t N = topk_indices->size(0), K = topk_indices->size(1);
    sorted = std::get<0>(topk_indices->sort(-1));
    Backend::launch(checks::bad_topk_kernel, check_blocks(N), kCheckThreads,
                    sorted.const_data_ptr<int64_t>(), N, K, V, first.ptr(0));
  }
  if (labels != nullptr && labels->numel() > 0) {
    const int64_t N = labels->numel();
    const int blocks = check_blocks((N + kCheckThreads - 1) / kCheckThreads);
    Backend::launch(checks::bad_labels_kernel, blocks, kCheckThreads,
                    labels->const_data_ptr<int64_t>(), N, V, ignore_index, first.ptr(1));
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
