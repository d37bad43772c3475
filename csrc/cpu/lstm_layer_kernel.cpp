// One direction of one LSTM layer over a whole sequence, forward and
// backpropagation through time, on the CPU.
//
// Forward: the input projection of all T*B rows is one GEMM (bias folded in);
// then per step only the recurrent GEMM, into the preallocated gates buffer,
// and the fused pointwise pass. Everything the backward needs (activated gates,
// every c) lives in two allocations made before the loop.
//
// Backward: per step only the pointwise pass and dh = dgates @ W_hh are
// sequential; dx, dW_ih, dW_hh and the bias gradient are one GEMM (or one
// reduction) each over all T*B rows after the loop.
//
// Variable lengths: lengths must be non-increasing, so the rows still running
// at step t are a prefix [0, batch_sizes[t]) of the batch (the layout of a
// PackedSequence). Each step's GEMM and pointwise pass cover that prefix only;
// finished rows keep their state, output zeros and receive no gradient.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "checks.h"
#include "lstm_pointwise.h"

namespace lstm_ext::cpu {
namespace {

using at::Tensor;

struct LayerSizes {
  int64_t steps, batch, input, hidden;
  std::vector<int64_t> batch_sizes;  // rows still running at each step
  bool padded;                       // some row is shorter than `steps`
};

LayerSizes check_layer_args(const char* op, const Tensor& input, const Tensor& hx,
                            const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                            const std::optional<Tensor>& lengths) {
  check_floating(op, "input", input);
  check_dim(op, "input", input, 3, "(seq_len, batch, input_size)");
  check_defined_cpu(op, "w_hh", w_hh);
  check_dim(op, "w_hh", w_hh, 2, "(4 * hidden_size, hidden_size)");
  LayerSizes s{input.size(0), input.size(1), input.size(2), w_hh.size(1), {}, false};
  const auto dtype = input.scalar_type();
  check_arg(op, "w_hh", w_hh, {4 * s.hidden, s.hidden}, "(4 * hidden_size, hidden_size)", dtype);
  check_arg(op, "w_ih", w_ih, {4 * s.hidden, s.input}, "(4 * hidden_size, input_size)", dtype);
  check_arg(op, "hx", hx, {s.batch, s.hidden}, "(batch, hidden_size)", dtype);
  check_arg(op, "cx", cx, {s.batch, s.hidden}, "(batch, hidden_size)", dtype);

  s.batch_sizes.assign(s.steps, s.batch);
  if (lengths.has_value() && lengths->defined()) {
    const Tensor& len = *lengths;
    TORCH_CHECK(len.device().is_cpu(), op, ": expected lengths on the cpu, but got ", len.device());
    TORCH_CHECK(len.scalar_type() == at::kLong, op, ": expected lengths to have dtype int64, but got ",
                len.scalar_type());
    TORCH_CHECK(len.dim() == 1 && len.size(0) == s.batch, op, ": expected lengths of shape [",
                s.batch, "] (batch), but got ", len.sizes());
    const Tensor len_c = len.contiguous();
    const int64_t* l = len_c.data_ptr<int64_t>();
    for (int64_t b = 0; b < s.batch; ++b) {
      TORCH_CHECK(l[b] >= 1 && l[b] <= s.steps, op, ": lengths[", b, "] = ", l[b],
                  " is outside [1, seq_len = ", s.steps, "]");
      TORCH_CHECK(b == 0 || l[b] <= l[b - 1], op,
                  ": lengths must be sorted in non-increasing order, but lengths[", b, "] = ", l[b],
                  " > lengths[", b - 1, "] = ", l[b - 1],
                  " (sort the batch first, as pack_padded_sequence(enforce_sorted=False) does)");
    }
    for (int64_t t = 0; t < s.steps; ++t) {
      int64_t n = 0;
      while (n < s.batch && l[n] > t) ++n;
      s.batch_sizes[t] = n;
    }
    s.padded = s.batch > 0 && l[s.batch - 1] < s.steps;
  }
  return s;
}

// Each row's value at its own last step: rows[b] = seq[len_b - 1, b].
Tensor last_step(const Tensor& seq, const LayerSizes& s, const Tensor& initial) {
  if (s.steps == 0) return initial.clone();
  if (!s.padded) return seq[s.steps - 1].clone();
  Tensor out = at::empty_like(initial);
  for (int64_t t = 0; t < s.steps; ++t) {
    const int64_t n_now = s.batch_sizes[t];
    const int64_t n_next = t + 1 < s.steps ? s.batch_sizes[t + 1] : 0;
    if (n_now > n_next) {  // rows [n_next, n_now) end at step t
      out.narrow(0, n_next, n_now - n_next).copy_(seq[t].narrow(0, n_next, n_now - n_next));
    }
  }
  return out;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths) {
  constexpr const char* op = "lstm_layer_forward";
  const LayerSizes s = check_layer_args(op, input, hx, cx, w_ih, w_hh, lengths);
  const auto dtype = input.scalar_type();
  check_optional_arg(op, "b_ih", b_ih, {4 * s.hidden}, "(4 * hidden_size)", dtype);
  check_optional_arg(op, "b_hh", b_hh, {4 * s.hidden}, "(4 * hidden_size)", dtype);
  const int64_t T = s.steps, B = s.batch, H = s.hidden;

  Tensor gates = at::empty({T, B, 4 * H}, input.options());
  Tensor gates2d = gates.view({T * B, 4 * H});
  const Tensor x2d = input.reshape({T * B, s.input});
  const bool has_ih = b_ih.has_value() && b_ih->defined();
  const bool has_hh = b_hh.has_value() && b_hh->defined();
  if (has_ih || has_hh) {
    const Tensor bias = has_ih && has_hh ? *b_ih + *b_hh : (has_ih ? *b_ih : *b_hh);
    at::addmm_out(gates2d, bias, x2d, w_ih.t());
  } else {
    at::mm_out(gates2d, x2d, w_ih.t());
  }

  // Padded steps must read as zeros in output; cs is zeroed alike so that no
  // uninitialised memory is ever handed out.
  Tensor output = s.padded ? at::zeros({T, B, H}, input.options()) : at::empty({T, B, H}, input.options());
  Tensor cs = s.padded ? at::zeros({T, B, H}, input.options()) : at::empty({T, B, H}, input.options());
  const Tensor h0 = hx.contiguous();
  const Tensor c0 = cx.contiguous();
  const Tensor w_hh_t = w_hh.t();

  AT_DISPATCH_FLOATING_TYPES(dtype, op, [&] {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = s.batch_sizes[t];
      const Tensor h_prev = t == 0 ? h0 : output[t - 1];
      const Tensor c_prev = t == 0 ? c0 : cs[t - 1];
      Tensor g = gates[t].narrow(0, 0, n);
      g.addmm_(h_prev.narrow(0, 0, n), w_hh_t);
      forward_pointwise<scalar_t>({
          g.data_ptr<scalar_t>(),
          nullptr,
          nullptr,
          c_prev.data_ptr<scalar_t>(),
          cs[t].data_ptr<scalar_t>(),
          output[t].data_ptr<scalar_t>(),
          n,
          H,
      });
    }
  });
  Tensor hy = last_step(output, s, h0);
  Tensor cy = last_step(cs, s, c0);
  return {output, hy, cy, gates, cs};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_hy,
    const std::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, const Tensor& output,
    const Tensor& gates, const Tensor& cs, const std::optional<Tensor>& lengths,
    std::array<bool, 6> output_mask) {
  constexpr const char* op = "lstm_layer_backward";
  const LayerSizes s = check_layer_args(op, input, hx, cx, w_ih, w_hh, lengths);
  const auto dtype = input.scalar_type();
  const int64_t T = s.steps, B = s.batch, H = s.hidden;
  check_arg(op, "output", output, {T, B, H}, "(seq_len, batch, hidden_size)", dtype);
  check_arg(op, "gates", gates, {T, B, 4 * H}, "(seq_len, batch, 4 * hidden_size)", dtype);
  check_arg(op, "cs", cs, {T, B, H}, "(seq_len, batch, hidden_size)", dtype);
  check_optional_arg(op, "grad_output", grad_output, {T, B, H}, "(seq_len, batch, hidden_size)", dtype);
  check_optional_arg(op, "grad_hy", grad_hy, {B, H}, "(batch, hidden_size)", dtype);
  check_optional_arg(op, "grad_cy", grad_cy, {B, H}, "(batch, hidden_size)", dtype);

  // dh and dc carried backwards through time, updated in place. Rows that end
  // before the last step start from grad_hy/grad_cy when the loop reaches them.
  const bool has_gh = grad_hy.has_value() && grad_hy->defined();
  const bool has_gc = grad_cy.has_value() && grad_cy->defined();
  Tensor dh = has_gh ? grad_hy->contiguous().clone() : at::zeros({B, H}, input.options());
  Tensor dc = has_gc ? grad_cy->contiguous().clone() : at::zeros({B, H}, input.options());
  const bool has_go = grad_output.has_value() && grad_output->defined();
  const Tensor go = has_go ? grad_output->contiguous() : Tensor();
  const Tensor gates_c = gates.contiguous();
  const Tensor cs_c = cs.contiguous();
  const Tensor c0 = cx.contiguous();
  Tensor grad_gates = s.padded ? at::zeros({T, B, 4 * H}, input.options())
                               : at::empty({T, B, 4 * H}, input.options());

  AT_DISPATCH_FLOATING_TYPES(dtype, op, [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t n = s.batch_sizes[t];
      const Tensor c_prev = t == 0 ? c0 : cs_c[t - 1];
      Tensor dg = grad_gates[t].narrow(0, 0, n);
      backward_pointwise<scalar_t>({
          gates_c[t].data_ptr<scalar_t>(),
          c_prev.data_ptr<scalar_t>(),
          cs_c[t].data_ptr<scalar_t>(),
          dh.data_ptr<scalar_t>(),
          has_go ? go[t].data_ptr<scalar_t>() : nullptr,
          dc.data_ptr<scalar_t>(),
          dg.data_ptr<scalar_t>(),
          dc.data_ptr<scalar_t>(),
          n,
          H,
      });
      Tensor dh_rows = dh.narrow(0, 0, n);
      at::mm_out(dh_rows, dg, w_hh);
    }
  });

