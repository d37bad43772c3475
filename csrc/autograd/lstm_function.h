// Autograd for the LSTM forward ops, in C++ at the Autograd key so that
// gradients exist wherever an op runs: eager Python, TorchScript, and a C++
// program that loads a scripted model (no Python there to run a Python
// formula). It is glue only: the math is each op's backward op.
//
// One template serves every forward/backward pair, because they share one
// shape (ops.cpp, "Conventions"):
//   forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh, extra...)
//       -> (differentiable outputs..., outputs saved for the backward only...)
//   backward(gradient of each differentiable output..., input, hx, cx, w_ih,
//            w_hh, the outputs it reads..., extra..., output_mask)
//       -> (grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_bias)
// where the extra inputs (lengths) are optional tensors without gradient, and
// grad_bias is the gradient of b_ih and of b_hh alike. A pair describes itself
// with a spec:
//   struct Spec {
//     static constexpr auto& forward = ops::<forward op>;
//     static constexpr auto& backward = ops::<backward op>;
//     static constexpr size_t kDifferentiable = ...;  // leading outputs
//     static constexpr std::array<size_t, N> kSaved = {...};  // as backward reads them
//   };
// and AutogradKernel<Spec>::call is the forward op's Autograd kernel.
#pragma once

#include <c10/util/TypeTraits.h>
#include <torch/autograd.h>

#include <array>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace lstm_ext::autograd {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Spec>
class LSTMFunction : public torch::autograd::Function<LSTMFunction<Spec>> {
  using Forward = typename std::decay_t<decltype(Spec::forward)>::Signature;
  static constexpr size_t kInputs =
      c10::guts::infer_function_traits_t<Forward>::number_of_parameters;
  static constexpr size_t kExtra = kInputs - 7;                   // inputs past b_hh
  static constexpr size_t kFixedSaved = 5 + Spec::kSaved.size();  // saved before the extras

 public:
  template <typename... Extra>
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                               const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                               const std::optional<Tensor>& b_ih,
                               const std::optional<Tensor>& b_hh, const Extra&... extra) {
    static_assert((std::is_same_v<Extra, std::optional<Tensor>> && ...));
    // Unused outputs (the saved gates, often h or c) then reach backward as
    // undefined instead of as freshly zero-filled tensors; the backward op
    // reads undefined as zero.
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    const variable_list out = std::apply([](const auto&... t) { return variable_list{t...}; },
                                         Spec::forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh,
                                                       extra...));
    variable_list saved{input, hx, cx, w_ih, w_hh};
    for (size_t i : Spec::kSaved) saved.push_back(out[i]);
    (saved.push_back(extra.has_value() ? *extra : Tensor()), ...);
    ctx->save_for_backward(saved);
    ctx->saved_data["has_b_ih"] = b_ih.has_value() && b_ih->defined();
    ctx->saved_data["has_b_hh"] = b_hh.has_value() && b_hh->defined();
    ctx->mark_non_differentiable(variable_list(out.begin() + Spec::kDifferentiable, out.end()));
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool b_ih = ctx->saved_data["has_b_ih"].toBool();
    const bool b_hh = ctx->saved_data["has_b_hh"].toBool();
    // output_mask: input, hx, cx, w_ih, w_hh, bias (of whichever bias exists).
    const std::array<bool, 6> mask{
        ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
        ctx->needs_input_grad(3), ctx->needs_input_grad(4),
        (b_ih && ctx->needs_input_grad(5)) || (b_hh && ctx->needs_input_grad(6))};
    auto [dx, dhx, dcx, dw_ih, dw_hh, db] =
        call_backward(grads, saved, mask, std::make_index_sequence<Spec::kDifferentiable>(),
                      std::make_index_sequence<kFixedSaved>(), std::make_index_sequence<kExtra>());
    variable_list result{dx, dhx, dcx, dw_ih, dw_hh, b_ih ? db : Tensor(), b_hh ? db : Tensor()};
    result.resize(kInputs);  // no gradient for the extra inputs
    return result;
  }

 private:
  template <size_t... G, size_t... S, size_t... E>
  static auto call_backward(const variable_list& grads, const variable_list& saved,
                            const std::array<bool, 6>& mask, std::index_sequence<G...>,
                            std::index_sequence<S...>, std::index_sequence<E...>) {
    return Spec::backward(grads[G]..., saved[S]..., or_none(saved[kFixedSaved + E])..., mask);
  }

  static std::optional<Tensor> or_none(const Tensor& t) {
    return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
  }
};

template <typename Spec, typename Signature =
                             typename std::decay_t<decltype(Spec::forward)>::Signature>
struct AutogradKernel;

// The Autograd kernel of Spec's forward op: its signature is the op's.
template <typename Spec, typename R, typename... Args>
struct AutogradKernel<Spec, R(Args...)> {
  static R call(Args... args) {
    const variable_list out = LSTMFunction<Spec>::apply(args...);
    return to_tuple(out, std::make_index_sequence<std::tuple_size_v<R>>());
  }

 private:
  template <size_t... I>
  static R to_tuple(const variable_list& out, std::index_sequence<I...>) {
    return R{out[I]...};
  }
};

} // namespace lstm_ext::autograd
