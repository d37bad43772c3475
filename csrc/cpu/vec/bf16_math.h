// The bfloat16 kernels (arguments and shapes: bf16_kernels.h): weight
// packing, the fused forward step, the backward step's element-wise pass and
// the packed GEMM of the backward's dh = dgates @ W_hh.
//
// One source for every build: in the AVX512-BF16 build (LSTM_EXT_BF16_DPBF16
// defined, kernels_avx512_bf16.cpp) a pair product is one vdpbf16ps
// (_mm512_dpbf16_ps: 16 float32 lanes, each += a0 b0 + a1 b1 from bf16
// pairs) and conversions are vcvtneps2bf16; elsewhere the same sums run in
// float32 on converted values (the fallback where the CPU lacks AVX512-BF16).
// vdpbf16ps treats bf16 denormals as zero and rounds its sums to nearest-even:
// results differ from the fallback's in the last float32 bits only.
//
// The element-wise math (sigmoid, tanh, their IEEE handling of NaN and inf)
// is cell_math.h's, in float32.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(LSTM_EXT_BF16_DPBF16)
#include <immintrin.h>
#endif

#include "bf16_kernels.h"
#include "cell_math.h"

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

// ---------------------------------------------------------------------------
// Conversions (round to nearest even; NaN stays NaN, as c10::BFloat16 does).

inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // quiet NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// n (<= 16) bf16 values -> float32 out[0, n).
inline void bf16_to_float(const bf16* p, int64_t n, float* out) {
#if defined(LSTM_EXT_BF16_DPBF16)
  const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  _mm512_mask_storeu_ps(out, m, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
#else
  for (int64_t v = 0; v < n; ++v) out[v] = bf16_bits_to_float(p[v].x);
#endif
}

// float32 in[0, n) (n <= 16) -> n bf16 values.
inline void float_to_bf16(const float* in, int64_t n, bf16* p) {
#if defined(LSTM_EXT_BF16_DPBF16)
  const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
  const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, in));
  __m256i bits;
  std::memcpy(&bits, &h, sizeof(bits));
  _mm256_mask_storeu_epi16(p, m, bits);
#else
  for (int64_t v = 0; v < n; ++v) p[v].x = float_to_bf16_bits(in[v]);
#endif
}

// ---------------------------------------------------------------------------
// Packing.

template <typename = void>
int64_t bf16_panel_size_impl(int64_t K, int64_t N) {
  const int64_t groups = (N + kBf16GroupCols - 1) / kBf16GroupCols;
  return groups * ((K + 1) / 2) * kBf16GroupCols * 2;
}

inline int64_t bf16_panel_size(int64_t K, int64_t N) { return bf16_panel_size_impl(K, N); }

// packed[grp][kp][q][v][e] = b(2 kp + e, col(grp, q, v)), zero outside (K, N).
template <typename F>
inline void pack_panel(int64_t K, int64_t N, int64_t groups, bf16* packed, const F& b_at) {
  const int64_t pairs = (K + 1) / 2;
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t grp = g0; grp < g1; ++grp) {
      bf16* out = packed + grp * pairs * kBf16GroupCols * 2;
      for (int64_t kp = 0; kp < pairs; ++kp) {
        for (int64_t q = 0; q < 4; ++q) {
          for (int64_t v = 0; v < kBf16Lanes; ++v) {
            for (int64_t e = 0; e < 2; ++e) {
              const int64_t k = 2 * kp + e;
              bf16 value;
              value.x = 0;
              if (k < K) b_at(k, grp, q, v, value);
              out[((kp * 4 + q) * kBf16Lanes + v) * 2 + e] = value;
            }
          }
        }
      }
    }
  });
}

inline void bf16_pack_gates(const bf16* w, int64_t H, int64_t K, bf16* packed) {
  const int64_t groups = (H + kBf16Lanes - 1) / kBf16Lanes;
  pack_panel(K, 4 * H, groups, packed,
             [&](int64_t k, int64_t grp, int64_t q, int64_t v, bf16& value) {
               const int64_t u = grp * kBf16Lanes + v;
               if (u < H) value = w[(q * H + u) * K + k];
             });
}

