// The bfloat16 CPU kernels of the four LSTM ops (lstm_bf16.cpp). The float
// kernels (cpu/lstm_{cell,layer}_kernel.cpp) hand a bfloat16 input to these
// first thing; signatures and conventions are the ops' (ops.cpp, ops.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace lstm_ext::cpu::bf16 {

using at::Tensor;

std::tuple<Tensor, Tensor, Tensor> lstm_cell_forward(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const std::optional<Tensor>& grad_hy, const std::optional<Tensor>& grad_cy,
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const Tensor& gates, const Tensor& cy, std::array<bool, 6> output_mask);

// op: the name errors give (lstm_layer_forward or lstm_layer_inference); with
// save = false (lstm_layer_inference) gates and cs come back undefined and are
// never stored (see lstm_bf16.cpp).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward(
    const char* op, bool save, const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_hy,
    const std::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, const Tensor& output,
    const Tensor& gates, const Tensor& cs, const std::optional<Tensor>& lengths,
    std::array<bool, 6> output_mask);

} // namespace lstm_ext::cpu::bf16
