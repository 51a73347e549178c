// The emulation's scheduler: a block's threads as fibers (ucontext to start them, _setjmp /
// _longjmp to switch: no signal-mask system call per switch), barriers and warp collectives
// as the only switch points, seeded resume order, faults reported by kernel, block, thread.
#include "emu_runtime.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>

#include "guarded_memory.h"

namespace ptcore_emu {

const uint3* g_thread = nullptr;
uint3 g_block{0, 0, 0};
dim3 g_block_dim, g_grid_dim;

Config& config() {
  static Config c;
  return c;
}

unsigned char poison_byte() { return config().seed % 4 < 2 ? 0xff : 0x5a; }

namespace {

constexpr size_t kStackBytes = 256 << 10;
constexpr int kMaxThreads = 1024;

enum class Wait { None, Barrier, BarrierOr, Shuffle, Done };

struct Fiber {
  jmp_buf jb;
  ucontext_t uc;
  char* stack = nullptr;  // the mapping, its lowest page a guard
  bool parked = false;    // waiting at the top of its loop for a thread to run
  uint3 idx;
  int linear;
  Wait wait = Wait::None;
  const char* file = nullptr;
  int line = 0;
  unsigned mask = 0;
  int value = 0, lane_mask = 0, result = 0;
};

// A warp's pending collective: the first lane to arrive sets its site and mask.
struct WarpOp {
  unsigned arrived = 0;
  const char* file = nullptr;
  int line = 0;
  unsigned mask = 0;
};

enum class Policy { InOrder, Random, WarpGreedy, Reverse };

struct Scheduler {
  Fiber fibers[kMaxThreads];
  Fiber* boot = nullptr;  // the fiber fiber_main starts as
  jmp_buf home;           // the scheduler's own context
  Fiber* cur = nullptr;
  const std::function<void()>* body = nullptr;

  // The block being run.
  int n = 0, warps = 0, done = 0;
  std::vector<int> ready[kMaxThreads / kWarpSize];
  int ready_count = 0, last_warp = 0;
  int barrier_arrived = 0, barrier_or = 0;
  const char* barrier_file = nullptr;
  int barrier_line = 0;
  WarpOp warp_ops[kMaxThreads / kWarpSize];
  std::string error;  // set by a fiber or the fault handler: the launch fails
  Policy policy = Policy::InOrder;
  std::mt19937_64 rng;