inline void bf16_pack_cols(const bf16* b, int64_t K, int64_t N, bf16* packed) {
  const int64_t groups = (N + kBf16GroupCols - 1) / kBf16GroupCols;
  pack_panel(K, N, groups, packed,
             [&](int64_t k, int64_t grp, int64_t q, int64_t v, bf16& value) {
               const int64_t j = grp * kBf16GroupCols + q * kBf16Lanes + v;
               if (j < N) value = b[k * N + j];
             });
}

// ---------------------------------------------------------------------------
// The pair-product block: for MR rows of A (bf16, leading dimension lda, K
// columns) and one group of a packed panel, sums over pairs [kp0, kp1) into
// partial (MR rows x 64 float32, row stride 64): overwritten when `first`,
// else added to.

// Row i's pair (A[2 kp], A[2 kp + 1]) as one 32-bit word, the second half zero
// past K (never read: it may be another row's value, or past the buffer).
inline uint32_t a_pair(const bf16* row, int64_t kp, int64_t K) {
  if (2 * kp + 1 < K) {
    uint32_t pair;
    std::memcpy(&pair, row + 2 * kp, sizeof(pair));
    return pair;
  }
  return row[2 * kp].x;
}

#if defined(LSTM_EXT_BF16_DPBF16)

template <int MR>
inline void dp_rows(const bf16* A, int64_t lda, int64_t K, const bf16* panel, int64_t kp0,
                    int64_t kp1, float* partial, bool first) {
  __m512 acc[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      acc[i][q] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(partial + i * 64 + q * 16);
    }
  }
  const int64_t full = std::min(kp1, K / 2);  // pairs with both halves inside K
  for (int64_t kp = kp0; kp < full; ++kp) {
    const bf16* wk = panel + kp * kBf16GroupCols * 2;
    __m512bh b[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) b[q] = (__m512bh)_mm512_loadu_si512(wk + q * 32);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, A + i * lda + 2 * kp, sizeof(pair));
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) acc[i][q] = _mm512_dpbf16_ps(acc[i][q], a, b[q]);
    }
  }
  for (int64_t kp = std::max(full, kp0); kp < kp1; ++kp) {  // the odd K's last pair
    const bf16* wk = panel + kp * kBf16GroupCols * 2;
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int32_t(a_pair(A + i * lda, kp, K)));
      for (int q = 0; q < 4; ++q) {
        acc[i][q] = _mm512_dpbf16_ps(acc[i][q], a, (__m512bh)_mm512_loadu_si512(wk + q * 32));
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(partial + i * 64 + q * 16, acc[i][q]);
  }
}

#else

