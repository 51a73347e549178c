// Global memory for the emulated kernels: every buffer lies between two inaccessible pages
// (an access past either end faults at once) in a mapping whose unused bytes hold a canary
// that is checked after each kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ptcore_emu {

// `bytes` of memory filled with poison_byte(), starting at an address ≡ `offset` (mod 16).
// The seed decides whether it ends at its trailing guard page (slack < 16 bytes after it)
// or starts right after its leading one.
void* guarded_alloc(size_t bytes, size_t offset);
void guarded_free(void* data);

struct Located {
  const char* begin = nullptr;  // the buffer holding or bordering the address, if any
  size_t bytes = 0;
};
// The buffer an address belongs to or borders (its mapping, guard pages included).
Located locate(const void* address);

// Names every buffer whose canary bytes changed ("" when none did), and restores them.
std::string overwritten_canaries();

}  // namespace ptcore_emu
