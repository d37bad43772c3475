// The CPU kernels of lstm_cell_forward and lstm_cell_backward: one LSTM cell
// step and its gradients.
//
// Forward: gates (B, 4H) = x (B, I) @ W_ih^T + h (B, H) @ W_hh^T, by two
// library GEMMs (gemm.h), or by two GEMVs for a streaming step (B = 1); then
// one fused pointwise pass (vec::forward_pointwise) adds the biases, applies
// the activations in place and writes hy, cy (B, H). Returns the activated
// gates for the backward.
//
// Backward: one pointwise pass (vec::backward_pointwise) gives the
// pre-activation gradients dgates (B, 4H) and grad_cx; then each other
// gradient is one product or reduction: dx = dgates @ W_ih and dh = dgates @
// W_hh on the step kernels' small_gemm (W as it lies, no packing; the library
// GEMM under LSTM_EXT_GEMM=aten), dW_ih =
// dgates^T @ x and dW_hh = dgates^T @ h on the library GEMM, dbias = the
// column sums. A gradient masked off by output_mask is not computed.
//
// Aliasing: outputs are fresh tensors; inputs are only read (made contiguous
// first where a kernel needs raw rows).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <array>

#include "../ops.h"
#include "backward_products.h"
#include "bf16/lstm_bf16.h"
#include "checks.h"
#include "config.h"
#include "gemm.h"
#include "vec/kernels.h"

