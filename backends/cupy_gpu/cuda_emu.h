// cuda_emu.h: run CUDA C kernels on the CPU (graphc's emulation harness).
//
// The kernel source that would go to NVRTC is compiled unchanged as C++17 against this
// header (g++ -include cuda_emu.h). emulate.py appends one launcher per `extern "C"
// __global__` kernel, which calls graphc_emu::launch below: the blocks run one after
// another (z, y, x order, x fastest), the threads of a block as fibers of the launching
// OS thread (the default), or with -DGRAPHC_EMU_THREADS as one OpenMP team of
// blockDim.x * blockDim.y * blockDim.z OS threads.
//
// The model:
//  * threadIdx is the running fiber's (the scheduler sets it at every switch; with
//    GRAPHC_EMU_THREADS it is thread_local, set from the OpenMP thread number), x
//    fastest, so warps are threads 32w..32w+31 of the block as on the GPU; blockIdx,
//    blockDim and gridDim are the same for every thread of the running block and are
//    plain globals, written by the launcher between blocks.
//  * __shared__ is `static`: the threads of a block share function statics and blocks
//    run one at a time, so a static is exactly "one copy per block". It is not cleared between
//    blocks (nor is shared memory on a GPU: never read a slot before writing it).
//  * __syncthreads() is a barrier among the threads still inside the kernel. Fibers:
//    each thread runs until it reaches the barrier (or returns), then the next one runs;
//    when all wait, the barrier opens. If some threads returned while others wait, the
//    waiting ones are unwound out of the kernel (an exception) and the launch fails. The
//    launcher also counts each thread's barriers and fails the launch when the counts
//    differ. So a barrier inside divergent control flow is an error, never a deadlock.
//    With GRAPHC_EMU_THREADS the same holds for graphc_emu::Barrier (below), whose waiting
//    threads yield, then sleep (futex on Linux, else a condition variable).
//  * warp shuffles / votes go through a per-block scratch buffer: every thread of the
//    block writes its value, one block barrier, then each thread reads its partner's
//    slot. The buffer alternates between two halves, so no second barrier is needed
//    before the next shuffle may overwrite it (the barrier of the next shuffle orders the
//    reads of this one before the writes of the one after). Hence, in emulation, shuffles,
//    votes and __syncwarp() are block barriers: they must be reached by all threads of the
//    block (block-uniform control flow, which graphc's renderer guarantees), and the
//    barrier checks catch a violation. The mask argument is ignored.
//  * one launch of a module at a time (a mutex): the statics are per module.
//
// Not emulated: dynamic shared memory (`extern __shared__`; emulate.py rejects it),
// cooperative groups, warp-divergent shuffles/barriers, clock(), tensor cores (wmma/mma),
// textures, half precision, streams and timing.
#pragma once

#include <math.h>  // libstdc++'s <math.h> puts the float overloads (sqrt(float) ...) in the
                   // global namespace, as CUDA has them
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <climits>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>
#include <omp.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__linux__) && !defined(GRAPHC_EMU_PORTABLE_BARRIER)
#define GRAPHC_EMU_FUTEX 1
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

// ---- qualifiers ----------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __constant__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// __restrict__ is a g++ keyword already.

// ---- built-in variables --------------------------------------------------------------
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};
// GRAPHC_EMU_TL: thread_local when the threads of a block are OS threads
// (GRAPHC_EMU_THREADS); plain globals when they are fibers of one OS thread, which the
// scheduler sets to the running fiber's values at every switch.
#ifdef GRAPHC_EMU_THREADS
#define GRAPHC_EMU_TL thread_local
#else
#define GRAPHC_EMU_TL
#endif
static GRAPHC_EMU_TL uint3 threadIdx;
static uint3 blockIdx;
static dim3 blockDim;
static dim3 gridDim;
static constexpr int warpSize = 32;

