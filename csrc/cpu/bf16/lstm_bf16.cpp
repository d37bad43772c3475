// The bfloat16 kernels of the four LSTM ops: bf16 storage, float32 arithmetic.
//
// What is stored in which dtype:
//   * inputs, weights, biases, output, h_n, c_n and every gradient returned:
//     bfloat16 (the dtype of input, as torch.nn.LSTM in bf16);
//   * the cell state inside a layer (cs, saved for the backward) and the
//     gradients carried through time (dh, dc): float32, because c and its
//     gradient accumulate over the whole sequence;
//   * the activated gates a layer saves for the backward: bfloat16 (they lie
//     in [-1, 1], and halving their traffic keeps the step fast); the gate
//     gradients (T, B, 4H) likewise, as operands of the bf16 GEMMs;
//   * the cell op's saved gates: float32 (one step, so precision costs nothing).
// Every sum accumulates in float32: each forward step's product x @ W_ih^T +
// h @ W_hh^T and the backward's dh = dgates @ W_hh on the bf16 kernels
// (vec/bf16_kernels.h: AMX tiles or vdpbf16ps where the CPU has them, on
// weights packed once per call), the backward's large products (dx, dW_ih,
// dW_hh) as one oneDNN bf16 GEMM each through ATen (float32 accumulation, one
// rounding of the result to bf16), or in float32 where ATen's bf16 GEMM is
// not oneDNN's (matmul, gemm.h).
// The bias gradient is a float32 sum.
//
// LSTM_EXT_GEMM=aten has no effect here: bf16 has no float32-style
// comparison path.
#include "lstm_bf16.h"

#include <ATen/ATen.h>

#include <vector>

#include "../backward_products.h"
#include "../buffer_cache.h"
#include "../checks.h"
#include "../gemm.h"
#include "../layer_steps.h"
#include "../step_team.h"
#include "../vec/bf16_kernels.h"
#include "../vec/kernels.h"

