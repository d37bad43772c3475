// The op schemas: the single source of truth for every consumer (eager Python,
// TorchScript, torch.export, C++ programs). C++ code calls them through
// ops.h, which declares each op's C++ signature once.
//
// Who implements an op registers with TORCH_LIBRARY_IMPL + LSTM_EXT_IMPL next
// to its code: the CPU kernels in cpu/*_kernel.cpp, autograd (in C++, so that
// TorchScript and C++ programs have gradients too) in autograd/; the fake
// (meta) kernels, which only state output shapes, are in Python (lstm_ext/).
//
// Conventions shared by all ops:
//   * gate order is i, f, g, o (as torch.nn.LSTM), weights are (4H, I) and (4H, H);
//   * "gates" outputs hold the *activated* gates, saved for the backward pass;
//   * grad_* inputs are optional: an undefined gradient is treated as zeros;
//   * backward ops take output_mask, one flag per gradient they return
//     (input, hx, cx, w_ih, w_hh, bias, then those of the differentiable extra
//     inputs, as w_hr): a false flag skips that gradient's work
//     and returns an undefined tensor (None in Python), as ATen's own backward
//     ops do;
//   * a forward op takes (input, hx, cx, w_ih, w_hh, b_ih, b_hh, extra...) and
//     returns its differentiable outputs first; its backward op takes their
//     gradients, then input, hx, cx, w_ih, w_hh, then the forward outputs it
//     reads, then the extra inputs, then output_mask (the shape autograd/
//     relies on).
#include <torch/library.h>

#include <string>

#include "cpu/layer_steps.h"
#include "cpu/step_team.h"
#include "cpu/vec/dispatch.h"

namespace {

// The sizes the layer ops would see, from the arguments of layer_row_groups
// and layer_threads: batch_sizes non-increasing and at most batch (checked).
lstm_ext::cpu::LayerSizes layer_sizes_of(const char* op, int64_t batch, int64_t input_size,
                                         int64_t hidden_size,
                                         c10::ArrayRef<int64_t> batch_sizes) {
  TORCH_CHECK(batch >= 0, op, ": expected batch >= 0, but got ", batch);
  // The split is worked out row by row (a vector of batch + 1): a batch no
  // layer's input could hold is refused, not a std::bad_alloc.
  TORCH_CHECK(batch <= (int64_t(1) << 24), op, ": expected batch at most 2^24, but got ", batch);
  TORCH_CHECK(input_size >= 0, op, ": expected input_size >= 0, but got ", input_size);
  TORCH_CHECK(hidden_size >= 0, op, ": expected hidden_size >= 0, but got ", hidden_size);
  lstm_ext::cpu::LayerSizes s{};
  s.batch = batch;
  s.input = input_size;
  s.hidden = s.proj = hidden_size;
  s.steps = static_cast<int64_t>(batch_sizes.size());
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    const int64_t n = batch_sizes[t];
    const int64_t most = t == 0 ? batch : batch_sizes[t - 1];
    TORCH_CHECK(n >= 0 && n <= most, op, ": expected batch_sizes[", t, "] in [0, ", most,
                "] (non-increasing, at most batch), but got ", n);
  }
  s.batch_sizes.assign(batch_sizes.begin(), batch_sizes.end());
  return s;
}

} // namespace

