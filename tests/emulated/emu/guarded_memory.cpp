// Guarded buffers for the emulated kernels' global memory (see guarded_memory.h).
#include "guarded_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <sstream>

#include "emu_runtime.h"

namespace ptcore_emu {
namespace {

constexpr unsigned char kCanary = 0xff;

struct Mapping {
  char* base;       // the leading guard page
  size_t length;    // guard pages included
  char* data;
  size_t bytes;
};

std::mutex g_mutex;
std::map<const char*, Mapping> g_mappings;  // by base address

size_t page() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

// Whether the canary bytes of a mapping (its accessible bytes outside the buffer) are intact.
bool canary_intact(const Mapping& m) {
  const char* lo = m.base + page();
  const char* hi = m.base + m.length - page();
  for (const char* p = lo; p < m.data; ++p)
    if (static_cast<unsigned char>(*p) != kCanary) return false;
  for (const char* p = m.data + m.bytes; p < hi; ++p)
    if (static_cast<unsigned char>(*p) != kCanary) return false;
  return true;
}

void fill_canary(const Mapping& m) {
  char* lo = m.base + page();
  char* hi = m.base + m.length - page();
  std::memset(lo, kCanary, static_cast<size_t>(m.data - lo));
  std::memset(m.data + m.bytes, kCanary, static_cast<size_t>(hi - (m.data + m.bytes)));
}

}  // namespace

void* guarded_alloc(size_t bytes, size_t offset) {
  const size_t pg = page();
  const size_t inner = (bytes + 16 + pg - 1) / pg * pg;
  const size_t length = inner + 2 * pg;
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  char* base = static_cast<char*>(p);
  mprotect(base, pg, PROT_NONE);
  mprotect(base + pg + inner, pg, PROT_NONE);
  char* data;
  if (config().seed % 2 == 0) {  // against the trailing guard
    data = base + pg + inner - bytes;
    data -= (reinterpret_cast<uintptr_t>(data) - offset) % 16;
  } else {  // against the leading guard
    data = base + pg + offset % 16;
  }
  const Mapping m{base, length, data, bytes};
  fill_canary(m);
  std::memset(data, poison_byte(), bytes);
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_mappings[base] = m;
  return data;
}

void guarded_free(void* data) {
  if (data == nullptr) return;
  Mapping m;
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_mappings.upper_bound(static_cast<const char*>(data));
    --it;
    m = it->second;
    g_mappings.erase(it);
  }
  munmap(m.base, m.length);
}

Located locate(const void* address) {
  const char* a = static_cast<const char*>(address);
  const std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_mappings.upper_bound(a);
  if (it == g_mappings.begin()) return {};
  --it;
  const Mapping& m = it->second;
  if (a >= m.base + m.length) return {};
  return {m.data, m.bytes};
}

std::string overwritten_canaries() {
  std::ostringstream out;
  const std::lock_guard<std::mutex> lock(g_mutex);
  for (const auto& [base, m] : g_mappings) {
    if (canary_intact(m)) continue;
    out << "a write outside the " << m.bytes << "-byte buffer at "
        << static_cast<const void*>(m.data) << " (within 16 bytes of it, or in its page); ";
    fill_canary(m);
  }
  return out.str();
}

}  // namespace ptcore_emu
