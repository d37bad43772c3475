// The int8 kernels (arguments, shapes and numerics: int8_kernels.h): weight
// packing, per-row activation quantization and the fused step (input
// projection, recurrent product, dequantization, cell update).
//
// One source for every build: with AVX512-VNNI (LSTM_EXT_INT8_VNNI, defined
// by kernels_avx512_vnni.cpp and kernels_amx_int8.cpp) a quad product is one
// vpdpbusd (_mm512_dpbusd_epi32: 16 int32 lanes, each += the four u8 x s8
// products of a quad) and the quantization is AVX-512; with AMX
// (LSTM_EXT_INT8_AMX too) the products of 16 rows run on AMX tiles (tdpbusd:
// a 16 x 16 int32 tile += 16 x 64 u8 @ 16 quads x 16 s8); with AVX2 alone
// vpmaddubsw on signed activations (i8_dp_rows: its sums are offset by the
// weights' offsets, kI8SignedSums); elsewhere the same int32 sums in portable
// code. All builds give identical dequantized sums.
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

#if defined(LSTM_EXT_INT8_VNNI) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "../step_team.h"
#include "cell_math.h"
#include "int8_kernels.h"
#if defined(LSTM_EXT_INT8_AMX)
#include "amx_tiles.h"
#endif

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

inline int64_t int8_row_bytes(int64_t K) { return i8_kpad(K); }

inline void int8_pack_gates(const int8_t* w, int64_t H, int64_t K, int8_t* packed,
                            int32_t* offset) {
  const int64_t groups = i8_groups(H);
  const int64_t bytes = i8_group_bytes(K);
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t grp = g0; grp < g1; ++grp) {
      int8_t* out = packed + grp * bytes;
      int32_t* cs = offset + grp * kInt8GroupCols;
      const int64_t units = std::min(kInt8Lanes, H - grp * kInt8Lanes);
      const int8_t* rows[kInt8GroupCols];
      for (int64_t c = 0; c < kInt8GroupCols; ++c) {
        const int64_t q = c / kInt8Lanes, v = c % kInt8Lanes;
        rows[c] = v < units ? w + (q * H + grp * kInt8Lanes + v) * K : nullptr;
        int32_t sum = 0;
        if (rows[c] != nullptr) {
          for (int64_t k = 0; k < K; ++k) sum += rows[c][k];
        }
        cs[c] = 128 * sum;
      }
      // Written in order, one quad row (256 bytes) at a time from the
      // group's 64 rows read in step (measured: a byte-wise scatter per
      // column took ~4 ms for (2048, 1024), most of a layer call).
      const int64_t whole = K / 4;
      for (int64_t kq = 0; kq < i8_quads(K); ++kq) {
        int8_t* o = out + kq * kInt8GroupCols * 4;
        if (kq < whole) {
          for (int64_t c = 0; c < kInt8GroupCols; ++c) {
            if (rows[c] != nullptr) {
              std::memcpy(o + 4 * c, rows[c] + 4 * kq, 4);
            } else {
              std::memset(o + 4 * c, 0, 4);
            }
          }
        } else {
          std::memset(o, 0, kInt8GroupCols * 4);
          if (kq == whole) {
            for (int64_t c = 0; c < kInt8GroupCols; ++c) {
              for (int64_t k = 4 * kq; k < K && rows[c] != nullptr; ++k) o[4 * c + (k & 3)] = rows[c][k];
            }
          }
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
  // Not with kpad == K: u may then be null (input size 0), and memset of a
  // null pointer is undefined even for 0 bytes (UBSan, AVX2 build).
  if (kpad > K) std::memset(u + K, 128, kpad - K);
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

// The sums are of u * w: i8_dequantize subtracts the weights' offsets.
constexpr bool kI8SignedSums = false;

#elif defined(__AVX2__)

// AVX2 has no u8 x s8 quad product into int32. vpmaddubsw (u8 x s8 pairs
// into int16) saturates for u * w: 2 * 255 * 127 > 32767. So the sums here
// are of x * w with x = u - 128 in [-127, 127] (the quantizer never writes 0;
// padding is 128, x = 0): |x| x sign(w, x) in pairs stays within 2 * 127 *
// 127 = 32258, exact; vpmaddwd with ones adds the pairs into int32. The
// int32 sums are those of u * w less the weights' offsets, exactly, so every
// build dequantizes to the same floats (i8_dequantize skips the offsets).
// 32 columns (4 vectors) x 2 rows of accumulators: 8 of AVX2's 16 registers,
// beside the 4 weight vectors and 2 of the activation quad.
// Measured on an AVX2-only AMD EPYC (Zen 3), 2 threads, inference,
// bench_layer.py --quick --dtype int8: (64,512,512,50) 615.8 -> 67.8 ms
// against the portable loop (torch's dynamic int8 LSTM: 100.9, nn.LSTM
// float32: 99.5), (32,32,64,50) 6.31 -> 1.03; the same bits.
constexpr bool kI8SignedSums = true;

template <int MR>
inline void i8_dp_rows(const uint8_t* A, int64_t lda, const int8_t* group, int64_t kq0,
                       int64_t kq1, int32_t* partial, bool first) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int i0 = 0; i0 < MR; i0 += 2) {
    constexpr int kPair = 2;
    const int nr = std::min(kPair, MR - i0);
    for (int half = 0; half < 2; ++half) {
      __m256i acc[kPair][4];
#pragma GCC unroll 2
      for (int i = 0; i < kPair; ++i) {
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          acc[i][v] = first || i >= nr
                          ? _mm256_setzero_si256()
                          : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                partial + (i0 + i) * 64 + half * 32 + v * 8));
        }
      }
      for (int64_t kq = kq0; kq < kq1; ++kq) {
        const int8_t* wk = group + kq * kInt8GroupCols * 4 + half * 128;
        __m256i w[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          w[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + v * 32));
        }
#pragma GCC unroll 2
        for (int i = 0; i < kPair; ++i) {
          if (i >= nr) break;
          int32_t quad;
          std::memcpy(&quad, A + (i0 + i) * lda + 4 * kq, sizeof(quad));
          const __m256i x = _mm256_xor_si256(_mm256_set1_epi32(quad), flip);
          const __m256i ax = _mm256_abs_epi8(x);
#pragma GCC unroll 4
          for (int v = 0; v < 4; ++v) {
            const __m256i pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w[v], x));
            acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(pairs, ones));
          }
        }
      }
