// Every argument check of the CPU kernels. Every message names the op, the
// argument, and the expected vs actual shape/dtype/device, because these ops
// are reached from Python, TorchScript and C++ alike and the first thing a
// user sees of a mistake is this text (the tests match on it: keep it as is).
//
// The LSTM ops check their arguments in one order: input (its dtype decides
// the computation's), w_hh (it gives hidden_size), w_ih, hx, cx, then the
// op's own tensors, then the optional ones. Only the first failing check is
// reported, so the order is part of what a user sees.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <c10/util/safe_numerics.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>

namespace lstm_ext::cpu {

inline void check_defined_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, but got None");
  TORCH_CHECK(
      t.device().is_cpu(), op, ": expected ", name,
      " on the cpu (the only device this build supports), but got a tensor on ", t.device());
}

// The dtype of the first tensor argument decides the computation's dtype.
inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  check_defined_cpu(op, name, t);
  TORCH_CHECK(t.scalar_type() != at::kHalf, op, ": float16 (Half) is not supported; use ",
              "bfloat16, float32 or float64 (", name, " is float16)");
  TORCH_CHECK(
      t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
          t.scalar_type() == at::kBFloat16,
      op, ": expected ", name, " to be float32, float64 or bfloat16, but got ", t.scalar_type());
}

inline void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                      const char* layout) {
  TORCH_CHECK(
      t.dim() == dim, op, ": expected ", name, " to be ", dim, "-D ", layout,
      ", but got shape ", t.sizes());
}

// `t` must be a CPU tensor of dtype `dtype` and shape `expected`; `layout`
// spells out what the dimensions mean, e.g. "(batch, hidden_size)".
inline void check_arg(const char* op, const char* name, const at::Tensor& t,
                      at::IntArrayRef expected, const char* layout, at::ScalarType dtype) {
  check_defined_cpu(op, name, t);
  TORCH_CHECK(
      t.scalar_type() == dtype, op, ": expected ", name, " to have dtype ", dtype,
      " (the dtype of input), but got ", t.scalar_type());
  TORCH_CHECK(
      t.sizes() == expected, op, ": expected ", name, " of shape ", expected, " ", layout,
      ", but got ", t.sizes());
}

inline void check_optional_arg(const char* op, const char* name,
                               const std::optional<at::Tensor>& t, at::IntArrayRef expected,
                               const char* layout, at::ScalarType dtype) {
  if (t.has_value() && t->defined()) {
    check_arg(op, name, *t, expected, layout, dtype);
  }
}

// The byte count of a buffer of `sizes` elements of `itemsize` bytes, in
// `bytes`; false where it overflows or exceeds int64 (what sizes and offsets
// are computed in).
inline bool buffer_bytes(at::IntArrayRef sizes, size_t itemsize, uint64_t* bytes) {
  return !c10::safe_multiplies_u64(sizes, bytes) &&
         !c10::mul_overflows(*bytes, uint64_t(itemsize), bytes) &&
         *bytes <= uint64_t(std::numeric_limits<int64_t>::max());
}

// A buffer of shape `sizes` that the kernel will allocate and index with
// int64 arithmetic must have a byte count that fits: sizes come from user
// tensors, and an expanded one claims any size at no cost (a wrapped product
// once handed a 2 MiB block to a 2^62-element tensor).
inline void check_buffer_fits(const char* op, const char* what,
                              std::initializer_list<int64_t> sizes, at::ScalarType dtype) {
  uint64_t bytes = 0;
  TORCH_CHECK(buffer_bytes(sizes, c10::elementSize(dtype), &bytes), op, ": the ", what,
              " buffer of shape ", at::IntArrayRef(sizes),
              " would need more than 2^63 bytes; the arguments' sizes are too large");
}

// ---------------------------------------------------------------------------
// The LSTM ops' arguments.

struct LstmSizes {
  int64_t batch, input, hidden;
  int64_t proj;     // the size of h: proj_size with a projection w_hr, else hidden
  bool projected;   // w_hr given
};

