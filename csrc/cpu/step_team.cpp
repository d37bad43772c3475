// See step_team.h. The protocol of a team's parallel_for:
//
//   * the caller (thread 0 of the team) writes the job (fn, ctx, range, chunk
//     size), zeroes `done`, then stores each thread's slice of chunk indices
//     as one 64-bit word (next << 32 | end) with release, and bumps `epoch`;
//   * any thread claims chunk `next` of a slice by compare-and-swap of that
//     word, its own slice first, then the others'; only after a successful
//     claim does it read the job (acquire through the claimed word), runs the
//     chunk and increments `done`;
//   * the caller returns when done == chunks.
// A job's fields are rewritten only after its chunks are all done, so a
// successful claim always reads the job the claimed chunk belongs to; a
// thread that lagged behind by a whole job and claims in the next one simply
// works for that one.
#include "step_team.h"

#include <ATen/Parallel.h>
#include <omp.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>

// MKL keeps its own thread count (torch.set_num_threads sets it), which
// OpenMP's does not override; its thread-local setting does. Bound weakly, as
// gemm.cpp binds oneDNN: a torch without MKL leaves it null.
// (The C entry point is MKL_Set_Num_Threads_Local, what mkl_service.h's
// mkl_set_num_threads_local macro names; the lower-case symbol is the Fortran
// one, which takes a pointer.)
extern "C" __attribute__((weak)) int MKL_Set_Num_Threads_Local(int threads);

namespace lstm_ext::cpu {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long an idle team thread spins, then yields, before it sleeps. A step
// of a layer follows the previous one within microseconds; between layers (or
// the forward and backward) the gap is longer and a spinning thread would
// take a core from ATen's own OpenMP threads.
constexpr int kSpins = 4000;     // pause instructions (~100 us on this CPU)
constexpr int kYields = 200;     // sched_yield calls
constexpr int kChunksPerThread = 4;

// Falling back to one thread. A team thread that the scheduler takes off the
// CPU while it runs a chunk holds up the step until it runs again (a chunk
// cannot be taken over half done: the step kernels update in place), and every
// OpenMP region of the op (its GEMMs) waits alike. Measured with load average
// 7 on 2 cores: 2 threads took 212 ms per training step of (64, 1, 32, 336)
// against 39 ms for 1; a 688k-element sum took 16 ms against 0.15 ms.
//
// So a step whose caller waited far longer than its chunks take (a thread off
// the CPU, not an uneven split) marks the CPU as contended: the rest of that
// layer call runs its steps inline, and the next `backoff` layer calls run on
// one thread from start to end (OpThreads: their GEMMs too). backoff doubles
// while waits keep happening and halves after as many calls without one:
// under load the probing costs an ever smaller share, and an idle machine
// stays parallel. Process-wide and approximate (relaxed atomics): a
// heuristic, not a synchronisation.
//
// One wait alone does not send the process to one thread: a cloud VM's host
// takes a vCPU away for a few milliseconds now and then on a machine that is
// otherwise idle, and one such wait cost the next two layer calls their
// second thread (at (64,512,512,50), a whole training step). Measured on this
// project's 2-vCPU EPYC VM with nothing else running,
// `bench_threads.py --quick --threads 1,2`: 2 fallbacks per shape, and 2
// threads gave 1.50x one thread in training at (64,512,512,50). So a wait
// (a strike) falls back only when another came within kStrikeWindow
// parallel calls before it; a lone one found during a step costs the rest of
// its own call (run inline), one found at a call's end nothing more. On a CPU
// really shared every call waits, so the second call falls back, and after a
// stretch on one thread the probing call, which has had no parallel call
// since the last strike, falls back at once. Left: waits that come less often
// than once in kStrikeWindow calls each cost their stall and never fall back
// (thread_strikes counts them; before, each cost the next calls their second
// thread); the window counts the calls of step teams and row groups, not
// for_each_task's.
constexpr int64_t kMinBackoff = 2;        // layer calls
constexpr int64_t kMaxBackoff = 4096;
constexpr int64_t kLongWaitNs = 200000;   // plus 4 chunks' time
constexpr int64_t kStrikeWindow = 8;      // parallel layer calls
std::atomic<int64_t> serial_calls_left{0};
std::atomic<int64_t> backoff{kMinBackoff};
std::atomic<int64_t> smooth_calls{0};
std::atomic<int64_t> calls_since_strike{kStrikeWindow};
std::atomic<int64_t> fallbacks{0};
std::atomic<int64_t> strikes{0};
thread_local int64_t last_op_threads_ = 0;  // OpThreads, last_op_threads

// CPU time of the calling thread: with wall time, how long it was off the CPU.
int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A wait for a thread off the CPU: on the second within kStrikeWindow
// parallel calls, marks the CPU contended: the next `backoff` layer calls run
// on one thread.
void note_contended() {
  strikes.fetch_add(1, std::memory_order_relaxed);
  if (calls_since_strike.exchange(0, std::memory_order_relaxed) >= kStrikeWindow) return;
  const int64_t b = backoff.load(std::memory_order_relaxed);
  serial_calls_left.store(b, std::memory_order_relaxed);
  backoff.store(std::min(2 * b, kMaxBackoff), std::memory_order_relaxed);
  smooth_calls.store(0, std::memory_order_relaxed);
  fallbacks.fetch_add(1, std::memory_order_relaxed);
}

bool long_wait(int64_t wait_ns, int64_t chunk_ns) {
  if (wait_ns <= kLongWaitNs + 4 * chunk_ns) return false;
  note_contended();
  return true;
}

void smooth_call() {
  calls_since_strike.fetch_add(1, std::memory_order_relaxed);
  if (smooth_calls.fetch_add(1, std::memory_order_relaxed) + 1 >=
      backoff.load(std::memory_order_relaxed)) {
    backoff.store(std::max(backoff.load(std::memory_order_relaxed) / 2, kMinBackoff),
                  std::memory_order_relaxed);
    smooth_calls.store(0, std::memory_order_relaxed);
  }
}

struct alignas(64) Slice {
  std::atomic<uint64_t> word{0};  // next << 32 | end
};

inline uint64_t pack(uint64_t next, uint64_t end) { return next << 32 | end; }

class Team {
 public:
  explicit Team(int threads) : threads_(threads), slices_(new Slice[threads]) {}

