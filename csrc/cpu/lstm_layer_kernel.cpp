// The CPU kernels of lstm_layer_forward and lstm_layer_backward: one
// direction of one LSTM layer over a whole sequence, forward and
// backpropagation through time.
//
// Shapes: input (T, B, I), time-major; hx, cx (B, H); w_ih (4H, I), w_hh
// (4H, H); lengths (B). Forward returns output (T, B, H), hy, cy (B, H), and
// for the backward the activated gates (T, B, 4H) and every c, cs (T, B, H).
// Aliasing: outputs are fresh (or cached, buffer_cache.h) buffers; inputs are
// only read.
//
// Forward: the input projection of all T*B rows is one GEMM (for an input of
// at most kStepProjectionMaxInput features, the step kernel's own); then each step is
// one fused kernel (vec::fused_forward_step: the recurrent product for all
// four gates of a block of hidden units, then the cell update with the biases,
// in one parallel region) on a copy of W_hh packed once for the sequence.
// Everything the backward needs (activated gates, every c) lives in two
// buffers allocated before the loop.
//
// Backward: per step only the pointwise pass and dh = dgates @ W_hh
// (vec::small_gemm_packed on W_hh packed once where it is large, else
// vec::small_gemm, or vec::gemv_cols for one row, on W_hh as it lies) are
// sequential; dx, dW_ih, dW_hh and the bias gradient are products (or a
// reduction) over all T*B rows after the loop, split where a library would
// split their sums by thread count (backward_products.h).
//
// Threads: where W_hh fits in each core's L2 (layer_row_groups,
// layer_steps.h), the batch rows are split into groups and each thread runs
// every step of its groups alone (for_each_row_group, step_team.h): no
// per-step synchronisation, no hidden state crossing cores. Elsewhere each
// step's hidden units are split on a step team (with_step_team). A row's
// sums are the same bits either way, and for any thread count.
//
// LSTM_EXT_GEMM=aten replaces the step kernels by ATen GEMMs plus the
// pointwise passes, for comparison (config.h).
//
// Projection (w_hr (P, H), LSTMP): h_t = (o * tanh(c_t)) @ w_hr^T has P
// features, and so do hx, hy and output; w_hh is (4H, P). Each forward step is
// then three passes on the step kernels: gates += h_{t-1} @ W_hh^T
// (vec::small_gemm on a transposed copy of W_hh made once), the pointwise
// pass into an (B, H) scratch, and its projection (small_gemm). The backward
// step adds dh_raw = (dh + grad_output_t) @ W_hr before the pointwise pass;
// dW_hr is one GEMM after the loop over the saved (dh + grad_output_t) of
// every step and o * tanh(c), recomputed from the saved gates and cs.
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

#include "../ops.h"
#include "backward_products.h"
#include "bf16/lstm_bf16.h"
#include "buffer_cache.h"
#include "checks.h"
#include "config.h"
#include "gemm.h"
#include "layer_steps.h"
#include "step_team.h"
#include "vec/kernels.h"