  // The launch, for messages.
  std::string kernel;
  const std::vector<PointerArg>* pointers = nullptr;
  std::vector<std::string> launches;
};

Scheduler& S() {
  static Scheduler* s = new Scheduler;  // never freed: fibers may be parked on exit
  return *s;
}

std::string where(const Fiber& f) {
  std::ostringstream out;
  out << "kernel " << S().kernel << ", block (" << g_block.x << "," << g_block.y << ","
      << g_block.z << "), thread (" << f.idx.x << "," << f.idx.y << "," << f.idx.z << ")";
  return out.str();
}

std::string site(const char* file, int line) {
  std::string f = file ? file : "?";
  const auto slash = f.rfind("csrc/");
  return (slash == std::string::npos ? f : f.substr(slash)) + ":" + std::to_string(line);
}

// Switches to the scheduler; returns when the scheduler resumes this fiber.
void park(Fiber& f) {
  if (_setjmp(f.jb) == 0) _longjmp(S().home, 1);
}

// The fiber's whole life: park, run one thread of a block, park again.
void fiber_main() {
  Fiber& f = *S().boot;
  for (;;) {
    f.parked = true;
    park(f);
    f.parked = false;
    (*S().body)();
    f.wait = Wait::Done;
  }
}

void boot(Fiber& f) {
  if (f.stack == nullptr) {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("emulation: no memory for fiber stacks");
    f.stack = static_cast<char*>(p);
    mprotect(f.stack, static_cast<size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);
  }
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack;
  f.uc.uc_stack.ss_size = kStackBytes;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, fiber_main, 0);
  S().boot = &f;
  ucontext_t here;
  if (_setjmp(S().home) == 0) swapcontext(&here, &f.uc);
}

void make_ready(int t) {
  Scheduler& s = S();
  s.ready[t / kWarpSize].push_back(t);
  ++s.ready_count;
}

int take(int w, size_t k) {
  Scheduler& s = S();
  std::vector<int>& r = s.ready[w];
  const int t = r[k];
  r[k] = r.back();
  r.pop_back();
  --s.ready_count;
  s.last_warp = w;
  return t;
}

// The next thread to resume, as the seed's policy picks it.
int pick() {
  Scheduler& s = S();
  if (s.policy == Policy::InOrder || s.policy == Policy::Reverse) {
    const bool fwd = s.policy == Policy::InOrder;
    for (int i = 0; i < s.warps; ++i) {
      const int w = fwd ? i : s.warps - 1 - i;
      const std::vector<int>& r = s.ready[w];
      if (r.empty()) continue;
      size_t best = 0;
      for (size_t k = 1; k < r.size(); ++k)
        if (fwd ? r[k] < r[best] : r[k] > r[best]) best = k;
      return take(w, best);
    }
  }
  if (s.policy == Policy::WarpGreedy && !s.ready[s.last_warp].empty() && s.rng() % 16 != 0) {
    return take(s.last_warp, s.rng() % s.ready[s.last_warp].size());
  }
  size_t k = s.rng() % static_cast<size_t>(s.ready_count);
  for (int w = 0;; ++w) {
    if (k < s.ready[w].size()) return take(w, k);
    k -= s.ready[w].size();
  }
}

// Fails the launch from inside a fiber: the scheduler raises the message.
[[noreturn]] void fail(Fiber& f, const std::string& message) {
  S().error = message + " (" + where(f) + ")";
  _longjmp(S().home, 1);
}


int barrier(Wait kind, int predicate, const char* file, int line) {
  Scheduler& s = S();
  Fiber& f = *s.cur;
  if (s.done > 0) {
    fail(f, "__syncthreads at " + site(file, line) + " after " + std::to_string(s.done) +
                " thread(s) of the block exited");
  }
  if (s.barrier_arrived == 0) {
    s.barrier_file = file;
    s.barrier_line = line;
    s.barrier_or = 0;
  } else if (s.barrier_file != file || s.barrier_line != line) {
    fail(f, "divergent __syncthreads: this thread is at " + site(file, line) + ", others at " +
                site(s.barrier_file, s.barrier_line));
  }
  f.wait = kind;
  s.barrier_or |= predicate != 0;
  if (++s.barrier_arrived == s.n) {
    for (int t = 0; t < s.n; ++t) {
      s.fibers[t].wait = Wait::None;
      s.fibers[t].result = s.barrier_or;
      if (t != f.linear) make_ready(t);
    }
    s.barrier_arrived = 0;
    return s.barrier_or;
  }
  park(f);
  return f.result;
}

std::string lanes(unsigned bits) {
  std::ostringstream out;
  const char* sep = "";
  for (int l = 0; l < kWarpSize; ++l) {
    if (bits >> l & 1u) {
      out << sep << l;
      sep = ",";
    }
  }
  return out.str();
}

// Why the block cannot go on: who waits where.
std::string deadlock() {
  Scheduler& s = S();
  std::ostringstream out;
  out << "kernel " << s.kernel << ", block (" << g_block.x << "," << g_block.y << ","
      << g_block.z << ") cannot go on:";
  if (s.barrier_arrived > 0) {
    out << " " << s.barrier_arrived << " of " << s.n << " threads wait at __syncthreads "
        << site(s.barrier_file, s.barrier_line) << ";";
  }
  for (int w = 0; w < s.warps; ++w) {
    const WarpOp& op = s.warp_ops[w];
    if (op.arrived == 0) continue;
    out << " warp " << w << ": lanes " << lanes(op.arrived) << " wait at __shfl_xor_sync "
        << site(op.file, op.line) << " for lanes " << lanes(op.mask & ~op.arrived)
        << " of mask 0x" << std::hex << op.mask << std::dec << ";";
  }
  return out.str();
}

struct sigaction g_old_segv, g_old_bus;
char g_alt_stack[1 << 16];

std::string describe_address(const void* address) {
  std::ostringstream out;
  out << address;
  const Located loc = locate(address);
  if (loc.begin == nullptr) return out.str() + " (in no buffer of this launch)";
  const char* a = static_cast<const char*>(address);
  // The argument pointing closest below the address into that buffer, else the lowest one.
  const PointerArg* best = nullptr;
  for (const PointerArg& p : *S().pointers) {
    const char* q = static_cast<const char*>(p.ptr);
    if (q < loc.begin - 4096 || q > loc.begin + loc.bytes + 4096) continue;
    if (best == nullptr || (q <= a && (static_cast<const char*>(best->ptr) > a ||
                                       q > static_cast<const char*>(best->ptr)))) {
      best = &p;
    }
  }
  if (a < loc.begin) {
    out << ", " << (loc.begin - a) << " bytes before";
  } else {
    out << ", " << (a - (loc.begin + loc.bytes)) << " bytes past the end of";
  }
  out << " a " << loc.bytes << "-byte buffer";
  if (best != nullptr) {
    const auto diff = a - static_cast<const char*>(best->ptr);
    out << "; kernel argument " << best->position << " [index "
        << (diff >= 0 ? diff / static_cast<long>(best->element_bytes)
                      : -((-diff + static_cast<long>(best->element_bytes) - 1) /
                          static_cast<long>(best->element_bytes)))
        << "]";
  }
  return out.str();
}

void on_fault(int sig, siginfo_t* info, void* context) {
  Scheduler& s = S();
  if (s.cur == nullptr) {  // not in a kernel: the previous handler deals with it
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    return;
  }
  const char* kind = "access";
#if defined(__x86_64__)
  kind = static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2 ? "write" : "read";
#else
  (void)context;
#endif
  const char* a = static_cast<const char*>(info->si_addr);
  const char* stack = s.cur->stack;
  if (a >= stack && a < stack + sysconf(_SC_PAGESIZE)) {
    s.error = "stack overflow (" + where(*s.cur) + ")";
  } else {
    s.error = std::string(sig == SIGBUS ? "bus error" : "out-of-bounds ") + kind + " at " +
              describe_address(a) + " (" + where(*s.cur) + ")";
  }
  _longjmp(s.home, 1);
}

struct FaultHandler {
  stack_t old_stack;
  FaultHandler() {
    stack_t ss{};
    ss.ss_sp = g_alt_stack;
    ss.ss_size = sizeof(g_alt_stack);
    sigaltstack(&ss, &old_stack);
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;  // _longjmp leaves the handler
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
  }
  ~FaultHandler() {
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    sigaltstack(&old_stack, nullptr);
  }
};

// The __shared__ variables: function-local statics of the kernels (namespace ptcore::cuda),
// read once from this library's symbol tables (a non-template kernel's are local symbols,
// in .symtab only; templates' are in .dynsym too).
struct Region {
  char* begin;
  size_t bytes;
  std::string name;
};

const std::vector<Region>& shared_regions() {
  static const std::vector<Region> regions = [] {
    std::vector<Region> out;
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&shared_regions), &info) == 0) return out;
    std::ifstream file(info.dli_fname, std::ios::binary);
    const std::string elf((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(elf.data());
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(elf.data() + eh->e_shoff);
    for (int k = 0; k < eh->e_shnum; ++k) {
      if (sh[k].sh_type != SHT_SYMTAB && sh[k].sh_type != SHT_DYNSYM) continue;
      const char* names = elf.data() + sh[sh[k].sh_link].sh_offset;
      const auto* sym = reinterpret_cast<const Elf64_Sym*>(elf.data() + sh[k].sh_offset);
      for (size_t j = 0; j < sh[k].sh_size / sizeof(Elf64_Sym); ++j) {
        const std::string name = names + sym[j].st_name;
        if (name.rfind("_ZZN6ptcore4cuda", 0) != 0 || ELF64_ST_TYPE(sym[j].st_info) != STT_OBJECT ||
            sym[j].st_shndx == SHN_UNDEF) {
          continue;
        }
        char* begin = static_cast<char*>(info.dli_fbase) + sym[j].st_value;
        if (std::none_of(out.begin(), out.end(), [&](const Region& r) { return r.begin == begin; }))
          out.push_back({begin, static_cast<size_t>(sym[j].st_size), name});
      }
    }
    return out;
  }();
  return regions;
}

