// The int8 kernels of the vector kernel library (dynamic quantization for
// inference, lstm_layer_forward_int8): their arguments, shapes and stubs, in
// one place (definitions: int8_math.h; registration: int8_kernel_list.h).
//
//   int8_panel_size, int8_pack_gates     weights packed once per call
//   int8_project                         the input projection of all T*B rows
//   int8_forward_step                    one whole recurrent step of a layer
//
// Numerics. Weights are int8, symmetric, per output channel (row j of W (4H,
// K) is W_q[j] * w_scale[j], |W_q| <= 127). Activations (each row of x, each
// row of h_prev) are quantized dynamically, per row, symmetrically, then
// offset to uint8 so that u8 x s8 dot products (vpdpbusd, AMX tdpbusd) apply:
//   amax = max_k |a[k]|,  inv = 127 / amax,  s = amax / 127   (float32)
//   q[k] = nearbyint(a[k] * inv)  (float32 product, round half to even),
//   u[k] = q[k] + 128
//   sum_k a[k] W[j][k] ~ s * w_scale[j] * (sum_k u[k] W_q[j][k] - 128 colsum[j])
// where colsum[j] = sum_k W_q[j][k] (made at packing). A row with amax = 0 has
// s = 0 (its sums are exactly 0). A row holding NaN or +-inf is not quantized
// (every scale would be NaN or 0): its sums are computed in float32 from the
// dequantized weights, sum_k a[k] (W_q[j][k] w_scale[j]), so NaN and inf flow
// to the gates as through torch.nn.LSTM's float products. The sums are exact
// in int32 (|sum| <= K * 255 * 127: K <= 65536, checked by the op); the
// dequantization, the bias and the cell update are float32 (cell_math.h's
// sigmoid and tanh, IEEE NaN/inf handling included).
//
// Builds: the templates (int8_math.h) are compiled into every capability build
// (kernels_{default,avx2,avx512}.cpp, through int8_kernel_list.h), where the
// quad products are plain int32 arithmetic; once more with AVX512-VNNI
// (kernels_avx512_vnni.cpp: vpdpbusd), and once with AMX-INT8
// (kernels_amx_int8.cpp: tdpbusd on 16-row tiles). int8_dispatch.cpp picks
// AMX where compiled in, the CPU has AMX-INT8, Linux grants the tile state
// and LSTM_EXT_INT8_AMX is not 0; else VNNI where the CPU has AVX512-VNNI and
// ATen's capability is AVX-512; else the capability build (so
// ATEN_CPU_CAPABILITY=avx2|default selects the fallbacks). Every build gives
// the same int32 sums; the float32 parts may differ in the last bits (FMA
// contraction), so h, requantized the next step, may differ by a rounding.
//
// Packed panels (int8_pack_gates): W^T for W (4H, K) is cut into groups of 16
// hidden units x 4 gates = 64 columns; a group holds, for each quad of k
// (4 consecutive k), its 4 x 16 columns as quads (W[col][4 kq + e], e = 0..3,
// in 32 bits) -- the operand layout of vpdpbusd and of an AMX B tile -- zero
// past K and past H, quads padded to a multiple of 16 (one AMX tile of B: 16
// quads x 16 columns, 64 bytes a row):
//   packed[grp][kq][q][v][e] = W[q H + 16 grp + v][4 kq + e]
// Column (grp, q, v) -- gate q of hidden unit 16 grp + v -- is column
// c = 64 grp + 16 q + v of the "packed column order" that colsum, the scales,
// the bias and the input projection's output use, so that one group is
// everything one block of hidden units needs.
#pragma once

#include <cstdint>

#include "dispatch.h"

namespace lstm_ext::cpu::vec {

// Columns per vector of a packed panel, and columns per group.
constexpr int64_t kInt8Lanes = 16;
constexpr int64_t kInt8GroupCols = 4 * kInt8Lanes;

// The builds an int8 stub may hold: the capability builds, then AVX512-VNNI,
// then AMX-INT8.
constexpr int kAvx512VnniBuild = kCapabilities;
constexpr int kAmxInt8Build = kCapabilities + 1;
constexpr int kInt8Builds = kCapabilities + 2;

// The build the int8 stubs run (decided once, int8_dispatch.cpp).
int int8_build();
// Its name: "amx_int8", "avx512_vnni", or the capability build's ("avx512",
// "avx2", "default").
const char* int8_build_name();

template <typename Signature>
struct Int8Stub;

template <typename R, typename... Args>
struct Int8Stub<R(Args...)> {
  using Fn = R (*)(Args...);
  Fn builds[kInt8Builds] = {};

  R operator()(Args... args) const {
    Fn fn = builds[int8_build()];
    if (fn == nullptr) fn = builds[static_cast<int>(capability())];
    TORCH_INTERNAL_ASSERT(fn != nullptr, "lstm_ext: an int8 vector kernel is not registered");
    return fn(args...);
  }
};

#define LSTM_EXT_DECLARE_INT8_KERNEL(NAME, ...) \
  inline ::lstm_ext::cpu::vec::Int8Stub<__VA_ARGS__> NAME {}

// Bytes of the packed panel of W (4H, K).
LSTM_EXT_DECLARE_INT8_KERNEL(int8_panel_size, int64_t(int64_t hidden, int64_t K));
// w (4H, K) int8 row-major -> packed W^T (see above); colsum (groups * 64,
// packed column order) = each column's sum of W_q, 0 for padding columns.
LSTM_EXT_DECLARE_INT8_KERNEL(int8_pack_gates, void(const int8_t* w, int64_t hidden, int64_t K,
                                                   int8_t* packed, int32_t* colsum));

// The dequantization of one packed panel's sums: per column (packed column
// order, groups * 64 each), the weight scale, colsum, and an optional float32
// term added after (the bias, or nullptr).
struct Int8Panel {
  const int8_t* packed;   // int8_pack_gates(W, H, K)
  const int32_t* colsum;  // (groups * 64)
  const float* scale;     // (groups * 64) w_scale in packed column order, 0 for padding
  int64_t hidden;         // H
  int64_t K;              // the inner dimension (I for W_ih, H for W_hh)
};

// out (rows, groups * 64, packed column order) = x (rows, K, leading
// dimension ldx) @ W^T, dequantized, + bias (groups * 64, packed order, or
// nullptr): each row of x quantized as described above.
struct ProjectInt8 {
  Int8Panel w;
  const float* x;
  int64_t ldx;
  const float* bias;
  float* out;
  int64_t rows;
};
LSTM_EXT_DECLARE_INT8_KERNEL(int8_project, void(const ProjectInt8& args));

// One recurrent step of a layer: for each row r < rows and hidden unit,
//   pre = pre_x[r] (the input projection with the bias, packed column order)
//         + h_prev[r] @ W_hh^T (h_prev quantized per row, dequantized sums)
// then the cell update (cell_math.h's equations) in float32: c_next, h_next.
// h_prev may alias nothing written here; h_next and c_next are fresh rows.
struct StepForwardInt8 {
  Int8Panel w_hh;
  const float* pre_x;   // (rows, groups * 64)
  const float* h_prev;  // (rows, H)
  const float* c_prev;  // (rows, H)
  float* c_next;        // (rows, H)
  float* h_next;        // (rows, H)
  int64_t rows;
};
LSTM_EXT_DECLARE_INT8_KERNEL(int8_forward_step, void(const StepForwardInt8& args));

} // namespace lstm_ext::cpu::vec