namespace lstm_ext::cpu::bf16 {
namespace {

using vec::bf16;

constexpr auto kBF16 = at::kBFloat16;

// A tensor the forward op returned for the backward (gates, cs), whose dtype
// is fixed by the bf16 path rather than by input.
void check_saved(const char* op, const char* name, const Tensor& t, at::IntArrayRef expected,
                 const char* layout, at::ScalarType dtype) {
  check_defined_cpu(op, name, t);
  TORCH_CHECK(t.scalar_type() == dtype, op, ": expected ", name, " to have dtype ", dtype,
              " (what the forward op returns for a BFloat16 input), but got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == expected, op, ": expected ", name, " of shape ", expected, " ",
              layout, ", but got ", t.sizes());
}

Tensor to_float(const Tensor& t) { return t.to(at::kFloat).contiguous(); }

Tensor optional_float(const std::optional<Tensor>& t) {
  return t.has_value() && t->defined() ? to_float(*t) : Tensor();
}

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

bf16* bf16_ptr(const Tensor& t) { return reinterpret_cast<bf16*>(t.data_ptr<at::BFloat16>()); }

// b_ih + b_hh in float32, or whichever exists, or undefined.
Tensor combined_bias(const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  const Tensor bi = optional_float(b_ih), bh = optional_float(b_hh);
  if (bi.defined() && bh.defined()) return bi + bh;
  return bi.defined() ? bi : bh;
}

// ---------------------------------------------------------------------------
// The layer.

LayerSizes check_layer_args(const char* op, const Tensor& input, const Tensor& hx,
                            const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                            const std::optional<Tensor>& lengths) {
  LayerSizes s = layer_sizes(op, input, hx, cx, w_ih, w_hh, lengths);
  check_buffer_fits(op, "gates", {s.steps, s.batch, 4, s.hidden}, at::kFloat);
  check_buffer_fits(op, "input", {s.steps, s.batch, s.input}, at::kFloat);
  check_buffer_fits(op, "packed weights", {4, s.hidden + 64, s.input + s.hidden + 32}, kBF16);
  return s;
}

} // namespace

// With save = false (inference) the activated gates are not stored at all and
// the cell state lives in a ring of two steps (last_step reads each row's c
// from its slot): measured at (64,256,256,100), 2 threads, 9.3 -> 6.2 ms
// (nn.LSTM bf16: 8.6); the (T, B, 4H) gates and (T, B, H) float32 cs writes
// had been a quarter of an inference call.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward(
    const char* op, bool save, const Tensor& input, const Tensor& hx, const Tensor& cx,
    const Tensor& w_ih, const Tensor& w_hh, const std::optional<Tensor>& b_ih,
    const std::optional<Tensor>& b_hh, const std::optional<Tensor>& lengths) {
  const LayerSizes s = check_layer_args(op, input, hx, cx, w_ih, w_hh, lengths);
  check_biases(op, b_ih, b_hh, s.hidden, kBF16);
  const int64_t T = s.steps, B = s.batch, H = s.hidden;
  const auto opts = input.options();
  const OpThreads threads;  // one thread while the CPU is found contended

  // The activated gates, saved for the backward. The input projection is part
  // of each step's product (vec::bf16_forward_step), so the pre-activations
  // are float32 sums from end to end.
  const int64_t ring = save ? 0 : 2;
  Tensor gates = save ? cached_empty({T, B, 4 * H}, opts) : Tensor();
  Tensor output = cached_empty({T, B, H}, opts);
  Tensor cs = cached_empty({save ? T : std::min<int64_t>(T, ring), B, H}, opts.dtype(at::kFloat));
  if (save) zero_padded_rows(gates, s);
  zero_padded_rows(output, s);
  zero_padded_rows(cs, s);
  const Tensor h0 = hx.contiguous();
  const Tensor c0 = to_float(cx);
  if (T > 0 && B > 0 && H > 0) {
    const Tensor bias = combined_bias(b_ih, b_hh);
    const Tensor x = input.contiguous();
    Tensor packed_ih = at::empty({vec::bf16_panel_size(s.input, 4 * H)}, opts);
    Tensor packed_hh = at::empty({vec::bf16_panel_size(H, 4 * H)}, opts);
    const Tensor w_ih_c = w_ih.contiguous(), w_hh_c = w_hh.contiguous();
    vec::bf16_pack_gates(bf16_ptr(w_ih_c), H, s.input, bf16_ptr(packed_ih));
    vec::bf16_pack_gates(bf16_ptr(w_hh_c), H, H, bf16_ptr(packed_hh));
    bf16* gates_p = save ? bf16_ptr(gates) : nullptr;
    bf16* out_p = bf16_ptr(output);
    const bf16* x_p = bf16_ptr(x);
    float* cs_p = cs.data_ptr<float>();
    auto slot = [ring](int64_t t) { return ring > 0 ? t % ring : t; };
    with_step_team([&] {
      for (int64_t t = 0; t < T; ++t) {
        vec::bf16_forward_step({save ? gates_p + t * B * 4 * H : nullptr, bf16_ptr(packed_ih),
                                bf16_ptr(packed_hh), x_p + t * B * s.input, s.input,
                                t == 0 ? bf16_ptr(h0) : out_p + (t - 1) * B * H,
                                t == 0 ? c0.data_ptr<float>() : cs_p + slot(t - 1) * B * H,
                                cs_p + slot(t) * B * H, out_p + t * B * H,
                                ptr_or_null<float>(bias), s.batch_sizes[t], H});
      }
    });
  }
  Tensor hy = last_step(output, s, h0);
  Tensor cy = last_step(cs, s, c0, ring).to(kBF16);
  if (!save) return {output, hy, cy, Tensor(), Tensor()};
  return {output, hy, cy, gates, cs};
}