template <int MR>
inline void dp_rows(const bf16* A, int64_t lda, int64_t K, const bf16* panel, int64_t kp0,
                    int64_t kp1, float* partial, bool first) {
  float acc[MR][kBf16GroupCols];
  for (int i = 0; i < MR; ++i) {
    for (int64_t c = 0; c < kBf16GroupCols; ++c) acc[i][c] = first ? 0.f : partial[i * 64 + c];
  }
  float w0[kBf16GroupCols], w1[kBf16GroupCols];
  for (int64_t kp = kp0; kp < kp1; ++kp) {
    const bf16* wk = panel + kp * kBf16GroupCols * 2;
    for (int64_t c = 0; c < kBf16GroupCols; ++c) {
      w0[c] = bf16_bits_to_float(wk[2 * c].x);
      w1[c] = bf16_bits_to_float(wk[2 * c + 1].x);
    }
    for (int i = 0; i < MR; ++i) {
      const uint32_t pair = a_pair(A + i * lda, kp, K);
      const float a0 = bf16_bits_to_float(uint16_t(pair & 0xffffu));
      const float a1 = bf16_bits_to_float(uint16_t(pair >> 16));
      for (int64_t c = 0; c < kBf16GroupCols; ++c) {
        acc[i][c] += a0 * w0[c] + a1 * w1[c];
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int64_t c = 0; c < kBf16GroupCols; ++c) partial[i * 64 + c] = acc[i][c];
  }
}

#endif

// Rows [0, rows) of A against one panel group, all of K: the sums land in
// partial (rows x 64). K in chunks whose slice of the group (64 pairs x 64
// columns x 2, 16 KiB) stays in L1 while every row block streams past it.
inline void dp_group(int64_t rows, const bf16* A, int64_t lda, int64_t K, const bf16* group,
                     float* partial) {
  constexpr int MR = 4;
  constexpr int64_t kChunkPairs = 64;
  const int64_t pairs = (K + 1) / 2;
  for (int64_t kp0 = 0; kp0 == 0 || kp0 < pairs; kp0 += kChunkPairs) {
    const int64_t kp1 = std::min(pairs, kp0 + kChunkPairs);
    const bool first = kp0 == 0;
    int64_t r = 0;
    for (; r + MR <= rows; r += MR) {
      dp_rows<MR>(A + r * lda, lda, K, group, kp0, kp1, partial + r * 64, first);
    }
    for (; r < rows; ++r) dp_rows<1>(A + r * lda, lda, K, group, kp0, kp1, partial + r * 64, first);
  }
}

inline float* thread_partial(int64_t rows) {
  thread_local std::vector<float> partial;
  if (partial.size() < static_cast<size_t>(rows * 64)) partial.resize(rows * 64);
  return partial.data();
}

// ---------------------------------------------------------------------------
// The forward step.

// The cell update of one row's block of n (<= 16) hidden units: g the row's
// gates at the block (bf16, gate q at g + q H), sums the recurrent products
// (gate q at sums + 16 q), bias at the block or nullptr.
inline void cell_update_bf16(bf16* g, int64_t H, const float* sums, const float* bias,
                             const float* c_prev, float* c_next, bf16* h_next, int64_t n) {
  using Vec = Vectorized<float>;
  constexpr int64_t kVec = Vec::size();
  float pre[4][kBf16Lanes];
  for (int q = 0; q < 4; ++q) {
    bf16_to_float(g + q * H, n, pre[q]);
    for (int64_t v = 0; v < n; ++v) pre[q][v] += sums[q * kBf16Lanes + v];
    if (bias != nullptr) {
      for (int64_t v = 0; v < n; ++v) pre[q][v] += bias[q * H + v];
    }
  }
  float h[kBf16Lanes];
  for (int64_t j = 0; j < n; j += kVec) {
    const int64_t m = std::min(kVec, n - j);
    const Vec i = sigmoid(load(pre[0] + j, m));
    const Vec f = sigmoid(load(pre[1] + j, m));
    const Vec c_hat = tanh(load(pre[2] + j, m));
    const Vec o = sigmoid(load(pre[3] + j, m));
    const Vec c = at::vec::fmadd(f, load(c_prev + j, m), i * c_hat);
    store(i, pre[0] + j, m);
    store(f, pre[1] + j, m);
    store(c_hat, pre[2] + j, m);
    store(o, pre[3] + j, m);
    store(c, c_next + j, m);
    store(o * tanh(c), h + j, m);
  }
  for (int q = 0; q < 4; ++q) float_to_bf16(pre[q], n, g + q * H);
  float_to_bf16(h, n, h_next);
}

inline void bf16_forward_step(const StepForwardBf16& a) {
  const int64_t H = a.hidden;
  const int64_t groups = (H + kBf16Lanes - 1) / kBf16Lanes;
  const int64_t pairs = (H + 1) / 2;
  // Threads split the hidden units, so each keeps its part of W_hh hot in its
  // own cache from one step to the next.
  const int64_t work_per_group = 8 * a.rows * H * kBf16Lanes;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(work_per_group, 1));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    float* partial = thread_partial(a.rows);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int64_t u0 = grp * kBf16Lanes;
      const int64_t n = std::min(kBf16Lanes, H - u0);
      dp_group(a.rows, a.h_prev, H, H, a.w_packed + grp * pairs * kBf16GroupCols * 2, partial);
      for (int64_t r = 0; r < a.rows; ++r) {
        cell_update_bf16(a.gates + r * 4 * H + u0, H, partial + r * 64,
                         a.bias ? a.bias + u0 : nullptr, a.c_prev + r * H + u0,
                         a.c_next + r * H + u0, a.h_next + r * H + u0, n);
      }
    }
  });
}