TORCH_LIBRARY(lstm_ext, m) {
  // Which build of the vector kernels (cpu/vec/) this CPU runs: "avx512",
  // "avx2" or "default" (benchmarks print it next to their figures).
  m.def("pointwise_capability() -> str",
        [] { return std::string(lstm_ext::cpu::vec::capability_name()); });
  // How often the layer ops found the CPU contended (a step waited for a
  // thread the scheduler had taken off the CPU) and fell back to one thread
  // (cpu/step_team.h); benchmarks print it next to their figures.
  m.def("thread_fallbacks() -> int", [] { return lstm_ext::cpu::thread_fallbacks(); });
  // Every such wait, the lone ones that did not fall back included.
  m.def("thread_strikes() -> int", [] { return lstm_ext::cpu::thread_strikes(); });
  // The threads this thread's last layer op ran on (cpu/step_team.h,
  // OpThreads: its cap or its one-thread fallback applied). For tests.
  m.def("last_op_threads() -> int", [] { return lstm_ext::cpu::last_op_threads(); });
  // How a layer call would split its time loop between the current thread
  // count (cpu/layer_steps.h, layer_row_groups): the first row of each group
  // of batch rows, then `batch`; [0, batch] is one group (the hidden units
  // are split at each step instead). batch_sizes: the rows running at each
  // step, non-increasing; weight_bytes: the size of W_hh. For tests and
  // benchmarks, which show the choice without timing it.
  m.def("layer_row_groups(int batch, int[] batch_sizes, int weight_bytes) -> int[]",
        [](int64_t batch, c10::ArrayRef<int64_t> batch_sizes, int64_t weight_bytes) {
          return lstm_ext::cpu::layer_row_groups(
              layer_sizes_of("layer_row_groups", batch, 0, 0, batch_sizes), weight_bytes);
        });
  // How many threads a float layer call of these sizes would run on at the
  // current thread count (cpu/layer_steps.h, layer_threads): fewer where its
  // rows split into fewer groups than threads and its work is small.
  m.def(
      "layer_threads(int batch, int input_size, int hidden_size, int[] batch_sizes, "
      "int weight_bytes) -> int",
      [](int64_t batch, int64_t input_size, int64_t hidden_size,
         c10::ArrayRef<int64_t> batch_sizes, int64_t weight_bytes) {
        return lstm_ext::cpu::layer_threads(
            layer_sizes_of("layer_threads", batch, input_size, hidden_size, batch_sizes),
            weight_bytes);
      });
  // a @ b on the GEMM the kernels use for that shape (oneDNN or ATen's MKL):
  // lets the benchmarks measure the machine's GEMM ceiling and floor as the
  // kernels see them.
  m.def("gemm(Tensor a, Tensor b) -> Tensor");
  // One cell step. x (B, I), hx/cx (B, H). Returns hy, cy and the activated
  // gates (B, 4H) that lstm_cell_backward needs.
  m.def(
      "lstm_cell_forward(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> (Tensor hy, Tensor cy, Tensor gates)");
  // Gradients of one cell step. grad_bias is the gradient of b_ih and of b_hh
  // alike (they enter the gates as a sum).
  m.def(
      "lstm_cell_backward(Tensor? grad_hy, Tensor? grad_cy, Tensor input, Tensor hx, "
      "Tensor cx, Tensor w_ih, Tensor w_hh, Tensor gates, Tensor cy, bool[6] output_mask) -> "
      "(Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_bias)");
  // One direction of one layer over a whole sequence. input (T, B, I),
  // time-major. lengths (B,), int64 on the CPU, non-increasing, each in [1, T]:
  // rows past their length keep their state and output zeros. hy/cy are each
  // row's state after its own last step. gates (T, B, 4H) and cs (T, B, H) are
  // saved for lstm_layer_backward. w_hr (P, H), where given, projects h (LSTMP,
  // torch.nn.LSTM's proj_size = P): h_t = (o * tanh(c_t)) @ w_hr^T, so hx, hy
  // and output have P features and w_hh is (4H, P).
  m.def(
      "lstm_layer_forward(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? lengths, Tensor? w_hr=None) -> "
      "(Tensor output, Tensor hy, Tensor cy, Tensor gates, Tensor cs)");
  // lstm_layer_forward without what only the backward reads: output, hy, cy,
  // bit for bit the same, but neither the activated gates nor every step's c
  // are kept (a bf16 layer then writes a quarter less memory; cpu/bf16/
  // lstm_bf16.cpp). No gradient: with grad mode on, inputs that require grad
  // are refused. lstm_ext.ops.lstm_layer (so nn.LSTM's forward) calls it when
  // no gradient can be asked for.
  m.def(
      "lstm_layer_inference(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? lengths, Tensor? w_hr=None) -> "
      "(Tensor output, Tensor hy, Tensor cy)");
  // Backpropagation through time for lstm_layer_forward; grad_w_hr is undefined
  // without w_hr.
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, "
      "Tensor input, Tensor hx, Tensor cx, Tensor w_ih, Tensor w_hh, Tensor output, "
      "Tensor gates, Tensor cs, Tensor? lengths, Tensor? w_hr, bool[7] output_mask) -> "
      "(Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_bias, Tensor grad_w_hr)");
  // lstm_layer_forward for inference with int8 weights (dynamic
  // quantization; numerics in cpu/vec/int8_kernels.h): input (T, B, I), hx,
  // cx float32; w_ih (4H, I), w_hh (4H, H) int8, symmetric per output channel
  // with scales w_ih_scale, w_hh_scale (4H) float32 (W ~ W_q * scale[:, None]);
  // bias (4H) float32 = b_ih + b_hh. Activations are quantized per row
  // (x per row of each step, h per row per step) to uint8 with zero point 128.
  // lengths as lstm_layer_forward's. No gradient: inputs that require grad are
  // refused in grad mode; outputs never require grad.
  m.def(
      "lstm_layer_forward_int8(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, "
      "Tensor w_ih_scale, Tensor w_hh, Tensor w_hh_scale, Tensor? bias, Tensor? lengths) -> "
      "(Tensor output, Tensor hy, Tensor cy)");
}
