// Argument validation shared by the CPU kernels. Every message names the op,
// the argument, and the expected vs actual shape/dtype/device, because these
// ops are reached from Python, TorchScript and C++ alike and the first thing a
// user sees of a mistake is this text.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <c10/util/safe_numerics.h>

#include <cstdint>
#include <initializer_list>
#include <limits>

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
  TORCH_CHECK(
      t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
      ": expected ", name, " to be float32 or float64, but got ", t.scalar_type());
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

// A buffer of shape `sizes` that the kernel will allocate and index with
// int64 arithmetic must have a byte count that fits: sizes come from user
// tensors, and an expanded one claims any size at no cost (a wrapped product
// once handed a 2 MiB block to a 2^62-element tensor).
inline void check_buffer_fits(const char* op, const char* what,
                              std::initializer_list<int64_t> sizes, at::ScalarType dtype) {
  uint64_t bytes = 0;
  const bool overflows =
      c10::safe_multiplies_u64(sizes.begin(), sizes.end(), &bytes) ||
      c10::mul_overflows(bytes, uint64_t(c10::elementSize(dtype)), &bytes) ||
      bytes > uint64_t(std::numeric_limits<int64_t>::max());
  TORCH_CHECK(!overflows, op, ": the ", what, " buffer of shape ", at::IntArrayRef(sizes),
              " would need more than 2^63 bytes; the arguments' sizes are too large");
}

// Raw pointer of a contiguous copy of an optional tensor, or nullptr. `keep`
// owns the copy for as long as the pointer is used.
template <typename T>
const T* optional_data(const std::optional<at::Tensor>& t, at::Tensor& keep) {
  if (!t.has_value() || !t->defined()) return nullptr;
  keep = t->contiguous();
  return keep.data_ptr<T>();
}

} // namespace lstm_ext::cpu
