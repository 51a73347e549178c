// Launch configurations of the CUDA kernels (grid and block sizes, the split of long rows over
// several blocks): plain host code, shared by the CUDA build and the emulated one.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ptcore::cuda {

constexpr int kWarp = 32;

// Threads per row-block of the KD kernels: enough for ~4 packs each, 32..kMaxThreads (the
// kernels' __launch_bounds__, so the compiler keeps them launchable at that size).
constexpr int kMaxThreads = 512;

inline int threads_for(int64_t V, int pack) {
  int threads = kWarp;
  while (threads < kMaxThreads && threads * pack * 4 < V) threads *= 2;
  return threads;
}

// Blocks per row of the full-teacher KD kernels: one, unless the rows are too few to fill the
// GPU (fewer than two blocks per SM); then about two blocks per SM, as long as each part keeps
// ~4 packs per thread of a full block (as threads_for gives a whole row), so the merges stay
// negligible. Only N < 2 · SMs splits: the parts (at most 2 · SMs) fit gridDim.y (65535).
struct Split {
  int64_t parts, per;  // blocks per row, packs per block (Part)
};

inline Split split_for(int64_t N, int64_t V, int pack, int multiprocessors) {
  const int64_t blocks = 2 * int64_t{multiprocessors};
  const int64_t most = V / (int64_t{kMaxThreads} * pack * 4);
  const int64_t parts = std::max<int64_t>(1, std::min((blocks + N - 1) / N, most));
  return {parts, (V + pack * parts - 1) / (pack * parts)};  // per · pack · parts >= V
}

// The feature cache's kernels: blocks of kCacheThreads; a row's loads spread over the power
// of two of threads that covers them (whole warps for quantize's block_allreduce).
constexpr int kCacheThreads = 256;

inline int threads_per_row(int64_t d, int n) {
  const int64_t loads = (d + n - 1) / n;
  int t = 1;
  while (t < kCacheThreads && t < loads) t *= 2;
  return t;
}

inline int quantize_threads(int64_t d, int n) { return std::max(kWarp, threads_per_row(d, n)); }

// gather_rows: blocks of (threads per row, rows per block), grid-stride over b rows.
struct GatherShape {
  int threads_per_row, rows_per_block;
  int64_t blocks;
};

inline GatherShape gather_shape(int64_t b, int64_t d, int n) {
  const int tpr = threads_per_row(d, n);
  const int rows = kCacheThreads / tpr;
  return {tpr, rows, std::min<int64_t>((b + rows - 1) / rows, 1 << 20)};
}

// The KD ops' data checks: blocks of kCheckThreads, a grid-stride loop over `work` items.
constexpr int kCheckThreads = 256;

inline int check_blocks(int64_t work) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(work, 1), 65535));
}

}  // namespace ptcore::cuda
