// The int8 kernels (arguments, shapes and numerics: int8_kernels.h): weight
// packing, per-row activation quantization, the input projection and the
// fused recurrent step.
//
// One source for every build: with AVX512-VNNI (LSTM_EXT_INT8_VNNI, defined
// by kernels_avx512_vnni.cpp and kernels_amx_int8.cpp) a quad product is one
// vpdpbusd (_mm512_dpbusd_epi32: 16 int32 lanes, each += the four u8 x s8
// products of a quad) and the quantization is AVX-512; with AMX
// (LSTM_EXT_INT8_AMX too) the products of 16 rows run on AMX tiles (tdpbusd:
// a 16 x 16 int32 tile += 16 x 64 u8 @ 16 quads x 16 s8); elsewhere the same
// int32 sums in portable code. All builds give identical int32 sums.
//
// The element-wise math (sigmoid, tanh, their IEEE handling of NaN and inf)
// is cell_math.h's, in float32.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(LSTM_EXT_INT8_VNNI)
#include <immintrin.h>
#endif

#include "cell_math.h"
#include "int8_kernels.h"

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

// ---------------------------------------------------------------------------
// Sizes of the packed layout.

inline int64_t i8_groups(int64_t H) { return (H + kInt8Lanes - 1) / kInt8Lanes; }
// Quads of K in a packed group: rounded up to whole AMX tiles (16 quads).
inline int64_t i8_quads(int64_t K) { return ((K + 3) / 4 + 15) / 16 * 16; }
// Bytes of a quantized activation row: K rounded up to 64 (one AMX A-tile row).
inline int64_t i8_kpad(int64_t K) { return i8_quads(K) * 4; }
inline int64_t i8_group_bytes(int64_t K) { return i8_quads(K) * kInt8GroupCols * 4; }
inline int64_t i8_round_rows(int64_t rows) { return (rows + 15) / 16 * 16; }

inline int64_t int8_panel_size(int64_t H, int64_t K) { return i8_groups(H) * i8_group_bytes(K); }

inline void int8_pack_gates(const int8_t* w, int64_t H, int64_t K, int8_t* packed,
                            int32_t* colsum) {
  const int64_t groups = i8_groups(H);
  const int64_t bytes = i8_group_bytes(K);
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t grp = g0; grp < g1; ++grp) {
      int8_t* out = packed + grp * bytes;
      int32_t* cs = colsum + grp * kInt8GroupCols;
      std::memset(out, 0, bytes);
      std::memset(cs, 0, kInt8GroupCols * sizeof(int32_t));
      const int64_t units = std::min(kInt8Lanes, H - grp * kInt8Lanes);
      for (int64_t q = 0; q < 4; ++q) {
        for (int64_t v = 0; v < units; ++v) {
          const int8_t* row = w + (q * H + grp * kInt8Lanes + v) * K;
          int8_t* col = out + (q * kInt8Lanes + v) * 4;
          int32_t sum = 0;
          for (int64_t k = 0; k < K; ++k) {
            col[(k >> 2) * kInt8GroupCols * 4 + (k & 3)] = row[k];
            sum += row[k];
          }
          cs[q * kInt8Lanes + v] = sum;
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Per-row quantization (int8_kernels.h): u[0, kpad) = q + 128 (128 past K),
// *scale = amax / 127. A row with NaN or inf: returns false, *scale = NaN
// (its sums are then computed in float32, i8_exact_sums).

inline bool i8_quantize_row(const float* a, int64_t K, int64_t kpad, uint8_t* u, float* scale) {
  float amax = 0.f;
  bool finite = true;
#if defined(LSTM_EXT_INT8_VNNI)
  {
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    const __m512 big = _mm512_set1_ps(FLT_MAX);
    int64_t k = 0;
    for (; k < K; k += 16) {
      const __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
      const __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, a + k));
      bad |= _mm512_cmp_ps_mask(v, big, _CMP_NLE_UQ);  // > FLT_MAX or NaN
      vmax = _mm512_max_ps(vmax, v);
    }
    finite = bad == 0;
    amax = _mm512_reduce_max_ps(vmax);
  }
#else
  for (int64_t k = 0; k < K; ++k) {
    const float v = std::fabs(a[k]);
    if (!(v <= FLT_MAX)) finite = false;
    amax = std::max(amax, v);
  }
#endif
  if (!finite) {
    *scale = std::numeric_limits<float>::quiet_NaN();
    std::memset(u, 128, kpad);
    return false;
  }
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  *scale = amax / 127.f;
#if defined(LSTM_EXT_INT8_VNNI)
  {
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i off = _mm512_set1_epi32(128);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t k = 0; k < kpad; k += 16) {
      const int64_t n = std::max<int64_t>(0, std::min<int64_t>(16, K - k));
      const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
      // cvtps_epi32 rounds as MXCSR says: to nearest, ties to even (nearbyint).
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + k), vinv));
      q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(u + k), _mm512_cvtepi32_epi8(q));
    }
  }