#pragma GCC unroll 2
      for (int i = 0; i < kPair; ++i) {
        if (i >= nr) break;
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          _mm256_storeu_si256(
              reinterpret_cast<__m256i*>(partial + (i0 + i) * 64 + half * 32 + v * 8), acc[i][v]);
        }
      }
    }
  }
}

#else

constexpr bool kI8SignedSums = false;

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

// AMX (amx_tiles.h: the configuration): tiles 0-3 accumulate the 4 x 16
// columns of a group for 16 rows, tile 4 holds 16 rows x 64 k of A, tiles 5
// and 6 alternate for B.

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
  I8TileScope() { amx_configure(); }
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

inline void int8_quantize_rows(const float* a, int64_t rows, int64_t K, int64_t lda,
                               uint8_t* out, float* scale) {
  const int64_t kpad = i8_kpad(K);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(kpad, 1));  // ~16 rows of 256
  ::lstm_ext::cpu::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) i8_quantize_row(a + r * lda, K, kpad, out + r * kpad, &scale[r]);
  });
}

// ---------------------------------------------------------------------------
// The step.

// The dequantized sums of one row against one group, into pre (64 floats):
// pre = sums' dequantization (+ pre where `add`). A row of scale NaN (NaN or
// inf in its activations) gets its float32 sums from a_row instead.
inline void i8_dequantize(const int32_t* sums, float row_scale, const Int8Panel& w, int64_t c0,
                          const int8_t* group, const float* a_row, bool add, float* pre) {
  if (row_scale != row_scale) {
    float exact[kInt8GroupCols];
    i8_exact_sums(a_row, w.K, group, w.scale + c0, exact);
    for (int64_t c = 0; c < kInt8GroupCols; ++c) pre[c] = add ? pre[c] + exact[c] : exact[c];
    return;
  }
  for (int64_t c = 0; c < kInt8GroupCols; ++c) {
    const int32_t offset = kI8SignedSums ? 0 : w.offset[c0 + c];
    const float v = static_cast<float>(sums[c] - offset) * (row_scale * w.scale[c0 + c]);
    pre[c] = add ? pre[c] + v : v;
  }
}

// The cell update of one row's block of n (<= 16) hidden units from its 64
// pre-activations (gate q at pre + 16 q, bias not yet added): cell_math.h's
// equations.
inline void i8_cell_update(const float* pre, const float* bias, const float* c_prev,
                           float* c_next, float* h_next, int64_t n) {
  using Vec = Vectorized<float>;
  constexpr int64_t kVec = Vec::size();
  for (int64_t j = 0; j < n; j += kVec) {
    const int64_t m = std::min(kVec, n - j);
    auto gate = [&](int q) {
      const Vec p = load(pre + q * kInt8Lanes + j, m);
      return bias != nullptr ? p + load(bias + q * kInt8Lanes + j, m) : p;
    };
    const Vec i = sigmoid(gate(0));
    const Vec f = sigmoid(gate(1));
    const Vec c_hat = tanh(gate(2));
    const Vec o = sigmoid(gate(3));
    const Vec c = at::vec::fmadd(f, load(c_prev + j, m), i * c_hat);
    store(c, c_next + j, m);
    store(o * tanh(c), h_next + j, m);
  }
}

#if defined(LSTM_EXT_INT8_VNNI)

