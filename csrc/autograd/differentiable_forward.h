// The forward ops in differentiable ATen operations: what a double backward
// (create_graph=True) differentiates, from the inputs a forward saved
// (lstm_function.h). Same arguments as the ops (ops.h); each returns the op's
// differentiable outputs only: the cell (hy, cy), the layer (output, hy, cy).
//
// These are the equations of lstm_ext/reference.py again, in C++: C++
// programs (no Python there) need second-order gradients too. The tests hold
// both to the kernels (gradgradcheck against finite differences of the
// kernels' own first-order gradients).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include <torch/csrc/autograd/variable.h>

namespace lstm_ext::autograd {

torch::autograd::variable_list cell_forward_differentiable(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh);

torch::autograd::variable_list layer_forward_differentiable(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& lengths,
    const std::optional<at::Tensor>& w_hr);

} // namespace lstm_ext::autograd
