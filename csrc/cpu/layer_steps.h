// What a layer op's kernels (float: lstm_layer_kernel.cpp, bfloat16:
// bf16/lstm_bf16.cpp, int8: int8/lstm_int8.cpp) share about its time steps: the sizes, which rows
// still run at each step (lengths), and each row's state at its own last step.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "checks.h"
#include "config.h"

namespace lstm_ext::cpu {

struct LayerSizes : LstmSizes {
  int64_t steps;
  std::vector<int64_t> batch_sizes;  // rows still running at each step
  bool padded;                       // some row is shorter than `steps`
};

// s.batch_sizes and s.padded from lengths (checked here) for s.steps and
// s.batch: every row runs at every step without lengths.
inline void set_running_rows(const char* op, LayerSizes& s,
                             const std::optional<at::Tensor>& lengths) {
  s.batch_sizes.assign(s.steps, s.batch);
  s.padded = false;
  if (lengths.has_value() && lengths->defined()) {
    const at::Tensor len = check_lengths(op, *lengths, s.steps, s.batch);
    const int64_t* l = len.data_ptr<int64_t>();
    for (int64_t t = 0; t < s.steps; ++t) {
      int64_t n = 0;
      while (n < s.batch && l[n] > t) ++n;
      s.batch_sizes[t] = n;
    }
    s.padded = s.batch > 0 && l[s.batch - 1] < s.steps;
  }
}

// The argument checks of every LSTM op (check_lstm_args) and of lengths, and
// the rows running at each step. lengths must be non-increasing, so those
// rows are a prefix [0, batch_sizes[t]) of the batch (a PackedSequence's
// layout). Checks of the buffers a kernel allocates are the kernel's.
inline LayerSizes layer_sizes(const char* op, const at::Tensor& input, const at::Tensor& hx,
                              const at::Tensor& cx, const at::Tensor& w_ih,
                              const at::Tensor& w_hh,
                              const std::optional<at::Tensor>& lengths,
                              const std::optional<at::Tensor>& w_hr = std::nullopt) {
  LayerSizes s{check_lstm_args(op, input, 3, "(seq_len, batch, input_size)", hx, cx, w_ih, w_hh,
                               w_hr),
               input.size(0), {}, false};
  set_running_rows(op, s, lengths);
  return s;
}

// This CPU's L2 cache per core in bytes (1 MiB where the C library cannot tell).
inline int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    const long b = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return b > 0 ? static_cast<int64_t>(b) : int64_t(1) << 20;
  }();
  return bytes;
}

// How a layer's time loop splits its work between threads: by batch rows
// (for_each_row_group, step_team.h: each thread runs every step of its rows,
// no per-step synchronisation) or, where this returns one group, by hidden
// units at each step (the step team). Returns the groups' first rows, then
// the batch size: {0, B} is one group.
//
// Rows need the whole of W_hh (weight_bytes) in every thread's cache, the
// units only a slice of it. Measured on this project's 2-core Xeon (2 MiB L2,
// float32 inference, 2 threads, ms, units split / rows split): (32,32,64,50)
// 0.69 / 0.43, (64,1,32,336) 2.44 / 1.37, (16,64,128,100) 1.68 / 1.31,
// (8,64,256,100) 2.23 / 1.96, (64,256,256,100) 24.5 / 22.0, but
// (64,512,512,50), 4 MiB of W_hh, 45.6 / 49.7. So: rows where W_hh takes at
// most half of L2; where it is above 256 KiB, only with 16 rows or more per
// thread (each pass over W_hh from L2 then serves 16 rows); else at least 4
// rows per group (about the step kernels' row block), fewer groups than threads
// if need be. Groups are contiguous (the rows running at a step are a prefix)
// and balanced by the steps their rows run (lengths).
inline std::vector<int64_t> layer_row_groups(const LayerSizes& s, int64_t weight_bytes) {
  const int64_t B = s.batch;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  int64_t groups = 1;
  if (weight_bytes <= 256 * 1024) {
    groups = std::min(threads, B / 4);
  } else if (weight_bytes <= l2_cache_bytes() / 2 && B >= 16 * threads) {
    groups = threads;
  }
  if (groups <= 1 || s.steps == 0) return {0, B};
  // steps[b]: how many steps row b runs (the t with batch_sizes[t] > b).
  std::vector<int64_t> steps(B + 1, 0);
  for (int64_t n : s.batch_sizes) ++steps[n];  // then suffix sums, from the top
  for (int64_t b = B - 1; b >= 0; --b) steps[b] += steps[b + 1];
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) total += steps[b + 1];
  std::vector<int64_t> bounds{0};
  int64_t done = 0;
  for (int64_t b = 0; b < B; ++b) {
    done += steps[b + 1];  // row b runs steps[b + 1] steps
    const int64_t g = static_cast<int64_t>(bounds.size());
    if (g < groups && done * groups >= total * g && b + 1 < B) bounds.push_back(b + 1);
  }
  bounds.push_back(B);
  return bounds;
}

