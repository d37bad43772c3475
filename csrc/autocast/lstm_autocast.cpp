// The forward ops under CPU autocast (torch.autocast("cpu", dtype=...)), at
// the AutocastCPU key: the policy ATen gives its own CPU LSTM
// (aten::mkldnn_rnn_layer is in AutocastCPU's lower_precision_fp list):
// every floating-point tensor argument that is not float64 -- input, states,
// weights, biases -- is cast to the autocast dtype (bfloat16 by default;
// weights through autocast's cast cache), then the op runs below autocast.
// Results come back in that dtype. lengths (int64) is passed as it is. The
// backward ops need no entry: autograd calls them with the saved, already
// cast tensors. A float16 autocast dtype reaches the kernels' "float16 is not
// supported" error.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "../ops.h"

namespace lstm_ext::autocast {
namespace {

using at::Tensor;

constexpr auto kDevice = c10::DeviceType::CPU;

Tensor cast(const Tensor& t) {
  return at::autocast::cached_cast(at::autocast::get_lower_precision_fp_from_device_type(kDevice),
                                   t, kDevice);
}

std::optional<Tensor> cast(const std::optional<Tensor>& t) {
  if (!t.has_value() || !t->defined()) return t;
  return cast(*t);
}

std::tuple<Tensor, Tensor, Tensor> lstm_cell_forward(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  return ops::lstm_cell_forward(cast(input), cast(hx), cast(cx), cast(w_ih), cast(w_hh),
                                cast(b_ih), cast(b_hh));
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  // With a projection nn.LSTM leaves oneDNN's (autocast-listed) RNN for its
  // native path, which autocast leaves in the inputs' dtype: so do we.
  if (w_hr.has_value() && w_hr->defined()) {
    return ops::lstm_layer_forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths, w_hr);
  }
  return ops::lstm_layer_forward(cast(input), cast(hx), cast(cx), cast(w_ih), cast(w_hh),
                                 cast(b_ih), cast(b_hh), lengths, w_hr);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_inference(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& w_ih,
    const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& w_hr) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  if (w_hr.has_value() && w_hr->defined()) {  // as lstm_layer_forward
    return ops::lstm_layer_inference(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths, w_hr);
  }
  return ops::lstm_layer_inference(cast(input), cast(hx), cast(cx), cast(w_ih), cast(w_hh),
                                   cast(b_ih), cast(b_hh), lengths, w_hr);
}

LSTM_EXT_IMPL(AutocastCPU, lstm_cell_forward, lstm_cell_forward)
LSTM_EXT_IMPL(AutocastCPU, lstm_layer_forward, lstm_layer_forward)
LSTM_EXT_IMPL(AutocastCPU, lstm_layer_inference, lstm_layer_inference)

} // namespace
} // namespace lstm_ext::autocast
