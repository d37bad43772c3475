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

#if defined(LSTM_EXT_BF16_DPBF16) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "bf16_kernels.h"
#include "cell_math.h"
#if defined(LSTM_EXT_BF16_AMX)
#include "amx_tiles.h"
#endif

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

#elif defined(__AVX2__) && defined(__FMA__)

// AVX2 (the avx2 and the avx512-without-BF16 builds): the same sums in float32
// with FMA, in vdpbf16ps' order (the odd element of a pair, then the even:
// each product of two bf16 values is exact in float32, so each FMA rounds
// once, as vdpbf16ps does). A pair (k, k+1) read as one 32-bit word holds k
// in its low half: k + 1's float32 is the word with the low half cleared, k's
// the word shifted left by 16, two integer operations for 8 columns. Two rows
// x 32 columns of accumulators (8 of the 16 registers), each weight vector
// converted once for both rows. The portable loop below, which the compiler
// vectorised, ran bf16 inference at (64,512,512,50) in 218-267 ms against
// 99-141 ms in float32 (2 threads, this project's AVX2 EPYC).
template <int MR>
inline void dp_rows(const bf16* A, int64_t lda, const bf16* panel, int64_t kp0, int64_t kp1,
                    float* partial, bool first) {
  static_assert(MR == 1 || MR % 2 == 0, "rows in pairs, or one");
  constexpr int R = MR == 1 ? 1 : 2;
  const __m256i high = _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u));
  for (int i0 = 0; i0 < MR; i0 += R) {
    for (int half = 0; half < 2; ++half) {
      float* out = partial + i0 * 64 + half * 32;
      __m256 acc[R][4];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          acc[r][v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(out + r * 64 + v * 8);
        }
      }
      for (int64_t kp = kp0; kp < kp1; ++kp) {
        const bf16* wk = panel + kp * kBf16GroupCols * 2 + half * 64;
        __m256 a0[R], a1[R];
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) {
          int32_t pair;
          std::memcpy(&pair, A + (i0 + r) * lda + 2 * kp, sizeof(pair));
          const __m256i p = _mm256_set1_epi32(pair);
          a1[r] = _mm256_castsi256_ps(_mm256_and_si256(p, high));
          a0[r] = _mm256_castsi256_ps(_mm256_slli_epi32(p, 16));
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + v * 16));
          const __m256 w1 = _mm256_castsi256_ps(_mm256_and_si256(w, high));
          const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
#pragma GCC unroll 2
          for (int r = 0; r < R; ++r) {
            acc[r][v] = _mm256_fmadd_ps(a1[r], w1, acc[r][v]);
            acc[r][v] = _mm256_fmadd_ps(a0[r], w0, acc[r][v]);
          }
        }
      }
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) _mm256_storeu_ps(out + r * 64 + v * 8, acc[r][v]);
      }
    }
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
// partial (rows x 64), added to what it holds when `accumulate`. K in chunks
// whose slice of the group (64 pairs x 64 columns x 2, 16 KiB) stays in L1
// while every row block streams past it.
inline void dp_group(int64_t rows, const bf16* A, int64_t lda, int64_t K, const bf16* group,
                     float* partial, bool accumulate = false) {
  constexpr int MR = 4;
  constexpr int64_t kChunkPairs = 64;
  const int64_t pairs = K / 2;
  for (int64_t kp0 = 0; kp0 == 0 || kp0 < pairs; kp0 += kChunkPairs) {
    const int64_t kp1 = std::min(pairs, kp0 + kChunkPairs);
    const bool first = kp0 == 0 && !accumulate;
    int64_t r = 0;
    for (; r + MR <= rows; r += MR) {
      dp_rows<MR>(A + r * lda, lda, group, kp0, kp1, partial + r * 64, first);
    }
    for (; r < rows; ++r) dp_rows<1>(A + r * lda, lda, group, kp0, kp1, partial + r * 64, first);
  }
}

#if defined(LSTM_EXT_BF16_AMX)

// AMX (amx_tiles.h: the configuration): tiles 0-3 accumulate float32 sums
// (16 x 16 each), tiles 4-5 hold 16 rows x 32 k of A, tiles 6-7 hold 16 pairs
// x 16 columns of B.

// Bytes between pair rows of a packed group (64 columns x 2): a B tile's stride.
constexpr int64_t kPanelStride = kBf16GroupCols * 2 * sizeof(bf16);

