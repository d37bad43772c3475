// The bfloat16 kernels of the vector kernel library: their arguments, shapes
// and stubs, in one place (the float/double kernels are in kernels.h).
//
//   bf16_pack_gates, bf16_pack_cols, bf16_panel_size   weights packed once per sequence
//   bf16_forward_step                                 one whole forward step of a layer
//   bf16_backward_pointwise                           a backward step's element-wise pass
//   bf16_gemm                                         C (fp32) = A (bf16) @ packed B (bf16)
//
// Numerics: bf16 storage (inputs, weights, h, the saved activated gates, the
// gate gradients), float32 arithmetic: products accumulate in float32, the
// cell state c and the carried gradients dh, dc stay float32.
//
// Builds: the templates (bf16_math.h) are compiled into every capability
// build (kernels_{default,avx2,avx512}.cpp, through bf16_kernel_list.h), where
// the pair products are emulated in float32, and once more with AVX512-BF16
// (kernels_avx512_bf16.cpp, -mavx512bf16), where they are vdpbf16ps. The stubs
// here run the AVX512-BF16 build where it was compiled in, the CPU has the
// instructions and ATen's capability is AVX-512; else the capability build
// (dispatch.h), so ATEN_CPU_CAPABILITY=avx2|default selects the fallbacks.
//
// Packed panels (bf16_pack_gates / bf16_pack_cols): B (K, N) is cut into
// groups of 4 vectors of 16 columns; a group holds, for each pair of rows
// (k, k+1), its 4 x 16 columns as interleaved pairs (B[k][j], B[k+1][j]) --
// the operand layout of vdpbf16ps and of AMX's tdpbf16ps -- zero past K and
// past N, pairs padded to a multiple of 16 (one AMX tile of B: 16 pairs x 16
// columns):
//   packed[grp][kp][q][v][e] = B[2 kp + e][column (grp, q, v)]
// bf16_pack_gates packs W^T for W (4H, K) (W_hh or W_ih as stored) with group
// grp = hidden units [16 grp, 16 grp + 16) and q = gate: column (grp, q, v) =
// q H + 16 grp + v, so one group is everything one block of hidden units needs.
// bf16_pack_cols packs B (K, N) itself: column (grp, q, v) = 64 grp + 16 q + v.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#include "dispatch.h"

namespace lstm_ext::cpu::vec {

using bf16 = c10::BFloat16;

// Columns per vector of a packed panel, and vectors per group.
constexpr int64_t kBf16Lanes = 16;
constexpr int64_t kBf16GroupCols = 4 * kBf16Lanes;

// The builds a bf16 stub may hold: the capability builds, then AVX512-BF16,
// then AVX512-BF16 with AMX (tile products for the step's and dh's sums).
constexpr int kAvx512Bf16Build = kCapabilities;
constexpr int kAmxBf16Build = kCapabilities + 1;
constexpr int kBf16Builds = kCapabilities + 2;

// The build the bf16 stubs run (decided once, bf16_dispatch.cpp).
int bf16_build();
// Its name: "amx_bf16", "avx512_bf16", or the capability build's ("avx512",
// "avx2", "default").
const char* bf16_build_name();

template <typename Signature>
struct Bf16Stub;

template <typename R, typename... Args>
struct Bf16Stub<R(Args...)> {
  using Fn = R (*)(Args...);
  Fn builds[kBf16Builds] = {};

  R operator()(Args... args) const {
    Fn fn = builds[bf16_build()];
    if (fn == nullptr) fn = builds[static_cast<int>(capability())];
    TORCH_INTERNAL_ASSERT(fn != nullptr, "lstm_ext: a bf16 vector kernel is not registered");
    return fn(args...);
  }
};

#define LSTM_EXT_DECLARE_BF16_KERNEL(NAME, ...) \
  inline ::lstm_ext::cpu::vec::Bf16Stub<__VA_ARGS__> NAME {}

// Elements of a packed panel of B (K, N).
LSTM_EXT_DECLARE_BF16_KERNEL(bf16_panel_size, int64_t(int64_t K, int64_t N));
// w (4H, K) row-major -> packed W^T, gate-grouped (see above).
LSTM_EXT_DECLARE_BF16_KERNEL(bf16_pack_gates,
                             void(const bf16* w, int64_t hidden, int64_t K, bf16* packed));
// b (K, N) row-major -> packed B.
LSTM_EXT_DECLARE_BF16_KERNEL(bf16_pack_cols, void(const bf16* b, int64_t K, int64_t N,
                                                  bf16* packed));

// One forward step of a layer, input projection included: for each row and
// hidden unit,
//   pre = x @ W_ih^T + h_prev @ W_hh^T + bias     (float32 sums)
// then the cell update (as PointwiseForward in kernels.h) in float32: the
// activated gates go to gates (bf16), c_next is float32, h_next bf16. The
// input projection in each step's product keeps the pre-activations float32
// sums without a float32 (T, B, 4H) buffer (bf16_math.h: group_sums).
struct StepForwardBf16 {
  bf16* gates;              // (rows, 4H): activated gates out, or nullptr (not kept)
  const bf16* w_ih_packed;  // bf16_pack_gates(W_ih, H, I)
  const bf16* w_hh_packed;  // bf16_pack_gates(W_hh, H, H)
  const bf16* x;            // (rows, I): this step's input
  int64_t input;            // I
  const bf16* h_prev;       // (rows, H)
  const float* c_prev;      // (rows, H)
  float* c_next;            // (rows, H)
  bf16* h_next;             // (rows, H)
  const float* bias;        // (4H) b_ih + b_hh, or nullptr
  int64_t rows;
  int64_t hidden;
};
LSTM_EXT_DECLARE_BF16_KERNEL(bf16_forward_step, void(const StepForwardBf16& args));

// The backward step's element-wise pass (the formulas of backward_pointwise,
// cell_math.h), from bf16 activated gates and float32 states and gradients.
struct PointwiseBackwardBf16 {
  const bf16* gates;        // (rows, 4H) activated gates
  const float* c_prev;      // (rows, H)
  const float* c_next;      // (rows, H)
  const float* grad_h;      // (rows, H) or nullptr (zeros)
  const bf16* grad_h_extra; // (rows, H) added to grad_h, or nullptr
  const float* grad_c;      // (rows, H) or nullptr (zeros)
  bf16* grad_gates;         // (rows, 4H)
  float* grad_c_prev;       // (rows, H); may alias grad_c
  int64_t rows;
  int64_t hidden;
};
LSTM_EXT_DECLARE_BF16_KERNEL(bf16_backward_pointwise, void(const PointwiseBackwardBf16& args));

// C (M, N) float32 [+]= A (M, K) bf16 (leading dimension lda) @ B, B packed by
// bf16_pack_cols(B, K, N); C has leading dimension ldc.
LSTM_EXT_DECLARE_BF16_KERNEL(bf16_gemm, void(int64_t M, int64_t N, int64_t K, const bf16* A,
                                             int64_t lda, const bf16* packed, float* C,
                                             int64_t ldc, bool accumulate));

} // namespace lstm_ext::cpu::vec
