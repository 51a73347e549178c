// Data-dependent checks of a user's indices (labels, top-k classes, gather rows), one row
// at a time. The CPU kernels run them over every row; the CUDA kernels flag the first bad
// row on the device and run the same check on that row on the host, so both backends raise
// the same exception with the same message, and a CUDA context is never poisoned.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace ptcore {

// Whether the data-dependent checks run on CUDA (one device-to-host read per call). On by
// default; users who validated their data switch them off with ptcore.set_input_checks.
bool input_checks_enabled();

inline void check_label(int64_t y, int64_t row, int64_t V, int64_t ignore_index) {
  TORCH_CHECK_VALUE(y == ignore_index || (y >= 0 && y < V), "labels must be in [0, ", V,
                    ") or ignore_index=", ignore_index, ", got ", y, " at row ", row);
}

inline void check_gather_index(int64_t r, int64_t pos, int64_t m) {
  TORCH_CHECK_INDEX(r >= 0 && r < m, "indices[", pos, "] = ", r,
                    " is out of range for a store of ", m, " rows (valid: 0 to ", m - 1,
                    "; negative indices are not accepted)");
}

// One row of top-k classes: each in [0, V), none repeated. `scratch` is reused across rows
// (O(K log K) per row, no allocation once it has grown).
inline void check_topk_row(const int64_t* idx, int64_t K, int64_t row, int64_t V,
                           std::vector<int64_t>& scratch) {
  if (K == 0) return;
  scratch.assign(idx, idx + K);
  std::sort(scratch.begin(), scratch.end());
  TORCH_CHECK_VALUE(scratch.front() >= 0 && scratch.back() < V, "teacher_indices must be in [0, ",
                    V, "), got ", scratch.front() < 0 ? scratch.front() : scratch.back(),
                    " in row ", row);
  TORCH_CHECK_VALUE(std::adjacent_find(scratch.begin(), scratch.end()) == scratch.end(),
                    "teacher_indices must not repeat a class within a row (row ", row, ")");
}

}  // namespace ptcore