void poison_shared() {
  for (const Region& r : shared_regions()) std::memset(r.begin, poison_byte(), r.bytes);
}

}  // namespace

void syncthreads(const char* file, int line) { barrier(Wait::Barrier, 0, file, line); }

int syncthreads_or(int predicate, const char* file, int line) {
  return barrier(Wait::BarrierOr, predicate, file, line);
}

int shfl_xor(unsigned mask, int value, int lane_mask, const char* file, int line) {
  Scheduler& s = S();
  Fiber& f = *s.cur;
  const int w = f.linear / kWarpSize, lane = f.linear % kWarpSize;
  const int width = std::min(kWarpSize, s.n - w * kWarpSize);
  const unsigned present = width == kWarpSize ? ~0u : (1u << width) - 1u;
  if ((mask & ~present) != 0 || !(mask >> lane & 1u)) {
    fail(f, "__shfl_xor_sync at " + site(file, line) + " with mask 0x" +
                [&] { std::ostringstream o; o << std::hex << mask; return o.str(); }() +
                " naming lanes that do not exist or not this lane " + std::to_string(lane));
  }
  Fiber* warp = s.fibers + w * kWarpSize;
  for (int l = 0; l < kWarpSize; ++l) {
    if (mask >> l & 1u && warp[l].wait == Wait::Done) {
      fail(f, "__shfl_xor_sync at " + site(file, line) + " names lane " + std::to_string(l) +
                  ", which has exited");
    }
  }
  WarpOp& op = s.warp_ops[w];
  if (op.arrived == 0) {
    op.file = file;
    op.line = line;
    op.mask = mask;
  } else if (op.file != file || op.line != line || op.mask != mask) {
    fail(f, "divergent warp collective: lane " + std::to_string(lane) + " is at " +
                site(file, line) + ", lanes " + lanes(op.arrived) + " at " +
                site(op.file, op.line));
  }
  f.wait = Wait::Shuffle;
  f.value = value;
  f.lane_mask = lane_mask;
  op.arrived |= 1u << lane;
  if (op.arrived == mask) {
    for (int l = 0; l < kWarpSize; ++l) {
      if (!(mask >> l & 1u)) continue;
      const int src = l ^ warp[l].lane_mask;
      if (src >= kWarpSize || !(mask >> src & 1u)) {
        fail(f, "__shfl_xor_sync at " + site(file, line) + ": lane " + std::to_string(l) +
                    " reads lane " + std::to_string(src) + ", outside the mask");
      }
      warp[l].result = warp[src].value;
    }
    for (int l = 0; l < kWarpSize; ++l) {
      if (!(mask >> l & 1u)) continue;
      warp[l].wait = Wait::None;
      if (l != lane) make_ready(w * kWarpSize + l);
    }
    op.arrived = 0;
    return f.result;
  }
  park(f);
  return f.result;
}