#else
  for (int64_t k = 0; k < K; ++k) {
    const float q = std::min(127.f, std::max(-127.f, std::nearbyint(a[k] * inv)));
    u[k] = static_cast<uint8_t>(static_cast<int32_t>(q) + 128);
  }
  std::memset(u + K, 128, kpad - K);
#endif
  return true;
}

// The float32 sums of one non-finite row against one group: out[c] =
// sum_k a[k] (W_q[c][k] scale[c]) for the 64 columns of the group.
inline void i8_exact_sums(const float* a, int64_t K, const int8_t* group, const float* scale,
                          float* out) {
  for (int64_t c = 0; c < kInt8GroupCols; ++c) {
    float sum = 0.f;
    for (int64_t k = 0; k < K; ++k) {
      const int8_t w = group[((k >> 2) * kInt8GroupCols + c) * 4 + (k & 3)];
      sum += a[k] * (static_cast<float>(w) * scale[c]);
    }
    out[c] = sum;
  }
}

// ---------------------------------------------------------------------------
// The quad-product block: for MR rows of A (u8, leading dimension lda) and one
// packed group, the int32 sums over quads [kq0, kq1) into partial (MR rows x
// 64, row stride 64): overwritten when `first`, else added to.

#if defined(LSTM_EXT_INT8_VNNI)

template <int MR>
inline void i8_dp_rows(const uint8_t* A, int64_t lda, const int8_t* group, int64_t kq0,
                       int64_t kq1, int32_t* partial, bool first) {
  __m512i acc[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      acc[i][q] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(partial + i * 64 + q * 16);
    }
  }
  for (int64_t kq = kq0; kq < kq1; ++kq) {
    const int8_t* wk = group + kq * kInt8GroupCols * 4;
    __m512i b[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) b[q] = _mm512_loadu_si512(wk + q * 64);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t quad;
      std::memcpy(&quad, A + i * lda + 4 * kq, sizeof(quad));
      const __m512i a = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) acc[i][q] = _mm512_dpbusd_epi32(acc[i][q], a, b[q]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) _mm512_storeu_si512(partial + i * 64 + q * 16, acc[i][q]);
  }
}

#else