  // Thread 0: one parallel_for.
  void run(int64_t begin, int64_t end, int64_t grain, ChunkFn fn, const void* ctx) {
    const int64_t n = end - begin;
    int64_t chunks =
        std::min<int64_t>((n + grain - 1) / grain, int64_t(threads_) * kChunksPerThread);
    if (chunks <= 1 || contended_) {
      fn(ctx, begin, end);
      return;
    }
    const int64_t size = (n + chunks - 1) / chunks;
    chunks = (n + size - 1) / size;
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    begin_.store(begin, std::memory_order_relaxed);
    end_.store(end, std::memory_order_relaxed);
    size_.store(size, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    for (int t = 0; t < threads_; ++t) {
      slices_[t].word.store(pack(chunks * t / threads_, chunks * (t + 1) / threads_),
                            std::memory_order_release);
    }
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    const int64_t chunk_ns = work(0);
    if (done_.load(std::memory_order_acquire) == chunks) return;
    // A chunk someone else claimed is still running.
    const int64_t start = now_ns();
    int spins = 0;
    while (done_.load(std::memory_order_acquire) < chunks) {
      if (++spins < kSpins) {
        cpu_relax();
      } else {
        sched_yield();
      }
    }
    if (long_wait(now_ns() - start, chunk_ns)) contended_ = true;
  }

  // Whether a step of this team waited for a thread off the CPU.
  bool contended() const { return contended_; }

  // Threads 1..: serve jobs until thread 0 calls finish().
  void serve(int self) {
    uint64_t seen = 0;  // jobs published before this thread arrived are new to it
    while (true) {
      int idle = 0;
      uint64_t now;
      while ((now = epoch_.load(std::memory_order_acquire)) == seen &&
             !stop_.load(std::memory_order_acquire)) {
        if (++idle < kSpins) {
          cpu_relax();
        } else if (idle < kSpins + kYields) {
          sched_yield();
        } else {
          std::unique_lock<std::mutex> lock(mutex_);
          sleeping_.fetch_add(1, std::memory_order_seq_cst);
          wake_.wait(lock, [&] {
            return epoch_.load(std::memory_order_seq_cst) != seen ||
                   stop_.load(std::memory_order_seq_cst);
          });
          sleeping_.fetch_sub(1, std::memory_order_seq_cst);
          idle = 0;
        }
      }
      if (now == seen) return;  // stopped
      seen = now;
      work(self);
    }
  }

  void finish() {
    stop_.store(true, std::memory_order_seq_cst);
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }

 private:
  // Chunks of the own slice first, then the others'. Thread 0 times them:
  // returns the longest chunk's time in ns (0 for the other threads).
  int64_t work(int self) {
    int64_t longest = 0;
    for (int k = 0; k < threads_; ++k) {
      Slice& s = slices_[(self + k) % threads_];
      uint64_t w = s.word.load(std::memory_order_acquire);
      while ((w >> 32) < (w & 0xffffffffu)) {
        if (s.word.compare_exchange_weak(w, w + (uint64_t(1) << 32), std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
          const int64_t t0 = self == 0 ? now_ns() : 0;
          run_chunk(int64_t(w >> 32));
          if (self == 0) longest = std::max(longest, now_ns() - t0);
          w = s.word.load(std::memory_order_acquire);
        }
      }
    }
    return longest;
  }

  void run_chunk(int64_t chunk) {
    const int64_t size = size_.load(std::memory_order_relaxed);
    const int64_t b = begin_.load(std::memory_order_relaxed) + chunk * size;
    const int64_t e = std::min(end_.load(std::memory_order_relaxed), b + size);
    fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), b, e);
    done_.fetch_add(1, std::memory_order_release);
  }

