// Kernels with the defects the emulation exists to catch (a missing barrier, an access past
// a buffer, a warp collective only some lanes reach, a barrier after an exit): its own tests.
#include <ATen/ATen.h>

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/reduce.cuh"
#include "emu_backend.h"
#include "emu_ops.h"

namespace ptcore::cuda::selftest {

// out[i] = x[i + 1 mod n] through shared memory; without the barrier a thread may read its
// neighbour's slot before the neighbour wrote it.
__global__ void neighbour_kernel(const float* x, float* out, bool sync) {
  __shared__ float smem[1024];
  smem[threadIdx.x] = x[threadIdx.x];
  if (sync) __syncthreads();
  out[threadIdx.x] = smem[(threadIdx.x + 1) % blockDim.x];
}

// Reads one element past the end of x in the last block.
__global__ void past_end_kernel(const float* x, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = x[i + 1];
}

// Half the warp shuffles, the other half returns.
__global__ void half_warp_shuffle_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x % kWarp < 16) v = warp_allreduce(v, [](float a, float b) { return a + b; });
  out[threadIdx.x] = v;
}

// Thread 0 leaves before a barrier the others reach.
__global__ void exit_before_barrier_kernel(float* out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

}  // namespace ptcore::cuda::selftest

namespace ptcore_emu {

namespace selftest = ptcore::cuda::selftest;

Tensor run_selftest(const std::string& name, const Tensor& x) {
  const GuardedScope scope;
  const Tensor in = guarded(x.contiguous());
  Tensor out = at::empty_like(in);
  const int n = static_cast<int>(in.numel());
  if (name == "neighbour" || name == "neighbour_synced") {
    EmuBackend::launch(selftest::neighbour_kernel, 1, n, in.const_data_ptr<float>(),
                       out.data_ptr<float>(), name == "neighbour_synced");
  } else if (name == "past_end") {
    EmuBackend::launch(selftest::past_end_kernel, (n + 63) / 64, 64, in.const_data_ptr<float>(),
                       out.data_ptr<float>(), n);
  } else if (name == "half_warp_shuffle") {
    EmuBackend::launch(selftest::half_warp_shuffle_kernel, 1, n, out.data_ptr<float>());
  } else if (name == "exit_before_barrier") {
    EmuBackend::launch(selftest::exit_before_barrier_kernel, 1, n, out.data_ptr<float>());
  } else {
    throw std::invalid_argument("no self-test kernel " + name);
  }
  return out;
}

}  // namespace ptcore_emu
