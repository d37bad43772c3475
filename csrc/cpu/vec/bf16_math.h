// The bfloat16 kernels (arguments and shapes: bf16_kernels.h): weight
// packing, the fused forward step, the backward step's element-wise pass and
// the packed GEMM of the backward's dh = dgates @ W_hh.
//
// One source for every build: in the AVX512-BF16 build (LSTM_EXT_BF16_DPBF16
// defined, kernels_avx512_bf16.cpp) a pair product is one vdpbf16ps
// (_mm512_dpbf16_ps: 16 float32 lanes, each += a0 b0 + a1 b1 from bf16
// pairs) and conversions are vcvtneps2bf16; in the AMX build
// (LSTM_EXT_BF16_AMX too) the products of 16 rows run on AMX tiles
// (tdpbf16ps: a 16 x 16 float32 tile += 16 x 32 bf16 @ 16 pairs x 16);
// elsewhere the same sums run in float32 on converted values (the fallback
// where the CPU lacks AVX512-BF16).
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

// Pairs of K in a packed group: rounded up to whole AMX tiles (16 pairs).
inline int64_t panel_pairs(int64_t K) { return ((K + 1) / 2 + 15) / 16 * 16; }

// Elements of one packed group.
inline int64_t group_stride(int64_t K) { return panel_pairs(K) * kBf16GroupCols * 2; }

inline int64_t bf16_panel_size(int64_t K, int64_t N) {
  const int64_t groups = (N + kBf16GroupCols - 1) / kBf16GroupCols;
  return groups * group_stride(K);
}

// Where B[k][column (q, v)] of a group goes in the packed group.
inline int64_t packed_index(int64_t k, int64_t q, int64_t v) {
  return (((k >> 1) * 4 + q) * kBf16Lanes + v) * 2 + (k & 1);
}

// Zero-fills each group (padding included), then fill(grp, out) writes its values.
template <typename F>
inline void pack_groups(int64_t K, int64_t groups, bf16* packed, const F& fill) {
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t grp = g0; grp < g1; ++grp) {
      bf16* out = packed + grp * group_stride(K);
      std::memset(static_cast<void*>(out), 0, group_stride(K) * sizeof(bf16));
      fill(grp, out);
    }
  });
}

inline void bf16_pack_gates(const bf16* w, int64_t H, int64_t K, bf16* packed) {
  const int64_t groups = (H + kBf16Lanes - 1) / kBf16Lanes;
  pack_groups(K, groups, packed, [&](int64_t grp, bf16* out) {
    const int64_t units = std::min(kBf16Lanes, H - grp * kBf16Lanes);
    const bf16* rows[4][kBf16Lanes];
    for (int64_t q = 0; q < 4; ++q) {
      for (int64_t v = 0; v < units; ++v) rows[q][v] = w + (q * H + grp * kBf16Lanes + v) * K;
    }
    // Written in order, one pair at a time; the group's 64 rows are read in
    // step (64 short streams, all in L2).
    for (int64_t kp = 0; kp < K / 2; ++kp) {
      bf16* o = out + kp * kBf16GroupCols * 2;
      for (int64_t q = 0; q < 4; ++q) {
        for (int64_t v = 0; v < units; ++v) {
          std::memcpy(o + (q * kBf16Lanes + v) * 2, rows[q][v] + 2 * kp, 2 * sizeof(bf16));
        }
      }
    }
    if (K % 2 == 1) {
      for (int64_t q = 0; q < 4; ++q) {
        for (int64_t v = 0; v < units; ++v) out[packed_index(K - 1, q, v)] = rows[q][v][K - 1];
      }
    }
  });
}

