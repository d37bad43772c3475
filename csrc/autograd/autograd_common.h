// What the two autograd glues share: remembering which biases were given, and
// turning needs_input_grad into the backward ops' output_mask.
#pragma once

#include <torch/autograd.h>

#include <array>

namespace lstm_ext::autograd {

// Inputs 0-6 of both forward ops: input, hx, cx, w_ih, w_hh, b_ih, b_hh.
inline void save_bias_flags(torch::autograd::AutogradContext* ctx,
                            const std::optional<at::Tensor>& b_ih,
                            const std::optional<at::Tensor>& b_hh) {
  ctx->saved_data["has_b_ih"] = b_ih.has_value() && b_ih->defined();
  ctx->saved_data["has_b_hh"] = b_hh.has_value() && b_hh->defined();
}

struct GradientRequest {
  std::array<bool, 6> mask;  // input, hx, cx, w_ih, w_hh, bias
  bool b_ih, b_hh;           // which bias inputs exist (and get grad_bias)
};

inline GradientRequest gradient_request(torch::autograd::AutogradContext* ctx) {
  const bool b_ih = ctx->saved_data["has_b_ih"].toBool();
  const bool b_hh = ctx->saved_data["has_b_hh"].toBool();
  return {{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
           ctx->needs_input_grad(3), ctx->needs_input_grad(4),
           (b_ih && ctx->needs_input_grad(5)) || (b_hh && ctx->needs_input_grad(6))},
          b_ih,
          b_hh};
}

} // namespace lstm_ext::autograd
