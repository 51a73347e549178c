// The subset of CUDA that ptcore's kernels use, run on the CPU: every thread of a block is
// a fiber, switched only at barriers and warp collectives, resumed in an order a seed picks.
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

namespace ptcore_emu {

// What the scheduler is running: the fiber's thread index, its block, the launch's shape.
extern const uint3* g_thread;
extern uint3 g_block;
extern dim3 g_block_dim, g_grid_dim;

// The device the emulation presents, and how it runs a grid. `seed` picks the order blocks
// run in and the order threads are resumed (0: in index order), the byte that fills fresh
// global and shared memory, and where a buffer sits between its guard pages.
struct Config {
  uint64_t seed = 0;
  int multiprocessors = 132;  // an H100 SXM (an H200 has as many)
};
Config& config();

constexpr int kWarpSize = 32;

// The byte fresh memory is filled with under the current seed: 0xff (NaN in every float
// type) or 0x5a (finite garbage, so a read before a write cannot hide behind a NaN row).
unsigned char poison_byte();

void syncthreads(const char* file, int line);
int syncthreads_or(int predicate, const char* file, int line);
int shfl_xor(unsigned mask, int value, int lane_mask, const char* file, int line);

// A kernel argument that points to global memory: faults are reported by argument and index.
struct PointerArg {
  int position;
  const void* ptr;
  size_t element_bytes;
};

// Runs `thread` for every thread of every block of the grid (raises std::runtime_error
// naming kernel, block and thread on a fault, a deadlock or a divergent collective).
void run_grid(const std::string& kernel, dim3 grid, dim3 block,
              const std::vector<PointerArg>& pointers, const std::function<void()>& thread);

// The kernels' __shared__ variables the scheduler poisons before each block (demangled).
std::vector<std::string> shared_variables();

// Kernels launched since the last call, as "name grid=(x,y,z) block=(x,y,z)".
std::vector<std::string> take_launches();

}  // namespace ptcore_emu

// Nothing runs concurrently: an atomic is a plain read-modify-write.
inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  if (value < old) *address = value;
  return old;
}

using std::isfinite;
using std::isnan;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so one static per declaration is the block's shared variable;
// the scheduler finds them in the library's symbol table and poisons them before each block.
#define __shared__ static
#define threadIdx (*::ptcore_emu::g_thread)
#define blockIdx (static_cast<const uint3&>(::ptcore_emu::g_block))
#define blockDim (static_cast<const dim3&>(::ptcore_emu::g_block_dim))
#define gridDim (static_cast<const dim3&>(::ptcore_emu::g_grid_dim))
#define __syncthreads() ::ptcore_emu::syncthreads(__FILE__, __LINE__)
#define __syncthreads_or(predicate) ::ptcore_emu::syncthreads_or((predicate), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask) \
  ::ptcore_emu::shfl_xor((mask), (value), (lane_mask), __FILE__, __LINE__)
