// The emulated build's Backend for the ops' host code (csrc/cuda/*_host.h): it runs each
// kernel on the fiber scheduler, and keeps every tensor the host code makes in guarded memory.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "emu_runtime.h"

namespace ptcore_emu {

// "kd_full::kd_forward_kernel<float, true>" for a kernel's address.
std::string kernel_name(const void* kernel);

template <typename Tuple, size_t... I>
std::vector<PointerArg> pointer_args(const Tuple& params, std::index_sequence<I...>) {
  std::vector<PointerArg> out;
  auto add = [&](int position, const auto& value) {
    using V = std::decay_t<decltype(value)>;
    if constexpr (std::is_pointer_v<V>) {
      out.push_back({position, value, sizeof(std::remove_pointer_t<V>)});
    }
  };
  (add(static_cast<int>(I), std::get<I>(params)), ...);
  return out;
}

struct EmuBackend {
  // The arguments are converted to the kernel's parameter types once, as a launch does; each
  // thread gets its own copies.
  template <typename... Params, typename... Args>
  static void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
    const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    run_grid(kernel_name(reinterpret_cast<const void*>(kernel)), grid, block,
             pointer_args(params, std::index_sequence_for<Params...>{}),
             [&] { std::apply(kernel, params); });
  }

  static int multiprocessors(c10::DeviceIndex) { return config().multiprocessors; }
};

// While alive, every CPU tensor torch allocates lies in guarded memory (guarded_memory.h).
class GuardedScope {
 public:
  GuardedScope();
  ~GuardedScope();
  GuardedScope(const GuardedScope&) = delete;
  GuardedScope& operator=(const GuardedScope&) = delete;

 private:
  at::Allocator* previous_;
};

// A copy of x in guarded memory, with x's strides and its data pointer's offset modulo 16
// (which decides whether the kernels read rows in 16-byte packs).
at::Tensor guarded(const at::Tensor& x);
std::optional<at::Tensor> guarded(const std::optional<at::Tensor>& x);

}  // namespace ptcore_emu
