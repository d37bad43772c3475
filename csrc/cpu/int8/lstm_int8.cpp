// The CPU kernel of lstm_layer_forward_int8: one direction of one LSTM layer
// over a whole sequence with int8 weights (per output channel) and dynamically
// quantized activations, for inference (numerics: vec/int8_kernels.h).
//
// Shapes: input (T, B, I) float32, time-major; hx, cx (B, H) float32; w_ih
// (4H, I), w_hh (4H, H) int8; w_ih_scale, w_hh_scale (4H) float32; bias (4H)
// float32 (b_ih + b_hh) or None; lengths (B) as lstm_layer_forward's.
// Returns output (T, B, H), hy, cy (B, H), float32.
//
// Per call: both weights are packed (vec::int8_pack_gates: the VNNI/AMX
// layout, gate-grouped, with each column's offset), every row of x is
// quantized (vec::int8_quantize_rows, one pass), then each step is one fused
// kernel (vec::int8_forward_step: h_prev quantized per row, the x and h
// products for all four gates of a block of hidden units, their
// dequantization, the bias and the cell update). The cell state lives in one
// (B, H) buffer updated in place: rows past their length keep it. The time
// loop runs on a step team (step_team.h), as the float layer's does.
//
// The input projection is part of each step's product rather than one int8
// GEMM over all T*B rows up front (as the float layer does): the up-front
// form wrote and re-read a float32 (T*B, 4H) buffer, 26 MB at (64, 512, 512,
// 50). Measured there on one thread (AMX, loaded machine): the projection
// share of the call (I = 512 against I = 4) was 8.4 ms up front, 4.4 ms fused
// (and the whole call 30.0 ms against 12.9 ms, with the faster cell update).
//
// The weights are packed at every call rather than once into module buffers
// (a prepack op): measured, packing (a T = 1, B = 1 call) takes 0.21 ms of the
// 6.4 ms call at (64, 512, 512, 50) on 2 threads, 0.02 of 0.4 ms at
// (32, 32, 64, 50): 3-6%, not worth a second weight format in state dicts.
//
// No gradient: the Autograd kernel below refuses inputs that require grad
// while grad mode is on (quantized weights have no useful gradient).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../../autograd/inference_only.h"
#include "../../ops.h"
#include "../buffer_cache.h"
#include "../checks.h"
#include "../layer_steps.h"
#include "../step_team.h"
#include "../vec/int8_kernels.h"

