// The Autograd kernels of lstm_cell_forward and lstm_layer_forward: each op
// pair's spec for the shared glue (lstm_function.h), and their registration;
// and lstm_layer_inference's, which refuses a gradient (inference_only.h).
#include <torch/library.h>

#include "../ops.h"
#include "differentiable_forward.h"
#include "inference_only.h"
#include "lstm_function.h"

namespace lstm_ext::autograd {
namespace {

// The two forward ops' specs; see lstm_function.h.
struct Cell {
  static constexpr auto& forward = ops::lstm_cell_forward;    // -> hy, cy, gates
  static constexpr auto& backward = ops::lstm_cell_backward;
  static constexpr size_t kDifferentiable = 2;                // hy, cy
  static constexpr std::array<size_t, 2> kSaved = {2, 1};     // gates, cy
  static constexpr std::array<int, 0> kExtraGrad = {};
  static constexpr auto& differentiable = cell_forward_differentiable;
};

struct Layer {
  static constexpr auto& forward = ops::lstm_layer_forward;   // -> output, hy, cy, gates, cs
  static constexpr auto& backward = ops::lstm_layer_backward;
  static constexpr size_t kDifferentiable = 3;                // output, hy, cy
  static constexpr std::array<size_t, 3> kSaved = {0, 3, 4};  // output, gates, cs
  static constexpr std::array<int, 2> kExtraGrad = {-1, 6};   // lengths: none; w_hr
  static constexpr auto& differentiable = layer_forward_differentiable;
};

LSTM_EXT_IMPL(Autograd, lstm_cell_forward, AutogradKernel<Cell>::call)
LSTM_EXT_IMPL(Autograd, lstm_layer_forward, AutogradKernel<Layer>::call)

std::tuple<Tensor, Tensor, Tensor> layer_inference(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr) {
  refuse_grad("lstm_layer_inference", "it keeps nothing for a backward; lstm_layer_forward does",
              {{"input", &input}, {"hx", &hx}, {"cx", &cx}, {"w_ih", &w_ih}, {"w_hh", &w_hh},
               {"b_ih", optional_arg(b_ih)}, {"b_hh", optional_arg(b_hh)},
               {"w_hr", optional_arg(w_hr)}});
  at::AutoDispatchBelowADInplaceOrView guard;
  return ops::lstm_layer_inference(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths, w_hr);
}

LSTM_EXT_IMPL(Autograd, lstm_layer_inference, layer_inference)

} // namespace
} // namespace lstm_ext::autograd