namespace {

// The backward's products after its loop (dx, dW_ih, dW_hh, and the bias
// gradient's column sums) where ATen's bf16
// GEMM is scalar (gemm.h: aten_bf16_gemm_is_native), so that they run in
// float32 anyway: each operand converted once (matmul would convert dgates
// for each of the three), then the float32 layer's pieces fixed by the
// shapes (backward_products.h). matmul's float32 products were one MKL call
// each on all threads, and MKL splits a weight gradient's long sum (T * B
// rows) between threads on Intel CPUs: the bits would change with the
// thread count there (tests/ops/test_threads.py). Each result is rounded to
// bf16 once, as before.
void float_products(const Tensor& dg2d, const Tensor& x2d, const Tensor& hx, const Tensor& output,
                    const Tensor& w_ih, const LayerSizes& s, const std::array<bool, 6>& output_mask,
                    Tensor& grad_input, Tensor& grad_w_ih, Tensor& grad_w_hh, Tensor& grad_bias) {
  if (!output_mask[0] && !output_mask[3] && !output_mask[4] && !output_mask[5]) return;
  const int64_t T = s.steps, B = s.batch, H = s.hidden;
  const auto fopts = dg2d.options().dtype(at::kFloat);
  const Tensor dg = dg2d.to(at::kFloat);
  BackwardProducts products;
  Tensor dx, dw_ih, dw_hh, db;
  if (output_mask[0]) {
    dx = at::empty({T * B, s.input}, fopts);
    products.product(dx, {{dg, w_ih.to(at::kFloat)}});
  }
  if (output_mask[3]) {
    dw_ih = at::empty({4 * H, s.input}, fopts);
    products.product(dw_ih, {{dg.t(), x2d.to(at::kFloat)}});
  }
  if (output_mask[4]) {
    // h_{t-1} is hx for t = 0 and output[t-1] after: two terms, as in float32.
    dw_hh = at::empty({4 * H, H}, fopts);
    std::vector<BackwardProducts::Term> terms;
    if (T > 0) terms.push_back({dg.narrow(0, 0, B).t(), hx.to(at::kFloat)});
    if (T > 1) {
      terms.push_back({dg.narrow(0, B, (T - 1) * B).t(),
                       output.narrow(0, 0, T - 1).reshape({(T - 1) * B, H}).to(at::kFloat)});
    }
    products.product(dw_hh, terms);
  }
  if (output_mask[5]) {
    db = at::empty({4 * H}, fopts);
    products.column_sums(db, dg);
  }
  products.run();
  if (dx.defined()) grad_input = dx.view({T, B, s.input}).to(kBF16);
  if (dw_ih.defined()) grad_w_ih = dw_ih.to(kBF16);
  if (dw_hh.defined()) grad_w_hh = dw_hh.to(kBF16);
  if (db.defined()) grad_bias = db.to(kBF16);
}

} // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_hy,
    const std::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, const Tensor& output,
    const Tensor& gates, const Tensor& cs, const std::optional<Tensor>& lengths,
    std::array<bool, 6> output_mask) {
  constexpr const char* op = "lstm_layer_backward";
  const LayerSizes s = check_layer_args(op, input, hx, cx, w_ih, w_hh, lengths);
  const int64_t T = s.steps, B = s.batch, H = s.hidden;
  check_arg(op, "output", output, {T, B, H}, "(seq_len, batch, hidden_size)", kBF16);
  check_saved(op, "gates", gates, {T, B, 4 * H}, "(seq_len, batch, 4 * hidden_size)", kBF16);
  check_saved(op, "cs", cs, {T, B, H}, "(seq_len, batch, hidden_size)", at::kFloat);
  check_optional_arg(op, "grad_output", grad_output, {T, B, H}, "(seq_len, batch, hidden_size)",
                     kBF16);
  check_state_grads(op, grad_hy, grad_cy, s, kBF16);
  const auto opts = input.options();
  const auto fopts = opts.dtype(at::kFloat);
  const OpThreads threads;

  // dh and dc carried backwards through time in float32.
  const bool has_gh = grad_hy.has_value() && grad_hy->defined();
  const bool has_gc = grad_cy.has_value() && grad_cy->defined();
  Tensor dh = has_gh ? to_float(*grad_hy) : at::zeros({B, H}, fopts);
  Tensor dc = has_gc ? to_float(*grad_cy) : at::zeros({B, H}, fopts);
  const StepGradient go = step_gradient(grad_output);
  Tensor grad_gates = cached_empty({T, B, 4 * H}, opts);
  zero_padded_rows(grad_gates, s);

  if (T > 0 && B > 0 && H > 0) {
    const Tensor gates_c = gates.contiguous();
    const Tensor cs_c = cs.contiguous();
    const Tensor c0 = to_float(cx);
    const Tensor w = w_hh.contiguous();
    // dh = dgates @ W_hh: W_hh (4H, H) is B (K = 4H, N = H) as it lies.
    Tensor packed = at::empty({vec::bf16_panel_size(4 * H, H)}, opts);
    vec::bf16_pack_cols(bf16_ptr(w), 4 * H, H, bf16_ptr(packed));
    const bf16* gates_p = bf16_ptr(gates_c);
    const float* cs_p = cs_c.data_ptr<float>();
    const bf16* go_p = go.data.defined() ? bf16_ptr(go.data) : nullptr;
    bf16* dg_p = bf16_ptr(grad_gates);
    float* dh_p = dh.data_ptr<float>();
    float* dc_p = dc.data_ptr<float>();
    with_step_team([&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t n = s.batch_sizes[t];
      bf16* dg = dg_p + t * B * 4 * H;
      vec::bf16_backward_pointwise({gates_p + t * B * 4 * H,
                                    t == 0 ? c0.data_ptr<float>() : cs_p + (t - 1) * B * H,
                                    cs_p + t * B * H, dh_p,
                                    go_p != nullptr ? go_p + t * go.step : nullptr, dc_p, dg,
                                    dc_p, n, H});
      vec::bf16_gemm(n, H, 4 * H, dg, 4 * H, bf16_ptr(packed), dh_p, H, false);
    }
    });
  }

  const Tensor dg2d = grad_gates.view({T * B, 4 * H});
  const Tensor x2d = input.reshape({T * B, s.input});
  Tensor grad_input, grad_w_ih, grad_w_hh, grad_bias;
  if (!aten_bf16_gemm_is_native()) {
    float_products(dg2d, x2d, hx, output, w_ih, s, output_mask, grad_input, grad_w_ih, grad_w_hh,
                   grad_bias);
  } else {
    if (output_mask[0]) {
      grad_input = at::empty({T, B, s.input}, opts);
      matmul(dg2d, w_ih, grad_input.view({T * B, s.input}), 0.0);
    }
    if (output_mask[3]) {
      grad_w_ih = at::empty_like(w_ih, at::MemoryFormat::Contiguous);
      matmul(dg2d.t(), x2d, grad_w_ih, 0.0);
    }
    if (output_mask[4]) {
      // h_{t-1}: hx for t = 0, output[t-1] after; one GEMM (one rounding).
      grad_w_hh = at::empty_like(w_hh, at::MemoryFormat::Contiguous);
      const Tensor h_prev =
          T > 1 ? at::cat({hx.unsqueeze(0), output.narrow(0, 0, T - 1)}) : hx.unsqueeze(0);
      matmul(dg2d.t(), T > 0 ? h_prev.reshape({T * B, H}) : h_prev.narrow(0, 0, 0).reshape({0, H}),
             grad_w_hh, 0.0);
    }
    if (output_mask[5]) grad_bias = at::sum(dg2d, {0}, false, at::kFloat).to(kBF16);
  }
  Tensor grad_hx = output_mask[1] ? dh.to(kBF16) : Tensor();
  Tensor grad_cx = output_mask[2] ? dc.to(kBF16) : Tensor();
  return {grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_bias};
}

