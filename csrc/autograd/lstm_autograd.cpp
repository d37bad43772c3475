// The Autograd kernels of lstm_cell_forward and lstm_layer_forward: each op
// pair's spec for the shared glue (lstm_function.h), and their registration.
#include <torch/library.h>

#include "../ops.h"
#include "differentiable_forward.h"
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

} // namespace
} // namespace lstm_ext::autograd