// The C tiles 0-3 set to zero, and stored (tile t to c[t], ld floats between rows).
inline void amx_c_zero() {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
}
inline void amx_c_store(float* const (&c)[4], int64_t ld) {
  const int64_t stride = ld * int64_t(sizeof(float));
  _tile_stored(0, c[0], stride);
  _tile_stored(1, c[1], stride);
  _tile_stored(2, c[2], stride);
  _tile_stored(3, c[3], stride);
}

// C tile q += 16 rows of A (K a multiple of 32; a_stride bytes between rows)
// @ column tile q of one group, q = 0..3.
inline void amx_dp_1x4(const bf16* A, int64_t a_stride, int64_t K, const bf16* group) {
  for (int64_t k = 0; k < K; k += 32) {
    const bf16* b = group + (k / 2) * kBf16GroupCols * 2;
    _tile_loadd(4, A + k, a_stride);
    _tile_loadd(6, b, kPanelStride);
    _tile_loadd(7, b + 32, kPanelStride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(6, b + 64, kPanelStride);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(7, b + 96, kPanelStride);
    _tile_dpbf16ps(2, 4, 6);
    _tile_dpbf16ps(3, 4, 7);
  }
}

// C tile (i, j) = tile 2i + j += row tile i (a0, a1: 16 rows each) @ column
// tile j (b: the pair row of the first of two adjacent gates in a group, the
// second at b + 32): 4 sums from 2 A and 2 B loads per 32 k, where amx_dp_1x4
// needs 5 loads, 4 of them B (the weights, the operand that comes from L2).
inline void amx_dp_2x2(const bf16* a0, const bf16* a1, int64_t a_stride, int64_t K,
                       const bf16* b) {
  for (int64_t k = 0; k < K; k += 32) {
    const bf16* bk = b + (k / 2) * kBf16GroupCols * 2;
    _tile_loadd(4, a0 + k, a_stride);
    _tile_loadd(6, bk, kPanelStride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, bk + 32, kPanelStride);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1 + k, a_stride);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
}

#endif

// Rounds up to whole AMX tiles: rows to pairs of tiles (32), K to 32.
inline int64_t round_pairs(int64_t rows) { return (rows + 31) / 32 * 32; }
inline int64_t round_k(int64_t K) { return (K + 31) / 32 * 32; }

// Per-thread scratch, kept across steps: no allocation per step.
inline float* thread_partial(int64_t rows) {
  thread_local std::vector<float> partial;
  const size_t size = static_cast<size_t>(round_pairs(rows) * 64);
  if (partial.size() < size) partial.resize(size);
  return partial.data();
}

inline bf16* thread_a(int64_t elements) {
  thread_local std::vector<bf16> a;
  if (a.size() < static_cast<size_t>(elements)) a.resize(elements);
  return a.data();
}

// rows (<= 16, may be 0) rows of A (K columns, leading dimension lda) into a
// 16 x round_k(K) block at out, zero past rows and past K.
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

// One operand pair of a product: rows of A (K columns, leading dimension lda)
// against one group of a packed panel.
struct Segment {
  const bf16* A;
  int64_t lda;
  int64_t K;
  const bf16* group;
};

// The sums of rows [0, rows) over the segments (sum over s of A_s @ group_s),
// into partial (rows x 64, row stride 64; AMX writes round_pairs(rows) rows).
// A layer step has two: [x | h_prev] @ [W_ih | W_hh]^T without a copy of
// [x | h_prev]; the input projection rides in each step's product (measured,
// (64,512,512,50) bf16 inference on 2 threads: one product for the whole
// sequence into a float32 buffer, 26 MB written and read back, took 14.4 ms
// against 13.0 fused). AMX reads whole tiles of A in place where they are
// whole (16 rows, K a multiple of 32) and copies the ragged ones.
template <int S>
inline void group_sums(int64_t rows, const Segment (&seg)[S], float* partial) {
#if defined(LSTM_EXT_BF16_AMX)
  if (rows >= 4) {
    int64_t kp[S], offset[S + 1];
    offset[0] = 0;
    for (int s = 0; s < S; ++s) {
      kp[s] = round_k(seg[s].K);
      offset[s + 1] = offset[s] + 32 * kp[s];
    }
    bf16* buf = nullptr;
    for (int64_t r = 0; r < rows; r += 32) {
      const int64_t n = std::min<int64_t>(32, rows - r);
      const bf16* a0[S];
      const bf16* a1[S];
      int64_t stride[S];
      for (int s = 0; s < S; ++s) {
        if (seg[s].K % 32 == 0 && (n == 32 || n == 16)) {
          a0[s] = seg[s].A + r * seg[s].lda;
          a1[s] = a0[s] + 16 * seg[s].lda;
          stride[s] = seg[s].lda * int64_t(sizeof(bf16));
        } else {
          if (buf == nullptr) buf = thread_a(offset[S]);
          bf16* block = buf + offset[s];
          copy_block(seg[s].A + r * seg[s].lda, seg[s].lda, std::min<int64_t>(16, n),
                     seg[s].K, block);
          if (n > 16) {
            copy_block(seg[s].A + (r + 16) * seg[s].lda, seg[s].lda, n - 16, seg[s].K,
                       block + 16 * kp[s]);
          }
          a0[s] = block;
          a1[s] = block + 16 * kp[s];
          stride[s] = kp[s] * int64_t(sizeof(bf16));
        }
      }
      float* out = partial + r * 64;
      if (n <= 16) {
        amx_c_zero();
        for (int s = 0; s < S; ++s) amx_dp_1x4(a0[s], stride[s], kp[s], seg[s].group);
        amx_c_store({out, out + 16, out + 32, out + 48}, 64);
        continue;
      }
      for (int64_t q = 0; q < 4; q += 2) {
        amx_c_zero();
        for (int s = 0; s < S; ++s) {
          amx_dp_2x2(a0[s], a1[s], stride[s], kp[s], seg[s].group + 32 * q);
        }
        amx_c_store({out + 16 * q, out + 16 * q + 16, out + 16 * 64 + 16 * q,
                     out + 16 * 64 + 16 * q + 16},
                    64);
      }
    }
    return;
  }
#endif
  for (int s = 0; s < S; ++s) {
    if (seg[s].K % 2 == 1) {  // a zero column past K: a padded copy (the next element may be inf)
      const int64_t kp = round_k(seg[s].K);
      bf16* buf = thread_a(16 * kp);
      for (int64_t r = 0; r < rows; r += 16) {
        const int64_t n = std::min<int64_t>(16, rows - r);
        copy_block(seg[s].A + r * seg[s].lda, seg[s].lda, n, seg[s].K, buf);
        dp_group(n, buf, kp, seg[s].K + 1, seg[s].group, partial + r * 64, s > 0);
      }
    } else {
      dp_group(rows, seg[s].A, seg[s].lda, seg[s].K, seg[s].group, partial, s > 0);
    }
  }
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

#if defined(LSTM_EXT_BF16_DPBF16)
// v[k] = sigmoid(v[k]) for N vectors, or sigmoid(2 v[k]) where bit k of
// `doubled` is set (for tanh(x) = 2 sigmoid(2x) - 1), computed stage by stage
// across the N vectors: each sigmoid is one chain of ~20 dependent operations,
// and N chains side by side keep the FMA units busy where one chain at a time
// waited on its own latency (measured: see cell_update_bf16).
//
// exp(-x) as ATen's fexp_u20 (2^(x log2 e) from the exponent bits and a
// degree-3 polynomial on the fraction: relative error ~1e-5, below the bf16
// rounding of the gates, 4e-3), folded with the negation and the doubling
// into one scale, with IEEE cases put back: NaN stays NaN, exp overflows to
// +inf (sigmoid 0) and underflows to 0 (sigmoid 1). 1 / (1 + e) by a
// reciprocal estimate and one Newton step (relative error ~1e-7); where
// 1 + e is inf the estimate (0) stands.
template <int N>
inline void sigmoid_n(__m512 (&v)[N], unsigned doubled) {
  const __m512 c0 = _mm512_set1_ps(0.00010703434948458272f);
  const __m512 c1 = _mm512_set1_ps(0.30354260500649682f);
  const __m512 c2 = _mm512_set1_ps(-0.22433836478672356f);
  const __m512 c3 = _mm512_set1_ps(-0.079204240219773236f);
  const __m512 a = _mm512_set1_ps(8388608.f);            // 2^23
  const __m512 b = _mm512_set1_ps(8388608.f * 127.f);    // 2^23 * 127
  const __m512 lo = _mm512_set1_ps(-126.f);              // 2^y below: 0
  const __m512 hi = _mm512_set1_ps(128.f);               // 2^y from here: inf
  const __m512 one = _mm512_set1_ps(1.f), two = _mm512_set1_ps(2.f);
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  // Masks are computed where they are used: 8 mask registers cannot hold
  // three per vector across the stages (measured: spills).
  __m512 y[N], fr[N], p[N];
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) {
    // y = -x log2 e (or -2x log2 e): exp(-x) = 2^y; NaN stays NaN
    const __m512 scale = _mm512_set1_ps((doubled >> k) & 1u ? -2.8853900817779268f
                                                            : -1.4426950408889634f);
    y[k] = _mm512_mul_ps(v[k], scale);
  }
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) {
    fr[k] = _mm512_sub_ps(y[k], _mm512_roundscale_ps(y[k], _MM_FROUND_TO_NEG_INF));
  }
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) p[k] = _mm512_fmadd_ps(fr[k], c3, c2);
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) p[k] = _mm512_fmadd_ps(fr[k], p[k], c1);
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) p[k] = _mm512_fmadd_ps(fr[k], p[k], c0);
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) {
    __m512i e = _mm512_cvttps_epi32(_mm512_fmadd_ps(a, _mm512_sub_ps(y[k], p[k]), b));
    e = _mm512_mask_mov_epi32(e, _mm512_cmp_ps_mask(y[k], lo, _CMP_LT_OQ),
                              _mm512_setzero_si512());
    e = _mm512_mask_mov_epi32(e, _mm512_cmp_ps_mask(y[k], hi, _CMP_GE_OQ), inf);
    // d = 1 + exp(-x); NaN in, NaN out
    p[k] = _mm512_mask_mov_ps(_mm512_add_ps(one, _mm512_castsi512_ps(e)),
                              _mm512_cmp_ps_mask(y[k], y[k], _CMP_UNORD_Q), y[k]);
  }
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) fr[k] = _mm512_rcp14_ps(p[k]);
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) {
    const __m512 refined = _mm512_mul_ps(fr[k], _mm512_fnmadd_ps(p[k], fr[k], two));
    const __mmask16 ok = _mm512_cmp_ps_mask(refined, refined, _CMP_ORD_Q);
    v[k] = _mm512_mask_blend_ps(ok, fr[k], refined);
  }
}
#endif

