// How the CUDA build launches the kernels: the Backend of the ops' host code (cuda/*_host.h),
// which the emulated build (tests/emulated) replaces with one that runs them on the CPU.
#pragma once

#include <c10/core/Device.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/cuda/CUDAStream.h>

#include <array>
#include <atomic>
#include <utility>

namespace ptcore::cuda {

struct CudaBackend {
  // On the current stream, checked.
  template <typename... Params, typename... Args>
  static void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
    kernel<<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  // Cached per device: the split decision asks on every call.
  static int multiprocessors(c10::DeviceIndex device) {
    static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> cache{};
    int n = cache[device].load(std::memory_order_relaxed);
    if (n == 0) {
      C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
      cache[device].store(n, std::memory_order_relaxed);
    }
    return n;
  }
};

}  // namespace ptcore::cuda