// ---- vector types (the common ones, CUDA's alignment) --------------------------------
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) double2 { double x, y; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

namespace graphc_emu {

struct Diverged {};  // thrown out of the kernel by the threads of a broken barrier

#ifdef GRAPHC_EMU_THREADS
// ---- barriers (GRAPHC_EMU_THREADS: the threads of a block are OS threads) ---------------
// `alive` threads take part; the barrier opens when all of them have arrived. The last
// thread to arrive (the "opener") runs a callback while every other thread still waits.
//
// A thread that returns from the kernel retire()s: it no longer counts. If its leaving
// completes a barrier that others wait at, the block has diverged (those threads reached
// a barrier this one never will): the barrier opens "broken", and the waiting threads
// throw Diverged, which unwinds them out of the kernel to the launcher. So a barrier in
// divergent control flow cannot deadlock the emulator, and no thread runs on past a
// barrier that did not pair up. (Every thread is either waiting or retired when that
// happens, since the barrier completed.) The launcher then sees different barrier counts.
//
// Waiting threads first yield the core a few times (with hundreds of threads on a few
// cores the barrier has often opened by the time a waiter runs again: measured 2-3x faster
// than sleeping at once), then sleep on a futex (Linux) or a condition variable. They never
// spin: the team is usually far larger than the number of cores.
#ifndef GRAPHC_EMU_YIELDS
#define GRAPHC_EMU_YIELDS 8
#endif

struct Barrier {
  std::atomic<unsigned long long> state{0};  // alive << 32 | arrived
  std::atomic<unsigned int> generation{0};   // bumped when the barrier opens (futex word)
  std::atomic<bool> broken{false};           // opened by a retiring thread
#ifndef GRAPHC_EMU_FUTEX
  std::mutex m;
  std::condition_variable cv;
#endif

  // Only while no thread is using the barrier.
  void reset(unsigned int n) {
    state.store((unsigned long long)n << 32, std::memory_order_relaxed);
    broken.store(false, std::memory_order_relaxed);
  }

  void open() {
#ifdef GRAPHC_EMU_FUTEX
    static_assert(sizeof(std::atomic<unsigned int>) == sizeof(int), "futex word");
    generation.fetch_add(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<int*>(&generation), FUTEX_WAKE_PRIVATE, INT_MAX,
            nullptr, nullptr, 0);
#else
    {
      std::lock_guard<std::mutex> lock(m);
      generation.fetch_add(1, std::memory_order_release);
    }
    cv.notify_all();
#endif
  }

  void sleep(unsigned int gen) {
    for (int i = 0; i < GRAPHC_EMU_YIELDS; ++i) {
      if (generation.load(std::memory_order_acquire) != gen) return;
      sched_yield();
    }
#ifdef GRAPHC_EMU_FUTEX
    // FUTEX_WAIT returns at once if the word is no longer `gen` (opened in between).
    while (generation.load(std::memory_order_acquire) == gen)
      syscall(SYS_futex, reinterpret_cast<int*>(&generation), FUTEX_WAIT_PRIVATE, gen,
              nullptr, nullptr, 0);
#else
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return generation.load(std::memory_order_acquire) != gen; });
#endif
  }

  // Arrive and wait. The generation is read before arriving: it cannot move before this
  // thread has arrived, since this thread is one of the alive ones.
  template <class F>
  void wait(F&& on_open) {
    const unsigned int gen = generation.load(std::memory_order_acquire);
    unsigned long long s = state.load(std::memory_order_relaxed), next;
    bool last;
    do {
      const unsigned long long alive = s >> 32, arrived = (s & 0xffffffffu) + 1;
      last = arrived == alive;
      next = (alive << 32) | (last ? 0 : arrived);
    } while (!state.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
    if (last) {
      on_open();
      open();
    } else {
      sleep(gen);
    }
  }
  void wait() { wait([] {}); }

  void retire() {
    unsigned long long s = state.load(std::memory_order_relaxed), next;
    bool last;
    do {
      const unsigned long long alive = (s >> 32) - 1, arrived = s & 0xffffffffu;
      last = arrived > 0 && arrived == alive;
      next = (alive << 32) | (last ? 0 : arrived);
    } while (!state.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
    if (last) {
      broken.store(true, std::memory_order_relaxed);  // published by open()'s release
      open();
    }
  }
};

static Barrier g_barrier;                          // __syncthreads of the block
static Barrier g_team;                             // the launcher's, between blocks
#endif  // GRAPHC_EMU_THREADS
static int g_nthreads = 0;                         // threads per block of this launch
static GRAPHC_EMU_TL int t_tid = 0;                 // linear thread index in the block
static GRAPHC_EMU_TL unsigned long long t_syncs = 0; // barriers this thread reached (block)
static GRAPHC_EMU_TL int t_half = 0;                 // which half of g_exchange is next
static unsigned long long g_exchange[2][1024];     // shuffle / vote scratch, one slot a thread
static std::mutex g_launch_mutex;                   // one launch of this module at a time

#ifndef GRAPHC_EMU_THREADS
// ---- fibers (the default: the threads of a block are fibers of the launching thread) ----
// Each thread of the block runs on a stack of its own; it runs until it reaches a barrier
// (or returns), then switches back to the scheduler, which runs the next one. When every
// thread of the block waits at the barrier it opens: a new round. A switch is a few
// nanoseconds (saved registers, no system call), where an OS-thread barrier costs every
// thread a context switch. The order alternates between rounds and between blocks
// (ascending, then descending thread index), so a read of another thread's write that
// lacks a barrier sees the stale value in some block, whichever thread writes.
#ifndef GRAPHC_EMU_STACK
#define GRAPHC_EMU_STACK (512 * 1024)    // bytes of stack per emulated thread
#endif

enum FiberState { RUNNABLE, WAITING, DONE };

struct Fiber {
  void* sp = nullptr;          // saved stack pointer while switched out
  char* stack = nullptr;       // its stack (mmap'd, a guard page below)
  unsigned long long syncs = 0;
  int half = 0;
  FiberState state = DONE;
};

static std::vector<Fiber> g_fibers;   // one per thread of the block (reused)
static Fiber* g_cur = nullptr;        // the running fiber
static void* g_sched_sp = nullptr;    // the scheduler's saved stack pointer
static bool g_broken = false;         // a barrier some threads never reach: unwind them
static bool g_failed = false;         // a thread ended with an exception other than ours
static void (*g_body)(void*) = nullptr;  // runs the kernel with the launch's arguments
static void* g_body_arg = nullptr;

// switch(save, load): save the callee-saved registers and the stack pointer in *save,
// load the ones saved at `load`, return there.
#if defined(__x86_64__) && !defined(GRAPHC_EMU_UCONTEXT)
extern "C" __attribute__((visibility("hidden"))) void graphc_emu_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .globl graphc_emu_switch
  .hidden graphc_emu_switch
  .type graphc_emu_switch, @function
graphc_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size graphc_emu_switch, .-graphc_emu_switch
)");

[[noreturn]] void fiber_main();

// A fresh frame at the top of f's stack that graphc_emu_switch "returns" into fiber_main.
inline void fiber_start(Fiber& f) {
  unsigned long long* top =
      reinterpret_cast<unsigned long long*>(f.stack + GRAPHC_EMU_STACK);  // 16-aligned
  top[-1] = 0;                                                   // fiber_main's caller
  top[-2] = reinterpret_cast<unsigned long long>(&fiber_main);  // ret: rsp = 8 mod 16
  for (int r = 3; r <= 8; ++r) top[-r] = 0;                     // rbp rbx r12..r15
  unsigned int csr[2];
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(csr[0]), "=m"(csr[1]));
  std::memcpy(&top[-9], csr, 8);
  f.sp = &top[-9];
}
inline void fiber_switch(void** save, void* load) { graphc_emu_switch(save, load); }
#else
// Elsewhere (or with -DGRAPHC_EMU_UCONTEXT): POSIX ucontext, slower (a signal-mask system
// call per switch) but portable.
}  // namespace graphc_emu
#include <ucontext.h>
namespace graphc_emu {
[[noreturn]] void fiber_main();
struct UContexts { std::vector<ucontext_t> ctx; ucontext_t sched; };
static UContexts g_uc;
inline void fiber_start(Fiber& f) {
  const size_t i = &f - g_fibers.data();
  if (g_uc.ctx.size() < g_fibers.size()) g_uc.ctx.resize(g_fibers.size());
  ucontext_t& c = g_uc.ctx[i];
  getcontext(&c);
  c.uc_stack.ss_sp = f.stack;
  c.uc_stack.ss_size = GRAPHC_EMU_STACK;
  c.uc_link = nullptr;
  makecontext(&c, reinterpret_cast<void (*)()>(&fiber_main), 0);
  f.sp = &c;
}
// save/load name ucontext_t's: the scheduler's (g_sched_sp) or a fiber's (f.sp).
inline void fiber_switch(void** save, void* load) {
  ucontext_t* from = save == &g_sched_sp ? &g_uc.sched
                                         : &g_uc.ctx[g_cur - g_fibers.data()];
  *save = from;
  swapcontext(from, static_cast<ucontext_t*>(load));
}
#endif

// Stacks for n fibers (kept for later launches); false when memory runs out.
inline bool fibers_reserve(size_t n) {
  static const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (g_fibers.size() >= n) return true;
  const size_t old = g_fibers.size();
  g_fibers.resize(n);
  for (size_t i = old; i < n; ++i) {
    void* m = mmap(nullptr, GRAPHC_EMU_STACK + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) { g_fibers.resize(i); return false; }
    mprotect(m, page, PROT_NONE);   // guard page: a stack overflow faults, never corrupts
    g_fibers[i].stack = static_cast<char*>(m) + page;
  }
  return true;
}

inline void yield_to_scheduler() { fiber_switch(&g_cur->sp, g_sched_sp); }

[[noreturn]] inline void fiber_main() {
  try {
    g_body(g_body_arg);
  } catch (const Diverged&) {
    // this thread waited at a barrier that some threads of the block returned without
    // reaching; its count is higher than theirs, which the launcher reports
  } catch (...) {
    g_failed = true;
  }
  g_cur->state = DONE;
  yield_to_scheduler();
  __builtin_trap();   // a DONE fiber is never resumed
}
#endif  // !GRAPHC_EMU_THREADS

inline void block_barrier() {
  ++t_syncs;
#ifdef GRAPHC_EMU_THREADS
  g_barrier.wait();
  if (g_barrier.broken.load(std::memory_order_relaxed)) throw Diverged{};
#else
  g_cur->state = WAITING;
  yield_to_scheduler();
  if (g_broken) throw Diverged{};
#endif
}

// Every thread of the block publishes `bits`; returns the half that holds them all.
inline const unsigned long long* exchange(unsigned long long bits) {
  unsigned long long* slots = g_exchange[t_half];
  t_half ^= 1;
  slots[t_tid] = bits;
  block_barrier();
  return slots;
}

enum ShflMode { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_BFLY };

// PTX shfl.sync semantics; CUDA's __shfl_*_sync(.., width) pass c = ((32 - width) << 8) |
// clamp, with clamp 0 for up and 31 otherwise. Lanes outside the block (a partial last
// warp) do not exist: reading one gives the caller's own value.
template <class T>
inline T shfl(T v, ShflMode mode, int b, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle type");
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  const unsigned long long* slots = exchange(bits);
  const int lane = t_tid & 31;
  const int segmask = (32 - width) & 31;
  const int clamp = mode == SHFL_UP ? 0 : 31;
  const int max_lane = (lane & segmask) | (clamp & ~segmask);
  const int min_lane = lane & segmask;
  const int bval = b & 31;
  int j = lane;
  bool ok = false;
  switch (mode) {
    case SHFL_UP: j = lane - bval; ok = j >= max_lane; break;
    case SHFL_DOWN: j = lane + bval; ok = j <= max_lane; break;
    case SHFL_BFLY: j = lane ^ bval; ok = j <= max_lane; break;
    case SHFL_IDX: j = min_lane | (bval & ~segmask); ok = j <= max_lane; break;
  }
  const int src = (t_tid - lane) + (ok ? j : lane);
  if (src >= g_nthreads) return v;
  T out;
  std::memcpy(&out, &slots[src], sizeof(T));
  return out;
}

// Bit l set when lane l of the caller's warp (existing lanes only) has a nonzero predicate.
inline unsigned int ballot(int pred) {
  const unsigned long long* slots = exchange(pred != 0);
  const int base = t_tid & ~31;
  unsigned int bits = 0;
  for (int l = 0; l < 32 && base + l < g_nthreads; ++l)
    if (slots[base + l]) bits |= 1u << l;
  return bits;
}

inline unsigned int warp_lanes() {
  const int base = t_tid & ~31;
  const int n = g_nthreads - base < 32 ? g_nthreads - base : 32;
  return n == 32 ? 0xffffffffu : (1u << n) - 1u;
}

template <class T, class F>
inline T atomic_update(T* p, F f) {  // compare-and-swap loop: returns the old value
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  T desired = f(old);
  while (!__atomic_compare_exchange(p, &old, &desired, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED))
    desired = f(old);
  return old;
}

// ---- the launcher ----------------------------------------------------------------------
template <class... P, std::size_t... I>
inline void call(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
  // args[i] points at the value of parameter i (cuLaunchKernel's convention).
  kernel(*static_cast<P*>(args[I])...);
}

template <class T> struct Describe {  // 0/1: pointer to integer/floating; 2/3: scalar
  using V = typename std::remove_cv<typename std::remove_pointer<T>::type>::type;
  static constexpr int base = std::is_floating_point<V>::value ? 1
                              : std::is_integral<V>::value    ? 0 : -100;
  static constexpr int kind = std::is_pointer<T>::value ? base : base + 2;
  static constexpr int size = std::is_void<V>::value ? 0 : (int)sizeof(
      typename std::conditional<std::is_void<V>::value, char, V>::type);
};

// What the compiler thinks the parameters are, for emulate.py to check its own parse.
template <class... P>
inline int signature(void (*)(P...), int* kinds, int* sizes, int cap) {
  const int k[] = {Describe<P>::kind..., 0};
  const int s[] = {Describe<P>::size..., 0};
  for (int i = 0; i < (int)sizeof...(P) && i < cap; ++i) { kinds[i] = k[i]; sizes[i] = s[i]; }
  return (int)sizeof...(P);
}

inline uint3 thread_coords(int t) {
  return {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
}

// The launch fails: threads of block b reached __syncthreads a different number of times.
inline int report_counts(const char* name, const unsigned int* grid, unsigned long long b,
                         const std::vector<unsigned long long>& counts, char* err,
                         int errlen) {
  const long long n = (long long)counts.size();
  long long lo = 0, hi = 0;
  for (long long t = 1; t < n; ++t) {
    if (counts[t] < counts[lo]) lo = t;
    if (counts[t] > counts[hi]) hi = t;
  }
  const uint3 a = thread_coords((int)lo), c = thread_coords((int)hi);
  const unsigned long long bx = b % grid[0], by = (b / grid[0]) % grid[1],
                           bz = b / ((unsigned long long)grid[0] * grid[1]);
  snprintf(err, errlen,
           "kernel %s, block (%llu,%llu,%llu): threads reached __syncthreads a different "
           "number of times — a barrier inside divergent control flow (counts: thread "
           "(%u,%u,%u) %llu, thread (%u,%u,%u) %llu; in emulation __syncwarp and the "
           "warp shuffles/votes are block barriers too)",
           name, bx, by, bz, a.x, a.y, a.z, counts[lo], c.x, c.y, c.z, counts[hi]);
  return 1;
}

inline uint3 block_coords(const unsigned int* grid, unsigned long long b) {
  return {(unsigned)(b % grid[0]), (unsigned)((b / grid[0]) % grid[1]),
          (unsigned)(b / ((unsigned long long)grid[0] * grid[1]))};
}

// Returns 0, or 1 with a message in err.
template <class... P>
inline int launch(const char* name, void (*kernel)(P...), const unsigned int* grid,
                  const unsigned int* block, void** args, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);  // statics are per module, not per call
  const long long n = (long long)block[0] * block[1] * block[2];
  const unsigned long long nblocks = (unsigned long long)grid[0] * grid[1] * grid[2];
  if (n < 1 || n > 1024 || nblocks < 1) {
    snprintf(err, errlen, "kernel %s: bad launch shape", name);
    return 1;
  }
  blockDim = dim3(block[0], block[1], block[2]);
  gridDim = dim3(grid[0], grid[1], grid[2]);
  g_nthreads = (int)n;
  std::vector<unsigned long long> counts(n);
  blockIdx = {0, 0, 0};
#ifdef GRAPHC_EMU_THREADS
  int team = 0;
  int status = 0;  // 1: team of the wrong size; 2: barrier counts differ
  unsigned long long bad_block = 0;
  g_barrier.reset((unsigned)n);
  g_team.reset((unsigned)n);

  // After block b, the last thread to reach the team barrier checks the barrier counts
  // and sets up block b + 1 while all the others wait there.
  auto next_block = [&](unsigned long long b) {
    for (long long t = 1; t < n; ++t)
      if (counts[t] != counts[0]) { status = 2; bad_block = b; return; }
    blockIdx = block_coords(grid, b + 1);
    g_barrier.reset((unsigned)n);
  };

  omp_set_dynamic(0);
#pragma omp parallel num_threads(n)
  {
    const int tid = omp_get_thread_num();
    t_tid = tid;
    threadIdx = thread_coords(tid);
    if (tid == 0) {
      team = omp_get_num_threads();
      if (team != n) status = 1;
    }
#pragma omp barrier
    for (unsigned long long b = 0; status == 0 && b < nblocks; ++b) {
      t_syncs = 0;
      t_half = 0;
      try {
        call(kernel, args, std::index_sequence_for<P...>{});
      } catch (const Diverged&) {
        // this thread waited at a barrier that some threads of the block returned without
        // reaching; its count is higher than theirs, which next_block reports
      }
      counts[tid] = t_syncs;
      g_barrier.retire();
      g_team.wait([&] { next_block(b); });
      // status is written only by the opener of g_team, before it opens: every thread
      // reads the same value here and the loop ends for all threads together.
    }
  }

  if (status == 1) {
    snprintf(err, errlen,
             "kernel %s: OpenMP started %d threads, not the %lld of the block (is "
             "OMP_THREAD_LIMIT set, or is the launch inside another parallel region?)",
             name, team, n);
    return 1;
  }
  if (status == 2) return report_counts(name, grid, bad_block, counts, err, errlen);
  return 0;
#else
  if (!fibers_reserve((size_t)n)) {
    snprintf(err, errlen, "kernel %s: no memory for the stacks of %lld emulated threads",
             name, n);
    return 1;
  }
  auto body = [&] { call(kernel, args, std::index_sequence_for<P...>{}); };
  g_body = [](void* f) { (*static_cast<decltype(body)*>(f))(); };
  g_body_arg = &body;
  g_failed = false;
  for (unsigned long long b = 0; b < nblocks; ++b) {
    blockIdx = block_coords(grid, b);
    g_broken = false;
    for (long long t = 0; t < n; ++t) {
      Fiber& f = g_fibers[t];
      f.state = RUNNABLE;
      f.syncs = 0;
      f.half = 0;
      fiber_start(f);
    }
    for (unsigned long long round = 0;; ++round) {
      long long waiting = 0, done = 0;
      for (long long k = 0; k < n; ++k) {
        const long long t = ((b + round) & 1) ? n - 1 - k : k;
        Fiber& f = g_fibers[t];
        if (f.state == RUNNABLE) {
          g_cur = &f;
          t_tid = (int)t;
          threadIdx = thread_coords((int)t);
          t_syncs = f.syncs;
          t_half = f.half;
          fiber_switch(&g_sched_sp, f.sp);
          f.syncs = t_syncs;
          f.half = t_half;
        }
        waiting += f.state == WAITING;
        done += f.state == DONE;
      }
      if (waiting == 0) break;              // every thread returned: the block is done
      if (done > 0) g_broken = true;        // some returned, some wait: unwind the waiters
      for (long long t = 0; t < n; ++t)
        if (g_fibers[t].state == WAITING) g_fibers[t].state = RUNNABLE;
    }
    g_cur = nullptr;
    if (g_failed) {
      snprintf(err, errlen, "kernel %s: a C++ exception left the kernel", name);
      return 1;
    }
    for (long long t = 0; t < n; ++t) counts[t] = g_fibers[t].syncs;
    for (long long t = 1; t < n; ++t)
      if (counts[t] != counts[0]) return report_counts(name, grid, b, counts, err, errlen);
  }
  return 0;
#endif
}

}  // namespace graphc_emu

