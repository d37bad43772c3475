// The int8 kernels of the vector kernel library (dynamic quantization for
// inference, lstm_layer_forward_int8): their arguments, shapes and stubs, in
// one place (definitions: int8_math.h; registration: int8_kernel_list.h).
//
//   int8_panel_size, int8_pack_gates     weights packed once per call
//   int8_row_bytes, int8_quantize_rows   activations quantized per row
//   int8_forward_step                    one whole step of a layer, input
//                                        projection included
//
// Numerics. Weights are int8, symmetric, per output channel (row j of W (4H,
// K) is W_q[j] * w_scale[j], |W_q| <= 127). Activations (each row of x, each
// row of h_prev) are quantized dynamically, per row, symmetrically, then
// offset to uint8 so that u8 x s8 dot products (vpdpbusd, AMX tdpbusd) apply:
//   amax = max_k |a[k]|,  inv = 127 / amax,  s = amax / 127   (float32)
//   q[k] = nearbyint(a[k] * inv)  (float32 product, round half to even),
//   u[k] = q[k] + 128
//   sum_k a[k] W[j][k] ~ s * w_scale[j] * (sum_k u[k] W_q[j][k] - offset[j])
// where offset[j] = 128 sum_k W_q[j][k] (made at packing). A row with amax = 0 has
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
// c = 64 grp + 16 q + v of the "packed column order" that the offsets, the
// scales and the bias use, so that one group is everything one block of
// hidden units needs.
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
// Bytes of a quantized activation row of K values (K rounded up to 64: one
// AMX tile row).
LSTM_EXT_DECLARE_INT8_KERNEL(int8_row_bytes, int64_t(int64_t K));
// w (4H, K) int8 row-major -> packed W^T (see above); offset (groups * 64,
// packed column order) = 128 * each column's sum of W_q (what the uint8
// offset of the activations adds to a sum), 0 for padding columns.
LSTM_EXT_DECLARE_INT8_KERNEL(int8_pack_gates, void(const int8_t* w, int64_t hidden, int64_t K,
                                                   int8_t* packed, int32_t* offset));
// Rows [0, rows) of a (leading dimension lda, K values each) quantized as
// above: out row r (int8_row_bytes(K) bytes, stride int8_row_bytes(K)) and
// scale[r] (NaN for a row holding NaN or inf, whose out row is then unused).
// Parallel over rows (on the step team where one runs, step_team.h).
LSTM_EXT_DECLARE_INT8_KERNEL(int8_quantize_rows, void(const float* a, int64_t rows, int64_t K,
                                                      int64_t lda, uint8_t* out, float* scale));

// One packed weight panel and what dequantizes its sums: per column (packed
// column order, groups * 64 each) the weight scale and the offset.
struct Int8Panel {
  const int8_t* packed;   // int8_pack_gates(W, H, K)
  const int32_t* offset;  // (groups * 64)
  const float* scale;     // (groups * 64) w_scale in packed column order, 0 for padding
  int64_t K;              // the inner dimension (I for W_ih, H for W_hh)
};

// One step of a layer, input projection included: for each row r < rows and
// hidden unit,
//   pre = x[r] @ W_ih^T + h_prev[r] @ W_hh^T + bias
// each product on its own quantized rows and dequantized on its own (x and h
// have their own row scales), then the cell update (cell_math.h's equations)
// in float32: c_next, h_next. x is quantized beforehand (int8_quantize_rows,
// all steps at once); h_prev by the step itself into h_q / h_scale. c_next
// may alias c_prev (each element is read before it is written); h_next must
// not alias h_prev.
struct StepForwardInt8 {
  Int8Panel w_ih;
  Int8Panel w_hh;
  const uint8_t* x_q;     // (rows, int8_row_bytes(I)) this step's quantized x
  const float* x_scale;   // (rows)
  const float* x;         // (rows, I) this step's x (read for rows of scale NaN)
  uint8_t* h_q;           // scratch: (round_up(rows, 16), int8_row_bytes(H)); rows past
                          // `rows` allocated and initialised (AMX reads 16 at a time)
  float* h_scale;         // scratch: (rows)
  const float* bias;      // (groups * 64) b_ih + b_hh in packed column order, or nullptr
  const float* h_prev;    // (rows, H)
  const float* c_prev;    // (rows, H)
  float* c_next;          // (rows, H)
  float* h_next;          // (rows, H)
  int64_t rows;
  int64_t hidden;
};
LSTM_EXT_DECLARE_INT8_KERNEL(int8_forward_step, void(const StepForwardInt8& args));

} // namespace lstm_ext::cpu::vec
