// Data-dependent checks of a user's indices (labels, top-k classes, gather rows), one row
// at a time. The CPU kernels run them over every row; the CUDA kernels flag the first bad
// row on the device and run the same check on that row on the host, so both backends raise
// the same exception with the same message, and a CUDA context is never poisoned.
#pragma once

#include <ATen/ATen.h>

#include <c10/macros/Macros.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

namespace ptcore {

// Whether the data-dependent checks run on CUDA (one device-to-host read per call). On by
// default; users who validated their data switch them off with ptcore.set_input_checks.
bool input_checks_enabled();

// The conditions themselves, shared by the CPU scans, the CUDA kernels and the checks below.
C10_HOST_DEVICE inline bool label_ok(int64_t y, int64_t V, int64_t ignore_index) {
  return y == ignore_index || (y >= 0 && y < V);
}

C10_HOST_DEVICE inline bool gather_index_ok(int64_t r, int64_t m) { return r >= 0 && r < m; }

// A row of top-k classes sorted ascending: in [0, V) (its ends), no two equal neighbours.
inline bool sorted_topk_row_ok(const std::vector<int64_t>& sorted, int64_t V) {
  return sorted.empty() || (sorted.front() >= 0 && sorted.back() < V &&
                            std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
}

// `scratch` ← the row's K classes, sorted (O(K log K); reused across rows, no allocation
// once it has grown).
inline void sort_topk_row(const int64_t* idx, int64_t K, std::vector<int64_t>& scratch) {
  scratch.assign(idx, idx + K);
  std::sort(scratch.begin(), scratch.end());
}

inline void check_label(int64_t y, int64_t row, int64_t V, int64_t ignore_index) {
  TORCH_CHECK_VALUE(label_ok(y, V, ignore_index), "labels must be in [0, ", V,
                    ") or ignore_index=", ignore_index, ", got ", y, " at row ", row);
}

inline void check_gather_index(int64_t r, int64_t pos, int64_t m) {
  TORCH_CHECK_INDEX(gather_index_ok(r, m), "indices[", pos, "] = ", r,
                    " is out of range for a store of ", m, " rows (valid: 0 to ", m - 1,
                    "; negative indices are not accepted)");
}

// One row of top-k classes: each in [0, V), none repeated.
inline void check_topk_row(const int64_t* idx, int64_t K, int64_t row, int64_t V,
                           std::vector<int64_t>& scratch) {
  if (K == 0) return;
  sort_topk_row(idx, K, scratch);
  TORCH_CHECK_VALUE(scratch.front() >= 0 && scratch.back() < V, "teacher_indices must be in [0, ",
                    V, "), got ", scratch.front() < 0 ? scratch.front() : scratch.back(),
                    " in row ", row);
  TORCH_CHECK_VALUE(sorted_topk_row_ok(scratch, V),
                    "teacher_indices must not repeat a class within a row (row ", row, ")");
}

// The first bad row found by CPU threads scanning rows in parallel: report(i) keeps the
// smallest i; a scan may stop early once its rows lie past first().
class FirstBadRow {
 public:
  void report(int64_t i) {
    int64_t seen = first_.load();
    while (i < seen && !first_.compare_exchange_weak(seen, i)) {
    }
  }
  int64_t first() const { return first_.load(std::memory_order_relaxed); }
  // The first bad row, or -1 when none was reported.
  int64_t get() const {
    const int64_t row = first_.load();
    return row == std::numeric_limits<int64_t>::max() ? -1 : row;
  }

 private:
  std::atomic<int64_t> first_{std::numeric_limits<int64_t>::max()};
};

}  // namespace ptcore
