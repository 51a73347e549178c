// Guarded tensors and kernel names for the emulated build (see emu_backend.h).
#include "emu_backend.h"

#include <c10/core/CPUAllocator.h>
#include <cxxabi.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>

#include "guarded_memory.h"

namespace ptcore_emu {
namespace {

void free_guarded(void* data) { guarded_free(data); }

struct GuardedAllocator final : at::Allocator {
  at::DataPtr allocate(size_t bytes) override {
    void* p = bytes == 0 ? nullptr : guarded_alloc(bytes, 0);
    return {p, p, &free_guarded, at::Device(at::kCPU)};
  }
  at::DeleterFnPtr raw_deleter() const override { return &free_guarded; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

GuardedAllocator g_allocator;
constexpr uint8_t kPriority = std::numeric_limits<uint8_t>::max();

}  // namespace

std::string kernel_name(const void* kernel) {
  Dl_info info;
  if (dladdr(kernel, &info) == 0 || info.dli_sname == nullptr) return "kernel";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> full(
      abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status), std::free);
  std::string name = status == 0 ? full.get() : info.dli_sname;
  if (name.rfind("void ", 0) == 0) name = name.substr(5);
  int depth = 0;  // cut the parameter list: the first '(' outside template arguments
  for (size_t k = 0; k < name.size(); ++k) {
    depth += name[k] == '<' ? 1 : name[k] == '>' ? -1 : 0;
    if (name[k] == '(' && depth == 0) {
      name.resize(k);
      break;
    }
  }
  const std::string prefix = "ptcore::cuda::";
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

GuardedScope::GuardedScope() : previous_(c10::GetCPUAllocator()) {
  c10::SetCPUAllocator(&g_allocator, kPriority);
}

GuardedScope::~GuardedScope() { c10::SetCPUAllocator(previous_, kPriority); }

at::Tensor guarded(const at::Tensor& x) {
  if (x.numel() == 0) return x;
  int64_t span = 1;  // elements from the data pointer to the last one, inclusive
  for (int64_t d = 0; d < x.dim(); ++d) {
    TORCH_CHECK(x.stride(d) >= 0, "emulation: negative strides are not supported");
    span += (x.size(d) - 1) * x.stride(d);
  }
  const size_t bytes = static_cast<size_t>(span) * x.element_size();
  const size_t offset = reinterpret_cast<uintptr_t>(x.const_data_ptr()) % 16;
  void* p = guarded_alloc(bytes, offset);
  at::Tensor out = at::from_blob(p, x.sizes(), x.strides(), free_guarded, x.options());
  out.copy_(x);
  return out;
}

std::optional<at::Tensor> guarded(const std::optional<at::Tensor>& x) {
  if (!x.has_value()) return std::nullopt;
  return guarded(*x);
}

}  // namespace ptcore_emu