// What every LSTM op checks first, in this order: input (floating, `dim`-D as
// `layout`, its last two dimensions batch and input_size), w_hr where given
// (it gives hidden_size and proj_size), w_hh (which otherwise gives
// hidden_size), w_ih, hx, cx. With a projection (LSTMP, as torch.nn.LSTM's
// proj_size), h is (batch, proj_size) and w_hh is (4 * hidden_size, proj_size).
inline LstmSizes check_lstm_args(const char* op, const at::Tensor& input, int64_t dim,
                                 const char* layout, const at::Tensor& hx, const at::Tensor& cx,
                                 const at::Tensor& w_ih, const at::Tensor& w_hh,
                                 const std::optional<at::Tensor>& w_hr = std::nullopt) {
  check_floating(op, "input", input);
  check_dim(op, "input", input, dim, layout);
  const auto dtype = input.scalar_type();
  const bool proj = w_hr.has_value() && w_hr->defined();
  LstmSizes s{input.size(dim - 2), input.size(dim - 1), 0, 0, proj};
  if (proj) {
    check_defined_cpu(op, "w_hr", *w_hr);
    check_dim(op, "w_hr", *w_hr, 2, "(proj_size, hidden_size)");
    s.hidden = w_hr->size(1);
    s.proj = w_hr->size(0);
    check_arg(op, "w_hr", *w_hr, {s.proj, s.hidden}, "(proj_size, hidden_size)", dtype);
    TORCH_CHECK(s.proj > 0, op, ": expected w_hr with proj_size > 0 rows, but got shape ",
                w_hr->sizes());
    check_arg(op, "w_hh", w_hh, {4 * s.hidden, s.proj}, "(4 * hidden_size, proj_size)", dtype);
  } else {
    check_defined_cpu(op, "w_hh", w_hh);
    check_dim(op, "w_hh", w_hh, 2, "(4 * hidden_size, hidden_size)");
    s.hidden = s.proj = w_hh.size(1);
    check_arg(op, "w_hh", w_hh, {4 * s.hidden, s.hidden}, "(4 * hidden_size, hidden_size)",
              dtype);
  }
  check_arg(op, "w_ih", w_ih, {4 * s.hidden, s.input}, "(4 * hidden_size, input_size)", dtype);
  check_arg(op, "hx", hx, {s.batch, s.proj},
            proj ? "(batch, proj_size)" : "(batch, hidden_size)", dtype);
  check_arg(op, "cx", cx, {s.batch, s.hidden}, "(batch, hidden_size)", dtype);
  return s;
}

// The forward ops' optional biases, each (4 * hidden_size).
inline void check_biases(const char* op, const std::optional<at::Tensor>& b_ih,
                         const std::optional<at::Tensor>& b_hh, int64_t hidden,
                         at::ScalarType dtype) {
  check_optional_arg(op, "b_ih", b_ih, {4 * hidden}, "(4 * hidden_size)", dtype);
  check_optional_arg(op, "b_hh", b_hh, {4 * hidden}, "(4 * hidden_size)", dtype);
}

// The backward ops' optional gradients of the final state: grad_hy (batch,
// proj_size or hidden_size), grad_cy (batch, hidden_size).
inline void check_state_grads(const char* op, const std::optional<at::Tensor>& grad_hy,
                              const std::optional<at::Tensor>& grad_cy, const LstmSizes& s,
                              at::ScalarType dtype) {
  check_optional_arg(op, "grad_hy", grad_hy, {s.batch, s.proj},
                     s.projected ? "(batch, proj_size)" : "(batch, hidden_size)", dtype);
  check_optional_arg(op, "grad_cy", grad_cy, {s.batch, s.hidden}, "(batch, hidden_size)", dtype);
}

// The layer ops' lengths: int64 on the cpu, (batch), each in [1, steps],
// non-increasing. Returns them contiguous.
inline at::Tensor check_lengths(const char* op, const at::Tensor& len, int64_t steps,
                                int64_t batch) {
  TORCH_CHECK(len.device().is_cpu(), op, ": expected lengths on the cpu, but got ", len.device());
  TORCH_CHECK(len.scalar_type() == at::kLong, op,
              ": expected lengths to have dtype int64, but got ", len.scalar_type());
  TORCH_CHECK(len.dim() == 1 && len.size(0) == batch, op, ": expected lengths of shape [",
              batch, "] (batch), but got ", len.sizes());
  at::Tensor len_c = len.contiguous();
  const int64_t* l = len_c.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(l[b] >= 1 && l[b] <= steps, op, ": lengths[", b, "] = ", l[b],
                " is outside [1, seq_len = ", steps, "]");
    TORCH_CHECK(b == 0 || l[b] <= l[b - 1], op,
                ": lengths must be sorted in non-increasing order, but lengths[", b, "] = ", l[b],
                " > lengths[", b - 1, "] = ", l[b - 1],
                " (sort the batch first, as pack_padded_sequence(enforce_sorted=False) does)");
  }
  return len_c;
}

// ---------------------------------------------------------------------------
// The gemm op's arguments.

inline void check_gemm_args(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0),
              "gemm: expected a (m, k) and b (k, n), but got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(),
              "gemm: expected a and b on the cpu, but got ", a.device(), " and ", b.device());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "gemm: expected a to be float32 or float64, but got ", a.scalar_type());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "gemm: a is ", a.scalar_type(), " but b is ",
              b.scalar_type());
}

// ---------------------------------------------------------------------------

// Raw pointer of a contiguous copy of an optional tensor, or nullptr. `keep`
// owns the copy for as long as the pointer is used.
template <typename T>
const T* optional_data(const std::optional<at::Tensor>& t, at::Tensor& keep) {
  if (!t.has_value() || !t->defined()) return nullptr;
  keep = t->contiguous();
  return keep.data_ptr<T>();
}

} // namespace lstm_ext::cpu