  const int threads_;
  std::unique_ptr<Slice[]> slices_;
  std::atomic<ChunkFn> fn_{nullptr};
  std::atomic<const void*> ctx_{nullptr};
  std::atomic<int64_t> begin_{0}, end_{0}, size_{1};
  alignas(64) std::atomic<int64_t> done_{0};
  alignas(64) std::atomic<uint64_t> epoch_{0};
  std::atomic<bool> stop_{false};
  bool contended_ = false;  // thread 0 only
  std::atomic<int> sleeping_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// The team the calling thread leads, if any.
thread_local Team* current_team = nullptr;

} // namespace

void team_parallel_for(int64_t begin, int64_t end, int64_t grain, ChunkFn fn, const void* ctx) {
  if (begin >= end) return;
  if (current_team != nullptr) {
    current_team->run(begin, end, std::max<int64_t>(grain, 1), fn, ctx);
    return;
  }
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { fn(ctx, b, e); });
}

void run_with_step_team(BodyFn body, const void* ctx) {
  const int threads = at::get_num_threads();
  if (threads <= 1 || current_team != nullptr || at::in_parallel_region() || omp_in_parallel()) {
    body(ctx);
    return;
  }
  Team team(threads);
  std::exception_ptr error;
  int64_t finished = 0;
#pragma omp parallel num_threads(threads)
  {
    const int self = omp_get_thread_num();
    if (self == 0) {
      current_team = &team;
      try {
        body(ctx);
      } catch (...) {
        error = std::current_exception();
      }
      current_team = nullptr;
      finished = now_ns();
      team.finish();
    } else {
      team.serve(self);
    }
  }
  // The region's end waits for every team thread to see finish(): long only
  // when one of them is off the CPU. The op's other regions (its GEMMs) wait
  // alike, so this, more than a step's wait, is what finds the CPU contended.
  const bool contended = team.contended() || long_wait(now_ns() - finished, 0);
  if (!contended) smooth_call();
  if (error) std::rethrow_exception(error);
}