// The cell update of one block of n (<= 16) hidden units for rows [0, rows):
// sums the pre-activation sums (row r's gate q at sums + 64 r + 16 q), bias
// at the block or nullptr; row r's activated gates go to g + r * 4H (gate q
// at + q H, bf16) unless g is nullptr (inference: not kept), its states to c_next/h_next + r * ld (c_prev alike). One
// call per block with the row loop inside, so that the constants of the
// activations are set up once per block, not once per row (measured: a call
// per row spent a fifth of the update in entry and set-up).
inline void cell_update_bf16(int64_t rows, bf16* g, int64_t H, const float* sums,
                             const float* bias, const float* c_prev, float* c_next,
                             bf16* h_next, int64_t ld, int64_t n) {
  using Vec = Vectorized<float>;
  constexpr int64_t kVec = Vec::size();
#if defined(LSTM_EXT_BF16_DPBF16)
  if (n == kBf16Lanes) {  // a whole block: straight from the sums, no staging
    const __m512 zero = _mm512_setzero_ps();
    const __m512 b0 = bias != nullptr ? _mm512_loadu_ps(bias) : zero;
    const __m512 b1 = bias != nullptr ? _mm512_loadu_ps(bias + H) : zero;
    const __m512 b2 = bias != nullptr ? _mm512_loadu_ps(bias + 2 * H) : zero;
    const __m512 b3 = bias != nullptr ? _mm512_loadu_ps(bias + 3 * H) : zero;
    auto put = [](__m512 v, bf16* p) {
      const __m256bh b = _mm512_cvtneps_pbh(v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)b);
    };
    const __m512 one = _mm512_set1_ps(1.f), two = _mm512_set1_ps(2.f);
    int64_t r = 0;
    // Two rows at a time: their 8 gate activations, then their 2 tanh(c),
    // as independent chains side by side (sigmoid_n).
    for (; r + 2 <= rows; r += 2) {
      __m512 v[8];
      for (int k = 0; k < 2; ++k) {
        const float* sr = sums + (r + k) * 64;
        v[4 * k + 0] = _mm512_add_ps(_mm512_loadu_ps(sr), b0);
        v[4 * k + 1] = _mm512_add_ps(_mm512_loadu_ps(sr + 16), b1);
        v[4 * k + 2] = _mm512_add_ps(_mm512_loadu_ps(sr + 32), b2);
        v[4 * k + 3] = _mm512_add_ps(_mm512_loadu_ps(sr + 48), b3);
      }
      sigmoid_n<8>(v, 0x44);  // entries 2 and 6 (c_hat): sigmoid(2x)
      __m512 c[2];
      for (int k = 0; k < 2; ++k) {
        v[4 * k + 2] = _mm512_fmsub_ps(two, v[4 * k + 2], one);  // tanh = 2 sigmoid(2x) - 1
        c[k] = _mm512_fmadd_ps(v[4 * k + 1], _mm512_loadu_ps(c_prev + (r + k) * ld),
                               _mm512_mul_ps(v[4 * k], v[4 * k + 2]));
      }
      __m512 tc[2] = {c[0], c[1]};
      sigmoid_n<2>(tc, 0x3);
      for (int k = 0; k < 2; ++k) {
        if (g != nullptr) {
          bf16* gr = g + (r + k) * 4 * H;
          put(v[4 * k], gr);
          put(v[4 * k + 1], gr + H);
          put(v[4 * k + 2], gr + 2 * H);
          put(v[4 * k + 3], gr + 3 * H);
        }
        _mm512_storeu_ps(c_next + (r + k) * ld, c[k]);
        put(_mm512_mul_ps(v[4 * k + 3], _mm512_fmsub_ps(two, tc[k], one)),
            h_next + (r + k) * ld);
      }
    }
    for (; r < rows; ++r) {
      const float* sr = sums + r * 64;
      __m512 v[4] = {_mm512_add_ps(_mm512_loadu_ps(sr), b0),
                     _mm512_add_ps(_mm512_loadu_ps(sr + 16), b1),
                     _mm512_add_ps(_mm512_loadu_ps(sr + 32), b2),
                     _mm512_add_ps(_mm512_loadu_ps(sr + 48), b3)};
      sigmoid_n<4>(v, 0x4);
      v[2] = _mm512_fmsub_ps(two, v[2], one);
      __m512 c = _mm512_fmadd_ps(v[1], _mm512_loadu_ps(c_prev + r * ld), _mm512_mul_ps(v[0], v[2]));
      __m512 tc[1] = {c};
      sigmoid_n<1>(tc, 0x1);
      if (g != nullptr) {
        bf16* gr = g + r * 4 * H;
        put(v[0], gr);
        put(v[1], gr + H);
        put(v[2], gr + 2 * H);
        put(v[3], gr + 3 * H);
      }
      _mm512_storeu_ps(c_next + r * ld, c);
      put(_mm512_mul_ps(v[3], _mm512_fmsub_ps(two, tc[0], one)), h_next + r * ld);
    }
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const float* sr = sums + r * 64;
    float pre[4][kBf16Lanes];
    for (int q = 0; q < 4; ++q) {
      for (int64_t v = 0; v < n; ++v) pre[q][v] = sr[q * kBf16Lanes + v];
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
      const Vec c = at::vec::fmadd(f, load(c_prev + r * ld + j, m), i * c_hat);
      store(i, pre[0] + j, m);
      store(f, pre[1] + j, m);
      store(c_hat, pre[2] + j, m);
      store(o, pre[3] + j, m);
      store(c, c_next + r * ld + j, m);
      store(o * tanh(c), h + j, m);
    }
    if (g != nullptr) {
      for (int q = 0; q < 4; ++q) float_to_bf16(pre[q], n, g + r * 4 * H + q * H);
    }
    float_to_bf16(h, n, h_next + r * ld);
  }
}