// ---- synchronisation -------------------------------------------------------------------
inline void __syncthreads() { graphc_emu::block_barrier(); }
inline void __syncwarp(unsigned int = 0xffffffffu) { graphc_emu::block_barrier(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- warp shuffles and votes (block barriers in emulation; the mask is ignored) -------
#define GRAPHC_EMU_SHFL(T)                                                                   \
  inline T __shfl_sync(unsigned int, T v, int src, int width = 32) {                         \
    return graphc_emu::shfl(v, graphc_emu::SHFL_IDX, src, width);                            \
  }                                                                                          \
  inline T __shfl_up_sync(unsigned int, T v, unsigned int delta, int width = 32) {           \
    return graphc_emu::shfl(v, graphc_emu::SHFL_UP, (int)delta, width);                      \
  }                                                                                          \
  inline T __shfl_down_sync(unsigned int, T v, unsigned int delta, int width = 32) {         \
    return graphc_emu::shfl(v, graphc_emu::SHFL_DOWN, (int)delta, width);                    \
  }                                                                                          \
  inline T __shfl_xor_sync(unsigned int, T v, int lane_mask, int width = 32) {               \
    return graphc_emu::shfl(v, graphc_emu::SHFL_BFLY, lane_mask, width);                     \
  }
GRAPHC_EMU_SHFL(int)
GRAPHC_EMU_SHFL(unsigned int)
GRAPHC_EMU_SHFL(long)
GRAPHC_EMU_SHFL(unsigned long)
GRAPHC_EMU_SHFL(long long)
GRAPHC_EMU_SHFL(unsigned long long)
GRAPHC_EMU_SHFL(float)
GRAPHC_EMU_SHFL(double)
#undef GRAPHC_EMU_SHFL

inline unsigned int __ballot_sync(unsigned int, int pred) { return graphc_emu::ballot(pred); }
inline int __any_sync(unsigned int, int pred) { return graphc_emu::ballot(pred) != 0; }
inline int __all_sync(unsigned int, int pred) {
  return graphc_emu::ballot(pred) == graphc_emu::warp_lanes();
}

// ---- math --------------------------------------------------------------------------------
// expf, logf, sqrtf, tanhf, erff, fabsf, fmaxf, powf ... come from <math.h>, and their
// float/double overloads (sqrt(float) returns float) as in CUDA.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }

// CUDA's max/min overloads (same set as its math headers: mixed signed/unsigned compare
// as unsigned; the floating ones are fmax/fmin).
#define GRAPHC_EMU_MINMAX(R, A, B)                                     \
  inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }         \
  inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }
