// The first bad row of a user's input, found on the device with one host read per call:
// a validation kernel reports bad rows with atomicMin into a one-element buffer, the host
// reads it once and re-runs the CPU check (data_checks.h) on that row to raise exactly
// what the CPU backend raises. No device-side assert, so the CUDA context survives.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>

namespace ptcore::cuda {

constexpr int64_t kNoBadRow = std::numeric_limits<int64_t>::max();

struct FirstBad {
  at::Tensor buf;  // [1] int64 on the device; kNoBadRow while every row is fine

  explicit FirstBad(const at::Tensor& like)
      : buf(at::full({1}, kNoBadRow, like.options().dtype(at::kLong))) {}
  unsigned long long* ptr() { return reinterpret_cast<unsigned long long*>(buf.data_ptr<int64_t>()); }
  // The one device-to-host read: the first bad row, or -1 when there is none.
  int64_t read() const {
    const int64_t row = buf.item<int64_t>();
    return row == kNoBadRow ? -1 : row;
  }
};

__device__ __forceinline__ void report_bad(unsigned long long* first, int64_t row) {
  atomicMin(first, static_cast<unsigned long long>(row));
}

}  // namespace ptcore::cuda
