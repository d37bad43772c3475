// The ops of ops.cpp in C++: one declaration per op, holding the op's C++
// signature and its dispatcher handle. A call, e.g.
//   auto [hy, cy, gates] = lstm_ext::ops::lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh);
// goes through the dispatcher, as torch.ops.lstm_ext.<op> does from Python:
// Autograd first where registered, then the kernel of the arguments' device.
// What each op computes, and the conventions they share, are documented at its
// schema in ops.cpp.
//
// A signature maps the schema's types as the dispatcher requires (Tensor? ->
// const std::optional<Tensor>&, bool[6] -> std::array<bool, 6>, str ->
// std::string); the dispatcher checks it against the schema at the first call.
// It is also the C++ type every kernel of the op must have: LSTM_EXT_IMPL
// registers a kernel only if it does (a compile error otherwise), and the
// autograd glue takes its signatures from here.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <array>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>

namespace lstm_ext::ops {

using at::Tensor;

template <typename Signature>
class Op;

// An op of signature R(Args...), callable as a function. The handle is looked
// up once, at the first call (the schemas register at library load).
template <typename R, typename... Args>
class Op<R(Args...)> {
 public:
  using Signature = R(Args...);

  constexpr explicit Op(const char* name) : name_(name) {}

  R operator()(Args... args) const { return handle().call(args...); }

  const c10::TypedOperatorHandle<Signature>& handle() const {
    std::call_once(found_, [this] {
      handle_.emplace(
          c10::Dispatcher::singleton().findSchemaOrThrow(name_, "").template typed<Signature>());
    });
    return *handle_;
  }

 private:
  const char* name_;
  mutable std::once_flag found_;
  mutable std::optional<c10::TypedOperatorHandle<Signature>> handle_;
};

inline const Op<std::string()> pointwise_capability{"lstm_ext::pointwise_capability"};

inline const Op<int64_t()> thread_fallbacks{"lstm_ext::thread_fallbacks"};
inline const Op<int64_t()> thread_strikes{"lstm_ext::thread_strikes"};

inline const Op<Tensor(const Tensor& a, const Tensor& b)> gemm{"lstm_ext::gemm"};

inline const Op<std::tuple<Tensor, Tensor, Tensor>(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh)>
    lstm_cell_forward{"lstm_ext::lstm_cell_forward"};

inline const Op<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const std::optional<Tensor>& grad_hy, const std::optional<Tensor>& grad_cy,
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const Tensor& gates, const Tensor& cy, std::array<bool, 6> output_mask)>
    lstm_cell_backward{"lstm_ext::lstm_cell_backward"};

inline const Op<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr)>
    lstm_layer_forward{"lstm_ext::lstm_layer_forward"};

inline const Op<std::tuple<Tensor, Tensor, Tensor>(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr)>
    lstm_layer_inference{"lstm_ext::lstm_layer_inference"};

inline const Op<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_hy,
    const std::optional<Tensor>& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, const Tensor& output,
    const Tensor& gates, const Tensor& cs, const std::optional<Tensor>& lengths,
    const std::optional<Tensor>& w_hr, std::array<bool, 7> output_mask)>
    lstm_layer_backward{"lstm_ext::lstm_layer_backward"};

inline const Op<std::tuple<Tensor, Tensor, Tensor>(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_ih_scale, const Tensor& w_hh, const Tensor& w_hh_scale,
    const std::optional<Tensor>& bias, const std::optional<Tensor>& lengths)>
    lstm_layer_forward_int8{"lstm_ext::lstm_layer_forward_int8"};

// The C++ signature of op `op` (a name declared above), as a function type.
#define LSTM_EXT_SIGNATURE(op) std::decay_t<decltype(::lstm_ext::ops::op)>::Signature

} // namespace lstm_ext::ops

// Registers function `kernel` as op `op`'s kernel (`op` a name declared
// above) for dispatch key KEY (CPU, Autograd, ...), after checking at compile
// time that its type is exactly the op's signature. At namespace scope, next
// to the kernel.
#define LSTM_EXT_IMPL(KEY, op, kernel)                                                        \
  TORCH_LIBRARY_IMPL(lstm_ext, KEY, m) {                                                      \
    static_assert(std::is_same_v<decltype(kernel), LSTM_EXT_SIGNATURE(op)>,                   \
                  #kernel " must have the signature of lstm_ext::ops::" #op " (csrc/ops.h)"); \
    m.impl(#op, &kernel);                                                                     \
  }
