// Warp and block reductions over any trivially copyable value made of 32-bit words
// (a float, or a struct of running statistics), combined by a user-given op.
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <type_traits>

#include "cuda/launch_config.h"

namespace ptcore::cuda {

template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int mask) {
  static_assert(sizeof(T) % 4 == 0 && std::is_trivially_copyable<T>::value,
                "shfl_xor needs a trivially copyable type of 32-bit words");
  constexpr int kWords = sizeof(T) / 4;
  int words[kWords];
  memcpy(words, &v, sizeof(T));
#pragma unroll
  for (int i = 0; i < kWords; ++i) words[i] = __shfl_xor_sync(0xffffffffu, words[i], mask);
  memcpy(&v, words, sizeof(T));
  return v;
}

// Every lane of the warp gets the op-combination of all 32 lanes' values.
template <typename T, typename Op>
__device__ __forceinline__ T warp_allreduce(T v, Op op) {
#pragma unroll
  for (int mask = kWarp / 2; mask > 0; mask /= 2) v = op(v, shfl_xor(v, mask));
  return v;
}

// Every thread of the block gets the combination of all threads' values. `smem` holds
// blockDim.x / 32 values; blockDim.x must be a multiple of 32. `identity` pads idle lanes.
template <typename T, typename Op>
__device__ __forceinline__ T block_allreduce(T v, Op op, T identity, T* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  v = warp_allreduce(v, op);
  __syncthreads();  // smem may still be read by a previous reduction
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < warps ? smem[lane] : identity;
  return warp_allreduce(v, op);
}

}  // namespace ptcore::cuda