namespace lstm_ext::cpu {
namespace {

using at::Tensor;

LstmSizes check_cell_args(const char* op, const Tensor& input, const Tensor& hx,
                          const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh) {
  const LstmSizes s = check_lstm_args(op, input, 2, "(batch, input_size)", hx, cx, w_ih, w_hh);
  check_buffer_fits(op, "gates", {s.batch, 4, s.hidden}, input.scalar_type());
  return s;
}

std::tuple<Tensor, Tensor, Tensor> lstm_cell_forward(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  if (input.defined() && input.scalar_type() == at::kBFloat16) {
    return bf16::lstm_cell_forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  }
  constexpr const char* op = "lstm_cell_forward";
  const LstmSizes s = check_cell_args(op, input, hx, cx, w_ih, w_hh);
  const auto dtype = input.scalar_type();
  check_biases(op, b_ih, b_hh, s.hidden, dtype);

  // Biases are added inside the pointwise pass rather than by addmm, which
  // would first need their sum as a separate tensor.
  Tensor gates;
  if (s.batch == 1) {  // a streaming step: two matrix-vector products
    gates = at::zeros({1, 4 * s.hidden}, input.options());
    AT_DISPATCH_FLOATING_TYPES(dtype, op, [&] {
      const Tensor x = input.contiguous(), h = hx.contiguous();
      const Tensor wi = w_ih.contiguous(), wh = w_hh.contiguous();
      vec::gemv_rows<scalar_t>(wi.data_ptr<scalar_t>(), 4 * s.hidden, s.input,
                               x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>());
      vec::gemv_rows<scalar_t>(wh.data_ptr<scalar_t>(), 4 * s.hidden, s.hidden,
                               h.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>());
    });
  } else {
    gates = at::empty({s.batch, 4 * s.hidden}, input.options());
    matmul(input, w_ih.t(), gates, 0.0);
    matmul(hx, w_hh.t(), gates, 1.0);
  }
  const Tensor c_prev = cx.contiguous();
  Tensor hy = at::empty({s.batch, s.hidden}, input.options());
  Tensor cy = at::empty({s.batch, s.hidden}, input.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, op, [&] {
    Tensor keep_ih, keep_hh;
    vec::forward_pointwise<scalar_t>({{s.batch, s.hidden},
                                      gates.data_ptr<scalar_t>(),
                                      optional_data<scalar_t>(b_ih, keep_ih),
                                      optional_data<scalar_t>(b_hh, keep_hh),
                                      c_prev.data_ptr<scalar_t>(),
                                      cy.data_ptr<scalar_t>(),
                                      hy.data_ptr<scalar_t>()});
  });
  return {hy, cy, gates};
}

LSTM_EXT_IMPL(CPU, lstm_cell_forward, lstm_cell_forward)

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const std::optional<Tensor>& grad_hy, const std::optional<Tensor>& grad_cy,
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const Tensor& gates, const Tensor& cy, std::array<bool, 6> output_mask) {
  if (input.defined() && input.scalar_type() == at::kBFloat16) {
    return bf16::lstm_cell_backward(grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, gates, cy,
                                    output_mask);
  }
  constexpr const char* op = "lstm_cell_backward";
  const LstmSizes s = check_cell_args(op, input, hx, cx, w_ih, w_hh);
  const auto dtype = input.scalar_type();
  check_arg(op, "gates", gates, {s.batch, 4 * s.hidden}, "(batch, 4 * hidden_size)", dtype);
  check_arg(op, "cy", cy, {s.batch, s.hidden}, "(batch, hidden_size)", dtype);
  check_state_grads(op, grad_hy, grad_cy, s, dtype);

  const Tensor gates_c = gates.contiguous();
  const Tensor cx_c = cx.contiguous();
  const Tensor cy_c = cy.contiguous();
  Tensor grad_gates = at::empty({s.batch, 4 * s.hidden}, input.options());
  Tensor grad_cx = at::empty({s.batch, s.hidden}, input.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, op, [&] {
    Tensor keep_h, keep_c;
    vec::backward_pointwise<scalar_t>({{s.batch, s.hidden},
                                       gates_c.data_ptr<scalar_t>(),
                                       cx_c.data_ptr<scalar_t>(),
                                       cy_c.data_ptr<scalar_t>(),
                                       optional_data<scalar_t>(grad_hy, keep_h),
                                       nullptr,
                                       optional_data<scalar_t>(grad_cy, keep_c),
                                       grad_gates.data_ptr<scalar_t>(),
                                       grad_cx.data_ptr<scalar_t>()});
  });
  // Each remaining gradient is one GEMM (or reduction), skipped when unmasked.
  auto product = [&](bool wanted, const Tensor& a, const Tensor& b) {
    return wanted ? matmul_new(a, b) : Tensor();
  };
  // dgates @ W (the weight as it lies, row-major) is the step kernels' shape:
  // no library call, no packing of W at every step. Packing it per call, as
  // the layer does once per sequence (small_gemm_packed), was slower here:
  // CPU time 1.03x at (64,512,512), 1.06x at (32,128,128), 1.18x at (8,256,256).
  auto through_weight = [&](bool wanted, const Tensor& w) {
    if (!wanted) return Tensor();
    if (!config().step_kernels) return product(true, grad_gates, w);
    const Tensor wc = w.contiguous();
    Tensor out = at::empty({s.batch, w.size(1)}, input.options());
    AT_DISPATCH_FLOATING_TYPES(dtype, op, [&] {
      vec::small_gemm<scalar_t>(s.batch, w.size(1), 4 * s.hidden,
                                grad_gates.data_ptr<scalar_t>(), 4 * s.hidden,
                                wc.data_ptr<scalar_t>(), w.size(1), out.data_ptr<scalar_t>(),
                                w.size(1), false);
    });
    return out;
  };
  Tensor grad_input = through_weight(output_mask[0], w_ih);
  Tensor grad_hx = through_weight(output_mask[1], w_hh);
  if (!output_mask[2]) grad_cx.reset();
  // The weight and bias gradients sum over the batch: split as the layer's
  // (backward_products.h), so that their bits do not depend on the thread
  // count (at (4096, 32, 64) they did with 2 and 4 threads).
  BackwardProducts products;
  Tensor grad_w_ih, grad_w_hh, grad_bias;
  if (output_mask[3]) {
    grad_w_ih = at::empty_like(w_ih, at::MemoryFormat::Contiguous);
    products.product(grad_w_ih, {{grad_gates.t(), input}});
  }
  if (output_mask[4]) {
    grad_w_hh = at::empty_like(w_hh, at::MemoryFormat::Contiguous);
    products.product(grad_w_hh, {{grad_gates.t(), hx}});
  }
  if (output_mask[5]) {
    grad_bias = at::empty({4 * s.hidden}, grad_gates.options());
    products.column_sums(grad_bias, grad_gates);
  }
  products.run();
  return {grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_bias};
}

LSTM_EXT_IMPL(CPU, lstm_cell_backward, lstm_cell_backward)

} // namespace
} // namespace lstm_ext::cpu