namespace lstm_ext::cpu::int8 {
namespace {

using at::Tensor;

constexpr const char* kOp = "lstm_layer_forward_int8";
// The int32 sums are exact for K <= 65536 (|sum| <= K * 255 * 127 < 2^31).
constexpr int64_t kMaxInner = 65536;

void check_dtype(const char* name, const Tensor& t, at::ScalarType dtype, const char* why) {
  check_defined_cpu(kOp, name, t);
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": expected ", name, " to have dtype ", dtype, " (",
              why, "), but got ", t.scalar_type());
}

void check_shape(const char* name, const Tensor& t, at::IntArrayRef expected,
                 const char* layout) {
  TORCH_CHECK(t.sizes() == expected, kOp, ": expected ", name, " of shape ", expected, " ",
              layout, ", but got ", t.sizes());
}

// The kernels multiply |w| by x with w's sign moved onto x (AVX2's
// sign_epi8; VNNI and AMX take x + 128 against w and subtract 128 sum(w)):
// -128 has no negation in int8, and the AVX2 kernel gave a product of the
// wrong sign for it (a hostile-input review: -0.0655 where the default build
// and float32 gave 0.1792). quantize() writes [-127, 127] (symmetric); a
// -128 from elsewhere is refused. A branch-free OR over the bytes (SSE2
// compares, 16 a cycle): ~40 us for the 2 MB of (64, 512, 512, 50), whose
// call takes tens of ms.
void check_no_minus_128(const char* name, const Tensor& w) {
  const Tensor wc = w.contiguous();
  const int8_t* p = wc.data_ptr<int8_t>();
  const int64_t n = wc.numel();
  uint8_t any = 0;
  for (int64_t i = 0; i < n; ++i) any |= static_cast<uint8_t>(p[i] == -128);
  if (any == 0) return;
  int64_t i = 0;
  while (p[i] != -128) ++i;
  TORCH_CHECK(false, kOp, ": expected ", name,
              " in [-127, 127] (symmetric int8: the kernels negate weights), but ", name, "[",
              i / wc.size(1), ", ", i % wc.size(1), "] = -128");
}

// Checks in the order of the float ops (checks.h): input, w_hh, w_ih, hx, cx,
// then the scales, bias and lengths, then the weights' values.
LayerSizes check_args(const Tensor& input, const Tensor& hx, const Tensor& cx,
                      const Tensor& w_ih, const Tensor& w_ih_scale, const Tensor& w_hh,
                      const Tensor& w_hh_scale, const std::optional<Tensor>& bias,
                      const std::optional<Tensor>& lengths) {
  check_dtype("input", input, at::kFloat, "int8 layers take float32 activations");
  check_dim(kOp, "input", input, 3, "(seq_len, batch, input_size)");
  check_dtype("w_hh", w_hh, at::kChar, "the quantized weights");
  check_dim(kOp, "w_hh", w_hh, 2, "(4 * hidden_size, hidden_size)");
  LayerSizes s;
  s.steps = input.size(0);
  s.batch = input.size(1);
  s.input = input.size(2);
  s.hidden = s.proj = w_hh.size(1);
  s.projected = false;
  check_shape("w_hh", w_hh, {4 * s.hidden, s.hidden}, "(4 * hidden_size, hidden_size)");
  check_dtype("w_ih", w_ih, at::kChar, "the quantized weights");
  check_shape("w_ih", w_ih, {4 * s.hidden, s.input}, "(4 * hidden_size, input_size)");
  check_dtype("hx", hx, at::kFloat, "the dtype of input");
  check_shape("hx", hx, {s.batch, s.hidden}, "(batch, hidden_size)");
  check_dtype("cx", cx, at::kFloat, "the dtype of input");
  check_shape("cx", cx, {s.batch, s.hidden}, "(batch, hidden_size)");
  check_dtype("w_ih_scale", w_ih_scale, at::kFloat, "one scale per output channel");
  check_shape("w_ih_scale", w_ih_scale, {4 * s.hidden}, "(4 * hidden_size)");
  check_dtype("w_hh_scale", w_hh_scale, at::kFloat, "one scale per output channel");
  check_shape("w_hh_scale", w_hh_scale, {4 * s.hidden}, "(4 * hidden_size)");
  if (bias.has_value() && bias->defined()) {
    check_dtype("bias", *bias, at::kFloat, "b_ih + b_hh in float32");
    check_shape("bias", *bias, {4 * s.hidden}, "(4 * hidden_size)");
  }
  TORCH_CHECK(s.input <= kMaxInner && s.hidden <= kMaxInner, kOp,
              ": expected input_size and hidden_size <= ", kMaxInner,
              " (the int32 sums must not overflow), but got input_size ", s.input,
              " and hidden_size ", s.hidden);
  check_buffer_fits(kOp, "input projection", {s.steps, s.batch, 4, s.hidden + 16}, at::kFloat);
  check_buffer_fits(kOp, "quantized input", {s.steps, s.batch + 16, s.input + 64}, at::kByte);
  set_running_rows(kOp, s, lengths);
  check_no_minus_128("w_ih", w_ih);
  check_no_minus_128("w_hh", w_hh);
  return s;
}

// A (4H) vector of per-gate-row values -> the packed column order (groups *
// 64: column 64 grp + 16 q + v is gate q of unit 16 grp + v), zero padding.
// A plain loop, not ATen ops: at (32, 32, 64, 50) a call is ~0.4 ms, and each
// small ATen op costs microseconds.
Tensor packed_order(const Tensor& v, int64_t H) {
  const int64_t groups = (H + vec::kInt8Lanes - 1) / vec::kInt8Lanes;
  const Tensor vc = v.contiguous();
  Tensor out = at::zeros({groups * vec::kInt8GroupCols}, vc.options());
  const float* in = vc.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t q = 0; q < 4; ++q) {
    for (int64_t u = 0; u < H; ++u) {
      o[(u / vec::kInt8Lanes) * vec::kInt8GroupCols + q * vec::kInt8Lanes + u % vec::kInt8Lanes] =
          in[q * H + u];
    }
  }
  return out;
}

struct Panel {
  Tensor packed, offset, scale;
  int64_t K;
  vec::Int8Panel view() const {
    return {packed.data_ptr<int8_t>(), offset.data_ptr<int32_t>(), scale.data_ptr<float>(), K};
  }
};

Panel pack(const Tensor& w, const Tensor& scale, int64_t H, int64_t K) {
  const int64_t groups = (H + vec::kInt8Lanes - 1) / vec::kInt8Lanes;
  const Tensor wc = w.contiguous();
  Panel p{at::empty({vec::int8_panel_size(H, K)}, wc.options()),
          at::empty({groups * vec::kInt8GroupCols}, wc.options().dtype(at::kInt)),
          packed_order(scale.contiguous(), H), K};
  vec::int8_pack_gates(wc.data_ptr<int8_t>(), H, K, p.packed.data_ptr<int8_t>(),
                       p.offset.data_ptr<int32_t>());
  return p;
}

} // namespace