void run_grid(const std::string& kernel, dim3 grid, dim3 block,
              const std::vector<PointerArg>& pointers, const std::function<void()>& thread) {
  Scheduler& s = S();
  const long n = static_cast<long>(block.x) * block.y * block.z;
  if (n < 1 || n > kMaxThreads) {
    throw std::runtime_error("emulation: " + kernel + " launched with " + std::to_string(n) +
                             " threads per block (1 to 1024 allowed)");
  }
  if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535) {
    throw std::runtime_error("emulation: " + kernel + " launched with an invalid grid");
  }
  s.launches.push_back(kernel + " grid=(" + std::to_string(grid.x) + "," +
                       std::to_string(grid.y) + "," + std::to_string(grid.z) + ") block=(" +
                       std::to_string(block.x) + "," + std::to_string(block.y) + "," +
                       std::to_string(block.z) + ")");
  s.kernel = kernel;
  s.pointers = &pointers;
  s.body = &thread;
  s.n = static_cast<int>(n);
  s.warps = (s.n + kWarpSize - 1) / kWarpSize;
  const uint64_t seed = config().seed;
  s.policy = seed == 0 ? Policy::InOrder
                       : std::array<Policy, 3>{Policy::Random, Policy::WarpGreedy,
                                               Policy::Reverse}[seed % 3];
  s.rng.seed(seed * 0x9e3779b97f4a7c15ull + s.launches.size());
  g_grid_dim = grid;
  g_block_dim = block;

  std::vector<uint3> blocks;
  blocks.reserve(static_cast<size_t>(grid.x) * grid.y * grid.z);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back({x, y, z});
  if (seed != 0) std::shuffle(blocks.begin(), blocks.end(), s.rng);

  const FaultHandler handler;
  for (int t = 0; t < s.n; ++t) {
    Fiber& f = s.fibers[t];
    if (!f.parked) boot(f);
    f.linear = t;
    f.idx = {static_cast<unsigned>(t % block.x), static_cast<unsigned>(t / block.x % block.y),
             static_cast<unsigned>(t / (block.x * block.y))};
  }
  for (const uint3& b : blocks) {
    g_block = b;
    poison_shared();
    s.done = 0;
    s.barrier_arrived = 0;
    s.ready_count = 0;
    for (int w = 0; w < s.warps; ++w) {
      s.ready[w].clear();
      s.warp_ops[w] = WarpOp{};
    }
    for (int t = 0; t < s.n; ++t) {
      s.fibers[t].wait = Wait::None;
      make_ready(t);
    }
    s.error.clear();
    while (s.done < s.n) {
      if (s.ready_count == 0) {
        s.error = deadlock();
        break;
      }
      Fiber& f = s.fibers[pick()];
      s.cur = &f;
      g_thread = &f.idx;
      if (_setjmp(s.home) == 0) _longjmp(f.jb, 1);
      s.cur = nullptr;
      if (!s.error.empty()) break;
      if (f.wait == Wait::Done && f.parked) {
        ++s.done;
        if (s.barrier_arrived > 0) {
          s.error = "thread (" + std::to_string(f.idx.x) + "," + std::to_string(f.idx.y) +
                    ") exited while " + std::to_string(s.barrier_arrived) +
                    " threads wait at __syncthreads " + site(s.barrier_file, s.barrier_line) +
                    " (kernel " + kernel + ")";
          break;
        }
        const int w = f.linear / kWarpSize;
        if (s.warp_ops[w].mask >> (f.linear % kWarpSize) & 1u && s.warp_ops[w].arrived != 0) {
          s.error = "lane " + std::to_string(f.linear % kWarpSize) + " of warp " +
                    std::to_string(w) + " exited while lanes " + lanes(s.warp_ops[w].arrived) +
                    " wait for it at __shfl_xor_sync " +
                    site(s.warp_ops[w].file, s.warp_ops[w].line) + " (" + where(f) + ")";
          break;
        }
      }
    }
    if (!s.error.empty()) {
      for (int t = 0; t < s.n; ++t)  // fibers stopped inside the kernel start afresh
        if (s.fibers[t].wait != Wait::Done) s.fibers[t].parked = false;
      throw std::runtime_error("emulation: " + s.error);
    }
  }
  const std::string canaries = overwritten_canaries();
  if (!canaries.empty()) {
    throw std::runtime_error("emulation: kernel " + kernel + " wrote out of bounds: " + canaries);
  }
}

std::vector<std::string> shared_variables() {
  std::vector<std::string> names;
  for (const Region& r : shared_regions()) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> full(
        abi::__cxa_demangle(r.name.c_str(), nullptr, nullptr, &status), std::free);
    names.push_back(status == 0 ? full.get() : r.name);
  }
  return names;
}

std::vector<std::string> take_launches() {
  std::vector<std::string> out;
  out.swap(S().launches);
  return out;
}

}  // namespace ptcore_emu
