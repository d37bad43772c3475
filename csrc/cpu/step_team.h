// Threads for a layer's time loop that survive a shared CPU.
//
// The problem: a layer runs one or two parallel regions per time step, and an
// OpenMP region ends at a barrier that waits for every thread of its team.
// When another process takes a core away, one of our threads is off the CPU
// for a scheduler time slice (milliseconds) and every step waits for it.
// Measured on this project's 2-core VM under load (load average 5): one
// training step of (B=64, I=1, H=32, T=336) took 164 ms with 2 threads and
// 14 ms with 1 (torch.nn.LSTM collapses alike: issue 12).
//
// The fix: with_step_team(body) runs body (a layer's whole time loop) on the
// calling thread inside ONE OpenMP region, whose other threads serve the
// loop's parallel_for calls until body returns. A parallel_for there ends when
// all of its *work* is done, not when all threads have arrived: the range is
// cut into chunks; each thread first takes the chunks of its own slice (the
// same slice every step, so its columns of W_hh stay in its own cache, as
// with a static OpenMP schedule), then steals the chunks no one has started.
// A thread that is off the CPU delays a step by at most the chunk it is
// running; if it never started, the others do its slice. The only barrier
// left that waits for every thread is the region's end, once per layer call.
// Idle team threads spin briefly (the next step follows within microseconds),
// then yield the CPU, then sleep.
//
// A step that waited for a thread off the CPU runs the rest of its call
// inline; a second such wait within a few calls also sends the process to
// one thread for its next layer calls (OpThreads; backoff and the two-strike
// rule in step_team.cpp).
//
// Row groups (for_each_row_group): where the whole of W_hh fits in each
// core's own cache, a layer's batch rows are split between threads instead,
// and each thread runs every time step of its rows alone: rows do not depend
// on each other, so there is no per-step synchronisation at all and no
// hidden state crosses cores (with the units split, every step each thread
// reads the h the others just wrote). One OpenMP region per layer call;
// threads claim groups from a counter, so a thread off the CPU that never
// started leaves its group to the others, and the region's end (waiting for a
// thread that is off the CPU) marks the CPU contended as a team's does.
//
// parallel_for outside a team is at::parallel_for (a standalone cell step).
// with_step_team runs body directly, without a team, where one thread is
// configured (at::get_num_threads()) or the caller is already inside a
// parallel region; ATen operations inside body run on one thread (nested
// OpenMP regions are serial), so body should call only the step kernels.
#pragma once

#include <cstdint>
#include <optional>

namespace lstm_ext::cpu {

using ChunkFn = void (*)(const void* ctx, int64_t begin, int64_t end);
using BodyFn = void (*)(const void* ctx);
using GroupFn = void (*)(const void* ctx, int64_t group);

// The non-template cores (step_team.cpp).
void team_parallel_for(int64_t begin, int64_t end, int64_t grain, ChunkFn fn, const void* ctx);
void run_with_step_team(BodyFn body, const void* ctx);
void run_row_groups(int64_t groups, GroupFn fn, const void* ctx);
void run_tasks(int64_t tasks, GroupFn fn, const void* ctx);

// Held around code that must run on at most `threads` threads (ATen's,
// oneDNN's and MKL's thread counts for this thread lowered, then restored);
// a no-op where no more are configured.
class ThreadCap {
 public:
  explicit ThreadCap(int threads);
  ~ThreadCap();
  ThreadCap(const ThreadCap&) = delete;
  ThreadCap& operator=(const ThreadCap&) = delete;

 private:
  int previous_ = 0;
  int previous_mkl_ = 0;
};

// Held around a library call that must run on one thread: its result then
// cannot depend on how many threads the process has.
class OneThread : public ThreadCap {
 public:
  OneThread() : ThreadCap(1) {}
};

// Held for the whole of a layer op: on one thread while the CPU is found
// contended, else on at most `cap` threads where cap > 0 (the threads the
// op's work can keep busy: layer_threads, layer_steps.h).
class OpThreads {
 public:
  explicit OpThreads(int64_t cap = 0);

 private:
  std::optional<ThreadCap> cap_;
};

// How often the process fell back to one thread so far (benchmarks and tests
// report it).
int64_t thread_fallbacks();
// How many waits for a thread off the CPU (strikes) the process met so far,
// the lone ones that did not make it fall back included: each cost its stall,
// one met during a step also the rest of its call on one thread (step_team.cpp
// says which cost what). Benchmarks report it beside the fallbacks, which
// alone hid the lone ones.
int64_t thread_strikes();
// The threads the calling thread's last layer op ran on (OpThreads: after its
// cap or its fallback), 0 before any; tests read it.
int64_t last_op_threads();

// at::parallel_for's contract: f(int64_t begin, int64_t end) over sub-ranges
// of [begin, end) of at least `grain` elements (but the last), possibly in
// parallel. On the step team where one is running on this thread.
template <typename F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  team_parallel_for(
      begin, end, grain,
      [](const void* ctx, int64_t b, int64_t e) { (*static_cast<const F*>(ctx))(b, e); }, &f);
}

// f(g) for each g in [0, groups), on up to `groups` threads (the current
// thread count); the step kernels' parallel_for calls inside f run inline.
template <typename F>
inline void for_each_row_group(int64_t groups, const F& f) {
  run_row_groups(
      groups, [](const void* ctx, int64_t g) { (*static_cast<const F*>(ctx))(g); }, &f);
}

// f(k) for each k in [0, tasks), side by side: threads claim tasks in order
// from a counter (so list the longest first), and each task runs on one
// thread (OneThread). For independent library calls (backward_products.h).
// Where one thread is configured, or inside a parallel region, one after
// another.
template <typename F>
inline void for_each_task(int64_t tasks, const F& f) {
  run_tasks(
      tasks, [](const void* ctx, int64_t k) { (*static_cast<const F*>(ctx))(k); }, &f);
}

// Runs body() on this thread with a step team serving its parallel_for calls.
template <typename F>
inline void with_step_team(const F& body) {
  run_with_step_team([](const void* ctx) { (*static_cast<const F*>(ctx))(); }, &body);
}

} // namespace lstm_ext::cpu