inline void bf16_pack_cols(const bf16* b, int64_t K, int64_t N, bf16* packed) {
  const int64_t groups = (N + kBf16GroupCols - 1) / kBf16GroupCols;
  pack_groups(K, groups, packed, [&](int64_t grp, bf16* out) {
    const int64_t j0 = grp * kBf16GroupCols;
    const int64_t n = std::min(kBf16GroupCols, N - j0);
    for (int64_t k = 0; k < K; ++k) {
      const bf16* row = b + k * N + j0;
      for (int64_t c = 0; c < n; ++c) out[packed_index(k, c / kBf16Lanes, c % kBf16Lanes)] = row[c];
    }
  });
}

// ---------------------------------------------------------------------------
// The pair-product block: for MR rows of A (bf16, leading dimension lda, K
// columns, K even) and one group of a packed panel, sums over pairs
// [kp0, kp1) into partial (MR rows x 64 float32, row stride 64): overwritten
// when `first`, else added to.

#if defined(LSTM_EXT_BF16_DPBF16)

template <int MR>
inline void dp_rows(const bf16* A, int64_t lda, const bf16* panel, int64_t kp0, int64_t kp1,
                    float* partial, bool first) {
  __m512 acc[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      acc[i][q] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(partial + i * 64 + q * 16);
    }
  }
  for (int64_t kp = kp0; kp < kp1; ++kp) {
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
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(partial + i * 64 + q * 16, acc[i][q]);
  }
}

#else