// ---------------------------------------------------------------------------
// The cell: two bf16 GEMMs (float32 accumulation) summed in float32, then the
// float32 pointwise passes of cell_math.h.

std::tuple<Tensor, Tensor, Tensor> lstm_cell_forward(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  constexpr const char* op = "lstm_cell_forward";
  const LstmSizes s = check_lstm_args(op, input, 2, "(batch, input_size)", hx, cx, w_ih, w_hh);
  check_buffer_fits(op, "gates", {s.batch, 4, s.hidden}, at::kFloat);
  check_biases(op, b_ih, b_hh, s.hidden, kBF16);
  const auto fopts = input.options().dtype(at::kFloat);
  Tensor gates;
  if (aten_bf16_gemm_is_native()) {
    gates = at::mm(input, w_ih.t()).to(at::kFloat);
    gates.add_(at::mm(hx, w_hh.t()));
    gates = gates.contiguous();
  } else {  // float32 products, no bf16 rounding between them (gemm.h)
    gates = at::empty({s.batch, 4 * s.hidden}, fopts);
    matmul(input.to(at::kFloat), w_ih.to(at::kFloat).t(), gates, 0.0);
    matmul(hx.to(at::kFloat), w_hh.to(at::kFloat).t(), gates, 1.0);
  }
  const Tensor bi = optional_float(b_ih), bh = optional_float(b_hh);
  const Tensor c_prev = to_float(cx);
  Tensor hy = at::empty({s.batch, s.hidden}, fopts);
  Tensor cy = at::empty({s.batch, s.hidden}, fopts);
  vec::forward_pointwise<float>({{s.batch, s.hidden},
                                 gates.data_ptr<float>(),
                                 ptr_or_null<float>(bi),
                                 ptr_or_null<float>(bh),
                                 c_prev.data_ptr<float>(),
                                 cy.data_ptr<float>(),
                                 hy.data_ptr<float>()});
  return {hy.to(kBF16), cy.to(kBF16), gates};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const std::optional<Tensor>& grad_hy, const std::optional<Tensor>& grad_cy,
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const Tensor& gates, const Tensor& cy, std::array<bool, 6> output_mask) {
  constexpr const char* op = "lstm_cell_backward";
  const LstmSizes s = check_lstm_args(op, input, 2, "(batch, input_size)", hx, cx, w_ih, w_hh);
  check_buffer_fits(op, "gates", {s.batch, 4, s.hidden}, at::kFloat);
  check_saved(op, "gates", gates, {s.batch, 4 * s.hidden}, "(batch, 4 * hidden_size)",
              at::kFloat);
  check_arg(op, "cy", cy, {s.batch, s.hidden}, "(batch, hidden_size)", kBF16);
  check_state_grads(op, grad_hy, grad_cy, s, kBF16);
  const auto fopts = input.options().dtype(at::kFloat);
  const Tensor gates_c = gates.contiguous();
  const Tensor cx_f = to_float(cx), cy_f = to_float(cy);
  const Tensor gh = optional_float(grad_hy), gc = optional_float(grad_cy);
  Tensor grad_gates = at::empty({s.batch, 4 * s.hidden}, fopts);
  Tensor grad_cx = at::empty({s.batch, s.hidden}, fopts);
  vec::backward_pointwise<float>({{s.batch, s.hidden},
                                  gates_c.data_ptr<float>(),
                                  cx_f.data_ptr<float>(),
                                  cy_f.data_ptr<float>(),
                                  ptr_or_null<float>(gh),
                                  nullptr,
                                  ptr_or_null<float>(gc),
                                  grad_gates.data_ptr<float>(),
                                  grad_cx.data_ptr<float>()});
  const Tensor dg = grad_gates.to(kBF16);
  // Each product in bf16 through matmul (float32 where ATen's bf16 GEMM is
  // not oneDNN's: gemm.h).
  Tensor grad_input = output_mask[0] ? matmul_new(dg, w_ih) : Tensor();
  Tensor grad_hx = output_mask[1] ? matmul_new(dg, w_hh) : Tensor();
  Tensor grad_cx_out = output_mask[2] ? grad_cx.to(kBF16) : Tensor();
  Tensor grad_w_ih = output_mask[3] ? matmul_new(dg.t(), input) : Tensor();
  Tensor grad_w_hh = output_mask[4] ? matmul_new(dg.t(), hx) : Tensor();
  Tensor grad_bias = output_mask[5] ? grad_gates.sum(0).to(kBF16) : Tensor();
  return {grad_input, grad_hx, grad_cx_out, grad_w_ih, grad_w_hh, grad_bias};
}

} // namespace lstm_ext::cpu::bf16