GRAPHC_EMU_MINMAX(int, int, int)
GRAPHC_EMU_MINMAX(unsigned int, unsigned int, unsigned int)
GRAPHC_EMU_MINMAX(unsigned int, int, unsigned int)
GRAPHC_EMU_MINMAX(unsigned int, unsigned int, int)
GRAPHC_EMU_MINMAX(long, long, long)
GRAPHC_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
GRAPHC_EMU_MINMAX(unsigned long, long, unsigned long)
GRAPHC_EMU_MINMAX(unsigned long, unsigned long, long)
GRAPHC_EMU_MINMAX(long long, long long, long long)
GRAPHC_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
GRAPHC_EMU_MINMAX(unsigned long long, long long, unsigned long long)
GRAPHC_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef GRAPHC_EMU_MINMAX
inline float max(float a, float b) { return fmaxf(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(double a, float b) { return fmax(a, (double)b); }
inline double min(double a, float b) { return fmin(a, (double)b); }

// ---- bit casts and integer intrinsics ----------------------------------------------------
template <class To, class From>
inline To graphc_emu_bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit cast");
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}
inline float __int_as_float(int v) { return graphc_emu_bit_cast<float>(v); }
inline int __float_as_int(float v) { return graphc_emu_bit_cast<int>(v); }
inline float __uint_as_float(unsigned int v) { return graphc_emu_bit_cast<float>(v); }
inline unsigned int __float_as_uint(float v) { return graphc_emu_bit_cast<unsigned int>(v); }
inline double __longlong_as_double(long long v) { return graphc_emu_bit_cast<double>(v); }
inline long long __double_as_longlong(double v) { return graphc_emu_bit_cast<long long>(v); }
inline int __popc(unsigned int v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned int)v); }
inline int __clzll(long long v) { return v == 0 ? 64 : __builtin_clzll((unsigned long long)v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __ffsll(long long v) { return __builtin_ffsll(v); }
inline unsigned int __brev(unsigned int v) {
  unsigned int r = 0;
  for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
  return r;
}
template <class T> inline T __ldg(const T* p) { return *p; }

// ---- atomics (sequentially consistent; blocks run one at a time, so they are exact) ---
// CUDA's set for int, unsigned int, unsigned long long, float and double (a superset for
// the integer ones: NVRTC, which the tests also run, rejects what CUDA lacks).
#define GRAPHC_EMU_ATOMIC_OP(T, NAME, NEW)                                             \
  inline T NAME(T* p, T v) {                                                           \
    return graphc_emu::atomic_update(p, [v](T o) { return (T)(NEW); });                \
  }
#define GRAPHC_EMU_ATOMIC(T)                                                           \
  GRAPHC_EMU_ATOMIC_OP(T, atomicAdd, o + v)                                            \
  GRAPHC_EMU_ATOMIC_OP(T, atomicExch, v)
#define GRAPHC_EMU_ATOMIC_INT(T)                                                       \
  GRAPHC_EMU_ATOMIC_OP(T, atomicSub, o - v)                                            \
  GRAPHC_EMU_ATOMIC_OP(T, atomicMax, o > v ? o : v)                                    \
  GRAPHC_EMU_ATOMIC_OP(T, atomicMin, o < v ? o : v)                                    \
  GRAPHC_EMU_ATOMIC_OP(T, atomicAnd, o & v)                                            \
  GRAPHC_EMU_ATOMIC_OP(T, atomicOr, o | v)                                             \
  GRAPHC_EMU_ATOMIC_OP(T, atomicXor, o ^ v)                                            \
  inline T atomicCAS(T* p, T cmp, T v) {                                               \
    return graphc_emu::atomic_update(p, [cmp, v](T o) { return o == cmp ? v : o; });  \
  }
GRAPHC_EMU_ATOMIC(int)
GRAPHC_EMU_ATOMIC(unsigned int)
GRAPHC_EMU_ATOMIC(unsigned long long)
GRAPHC_EMU_ATOMIC(float)
GRAPHC_EMU_ATOMIC(double)
GRAPHC_EMU_ATOMIC_INT(int)
GRAPHC_EMU_ATOMIC_INT(unsigned int)
GRAPHC_EMU_ATOMIC_INT(unsigned long long)
GRAPHC_EMU_ATOMIC_OP(long long, atomicMax, o > v ? o : v)
GRAPHC_EMU_ATOMIC_OP(long long, atomicMin, o < v ? o : v)
#undef GRAPHC_EMU_ATOMIC_INT
#undef GRAPHC_EMU_ATOMIC
#undef GRAPHC_EMU_ATOMIC_OP
