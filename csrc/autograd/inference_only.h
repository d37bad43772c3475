// The Autograd kernel's check of an op with no backward (lstm_layer_inference,
// lstm_layer_forward_int8): with grad mode on, an input that requires grad is
// refused with a message naming the op, the input and what to do; with grad
// mode off, or no such input, the op runs below autograd and its outputs do
// not require grad.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <optional>
#include <utility>

namespace lstm_ext::autograd {

// args: (name, tensor or nullptr for an absent optional input). why: the
// reason the op has no gradient, as the message gives it.
inline void refuse_grad(const char* op, const char* why,
                        std::initializer_list<std::pair<const char*, const at::Tensor*>> args) {
  if (!at::GradMode::is_enabled()) return;
  for (const auto& [name, t] : args) {
    TORCH_CHECK(t == nullptr || !t->defined() || !t->requires_grad(), op,
                ": is inference-only (", why, "), but ", name,
                " requires grad; run it under torch.no_grad() / torch.inference_mode(), "
                "or detach() the inputs");
  }
}

// The tensor of an optional input, or nullptr.
inline const at::Tensor* optional_arg(const std::optional<at::Tensor>& t) {
  return t.has_value() ? &*t : nullptr;
}

} // namespace lstm_ext::autograd