inline void bf16_forward_step(const StepForwardBf16& a) {
  const int64_t H = a.hidden, I = a.input;
  const int64_t groups = (H + kBf16Lanes - 1) / kBf16Lanes;
  // Threads split the hidden units, so each keeps its part of the weights hot
  // in its own cache from one step to the next (the step team gives a thread
  // the same slice every step).
  const int64_t work_per_group = 8 * a.rows * (I + H) * kBf16Lanes;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(work_per_group, 1));
  ::lstm_ext::cpu::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    [[maybe_unused]] TileScope tiles;
    float* partial = thread_partial(a.rows);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int64_t u0 = grp * kBf16Lanes;
      const int64_t n = std::min(kBf16Lanes, H - u0);
      const Segment seg[2] = {{a.x, I, I, a.w_ih_packed + grp * group_stride(I)},
                              {a.h_prev, H, H, a.w_hh_packed + grp * group_stride(H)}};
      group_sums(a.rows, seg, partial);
      cell_update_bf16(a.rows, a.gates != nullptr ? a.gates + u0 : nullptr, H, partial, a.bias ? a.bias + u0 : nullptr,
                       a.c_prev + u0, a.c_next + u0, a.h_next + u0, H, n);
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
  ::lstm_ext::cpu::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    [[maybe_unused]] TileScope tiles;
    float* partial = thread_partial(M);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int64_t j0 = grp * kBf16GroupCols;
      const int64_t n = std::min(kBf16GroupCols, N - j0);
      const Segment seg[1] = {{A, lda, K, packed + grp * group_stride(K)}};
      group_sums(M, seg, partial);
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