namespace lstm_ext::cpu {
namespace {

using at::Tensor;

// The largest input size whose projection the fused step makes itself (see
// layer_forward). Against the whole-sequence GEMM (MKL on this project's AVX2
// EPYC, 2 threads, alternating processes, medians in ms, GEMM -> fused):
// (64,8,256,100) inference 42-44 -> 35-37, training 145-160 -> 125-136;
// (32,8,64,50) training 5.5 -> 4.6; (64,4,32,336) inference 8.0-8.9 ->
// 5.2-6.2; the main job's (64,1,32,336) training 19-21 -> 16-18 (6 rounds).
// At 16 features it was no faster ((64,16,256,100) inference 38-42 against
// 46-84, training 102-128 against 125-127), at 32 slower.
constexpr int64_t kStepProjectionMaxInput = 8;

LayerSizes check_layer_args(const char* op, const Tensor& input, const Tensor& hx,
                            const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                            const std::optional<Tensor>& lengths,
                            const std::optional<Tensor>& w_hr) {
  LayerSizes s = layer_sizes(op, input, hx, cx, w_ih, w_hh, lengths, w_hr);
  const auto dtype = input.scalar_type();
  check_buffer_fits(op, "gates", {s.steps, s.batch, 4, s.hidden}, dtype);
  check_buffer_fits(op, "input", {s.steps, s.batch, s.input}, dtype);
  check_buffer_fits(op, "output", {s.steps, s.batch, s.proj}, dtype);
  // The step kernels' packed W_hh: at most 4 * H * (H + 15) elements.
  check_buffer_fits(op, "packed w_hh", {4, s.hidden, s.hidden + 16}, dtype);
  return s;
}

// Runs a layer's time loop: on a step team (step_team.h) when the steps run
// on the step kernels, whose parallel_for calls it serves; the ATen-GEMM path
// (LSTM_EXT_GEMM=aten) calls ATen's threaded GEMMs per step and runs as is.
template <typename F>
void run_steps(bool step_kernels, const F& loop) {
  if (step_kernels) {
    with_step_team(loop);
  } else {
    loop();
  }
}

// Runs run_rows(r0, r1), every step of rows [r0, r1), over the whole batch:
// one call per row group on its own thread where layer_row_groups
// (layer_steps.h) splits the rows for this W_hh (4H x P of `element_size`
// bytes), else one call for all rows through run_steps.
template <typename F>
void run_row_groups_or_steps(bool step_kernels, const LayerSizes& s, int64_t element_size,
                             const F& run_rows) {
  const std::vector<int64_t> groups =
      step_kernels && !s.projected ? layer_row_groups(s, 4 * s.hidden * s.proj * element_size)
                                   : std::vector<int64_t>{0, s.batch};
  if (groups.size() > 2) {
    for_each_row_group(static_cast<int64_t>(groups.size()) - 1,
                       [&](int64_t k) { run_rows(groups[k], groups[k + 1]); });
  } else {
    run_steps(step_kernels, [&] { run_rows(0, s.batch); });
  }
}

// The threads a layer call runs on where its steps may split rows
// (run_row_groups_or_steps): layer_threads (layer_steps.h); 0, no cap,
// elsewhere.
int64_t layer_thread_cap(const LayerSizes& s, int64_t element_size) {
  return config().step_kernels && !s.projected
             ? layer_threads(s, 4 * s.hidden * s.proj * element_size)
             : 0;
}

// The projected forward steps (see the top of the file): h_{t-1} (rows, P) ->
// gates, c_t, and h_t = (o * tanh(c_t)) @ W_hr^T into output[t] (rows, P).
template <typename scalar_t>
void projected_forward_steps(const LayerSizes& s, const Tensor& w_hh, const Tensor& w_hr,
                             const scalar_t* bias_ih, const scalar_t* bias_hh, const Tensor& h0,
                             const Tensor& c0, const Tensor& gates, const Tensor& output,
                             const Tensor& cs, bool step_kernels) {
  const int64_t B = s.batch, H = s.hidden, P = s.proj;
  // small_gemm reads its right operand (K, N) row-major: W_hh^T (P, 4H) and
  // W_hr^T (H, P), transposed once for the sequence.
  const Tensor w_hh_t = w_hh.t().contiguous();
  const Tensor w_hr_t = w_hr.t().contiguous();
  Tensor h_raw = at::empty({B, H}, gates.options());  // o * tanh(c_t), one step
  scalar_t* gates_p = gates.data_ptr<scalar_t>();
  scalar_t* out_p = output.data_ptr<scalar_t>();
  scalar_t* cs_p = cs.data_ptr<scalar_t>();
  scalar_t* raw_p = h_raw.data_ptr<scalar_t>();
  for (int64_t t = 0; t < s.steps; ++t) {
    const int64_t n = s.batch_sizes[t];
    scalar_t* g = gates_p + t * B * 4 * H;
    const scalar_t* h_prev = t == 0 ? h0.data_ptr<scalar_t>() : out_p + (t - 1) * B * P;
    const scalar_t* c_prev = t == 0 ? c0.data_ptr<scalar_t>() : cs_p + (t - 1) * B * H;
    if (step_kernels) {
      vec::small_gemm<scalar_t>(n, 4 * H, P, h_prev, P, w_hh_t.data_ptr<scalar_t>(), 4 * H, g,
                                4 * H, true);
    } else {
      const Tensor h_rows = t == 0 ? h0.narrow(0, 0, n) : output[t - 1].narrow(0, 0, n);
      matmul(h_rows, w_hh.t(), gates[t].narrow(0, 0, n), 1.0);
    }
    vec::forward_pointwise<scalar_t>({{n, H, vec::kLayerElementsPerThread}, g, bias_ih, bias_hh,
                                      c_prev, cs_p + t * B * H, raw_p});
    if (step_kernels) {
      vec::small_gemm<scalar_t>(n, P, H, raw_p, H, w_hr_t.data_ptr<scalar_t>(), P,
                                out_p + t * B * P, P, false);
    } else {
      matmul(h_raw.narrow(0, 0, n), w_hr.t(), output[t].narrow(0, 0, n), 0.0);
    }
  }
}

// lstm_layer_forward, and with save = false lstm_layer_inference: then the
// cell state of two steps is kept (cs a ring of 2 slots; last_step reads a
// row's c from its slot), not of all T, and gates and cs are not returned
// (undefined). The gates buffer stays: it holds the input projection.
// output, hy and cy are the same either way, bit for bit.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> layer_forward(
    const char* op, bool save, const Tensor& input, const Tensor& hx, const Tensor& cx,
    const Tensor& w_ih, const Tensor& w_hh, const std::optional<Tensor>& b_ih,
    const std::optional<Tensor>& b_hh, const std::optional<Tensor>& lengths,
    const std::optional<Tensor>& w_hr) {
  if (input.defined() && input.scalar_type() == at::kBFloat16) {
    TORCH_CHECK(!(w_hr.has_value() && w_hr->defined()), op,
                ": a projection (w_hr, proj_size > 0) is not supported in "
                "bfloat16; use float32 or float64");
    return bf16::lstm_layer_forward(op, save, input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths);
  }
  const LayerSizes s = check_layer_args(op, input, hx, cx, w_ih, w_hh, lengths, w_hr);
  const auto dtype = input.scalar_type();
  check_biases(op, b_ih, b_hh, s.hidden, dtype);
  const int64_t T = s.steps, B = s.batch, H = s.hidden, P = s.proj;
  // One thread while the CPU is found contended; no more than the work keeps busy.
  const OpThreads threads(layer_thread_cap(s, input.element_size()));

  // The input projection of every step at once; the biases are added by the
  // step's cell update, which reads the gates anyway.
  //
  // Except for a small input (at most kStepProjectionMaxInput features, a
  // time series' few): there the fused step makes each step's projection
  // itself, each thread for its own hidden units and rows
  // (vec::StepForward::x), in inference into a one-step slot. A GEMM library
  // with so short a sum runs far below its speed and writes, scales (MKL's
  // beta pass) and reads back the (T, B, 4H) buffer of every step: at
  // (64, 8, 256, 100) inference its call took 13% of the samples (perf). The
  // sums run in input order, one FMA per term, the first onto -0: the same
  // bits in inference and training, for any thread count; with one term (a
  // univariate series) round(x * w), what the GEMM gives.
  const bool fused = config().step_kernels;
  const bool step_projection =
      fused && !s.projected && s.input >= 1 && s.input <= kStepProjectionMaxInput;
  const bool one_slot = step_projection && !save;
  Tensor gates = cached_empty({one_slot ? std::min<int64_t>(T, 1) : T, B, 4 * H},
                              input.options());
  // Padded rows' gates are never written by the steps; handed out zeroed.
  if (step_projection && save) zero_padded_rows(gates, s);
  const Tensor x2d = input.reshape({T * B, s.input});
  if (!step_projection) matmul(x2d, w_ih.t(), gates.view({T * B, 4 * H}), 0.0);
  const Tensor x_c = step_projection ? x2d.contiguous() : Tensor();          // (T * B, I)
  const Tensor w_ih_t = step_projection ? w_ih.t().contiguous() : Tensor();  // (I, 4H)

  // Padded steps must read as zeros in output; cs is zeroed alike so that no
  // uninitialised memory is ever handed out.
  Tensor output = cached_empty({T, B, P}, input.options());
  // The projected steps index cs by step (their pointwise pass's c_prev).
  const int64_t ring = save || s.projected ? 0 : 2;
  Tensor cs = cached_empty({ring > 0 ? std::min<int64_t>(T, ring) : T, B, H}, input.options());
  zero_padded_rows(output, s);
  zero_padded_rows(cs, s);
  const Tensor h0 = hx.contiguous();
  const Tensor c0 = cx.contiguous();
  const Tensor w_hh_t = w_hh.t();
  const Tensor w_hh_c = w_hh.contiguous();

  AT_DISPATCH_FLOATING_TYPES(dtype, "lstm_layer_forward", [&] {  // dtype checked above
    Tensor keep_ih, keep_hh;
    const scalar_t* bias_ih = optional_data<scalar_t>(b_ih, keep_ih);
    const scalar_t* bias_hh = optional_data<scalar_t>(b_hh, keep_hh);
    if (s.projected) {
      run_steps(fused, [&] {
        projected_forward_steps<scalar_t>(s, w_hh, *w_hr, bias_ih, bias_hh, h0, c0, gates,
                                          output, cs, fused);
      });
      return;
    }
    // Raw pointers into the sequence buffers: a batch-1 step is short enough
    // that making per-step Tensor views would be a visible share of it.
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    scalar_t* out_p = output.data_ptr<scalar_t>();
    scalar_t* cs_p = cs.data_ptr<scalar_t>();
    const scalar_t* w_hh_p = w_hh_c.data_ptr<scalar_t>();
    // The fused step kernel's copy of W_hh, packed once for the sequence.
    Tensor packed;
    if (fused) {
      packed = at::empty({vec::step_weights_size<scalar_t>(H)}, input.options());
      vec::pack_step_weights<scalar_t>(w_hh_p, H, packed.data_ptr<scalar_t>());
    }
    auto slot = [ring](int64_t t) { return ring > 0 ? t % ring : t; };
    if (!fused) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = s.batch_sizes[t];
        scalar_t* g = gates_p + t * B * 4 * H;
        const scalar_t* c_prev = t == 0 ? c0.data_ptr<scalar_t>() : cs_p + slot(t - 1) * B * H;
        const Tensor h_rows = t == 0 ? h0.narrow(0, 0, n) : output[t - 1].narrow(0, 0, n);
        matmul(h_rows, w_hh_t, gates[t].narrow(0, 0, n), 1.0);
        vec::forward_pointwise<scalar_t>({{n, H, vec::kLayerElementsPerThread}, g, bias_ih,
                                          bias_hh, c_prev, cs_p + slot(t) * B * H,
                                          out_p + t * B * H});
      }
      return;
    }
    // Every step of rows [r0, r1): a row's step reads only its own row of
    // every buffer, so a group of rows runs alone (layer_row_groups).
    auto run_rows = [&](int64_t r0, int64_t r1) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = std::min(s.batch_sizes[t], r1) - r0;
        if (n <= 0) break;  // the running rows only shrink
        const int64_t row = r0 * H;
        scalar_t* g = gates_p + ((one_slot ? 0 : t) * B + r0) * 4 * H;
        const scalar_t* h_prev = t == 0 ? h0.data_ptr<scalar_t>() : out_p + (t - 1) * B * H;
        const scalar_t* c_prev = t == 0 ? c0.data_ptr<scalar_t>() : cs_p + slot(t - 1) * B * H;
        vec::fused_forward_step<scalar_t>(
            {g, packed.data_ptr<scalar_t>(), h_prev + row, c_prev + row,
             cs_p + slot(t) * B * H + row, out_p + t * B * H + row, bias_ih, bias_hh, n, H,
             step_projection ? x_c.data_ptr<scalar_t>() + (t * B + r0) * s.input : nullptr,
             step_projection ? w_ih_t.data_ptr<scalar_t>() : nullptr, s.input});
      }
    };
    run_row_groups_or_steps(true, s, sizeof(scalar_t), run_rows);
  });
  Tensor hy = last_step(output, s, h0);
  Tensor cy = last_step(cs, s, c0, ring);
  if (!save) return {output, hy, cy, Tensor(), Tensor()};
  return {output, hy, cy, gates, cs};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr) {
  return layer_forward("lstm_layer_forward", true, input, hx, cx, w_ih, w_hh, b_ih, b_hh,
                       lengths, w_hr);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_inference(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr) {
  auto [output, hy, cy, gates, cs] = layer_forward("lstm_layer_inference", false, input, hx, cx,
                                                   w_ih, w_hh, b_ih, b_hh, lengths, w_hr);
  return {output, hy, cy};
}

LSTM_EXT_IMPL(CPU, lstm_layer_forward, lstm_layer_forward)
LSTM_EXT_IMPL(CPU, lstm_layer_inference, lstm_layer_inference)

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_hy,
    const std::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, const Tensor& output,
    const Tensor& gates, const Tensor& cs, const std::optional<Tensor>& lengths,
    const std::optional<Tensor>& w_hr, std::array<bool, 7> output_mask) {
  if (input.defined() && input.scalar_type() == at::kBFloat16) {
    TORCH_CHECK(!(w_hr.has_value() && w_hr->defined()),
                "lstm_layer_backward: a projection (w_hr, proj_size > 0) is not supported in "
                "bfloat16; use float32 or float64");
    auto [dx, dh, dc, dw_ih, dw_hh, db] = bf16::lstm_layer_backward(
        grad_output, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, output, gates, cs, lengths,
        {output_mask[0], output_mask[1], output_mask[2], output_mask[3], output_mask[4],
         output_mask[5]});
    return {dx, dh, dc, dw_ih, dw_hh, db, Tensor()};
  }
  constexpr const char* op = "lstm_layer_backward";
  const LayerSizes s = check_layer_args(op, input, hx, cx, w_ih, w_hh, lengths, w_hr);
  const auto dtype = input.scalar_type();
  const int64_t T = s.steps, B = s.batch, H = s.hidden, P = s.proj;
  const char* out_layout =
      s.projected ? "(seq_len, batch, proj_size)" : "(seq_len, batch, hidden_size)";
  check_arg(op, "output", output, {T, B, P}, out_layout, dtype);
  check_arg(op, "gates", gates, {T, B, 4 * H}, "(seq_len, batch, 4 * hidden_size)", dtype);
  check_arg(op, "cs", cs, {T, B, H}, "(seq_len, batch, hidden_size)", dtype);
  check_optional_arg(op, "grad_output", grad_output, {T, B, P}, out_layout, dtype);
  check_state_grads(op, grad_hy, grad_cy, s, dtype);
  // One thread while the CPU is found contended; no more than the work keeps busy.
  const OpThreads threads(layer_thread_cap(s, input.element_size()));

  // dh and dc carried backwards through time, updated in place. Rows that end
  // before the last step start from grad_hy/grad_cy when the loop reaches them.
  const bool has_gh = grad_hy.has_value() && grad_hy->defined();
  const bool has_gc = grad_cy.has_value() && grad_cy->defined();
  Tensor dh = has_gh ? grad_hy->contiguous().clone() : at::zeros({B, P}, input.options());
  Tensor dc = has_gc ? grad_cy->contiguous().clone() : at::zeros({B, H}, input.options());
  const StepGradient go = step_gradient(grad_output);
  const Tensor gates_c = gates.contiguous();
  const Tensor cs_c = cs.contiguous();
  const Tensor c0 = cx.contiguous();
  const Tensor w_hh_c = w_hh.contiguous();
  const bool fused = config().step_kernels;
  Tensor grad_gates = cached_empty({T, B, 4 * H}, input.options());
  zero_padded_rows(grad_gates, s);
  // With a projection: each step's whole gradient w.r.t. h_t (dh + grad
  // output), kept for dW_hr, and its image through W_hr, the pointwise pass's
  // grad_h.
  Tensor grad_h_proj, grad_h_raw;
  const Tensor w_hr_c = s.projected ? w_hr->contiguous() : Tensor();
  if (s.projected) {
    grad_h_proj = cached_empty({T, B, P}, input.options());
    zero_padded_rows(grad_h_proj, s);
    grad_h_raw = at::empty({B, H}, input.options());
  }

  AT_DISPATCH_FLOATING_TYPES(dtype, op, [&] {
    const scalar_t* gates_p = gates_c.data_ptr<scalar_t>();
    const scalar_t* cs_p = cs_c.data_ptr<scalar_t>();
    const scalar_t* go_p = go.data.defined() ? go.data.data_ptr<scalar_t>() : nullptr;
    scalar_t* dg_p = grad_gates.data_ptr<scalar_t>();
    scalar_t* dh_p = dh.data_ptr<scalar_t>();
    scalar_t* dc_p = dc.data_ptr<scalar_t>();
    const scalar_t* w_hh_p = w_hh_c.data_ptr<scalar_t>();
    // dh = dgates @ W_hh on W_hh packed once for the sequence (kernels.h,
    // small_gemm_packed) where a panel of it outgrows L1 (4H > 256); below,
    // and at batch 1 (gemv_cols), as it lies.
    Tensor w_hh_panels;
    if (fused && B > 1 && 4 * H > 256) {
      w_hh_panels = cached_empty({vec::gemm_panels_size<scalar_t>(4 * H, P)}, input.options());
      vec::pack_gemm_panels<scalar_t>(w_hh_p, 4 * H, P, P, w_hh_panels.data_ptr<scalar_t>());
    }
    // Every step of rows [r0, r1), backwards (see the forward's run_rows).
    auto run_rows = [&](int64_t r0, int64_t r1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t n = std::min(s.batch_sizes[t], r1) - r0;
        if (n <= 0) continue;  // these rows have not started yet, going backwards
        scalar_t* dg = dg_p + (t * B + r0) * 4 * H;
        scalar_t* dh_rows = dh_p + r0 * P;
        scalar_t* dc_rows = dc_p + r0 * H;
        const scalar_t* grad_h = dh_rows;
        const scalar_t* grad_h_extra = go_p != nullptr ? go_p + t * go.step + r0 * P : nullptr;
        if (s.projected) {
          scalar_t* dhp = grad_h_proj.data_ptr<scalar_t>() + (t * B + r0) * P;
          for (int64_t k = 0; k < n * P; ++k) {
            dhp[k] = grad_h_extra != nullptr ? dh_rows[k] + grad_h_extra[k] : dh_rows[k];
          }
          scalar_t* raw = grad_h_raw.data_ptr<scalar_t>() + r0 * H;
          if (fused) {
            vec::small_gemm<scalar_t>(n, H, P, dhp, P, w_hr_c.data_ptr<scalar_t>(), H, raw, H,
                                      false);
          } else {
            matmul(grad_h_proj[t].narrow(0, r0, n), w_hr_c, grad_h_raw.narrow(0, r0, n), 0.0);
          }
          grad_h = raw;
          grad_h_extra = nullptr;
        }
        vec::backward_pointwise<scalar_t>({
            {n, H, vec::kLayerElementsPerThread},
            gates_p + (t * B + r0) * 4 * H,
            (t == 0 ? c0.data_ptr<scalar_t>() : cs_p + (t - 1) * B * H) + r0 * H,
            cs_p + (t * B + r0) * H,
            grad_h,
            grad_h_extra,
            dc_rows,
            dg,
            dc_rows,
        });
        // The kernel is chosen by the whole batch's running rows, as without
        // row groups (a row's sums are the same bits in both anyway).
        if (fused && s.batch_sizes[t] == 1) {
          vec::gemv_cols<scalar_t>(w_hh_p, 4 * H, P, dg, dh_rows);
        } else if (fused && w_hh_panels.defined()) {
          vec::small_gemm_packed<scalar_t>(n, P, 4 * H, dg, 4 * H,
                                           w_hh_panels.data_ptr<scalar_t>(), dh_rows, P, false);
        } else if (fused) {
          vec::small_gemm<scalar_t>(n, P, 4 * H, dg, 4 * H, w_hh_p, P, dh_rows, P, false);
        } else {
          matmul(grad_gates[t].narrow(0, r0, n), w_hh, dh.narrow(0, r0, n), 0.0);
        }
      }
    };
    // Rows split as in the forward; the projected steps keep the step team.
    run_row_groups_or_steps(fused, s, sizeof(scalar_t), run_rows);
  });

  // The products after the loop, in pieces fixed by the shapes
  // (backward_products.h: the same bits for any thread count).
  const Tensor dg2d = grad_gates.view({T * B, 4 * H});
  const Tensor x2d = input.reshape({T * B, s.input});
  BackwardProducts products;
  Tensor grad_input, grad_w_ih, grad_w_hh, grad_w_hr, grad_bias;
  if (output_mask[0]) {
    grad_input = cached_empty({T, B, s.input}, input.options());
    products.product(grad_input.view({T * B, s.input}), {{dg2d, w_ih}});
  }
  if (output_mask[3]) {
    grad_w_ih = at::empty_like(w_ih, at::MemoryFormat::Contiguous);
    products.product(grad_w_ih, {{dg2d.t(), x2d}});
  }
  if (output_mask[4]) {
    // h_{t-1} is output[t-1] for t >= 1 and hx for t = 0: two terms, no copy.
    grad_w_hh = at::empty_like(w_hh, at::MemoryFormat::Contiguous);
    std::vector<BackwardProducts::Term> terms;
    if (T > 0) terms.push_back({grad_gates[0].t(), hx});
    if (T > 1) {
      terms.push_back({grad_gates.narrow(0, 1, T - 1).reshape({(T - 1) * B, 4 * H}).t(),
                       output.narrow(0, 0, T - 1).reshape({(T - 1) * B, P})});
    }
    products.product(grad_w_hh, terms);
  }
  if (output_mask[6] && s.projected) {
    // dW_hr = sum_t (dh + grad_output)_t^T @ (o_t * tanh(c_t)). Padded rows'
    // o is a raw pre-activation (the step never ran): zero their product, so
    // that no inf or NaN there reaches the sum through 0 * inf.
    Tensor h_raw = gates_c.narrow(2, 3 * H, H) * at::tanh(cs_c);
    if (s.padded) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = s.batch_sizes[t];
        if (n < B) h_raw[t].narrow(0, n, B - n).zero_();
      }
    }
    grad_w_hr = at::empty_like(*w_hr, at::MemoryFormat::Contiguous);
    products.product(grad_w_hr, {{grad_h_proj.view({T * B, P}).t(), h_raw.view({T * B, H})}});
  }
  if (output_mask[5]) {
    grad_bias = at::empty({4 * H}, input.options());
    products.column_sums(grad_bias, dg2d);
  }
  products.run();
  if (!output_mask[1]) dh.reset();
  if (!output_mask[2]) dc.reset();
  return {grad_input, dh, dc, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr};
}

LSTM_EXT_IMPL(CPU, lstm_layer_backward, lstm_layer_backward)

} // namespace
} // namespace lstm_ext::cpu