template <int MR>
inline void i8_dp_rows(const uint8_t* A, int64_t lda, const int8_t* group, int64_t kq0,
                       int64_t kq1, int32_t* partial, bool first) {
  int32_t acc[MR][kInt8GroupCols];
  for (int i = 0; i < MR; ++i) {
    for (int64_t c = 0; c < kInt8GroupCols; ++c) acc[i][c] = first ? 0 : partial[i * 64 + c];
  }
  for (int64_t kq = kq0; kq < kq1; ++kq) {
    const int8_t* wk = group + kq * kInt8GroupCols * 4;
    for (int i = 0; i < MR; ++i) {
      const uint8_t* a = A + i * lda + 4 * kq;
      const int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
      for (int64_t c = 0; c < kInt8GroupCols; ++c) {
        const int8_t* w = wk + 4 * c;
        acc[i][c] += a0 * w[0] + a1 * w[1] + a2 * w[2] + a3 * w[3];
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int64_t c = 0; c < kInt8GroupCols; ++c) partial[i * 64 + c] = acc[i][c];
  }
}

#endif

// Rows [0, rows) of A (kpad bytes a row, a multiple of 64) against one group:
// sums into partial (rows x 64). K in chunks whose slice of the group (64
// quads x 64 columns x 4 = 16 KiB) stays in L1 while the rows stream past.
inline void i8_dp_group(int64_t rows, const uint8_t* A, int64_t lda, int64_t kpad,
                        const int8_t* group, int32_t* partial) {
  constexpr int MR = 4;
  constexpr int64_t kChunkQuads = 64;
  const int64_t quads = kpad / 4;
  for (int64_t kq0 = 0; kq0 == 0 || kq0 < quads; kq0 += kChunkQuads) {
    const int64_t kq1 = std::min(quads, kq0 + kChunkQuads);
    const bool first = kq0 == 0;
    int64_t r = 0;
    for (; r + MR <= rows; r += MR) {
      i8_dp_rows<MR>(A + r * lda, lda, group, kq0, kq1, partial + r * 64, first);
    }
    for (; r < rows; ++r) i8_dp_rows<1>(A + r * lda, lda, group, kq0, kq1, partial + r * 64, first);
  }
}

#if defined(LSTM_EXT_INT8_AMX)

// AMX: tiles 0-3 accumulate the 4 x 16 columns of a group for 16 rows, tile
// 4 holds 16 rows x 64 k of A, tiles 5 and 6 alternate for B.
struct I8TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Loads this thread's tile configuration (the tile state is per thread, and
// oneDNN or the bf16 kernels configure their own between our calls).
inline void i8_amx_configure() {
  I8TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 7; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

// 16 rows of A (kpad bytes each, a multiple of 64) against one group:
// partial (16 x 64 int32, row stride 64) = the sums.
inline void i8_amx_block(const uint8_t* A, int64_t lda, int64_t kpad, const int8_t* group,
                         int32_t* partial) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  constexpr int64_t b_stride = kInt8GroupCols * 4;  // one quad row of a group: 256 bytes
  for (int64_t k = 0; k < kpad; k += 64) {
    const int8_t* b = group + (k / 4) * b_stride;
    _tile_loadd(4, A + k, lda);
    _tile_loadd(5, b, b_stride);
    _tile_loadd(6, b + 64, b_stride);
    _tile_dpbusd(0, 4, 5);
    _tile_loadd(5, b + 128, b_stride);
    _tile_dpbusd(1, 4, 6);
    _tile_loadd(6, b + 192, b_stride);
    _tile_dpbusd(2, 4, 5);
    _tile_dpbusd(3, 4, 6);
  }
  constexpr int64_t c_stride = 64 * sizeof(int32_t);
  _tile_stored(0, partial, c_stride);
  _tile_stored(1, partial + 16, c_stride);
  _tile_stored(2, partial + 32, c_stride);
  _tile_stored(3, partial + 48, c_stride);
}

#endif

// The sums of rows [0, rows) of A (i8_round_rows(rows) rows allocated, kpad
// bytes each) against one group, into partial (row stride 64).
inline void i8_group_sums(int64_t rows, const uint8_t* A, int64_t kpad, const int8_t* group,
                          int32_t* partial) {
#if defined(LSTM_EXT_INT8_AMX)
  if (rows >= 4) {
    for (int64_t r = 0; r < rows; r += 16) i8_amx_block(A + r * kpad, kpad, kpad, group, partial + r * 64);
    return;
  }
#endif
  i8_dp_group(rows, A, kpad, kpad, group, partial);
}

// Opens a parallel region's use of the product kernels (AMX: tile
// configuration) and closes it (AMX: release of the tile state).
struct I8TileScope {
#if defined(LSTM_EXT_INT8_AMX)
  I8TileScope() { i8_amx_configure(); }
  ~I8TileScope() { _tile_release(); }
#endif
};

// Per-thread scratch, kept across calls: no allocation per step.
template <typename T, int kTag>
inline T* i8_scratch(int64_t elements) {
  thread_local std::vector<T> buf;
  if (buf.size() < static_cast<size_t>(elements)) buf.resize(elements);
  return buf.data();
}

// The 64 dequantized sums of row r of a group: int32 sums -> float32,
// + base (64 floats, or nullptr for 0). A row of scale NaN (non-finite
// activations) gets its float32 sums from `a_row` instead.
inline void i8_dequantize(const int32_t* sums, float row_scale, const int32_t* colsum,
                          const float* col_scale, const float* base, const float* a_row,
                          int64_t K, const int8_t* group, float* out) {
  if (row_scale != row_scale) {
    i8_exact_sums(a_row, K, group, col_scale, out);
    if (base != nullptr) {
      for (int64_t c = 0; c < kInt8GroupCols; ++c) out[c] += base[c];
    }
    return;
  }
#if defined(LSTM_EXT_INT8_VNNI)
  const __m512i off = _mm512_set1_epi32(128);
  const __m512 rs = _mm512_set1_ps(row_scale);
  for (int64_t c = 0; c < kInt8GroupCols; c += 16) {
    const __m512i d = _mm512_sub_epi32(_mm512_loadu_si512(sums + c),
                                       _mm512_mullo_epi32(off, _mm512_loadu_si512(colsum + c)));
    const __m512 s = _mm512_mul_ps(rs, _mm512_loadu_ps(col_scale + c));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(d), s);
    if (base != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(base + c));
    _mm512_storeu_ps(out + c, v);
  }
#else
  for (int64_t c = 0; c < kInt8GroupCols; ++c) {
    const float v = static_cast<float>(sums[c] - 128 * colsum[c]) * (row_scale * col_scale[c]);
    out[c] = base != nullptr ? v + base[c] : v;
  }
#endif
}

