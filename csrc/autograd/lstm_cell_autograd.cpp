// Autograd for lstm_cell_forward, registered in C++ at the Autograd key so that
// gradients exist wherever the op runs: eager Python, TorchScript, and a C++
// program that loads a scripted model (no Python there to run a Python
// formula). It is glue only: the math is the lstm_cell_backward op.
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd_common.h"

namespace lstm_ext::autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LSTMCellFunction : public torch::autograd::Function<LSTMCellFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                               const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                               const std::optional<Tensor>& b_ih,
                               const std::optional<Tensor>& b_hh) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lstm_ext::lstm_cell_forward", "")
                         .typed<std::tuple<Tensor, Tensor, Tensor>(
                             const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, const std::optional<Tensor>&,
                             const std::optional<Tensor>&)>();
    // Unused outputs (the saved gates, often h or c) then reach backward as
    // undefined instead of as freshly zero-filled tensors; the backward op
    // reads undefined as zero.
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [hy, cy, gates] = op.call(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
    ctx->save_for_backward({input, hx, cx, w_ih, w_hh, gates, cy});
    save_bias_flags(ctx, b_ih, b_hh);
    ctx->mark_non_differentiable({gates});
    return {hy, cy, gates};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("lstm_ext::lstm_cell_backward", "")
            .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
                const std::optional<Tensor>&, const std::optional<Tensor>&, const Tensor&,
                const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                const Tensor&, std::array<bool, 6>)>();
    const auto saved = ctx->get_saved_variables();
    const GradientRequest want = gradient_request(ctx);
    auto [dx, dhx, dcx, dw_ih, dw_hh, db] =
        op.call(grads[0], grads[1], saved[0], saved[1], saved[2], saved[3], saved[4],
                saved[5], saved[6], want.mask);
    return {dx, dhx, dcx, dw_ih, dw_hh, want.b_ih ? db : Tensor(), want.b_hh ? db : Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor> lstm_cell_forward_autograd(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  auto out = LSTMCellFunction::apply(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  return {out[0], out[1], out[2]};
}

} // namespace

TORCH_LIBRARY_IMPL(lstm_ext, Autograd, m) {
  m.impl("lstm_cell_forward", &lstm_cell_forward_autograd);
}

} // namespace lstm_ext::autograd
