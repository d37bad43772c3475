// Autograd for lstm_layer_forward, registered in C++ at the Autograd key (see
// lstm_cell_autograd.cpp for why). The math is the lstm_layer_backward op.
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd_common.h"

namespace lstm_ext::autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LSTMLayerFunction : public torch::autograd::Function<LSTMLayerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                               const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                               const std::optional<Tensor>& b_ih,
                               const std::optional<Tensor>& b_hh,
                               const std::optional<Tensor>& lengths) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lstm_ext::lstm_layer_forward", "")
                         .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
                             const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, const std::optional<Tensor>&,
                             const std::optional<Tensor>&, const std::optional<Tensor>&)>();
    // Unused outputs (the saved gates, often h or c) then reach backward as
    // undefined instead of as freshly zero-filled tensors; the backward op
    // reads undefined as zero.
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, hy, cy, gates, cs] = op.call(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths);
    const bool has_lengths = lengths.has_value() && lengths->defined();
    ctx->save_for_backward(
        {input, hx, cx, w_ih, w_hh, output, gates, cs, has_lengths ? *lengths : Tensor()});
    save_bias_flags(ctx, b_ih, b_hh);
    ctx->mark_non_differentiable({gates, cs});
    return {output, hy, cy, gates, cs};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("lstm_ext::lstm_layer_backward", "")
            .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
                const std::optional<Tensor>&, const std::optional<Tensor>&,
                const std::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                const std::optional<Tensor>&, std::array<bool, 6>)>();
    const auto saved = ctx->get_saved_variables();
    const GradientRequest want = gradient_request(ctx);
    const std::optional<Tensor> lengths =
        saved[8].defined() ? std::optional<Tensor>(saved[8]) : std::nullopt;
    auto [dx, dhx, dcx, dw_ih, dw_hh, db] =
        op.call(grads[0], grads[1], grads[2], saved[0], saved[1], saved[2], saved[3], saved[4],
                saved[5], saved[6], saved[7], lengths, want.mask);
    return {dx,    dhx, dcx, dw_ih, dw_hh, want.b_ih ? db : Tensor(), want.b_hh ? db : Tensor(),
            Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_autograd(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths) {
  auto out = LSTMLayerFunction::apply(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths);
  return {out[0], out[1], out[2], out[3], out[4]};
}

} // namespace

TORCH_LIBRARY_IMPL(lstm_ext, Autograd, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_autograd);
}

} // namespace lstm_ext::autograd