template <int MR>
inline void dp_rows(const bf16* A, int64_t lda, const bf16* panel, int64_t kp0, int64_t kp1,
                    float* partial, bool first) {
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
      const float a0 = bf16_bits_to_float(A[i * lda + 2 * kp].x);
      const float a1 = bf16_bits_to_float(A[i * lda + 2 * kp + 1].x);
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

// Rows [0, rows) of A (K even) against one panel group: the sums land in
// partial (rows x 64). K in chunks whose slice of the group (64 pairs x 64
// columns x 2, 16 KiB) stays in L1 while every row block streams past it.
inline void dp_group(int64_t rows, const bf16* A, int64_t lda, int64_t K, const bf16* group,
                     float* partial) {
  constexpr int MR = 4;
  constexpr int64_t kChunkPairs = 64;
  const int64_t pairs = K / 2;
  for (int64_t kp0 = 0; kp0 == 0 || kp0 < pairs; kp0 += kChunkPairs) {
    const int64_t kp1 = std::min(pairs, kp0 + kChunkPairs);
    const bool first = kp0 == 0;
    int64_t r = 0;
    for (; r + MR <= rows; r += MR) {
      dp_rows<MR>(A + r * lda, lda, group, kp0, kp1, partial + r * 64, first);
    }
    for (; r < rows; ++r) dp_rows<1>(A + r * lda, lda, group, kp0, kp1, partial + r * 64, first);
  }
}

#if defined(LSTM_EXT_BF16_AMX)

// AMX: tiles 0-3 accumulate the 4 x 16 columns of a group for 16 rows, tile
// 4 holds 16 rows x 32 k of A, tiles 5 and 6 alternate for B.
struct TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Loads this thread's tile configuration (the tile state is per thread and
// other libraries -- oneDNN -- configure their own between our calls).
inline void amx_configure() {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 7; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

// 16 rows of A (16 x K, K a multiple of 32, rows beyond the data zero-filled
// or harmless) against one group: partial (16 x 64, row stride 64) = the sums.
inline void amx_block(const bf16* A, int64_t lda, int64_t K, const bf16* group, float* partial) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t a_stride = lda * int64_t(sizeof(bf16));
  constexpr int64_t b_stride = kBf16GroupCols * 2 * sizeof(bf16);  // one pair row: 256 bytes
  for (int64_t k = 0; k < K; k += 32) {
    const bf16* b = group + (k / 2) * kBf16GroupCols * 2;
    _tile_loadd(4, A + k, a_stride);
    _tile_loadd(5, b, b_stride);
    _tile_loadd(6, b + 32, b_stride);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(5, b + 64, b_stride);
    _tile_dpbf16ps(1, 4, 6);
    _tile_loadd(6, b + 96, b_stride);
    _tile_dpbf16ps(2, 4, 5);
    _tile_dpbf16ps(3, 4, 6);
  }
  constexpr int64_t c_stride = 64 * sizeof(float);
  _tile_stored(0, partial, c_stride);
  _tile_stored(1, partial + 16, c_stride);
  _tile_stored(2, partial + 32, c_stride);
  _tile_stored(3, partial + 48, c_stride);
}

#endif

// Rounds up to whole AMX tiles: rows to 16, K to 32.
inline int64_t round_rows(int64_t rows) { return (rows + 15) / 16 * 16; }
inline int64_t round_k(int64_t K) { return (K + 31) / 32 * 32; }

// Per-thread scratch, kept across steps: no allocation per step.
inline float* thread_partial(int64_t rows) {
  thread_local std::vector<float> partial;
  const size_t size = static_cast<size_t>(round_rows(rows) * 64);
  if (partial.size() < size) partial.resize(size);
  return partial.data();
}

inline bf16* thread_a(int64_t elements) {
  thread_local std::vector<bf16> a;
  if (a.size() < static_cast<size_t>(elements)) a.resize(elements);
  return a.data();
}

// rows (<= 16) rows of A (K columns, leading dimension lda) into a 16 x
// round_k(K) block at out, zero past rows and past K.
inline void copy_block(const bf16* A, int64_t lda, int64_t rows, int64_t K, bf16* out) {
  const int64_t kp = round_k(K);
  for (int64_t r = 0; r < 16; ++r) {
    bf16* o = out + r * kp;
    if (r < rows) {
      std::memcpy(o, A + r * lda, K * sizeof(bf16));
      std::memset(static_cast<void*>(o + K), 0, (kp - K) * sizeof(bf16));
    } else {
      std::memset(static_cast<void*>(o), 0, kp * sizeof(bf16));
    }
  }
}

// The sums of rows [0, rows) of A against one group, into partial (row stride
// 64). A padded (`padded`: round_rows(rows) rows, round_k(K) columns, zeros
// past the data) may go to AMX tiles in place; otherwise AMX copies each
// ragged block first.
inline void group_sums(int64_t rows, const bf16* A, int64_t lda, int64_t K, bool padded,
                       const bf16* group, float* partial) {
#if defined(LSTM_EXT_BF16_AMX)
  if (rows >= 4) {
    const int64_t kp = round_k(K);
    for (int64_t r = 0; r < rows; r += 16) {
      if (padded || (r + 16 <= rows && K % 32 == 0)) {
        amx_block(A + r * lda, lda, kp, group, partial + r * 64);
      } else {
        bf16* block = thread_a(16 * kp);
        copy_block(A + r * lda, lda, std::min<int64_t>(16, rows - r), K, block);
        amx_block(block, kp, kp, group, partial + r * 64);
      }
    }
    return;
  }
#endif
  (void)padded;
  dp_group(rows, A, lda, K + (K & 1), group, partial);
}

// Opens a parallel region's use of the product kernels (AMX: tile
// configuration) and closes it (AMX: release of the tile state).
struct TileScope {
#if defined(LSTM_EXT_BF16_AMX)
  TileScope() { amx_configure(); }
  ~TileScope() { _tile_release(); }
#endif
};

// ---------------------------------------------------------------------------
// The forward step.

// The cell update of one row's block of n (<= 16) hidden units: sums the
// pre-activation sums (gate q at sums + 16 q), bias at the block or nullptr;
// the activated gates go to g (the row's gates at the block, gate q at
// g + q H, bf16).
inline void cell_update_bf16(bf16* g, int64_t H, const float* sums, const float* bias,
                             const float* c_prev, float* c_next, bf16* h_next, int64_t n) {
  using Vec = Vectorized<float>;
  constexpr int64_t kVec = Vec::size();
#if defined(LSTM_EXT_BF16_DPBF16)
  // sigmoid with a reciprocal estimate refined by one Newton step (relative
  // error ~1e-7, as the division's result is rounded to bf16 anyway) instead
  // of a division, which was half of the step's time. IEEE cases as
  // cell_math.h's: 1 + exp(-x) is +inf for x = -inf (estimate 0: sigmoid 0),
  // NaN stays NaN.
  auto sigmoid = [](const Vec& x) {
    const __m512 d = Vec(1.f) + exp_ieee(x.neg());
    const __m512 r = _mm512_rcp14_ps(d);
    // r (2 - d r); where r is 0 or inf (d inf or 0) the estimate stands.
    const __m512 refined = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
    const __mmask16 finite = _mm512_cmp_ps_mask(refined, refined, _CMP_ORD_Q);
    return Vec(_mm512_mask_blend_ps(finite, r, refined));
  };
  auto tanh = [&](const Vec& x) {
    return at::vec::fmsub(Vec(2.f), sigmoid(x * Vec(2.f)), Vec(1.f));
  };
  if (n == kBf16Lanes) {  // a whole block: straight from the sums, no staging
    auto pre = [&](int q) {
      const __m512 sum = _mm512_loadu_ps(sums + q * kBf16Lanes);
      return Vec(bias != nullptr ? _mm512_add_ps(sum, _mm512_loadu_ps(bias + q * H)) : sum);
    };
    auto put = [](const Vec& v, bf16* p) {
      const __m256bh b = _mm512_cvtneps_pbh(v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)b);
    };
    const Vec i = sigmoid(pre(0));
    const Vec f = sigmoid(pre(1));
    const Vec c_hat = tanh(pre(2));
    const Vec o = sigmoid(pre(3));
    const Vec c = at::vec::fmadd(f, Vec::loadu(c_prev), i * c_hat);
    put(i, g);
    put(f, g + H);
    put(c_hat, g + 2 * H);
    put(o, g + 3 * H);
    c.store(c_next);
    put(o * tanh(c), h_next);
    return;
  }
#endif
  float pre[4][kBf16Lanes];
  for (int q = 0; q < 4; ++q) {
    for (int64_t v = 0; v < n; ++v) pre[q][v] = sums[q * kBf16Lanes + v];
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
  const int64_t H = a.hidden, I = a.input;
  const int64_t K = I + H;
  const int64_t kp = round_k(K);
  const int64_t groups = (H + kBf16Lanes - 1) / kBf16Lanes;
  // Threads split the hidden units, so each keeps its part of the weights hot
  // in its own cache from one step to the next.
  const int64_t work_per_group = 8 * a.rows * K * kBf16Lanes;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(work_per_group, 1));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    TileScope tiles;
    float* partial = thread_partial(a.rows);
    // [x | h_prev], padded to whole tiles with zeros: this thread's copy.
    const int64_t rows_pad = round_rows(a.rows);
    bf16* A = thread_a(rows_pad * kp);
    for (int64_t r = 0; r < rows_pad; ++r) {
      bf16* o = A + r * kp;
      if (r < a.rows) {
        std::memcpy(o, a.x + r * I, I * sizeof(bf16));
        std::memcpy(o + I, a.h_prev + r * H, H * sizeof(bf16));
        std::memset(static_cast<void*>(o + K), 0, (kp - K) * sizeof(bf16));
      } else {
        std::memset(static_cast<void*>(o), 0, kp * sizeof(bf16));
      }
    }
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int64_t u0 = grp * kBf16Lanes;
      const int64_t n = std::min(kBf16Lanes, H - u0);
      group_sums(a.rows, A, kp, K, true, a.w_packed + grp * group_stride(K), partial);
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
  const int64_t work_per_group = 2 * M * K * kBf16GroupCols;
  const int64_t grain = std::max<int64_t>(1, 262144 / std::max<int64_t>(work_per_group, 1));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    TileScope tiles;
    float* partial = thread_partial(M);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int64_t j0 = grp * kBf16GroupCols;
      const int64_t n = std::min(kBf16GroupCols, N - j0);
      group_sums(M, A, lda, K, false, packed + grp * group_stride(K), partial);
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