// ---------------------------------------------------------------------------
// The input projection.

inline void int8_project(const ProjectInt8& a) {
  const int64_t M = a.rows, K = a.w.K, H = a.w.hidden;
  if (M == 0) return;
  const int64_t groups = i8_groups(H);
  const int64_t kpad = i8_kpad(K);
  const int64_t ldo = groups * kInt8GroupCols;
  const int64_t gbytes = i8_group_bytes(K);
  const int64_t rows_pad = i8_round_rows(M);
  std::vector<uint8_t> A(static_cast<size_t>(rows_pad * kpad));
  std::vector<float> scales(static_cast<size_t>(rows_pad), 0.f);
  at::parallel_for(0, rows_pad, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (r < M) {
        i8_quantize_row(a.x + r * a.ldx, K, kpad, A.data() + r * kpad, &scales[r]);
      } else {
        std::memset(A.data() + r * kpad, 128, kpad);
      }
    }
  });
  // Tasks: (chunk of rows, group), rows outer, so that a thread's consecutive
  // tasks share a chunk of A (in L2) while the panel streams past.
  constexpr int64_t kChunkRows = 256;
  const int64_t chunks = (M + kChunkRows - 1) / kChunkRows;
  const int64_t work_per_task = std::min(kChunkRows, M) * K * kInt8GroupCols;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(work_per_task, 1));
  at::parallel_for(0, chunks * groups, grain, [&](int64_t t0, int64_t t1) {
    I8TileScope tiles;
    int32_t* partial = i8_scratch<int32_t, 0>(kChunkRows * kInt8GroupCols);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t chunk = t / groups, grp = t % groups;
      const int64_t r0 = chunk * kChunkRows;
      const int64_t rows = std::min(kChunkRows, M - r0);
      const int8_t* group = a.w.packed + grp * gbytes;
      i8_group_sums(rows, A.data() + r0 * kpad, kpad, group, partial);
      const int64_t c0 = grp * kInt8GroupCols;
      for (int64_t r = 0; r < rows; ++r) {
        i8_dequantize(partial + r * 64, scales[r0 + r], a.w.colsum + c0, a.w.scale + c0,
                      a.bias != nullptr ? a.bias + c0 : nullptr, a.x + (r0 + r) * a.ldx, K,
                      group, a.out + (r0 + r) * ldo + c0);
      }
    }
  });
}

