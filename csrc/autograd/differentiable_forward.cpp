// See differentiable_forward.h. Speed is not the point here (a double
// backward is rare and pays for a recomputation anyway): one ATen op per
// equation, as reference.py.
#include "differentiable_forward.h"

#include <ATen/ATen.h>

#include <vector>

namespace lstm_ext::autograd {
namespace {

using at::Tensor;

bool given(const std::optional<Tensor>& t) { return t.has_value() && t->defined(); }

// (h, c) of one step from the gates' pre-activations (B, 4H), i, f, g, o.
std::pair<Tensor, Tensor> cell_update(const Tensor& pre, const Tensor& c_prev) {
  const auto chunks = pre.chunk(4, 1);
  const Tensor i = at::sigmoid(chunks[0]);
  const Tensor f = at::sigmoid(chunks[1]);
  const Tensor g = at::tanh(chunks[2]);
  const Tensor o = at::sigmoid(chunks[3]);
  Tensor c = f * c_prev + i * g;
  Tensor h = o * at::tanh(c);
  return {h, c};
}

Tensor add_biases(Tensor pre, const std::optional<Tensor>& b_ih,
                  const std::optional<Tensor>& b_hh) {
  if (given(b_ih)) pre = pre + *b_ih;
  if (given(b_hh)) pre = pre + *b_hh;
  return pre;
}

} // namespace

torch::autograd::variable_list cell_forward_differentiable(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  const Tensor pre = add_biases(at::matmul(input, w_ih.t()) + at::matmul(hx, w_hh.t()), b_ih, b_hh);
  auto [h, c] = cell_update(pre, cx);
  return {h, c};
}

torch::autograd::variable_list layer_forward_differentiable(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr) {
  const Tensor projected_input = add_biases(at::matmul(input, w_ih.t()), b_ih, b_hh);
  Tensor h = hx, c = cx;
  std::vector<Tensor> outputs;
  for (int64_t t = 0; t < input.size(0); ++t) {
    auto [h_new, c_new] = cell_update(projected_input[t] + at::matmul(h, w_hh.t()), c);
    if (given(w_hr)) h_new = at::matmul(h_new, w_hr->t());
    if (!given(lengths)) {
      h = h_new;
      c = c_new;
      outputs.push_back(h);
    } else {
      // Rows past their length keep their state and output zeros.
      const Tensor running = lengths->gt(t).unsqueeze(1);
      h = at::where(running, h_new, h);
      c = at::where(running, c_new, c);
      outputs.push_back(at::where(running, h_new, at::zeros_like(h_new)));
    }
  }
  Tensor output = outputs.empty() ? at::zeros({0, input.size(1), hx.size(1)}, input.options())
                                  : at::stack(outputs);
  return {output, h, c};
}

} // namespace lstm_ext::autograd
