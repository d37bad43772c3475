// What a layer op's kernels (float: lstm_layer_kernel.cpp, bfloat16:
// bf16/lstm_bf16.cpp, int8: int8/lstm_int8.cpp) share about its time steps: the sizes, which rows
// still run at each step (lengths), and each row's state at its own last step.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "checks.h"

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

} // namespace lstm_ext::cpu
