// The first bad row of a user's input, found on the device with one host read per call:
// a validation kernel reports bad rows with atomicMin into a one-element buffer, the host
// reads it once and re-runs the CPU check (data_checks.h) on that row to raise exactly
// what the CPU backend raises. No device-side assert, so the CUDA context survives.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace ptcore::cuda {

constexpr int64_t kNoBadRow = std::numeric_limits<int64_t>::max();

struct FirstBad {
  at::Tensor buf;  // [slots] int64 on the device; kNoBadRow while every row is fine

  explicit FirstBad(const at::Tensor& like, int64_t slots = 1)
      : buf(at::full({slots}, kNoBadRow, like.options().dtype(at::kLong))) {}
  unsigned long long* ptr(int64_t slot = 0) {
    return reinterpret_cast<unsigned long long*>(buf.data_ptr<int64_t>() + slot);
  }
  // The one device-to-host read: the first bad row of each slot, or -1 where there is none.
  std::vector<int64_t> read_all() const {
    const at::Tensor host = buf.cpu();
    std::vector<int64_t> rows(host.numel());
    for (int64_t k = 0; k < host.numel(); ++k) {
      const int64_t row = host.const_data_ptr<int64_t>()[k];
      rows[k] = row == kNoBadRow ? -1 : row;
    }
    return rows;
  }
  int64_t read() const { return read_all()[0]; }
};

__device__ __forceinline__ void report_bad(unsigned long long* first, int64_t row) {
  atomicMin(first, static_cast<unsigned long long>(row));
}

}  // namespace ptcore::cuda