// How many threads a float layer call runs on (OpThreads, step_team.h): the
// configured count, except where its time loop splits the rows into fewer
// groups than that (a small batch) and its work is small: then max(groups,
// forward FLOPs / kMinFlopsPerThread). The threads beyond the groups would
// run only the call's GEMMs and product pieces, a few MFLOP each, and each
// OpenMP region of the call waits for all of its threads. On the lent 16-core
// Xeon, training (32,32,64,50) (8 groups) took 1.58 ms with 8 threads and
// 5.04 with 16, inference 0.36 and 1.09 (bench_threads.py, one run).
// Results do not change: they are the same bits for any thread count.
inline int64_t layer_threads(const LayerSizes& s, int64_t weight_bytes) {
  constexpr double kMinFlopsPerThread = 10e6;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (!config().thread_cap || threads <= 2) return threads;
  const int64_t groups = static_cast<int64_t>(layer_row_groups(s, weight_bytes).size()) - 1;
  if (groups <= 1 || groups >= threads) return threads;
  const double flops = 8.0 * static_cast<double>(s.batch) * static_cast<double>(s.hidden) *
                       static_cast<double>(s.input + s.proj) * static_cast<double>(s.steps);
  const auto busy = static_cast<int64_t>(std::ceil(flops / kMinFlopsPerThread));
  return std::min(threads, std::max(groups, busy));
}

// Each row's value at its own last step: rows[b] = seq[len_b - 1, b]. With
// ring > 0, seq holds only `ring` steps, step t in slot t % ring (an
// inference layer keeps the cell state of two steps, not of all T); a row
// that has ended is never written again, so its slot still holds its value.
inline at::Tensor last_step(const at::Tensor& seq, const LayerSizes& s,
                            const at::Tensor& initial, int64_t ring = 0) {
  auto slot = [&](int64_t t) { return seq[ring > 0 ? t % ring : t]; };
  if (s.steps == 0) return initial.clone();
  if (!s.padded) return slot(s.steps - 1).clone();
  at::Tensor out = at::empty_like(initial);
  for (int64_t t = 0; t < s.steps; ++t) {
    const int64_t n_now = s.batch_sizes[t];
    const int64_t n_next = t + 1 < s.steps ? s.batch_sizes[t + 1] : 0;
    if (n_now > n_next) {  // rows [n_next, n_now) end at step t
      out.narrow(0, n_next, n_now - n_next).copy_(slot(t).narrow(0, n_next, n_now - n_next));
    }
  }
  return out;
}

// A layer's output gradient (T, B, X) as its backward reads it: step t's
// rows at data + t * step, row-major (B, X). A gradient that is the same at
// every step (stride 0 in time: the backward of out.sum() or out.mean(), an
// expanded scalar) is made contiguous for one step, step = 0, not copied T
// times: at (32,32,64,50) float32 that copy took 85-100 us of a 1.9 ms
// training step (torch.profiler, this project's Zen 4), 5% of it.
struct StepGradient {
  at::Tensor data;  // undefined where the op got no output gradient
  int64_t step;     // elements between two steps' (B, X) blocks
};
// `grad` is (T, B, X) where defined: the op checked it (check_optional_arg).
inline StepGradient step_gradient(const std::optional<at::Tensor>& grad) {
  if (!grad.has_value() || !grad->defined()) return {at::Tensor(), 0};
  const at::Tensor& g = *grad;
  if (g.size(0) > 0 && g.stride(0) == 0) return {g[0].contiguous(), 0};
  return {g.contiguous(), g.size(1) * g.size(2)};
}

// Zeroes what no step writes in a contiguous (T, B, X) buffer of a padded
// batch: rows [batch_sizes[t], B) of each step t. The steps write every other
// row, so zeroing the whole buffer first wrote most of it twice. A buffer of
// fewer steps (an inference ring, step t in slot t % ring) is zeroed whole.
inline void zero_padded_rows(const at::Tensor& buf, const LayerSizes& s) {
  if (!s.padded || buf.numel() == 0) return;
  if (buf.dim() != 3 || buf.size(0) != s.steps || buf.size(1) != s.batch ||
      !buf.is_contiguous()) {
    buf.zero_();
    return;
  }
  char* p = static_cast<char*>(buf.data_ptr());
  const int64_t row = buf.size(2) * buf.element_size();
  for (int64_t t = 0; t < s.steps; ++t) {
    const int64_t n = s.batch_sizes[t];
    if (n < s.batch) std::memset(p + (t * s.batch + n) * row, 0, (s.batch - n) * row);
  }
}

} // namespace lstm_ext::cpu