std::tuple<Tensor, Tensor, Tensor> lstm_layer_forward_int8(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_ih_scale, const Tensor& w_hh, const Tensor& w_hh_scale,
    const std::optional<Tensor>& bias, const std::optional<Tensor>& lengths) {
  const LayerSizes s =
      check_args(input, hx, cx, w_ih, w_ih_scale, w_hh, w_hh_scale, bias, lengths);
  const int64_t T = s.steps, B = s.batch, H = s.hidden, I = s.input;
  const auto opts = input.options();
  const OpThreads threads;  // one thread while the CPU is found contended
  Tensor output = cached_empty({T, B, H}, opts);
  zero_padded_rows(output, s);
  const Tensor h0 = hx.contiguous();
  Tensor c = cx.clone(at::MemoryFormat::Contiguous);  // updated in place, step by step
  if (T > 0 && B > 0 && H > 0) {
    const Panel ih = pack(w_ih, w_ih_scale, H, I);
    const Panel hh = pack(w_hh, w_hh_scale, H, H);
    const Tensor b = bias.has_value() && bias->defined() ? packed_order(bias->contiguous(), H)
                                                         : Tensor();
    const Tensor x = input.contiguous();
    // Quantized rows: x for every step (16 rows more, as AMX reads whole
    // tiles of 16 rows), h for one step at a time.
    const int64_t kx = vec::int8_row_bytes(I), kh = vec::int8_row_bytes(H);
    const int64_t rows_h = (B + 15) / 16 * 16;
    Tensor x_q = cached_empty({T * B + 16, kx}, opts.dtype(at::kByte));
    Tensor x_scale = at::empty({T * B}, opts);
    Tensor h_q = at::empty({rows_h, kh}, opts.dtype(at::kByte));
    Tensor h_scale = at::empty({B}, opts);
    x_q.narrow(0, T * B, 16).fill_(128);
    h_q.fill_(128);
    const vec::Int8Panel w_ih_p = ih.view(), w_hh_p = hh.view();
    const float* x_p = x.data_ptr<float>();
    uint8_t* xq_p = x_q.data_ptr<uint8_t>();
    float* xs_p = x_scale.data_ptr<float>();
    float* out_p = output.data_ptr<float>();
    float* c_p = c.data_ptr<float>();
    const float* b_p = b.defined() ? b.data_ptr<float>() : nullptr;
    with_step_team([&] {
      vec::int8_quantize_rows(x_p, T * B, I, I, xq_p, xs_p);
      for (int64_t t = 0; t < T; ++t) {
        vec::int8_forward_step({w_ih_p, w_hh_p, xq_p + t * B * kx, xs_p + t * B,
                                x_p + t * B * I, h_q.data_ptr<uint8_t>(),
                                h_scale.data_ptr<float>(), b_p,
                                t == 0 ? h0.data_ptr<float>() : out_p + (t - 1) * B * H, c_p, c_p,
                                out_p + t * B * H, s.batch_sizes[t], H});
      }
    });
  }
  Tensor hy = last_step(output, s, h0);
  return {output, hy, c};
}

LSTM_EXT_IMPL(CPU, lstm_layer_forward_int8, lstm_layer_forward_int8)

// Autograd: inference only. With grad mode on, an input that requires grad is
// refused (an int8 layer has no backward); otherwise the CPU kernel runs and
// its outputs do not require grad.
std::tuple<Tensor, Tensor, Tensor> lstm_layer_forward_int8_autograd(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_ih_scale, const Tensor& w_hh, const Tensor& w_hh_scale,
    const std::optional<Tensor>& bias, const std::optional<Tensor>& lengths) {
  using autograd::optional_arg;
  autograd::refuse_grad(kOp, "int8 weights have no gradient",
                        {{"input", &input}, {"hx", &hx}, {"cx", &cx},
                         {"w_ih_scale", &w_ih_scale}, {"w_hh_scale", &w_hh_scale},
                         {"bias", optional_arg(bias)}});
  at::AutoDispatchBelowADInplaceOrView guard;
  return ops::lstm_layer_forward_int8(input, hx, cx, w_ih, w_ih_scale, w_hh, w_hh_scale, bias,
                                      lengths);
}

LSTM_EXT_IMPL(Autograd, lstm_layer_forward_int8, lstm_layer_forward_int8_autograd)

} // namespace lstm_ext::cpu::int8
