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
//       -> (grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_bias,
//           gradients of the differentiable extras...)
// where the extra inputs are optional tensors (lengths: no gradient; w_hr: a
// gradient), and grad_bias is the gradient of b_ih and of b_hh alike. A pair
// describes itself with a spec:
//   struct Spec {
//     static constexpr auto& forward = ops::<forward op>;
//     static constexpr auto& backward = ops::<backward op>;
//     static constexpr size_t kDifferentiable = ...;  // leading outputs
//     static constexpr std::array<size_t, N> kSaved = {...};  // as backward reads them
//     // per extra input, the backward output that is its gradient, or -1
//     static constexpr std::array<int, E> kExtraGrad = {...};
//     // the forward in differentiable ATen ops (double_backward.h), same
//     // arguments, returning the differentiable outputs
//     static constexpr auto& differentiable = <function>;
//   };
// and AutogradKernel<Spec>::call is the forward op's Autograd kernel.
//
// Double backward: the backward ops are not differentiable, so a backward
// that must build a graph (create_graph=True: grad mode is on inside it)
// recomputes the forward from the saved inputs with Spec::differentiable and
// differentiates that with create_graph (as torch.utils.checkpoint does). The
// first-order path, grad mode off, stays on the fused kernels.
#pragma once

#include <c10/util/TypeTraits.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd.h>

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
    // The biases, read only by a double backward's recomputation.
    saved.push_back(b_ih.has_value() ? *b_ih : Tensor());
    saved.push_back(b_hh.has_value() ? *b_hh : Tensor());
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
    const std::array<bool, kInputs> needs = inputs_needing_grad(ctx, saved, b_ih, b_hh);
    if (at::GradMode::is_enabled()) return differentiable_backward(saved, grads, needs);
    // output_mask: input, hx, cx, w_ih, w_hh, bias (of whichever bias exists),
    // then the differentiable extras.
    std::array<bool, kBackwardOutputs> mask{needs[0], needs[1], needs[2],
                                            needs[3], needs[4], needs[5] || needs[6]};
    for (size_t e = 0; e < kExtra; ++e) {
      if (Spec::kExtraGrad[e] >= 0) mask[Spec::kExtraGrad[e]] = needs[7 + e];
    }
    const variable_list g = std::apply(
        [](const auto&... t) { return variable_list{t...}; },
        call_backward(grads, saved, mask, std::make_index_sequence<Spec::kDifferentiable>(),
                      std::make_index_sequence<kFixedSaved>(),
                      std::make_index_sequence<kExtra>()));
    variable_list result{g[0], g[1], g[2], g[3], g[4], b_ih ? g[5] : Tensor(),
                         b_hh ? g[5] : Tensor()};
    for (size_t e = 0; e < kExtra; ++e) {
      result.push_back(Spec::kExtraGrad[e] >= 0 ? g[Spec::kExtraGrad[e]] : Tensor());
    }
    return result;
  }

 private:
  // Which of the forward's inputs need a gradient, by input position.
  // needs_input_grad counts only the inputs that were tensors (an absent
  // optional is no input edge), so positions past an absent one shift.
  static std::array<bool, kInputs> inputs_needing_grad(AutogradContext* ctx,
                                                       const variable_list& saved, bool b_ih,
                                                       bool b_hh) {
    std::array<bool, kInputs> present{true, true, true, true, true, b_ih, b_hh};
    for (size_t e = 0; e < kExtra; ++e) present[7 + e] = saved[kFixedSaved + e].defined();
    std::array<bool, kInputs> needs{};
    size_t edge = 0;
    for (size_t i = 0; i < kInputs; ++i) {
      if (present[i]) needs[i] = ctx->needs_input_grad(edge++);
    }
    return needs;
  }

  using BackwardResult = typename c10::guts::infer_function_traits_t<
      typename std::decay_t<decltype(Spec::backward)>::Signature>::return_type;
  static constexpr size_t kBackwardOutputs = std::tuple_size_v<BackwardResult>;
  static constexpr size_t differentiable_extras() {
    size_t n = 0;
    for (int j : Spec::kExtraGrad) n += j >= 0;
    return n;
  }
  static_assert(kBackwardOutputs == 6 + differentiable_extras(),
                "the backward op returns 6 gradients plus one per differentiable extra");
  static_assert(Spec::kExtraGrad.size() == kExtra, "kExtraGrad: one entry per extra input");

  template <size_t... G, size_t... S, size_t... E>
  static auto call_backward(const variable_list& grads, const variable_list& saved,
                            const std::array<bool, kBackwardOutputs>& mask,
                            std::index_sequence<G...>, std::index_sequence<S...>,
                            std::index_sequence<E...>) {
    return Spec::backward(grads[G]..., saved[S]..., or_none(saved[kFixedSaved + E])..., mask);
  }

  // The gradients as a graph (create_graph=True): the forward again in ATen
  // ops from the saved inputs, differentiated with create_graph.
  static variable_list differentiable_backward(const variable_list& saved,
                                               const variable_list& grads,
                                               const std::array<bool, kInputs>& needs) {
    const Tensor& b_ih = saved[kFixedSaved + kExtra];
    const Tensor& b_hh = saved[kFixedSaved + kExtra + 1];
    // The inputs in the forward op's order: input, hx, cx, w_ih, w_hh, b_ih,
    // b_hh, extra...
    variable_list inputs{saved[0], saved[1], saved[2], saved[3], saved[4], b_ih, b_hh};
    for (size_t e = 0; e < kExtra; ++e) inputs.push_back(saved[kFixedSaved + e]);
    const variable_list outputs = recompute(inputs, std::make_index_sequence<kExtra>());
    variable_list targets, target_grads, wrt;
    for (size_t i = 0; i < Spec::kDifferentiable; ++i) {
      if (grads[i].defined() && outputs[i].requires_grad()) {
        targets.push_back(outputs[i]);
        target_grads.push_back(grads[i]);
      }
    }
    std::vector<size_t> wanted;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (needs[i] && inputs[i].requires_grad()) {
        wanted.push_back(i);
        wrt.push_back(inputs[i]);
      }
    }
    variable_list result(kInputs);
    if (targets.empty() || wrt.empty()) return result;
    const variable_list g = torch::autograd::grad(targets, wrt, target_grads,
                                                  /*retain_graph=*/true, /*create_graph=*/true,
                                                  /*allow_unused=*/true);
    for (size_t k = 0; k < wanted.size(); ++k) result[wanted[k]] = g[k];
    return result;
  }

  template <size_t... E>
  static variable_list recompute(const variable_list& in, std::index_sequence<E...>) {
    return Spec::differentiable(in[0], in[1], in[2], in[3], in[4], or_none(in[5]),
                                or_none(in[6]), or_none(in[7 + E])...);
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