// A whole block (16 units) of finite rows, in registers: dequantization of
// both sums, bias, cell update. sigmoid with a reciprocal estimate refined
// by one Newton step (relative error ~1e-7) instead of a division, as the
// bf16 kernels do (bf16_math.h); IEEE cases as cell_math.h's.
inline void i8_block_update(const int32_t* sx, float x_scale, const int32_t* sh, float h_scale,
                            const Int8Panel& wx, const Int8Panel& wh, int64_t c0,
                            const float* bias /* at c0 */, const float* c_prev, float* c_next,
                            float* h_next) {
  using Vec = Vectorized<float>;
  auto sigmoid = [](const Vec& x) {
    const __m512 d = Vec(1.f) + exp_ieee(x.neg());
    const __m512 r = _mm512_rcp14_ps(d);
    const __m512 refined = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
    const __mmask16 finite = _mm512_cmp_ps_mask(refined, refined, _CMP_ORD_Q);
    return Vec(_mm512_mask_blend_ps(finite, r, refined));
  };
  auto tanh = [&](const Vec& x) {
    return at::vec::fmsub(Vec(2.f), sigmoid(x * Vec(2.f)), Vec(1.f));
  };
  const __m512 xs = _mm512_set1_ps(x_scale), hs = _mm512_set1_ps(h_scale);
  auto pre = [&](int q) {
    const int64_t c = c0 + q * kInt8Lanes;
    const __m512i dx = _mm512_sub_epi32(_mm512_loadu_si512(sx + q * kInt8Lanes),
                                        _mm512_loadu_si512(wx.offset + c));
    const __m512i dh = _mm512_sub_epi32(_mm512_loadu_si512(sh + q * kInt8Lanes),
                                        _mm512_loadu_si512(wh.offset + c));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(dx),
                             _mm512_mul_ps(xs, _mm512_loadu_ps(wx.scale + c)));
    v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dh), _mm512_mul_ps(hs, _mm512_loadu_ps(wh.scale + c)),
                        v);
    if (bias != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + q * kInt8Lanes));
    return Vec(v);
  };
  const Vec i = sigmoid(pre(0));
  const Vec f = sigmoid(pre(1));
  const Vec c_hat = tanh(pre(2));
  const Vec o = sigmoid(pre(3));
  const Vec c = at::vec::fmadd(f, Vec::loadu(c_prev), i * c_hat);
  c.store(c_next);
  (o * tanh(c)).store(h_next);
}

#endif

inline void int8_forward_step(const StepForwardInt8& a) {
  const int64_t H = a.hidden, rows = a.rows;
  if (rows == 0) return;
  const int64_t I = a.w_ih.K;
  const int64_t groups = i8_groups(H);
  const int64_t kx = i8_kpad(I), kh = i8_kpad(H);
  const int64_t bytes_x = i8_group_bytes(I), bytes_h = i8_group_bytes(H);
  // h_prev quantized once per step (all threads), then the groups.
  int8_quantize_rows(a.h_prev, rows, H, H, a.h_q, a.h_scale);
  // Threads split the hidden units: each keeps its part of the weights hot in
  // its own cache from one step to the next (the team's slices are the same
  // every step). Tried and not kept: software-pipelining the next group's
  // AMX products (16 rows at a time) between this group's cell updates, so
  // that tiles and vector units overlap: slower, 13.5 -> 15.7 ms a call at
  // (64, 512, 512, 50) on one thread.
  const int64_t work_per_group = rows * (kx + kh) * kInt8GroupCols;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(work_per_group, 1));
  ::lstm_ext::cpu::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    [[maybe_unused]] I8TileScope tiles;
    int32_t* sums_x = i8_scratch<int32_t, 0>(i8_round_rows(rows) * kInt8GroupCols);
    int32_t* sums_h = i8_scratch<int32_t, 1>(i8_round_rows(rows) * kInt8GroupCols);
    alignas(64) float pre[kInt8GroupCols];
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int8_t* gx = a.w_ih.packed + grp * bytes_x;
      const int8_t* gh = a.w_hh.packed + grp * bytes_h;
      const int64_t c0 = grp * kInt8GroupCols;
      const int64_t u0 = grp * kInt8Lanes;
      const int64_t n = std::min(kInt8Lanes, H - u0);
      i8_group_sums(rows, a.x_q, kx, gx, sums_x);
      i8_group_sums(rows, a.h_q, kh, gh, sums_h);
      const float* bias = a.bias != nullptr ? a.bias + c0 : nullptr;
      for (int64_t r = 0; r < rows; ++r) {
        const float xs = a.x_scale[r], hs = a.h_scale[r];
        const float* cp = a.c_prev + r * H + u0;
        float* cn = a.c_next + r * H + u0;
        float* hn = a.h_next + r * H + u0;
#if defined(LSTM_EXT_INT8_VNNI)
        if (n == kInt8Lanes && xs == xs && hs == hs) {
          i8_block_update(sums_x + r * 64, xs, sums_h + r * 64, hs, a.w_ih, a.w_hh, c0, bias,
                          cp, cn, hn);
          continue;
        }
#endif
        i8_dequantize(sums_x + r * 64, xs, a.w_ih, c0, gx, a.x + r * I, false, pre);
        i8_dequantize(sums_h + r * 64, hs, a.w_hh, c0, gh, a.h_prev + r * H, true, pre);
        i8_cell_update(pre, bias, cp, cn, hn, n);
      }
    }
  });
}

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