  const Tensor dg2d = grad_gates.view({T * B, 4 * H});
  const Tensor x2d = input.reshape({T * B, s.input});
  Tensor grad_input = output_mask[0] ? at::mm(dg2d, w_ih).view({T, B, s.input}) : Tensor();
  Tensor grad_w_ih = output_mask[3] ? at::mm(dg2d.t(), x2d) : Tensor();
  Tensor grad_w_hh;
  if (output_mask[4]) {
    // h_{t-1} is output[t-1] for t >= 1 and hx for t = 0: two GEMMs, no copy.
    grad_w_hh = T > 0 ? at::mm(grad_gates[0].t(), hx) : at::zeros_like(w_hh);
    if (T > 1) {
      grad_w_hh.addmm_(grad_gates.narrow(0, 1, T - 1).reshape({(T - 1) * B, 4 * H}).t(),
                       output.narrow(0, 0, T - 1).reshape({(T - 1) * B, H}));
    }
  }
  Tensor grad_bias = output_mask[5] ? dg2d.sum(0) : Tensor();
  if (!output_mask[1]) dh.reset();
  if (!output_mask[2]) dc.reset();
  return {grad_input, dh, dc, grad_w_ih, grad_w_hh, grad_bias};
}

} // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward);
  m.impl("lstm_layer_backward", &lstm_layer_backward);
}

} // namespace lstm_ext::cpu