namespace {

// for_each_row_group and for_each_task: fn(ctx, k) for k in [0, n), threads
// claiming k from a counter. `alike`: the items are alike in work (row
// groups), so thread 0 waiting at the end for longer than one of them means a
// thread off the CPU; tasks differ, and only thread 0's own time off the CPU
// tells.
void run_claimed(int64_t groups, GroupFn fn, const void* ctx, bool alike) {
  const int threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), groups));
  if (threads <= 1 || current_team != nullptr || at::in_parallel_region() || omp_in_parallel()) {
    for (int64_t g = 0; g < groups; ++g) fn(ctx, g);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  int64_t finished = 0;
  int64_t longest = 0;  // thread 0's longest group, wall time
  int64_t off_cpu = 0;  // thread 0's wall time minus its CPU time, over its groups
  int64_t on_cpu = 0;
#pragma omp parallel num_threads(threads)
  {
    const bool first = omp_get_thread_num() == 0;
    for (int64_t g; (g = next.fetch_add(1, std::memory_order_relaxed)) < groups;) {
      const int64_t t0 = first ? now_ns() : 0;
      const int64_t c0 = first ? thread_cpu_ns() : 0;
      try {
        fn(ctx, g);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      if (first) {
        const int64_t wall = now_ns() - t0, cpu = thread_cpu_ns() - c0;
        longest = std::max(longest, wall);
        off_cpu += std::max<int64_t>(wall - cpu, 0);
        on_cpu += cpu;
      }
    }
    if (first) finished = now_ns();
  }
  // The CPU is contended when thread 0 itself was off the CPU for a good
  // share of its groups (the other threads then share its core, or another
  // process does), or when it waited at the end for a thread that was: the
  // groups are alike in work (layer_row_groups balances them), so a wait of
  // more than a group's time (long_wait: 4 chunks of a quarter group) and
  // 200 us. The first catches what the second cannot where groups are long
  // (a sanitizer build: a wait shorter than a group, though every thread
  // shared one core).
  if (off_cpu > kLongWaitNs + on_cpu / 2) {
    note_contended();
  } else if (alike && !long_wait(now_ns() - finished, longest / 4)) {
    smooth_call();
  }
  if (error) std::rethrow_exception(error);
}

} // namespace

void run_row_groups(int64_t groups, GroupFn fn, const void* ctx) {
  run_claimed(groups, fn, ctx, true);
}

void run_tasks(int64_t tasks, GroupFn fn, const void* ctx) {
  const std::pair<GroupFn, const void*> job(fn, ctx);
  run_claimed(
      tasks,
      [](const void* c, int64_t k) {
        const auto* j = static_cast<const std::pair<GroupFn, const void*>*>(c);
        // Also inside the region: oneDNN and ATen run serially there by
        // themselves, but MKL may not (float64 weight gradients differed
        // from one thread's without this).
        const OneThread one;
        j->first(j->second, k);
      },
      &job, false);
}

OpThreads::OpThreads(int64_t cap) {
  if (omp_in_parallel()) {  // nested: serial
    last_op_threads_ = 1;
    return;
  }
  if (serial_calls_left.load(std::memory_order_relaxed) > 0) {
    serial_calls_left.fetch_sub(1, std::memory_order_relaxed);
    cap_.emplace(1);
  } else if (cap > 0 && cap < omp_get_max_threads()) {
    cap_.emplace(static_cast<int>(cap));
  }
  last_op_threads_ = omp_get_max_threads();
}

ThreadCap::ThreadCap(int threads) {
  // Nothing to do where no more threads are configured: then MKL's setting
  // is no more either (torch.set_num_threads sets both). Inside a parallel
  // region MKL may still start its own threads: set it there too.
  const int configured = omp_get_max_threads();
  if (configured <= threads && !omp_in_parallel()) return;
  const int n = std::max(std::min(threads, configured), 1);
  previous_ = configured;
  omp_set_num_threads(n);
  if (&MKL_Set_Num_Threads_Local != nullptr) previous_mkl_ = MKL_Set_Num_Threads_Local(n);
}

ThreadCap::~ThreadCap() {
  if (previous_ == 0) return;
  omp_set_num_threads(previous_);
  // 0 restores "no thread-local setting: MKL's global one".
  if (&MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(previous_mkl_);
}

int64_t thread_fallbacks() { return fallbacks.load(std::memory_order_relaxed); }
int64_t thread_strikes() { return strikes.load(std::memory_order_relaxed); }
int64_t last_op_threads() { return last_op_threads_; }

} // namespace lstm_ext::cpu