// ---------------------------------------------------------------------------
// The recurrent step.

// The cell update of one row's block of n (<= 16) hidden units from its 64
// pre-activations (gate q at pre + 16 q): cell_math.h's equations.
inline void i8_cell_update(const float* pre, const float* c_prev, float* c_next, float* h_next,
                           int64_t n) {
  using Vec = Vectorized<float>;
  constexpr int64_t kVec = Vec::size();
  for (int64_t j = 0; j < n; j += kVec) {
    const int64_t m = std::min(kVec, n - j);
    const Vec i = sigmoid(load(pre + j, m));
    const Vec f = sigmoid(load(pre + kInt8Lanes + j, m));
    const Vec c_hat = tanh(load(pre + 2 * kInt8Lanes + j, m));
    const Vec o = sigmoid(load(pre + 3 * kInt8Lanes + j, m));
    const Vec c = at::vec::fmadd(f, load(c_prev + j, m), i * c_hat);
    store(c, c_next + j, m);
    store(o * tanh(c), h_next + j, m);
  }
}

inline void int8_forward_step(const StepForwardInt8& a) {
  const int64_t H = a.w_hh.hidden, rows = a.rows;
  if (rows == 0) return;
  const int64_t groups = i8_groups(H);
  const int64_t kpad = i8_kpad(H);
  const int64_t gbytes = i8_group_bytes(H);
  const int64_t ldp = groups * kInt8GroupCols;
  const int64_t rows_pad = i8_round_rows(rows);
  // Threads split the hidden units (each keeps its part of W_hh hot in its
  // own cache from one step to the next); each quantizes h_prev itself.
  const int64_t work_per_group = rows * H * kInt8GroupCols;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 17) / std::max<int64_t>(work_per_group, 1));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    I8TileScope tiles;
    uint8_t* A = i8_scratch<uint8_t, 1>(rows_pad * kpad);
    float* scales = i8_scratch<float, 2>(rows_pad);
    int32_t* partial = i8_scratch<int32_t, 3>(rows_pad * kInt8GroupCols);
    for (int64_t r = 0; r < rows_pad; ++r) {
      if (r < rows) {
        i8_quantize_row(a.h_prev + r * H, H, kpad, A + r * kpad, &scales[r]);
      } else {
        std::memset(A + r * kpad, 128, kpad);
      }
    }
    alignas(64) float pre[kInt8GroupCols];
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int8_t* group = a.w_hh.packed + grp * gbytes;
      const int64_t c0 = grp * kInt8GroupCols;
      const int64_t u0 = grp * kInt8Lanes;
      const int64_t n = std::min(kInt8Lanes, H - u0);
      i8_group_sums(rows, A, kpad, group, partial);
      for (int64_t r = 0; r < rows; ++r) {
        i8_dequantize(partial + r * 64, scales[r], a.w_hh.colsum + c0, a.w_hh.scale + c0,
                      a.pre_x + r * ldp + c0, a.h_prev + r * H, H, group, pre);
        i8_cell_update(pre, a.c_prev + r * H + u0, a.c_next + r * H + u0,
                       a.h_next + r * H + u0, n);
      }
    }
  });
}

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