// ---------------------------------------------------------------------------
// The backward step's element-wise pass (formulas: backward_pointwise).

inline void bf16_backward_pointwise(const PointwiseBackwardBf16& a) {
  using Vec = Vectorized<float>;
  constexpr int64_t kVec = Vec::size();
  const int64_t H = a.hidden;
  const Vec one(1.f);
  parallel_spans(a.rows, H, kLayerElementsPerThread, [&](int64_t r, int64_t j0, int64_t width) {
    const bf16* g = a.gates + r * 4 * H;
    const float* cp = a.c_prev + r * H;
    const float* cn = a.c_next + r * H;
    const float* gh = a.grad_h ? a.grad_h + r * H : nullptr;
    const bf16* gh2 = a.grad_h_extra ? a.grad_h_extra + r * H : nullptr;
    const float* gc = a.grad_c ? a.grad_c + r * H : nullptr;
    bf16* dg = a.grad_gates + r * 4 * H;
    float* dcp = a.grad_c_prev + r * H;
    for (int64_t j1 = j0; j1 < j0 + width; j1 += kBf16Lanes) {
      const int64_t n = std::min(kBf16Lanes, j0 + width - j1);
      float gate[4][kBf16Lanes], extra[kBf16Lanes], out[4][kBf16Lanes];
      for (int q = 0; q < 4; ++q) bf16_to_float(g + q * H + j1, n, gate[q]);
      if (gh2 != nullptr) bf16_to_float(gh2 + j1, n, extra);
      for (int64_t j = 0; j < n; j += kVec) {
        const int64_t m = std::min(kVec, n - j);
        Vec dh(0.f);
        if (gh != nullptr) dh = load(gh + j1 + j, m);
        if (gh2 != nullptr) dh += load(extra + j, m);
        const Vec i = load(gate[0] + j, m);
        const Vec f = load(gate[1] + j, m);
        const Vec gg = load(gate[2] + j, m);
        const Vec o = load(gate[3] + j, m);
        const Vec tc = tanh(load(cn + j1 + j, m));
        Vec dc = dh * o * (one - tc * tc);
        if (gc != nullptr) dc += load(gc + j1 + j, m);
        store(dc * gg * i * (one - i), out[0] + j, m);
        store(dc * load(cp + j1 + j, m) * f * (one - f), out[1] + j, m);
        store(dc * i * (one - gg * gg), out[2] + j, m);
        store(dh * tc * o * (one - o), out[3] + j, m);
        store(dc * f, dcp + j1 + j, m);
      }
      for (int q = 0; q < 4; ++q) float_to_bf16(out[q], n, dg + q * H + j1);
    }
  });
}

// ---------------------------------------------------------------------------
// C (M, N) [+]= A (M, K) @ packed B.

inline void bf16_gemm(int64_t M, int64_t N, int64_t K, const bf16* A, int64_t lda,
                      const bf16* packed, float* C, int64_t ldc, bool accumulate) {
  const int64_t groups = (N + kBf16GroupCols - 1) / kBf16GroupCols;
  const int64_t pairs = (K + 1) / 2;
  const int64_t work_per_group = 2 * M * K * kBf16GroupCols;
  const int64_t grain = std::max<int64_t>(1, 262144 / std::max<int64_t>(work_per_group, 1));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    float* partial = thread_partial(M);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int64_t j0 = grp * kBf16GroupCols;
      const int64_t n = std::min(kBf16GroupCols, N - j0);
      dp_group(M, A, lda, K, packed + grp * pairs * kBf16GroupCols * 2, partial);
      for (int64_t r = 0; r < M; ++r) {
        float* c = C + r * ldc + j0;
        const float* s = partial + r * 64;
        if (accumulate) {
          for (int64_t j = 0; j < n; ++j) c[j] += s[j];
        } else {
          std::memcpy(c, s, n * sizeof(float));
        }
      }
    }
  });
}

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
