// The per-step products of a layer, vectorised: a small register-blocked
// GEMM (small_gemm), the batch-1 GEMVs (gemv_rows, gemv_cols) and the fused
// forward step with its packing of W_hh (fused_forward_step,
// pack_step_weights, step_weights_size). Arguments and shapes: kernels.h.
//
// Why not a GEMM library: per step, a library call pays set-up, threading and
// the packing of W_hh again. These kernels read W_hh as it lies (small_gemm,
// the GEMVs) or as packed once per sequence (the fused step), keep their
// accumulators in registers across the whole K loop, and split the output
// columns (hidden units) between threads so that each thread's slice of the
// weights stays in its own cache from one step to the next. Aliasing: none
// between inputs and outputs (C, y, gates/c_next/h_next are written only).
//
// Included by exactly one translation unit per CPU capability, after
// cell_math.h (kernel_list.h).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "cell_math.h"
#include "../step_team.h"
#include "kernels.h"

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

template <typename T>
void gemv_rows(const T* w, int64_t rows, int64_t cols, const T* x, T* y) {
  using Vec = Vectorized<T>;
  // Four rows at a time share each load of x.
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1));
  ::lstm_ext::cpu::parallel_for(0, (rows + 3) / 4, grain, [&](int64_t q0, int64_t q1) {
    for (int64_t r = q0 * 4; r < std::min(rows, q1 * 4); r += 4) {
      const int64_t nr = std::min<int64_t>(4, rows - r);
      Vec acc[4] = {Vec(T(0)), Vec(T(0)), Vec(T(0)), Vec(T(0))};
      for_each_chunk<T>(cols, [&](int64_t j, int64_t n) {
        const Vec xv = load(x + j, n);
        for (int64_t k = 0; k < nr; ++k) {
          acc[k] = at::vec::fmadd(load(w + (r + k) * cols + j, n), xv, acc[k]);
        }
      });
      for (int64_t k = 0; k < nr; ++k) {
        y[r + k] += at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return a + b; }, acc[k]);
      }
    }
  });
}

template <typename T>
void gemv_cols(const T* w, int64_t rows, int64_t cols, const T* x, T* y) {
  using Vec = Vectorized<T>;
  // Each thread owns a slice of the output columns and runs over every row,
  // four vectors of columns at a time: four independent FMA chains (one chain
  // alone would wait on FMA latency at every row) over 256 contiguous bytes.
  constexpr int64_t kVec = Vec::size();
  constexpr int64_t kGroup = 4 * kVec;
  const int64_t groups = (cols + kGroup - 1) / kGroup;
  const int64_t grain = std::max<int64_t>(1, 512 / std::max<int64_t>(rows, 1));
  ::lstm_ext::cpu::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t j = g * kGroup;
      const int64_t width = std::min(kGroup, cols - j);
      if (width == kGroup) {
        Vec acc[4] = {Vec(T(0)), Vec(T(0)), Vec(T(0)), Vec(T(0))};
        for (int64_t r = 0; r < rows; ++r) {
          const Vec xr(x[r]);
          const T* wr = w + r * cols + j;
#pragma GCC unroll 4
          for (int v = 0; v < 4; ++v) {
            acc[v] = at::vec::fmadd(Vec::loadu(wr + v * kVec), xr, acc[v]);
          }
        }
        for (int v = 0; v < 4; ++v) acc[v].store(y + j + v * kVec);
      } else {
        for_each_chunk<T>(width, [&](int64_t jj, int64_t n) {
          Vec acc(T(0));
          for (int64_t r = 0; r < rows; ++r) {
            acc = at::vec::fmadd(load(w + r * cols + j + jj, n), Vec(x[r]), acc);
          }
          store(acc, y + j + jj, n);
        });
      }
    }
  });
}

// One MR x (NV vectors) block of C: MR * NV accumulators stay in registers for
// the whole K loop; each k loads NV vectors of B and broadcasts MR values of A.
// Full blocks use plain loads; the last, narrower block (`n` valid columns)
// uses partial loads and stores.
template <typename T, int MR, int NV, bool Full>
inline void gemm_block(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict B,
                       int64_t ldb, T* __restrict C, int64_t ldc, bool accumulate, int64_t n) {
  using Vec = Vectorized<T>;
  constexpr int64_t kVec = Vec::size();
  Vec acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = Vec(T(0));
  }
  for (int64_t k = 0; k < K; ++k) {
    Vec b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      b[v] = Full ? Vec::loadu(B + k * ldb + v * kVec)
                  : load(B + k * ldb + v * kVec, std::clamp<int64_t>(n - v * kVec, 0, kVec));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec a(A[i * lda + k]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = at::vec::fmadd(a, b[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) {
      const int64_t count = Full ? kVec : std::clamp<int64_t>(n - v * kVec, 0, kVec);
      if (count == 0) continue;
      T* c = C + i * ldc + v * kVec;
      store(accumulate ? acc[i][v] + load(c, count) : acc[i][v], c, count);
    }
  }
}

template <typename T, int MR, int NV>
inline void gemm_block_any(int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                           int64_t ldc, bool accumulate, int64_t n) {
  if (n == NV * Vectorized<T>::size()) {
    gemm_block<T, MR, NV, true>(K, A, lda, B, ldb, C, ldc, accumulate, n);
  } else {
    gemm_block<T, MR, NV, false>(K, A, lda, B, ldb, C, ldc, accumulate, n);
  }
}

// small_gemm's blocking: 8 rows x 2 vectors, 16 accumulators, and a
// 2-vector-wide panel of B (K x 32 floats) that stays in cache while all row
// groups stream past it. With 16 vector registers (AVX2 and narrower) 6 rows
// (12 accumulators, 2 vectors of B, a broadcast): 8 rows spilled 3
// accumulators to the stack there, a load and a store per k (objdump of the
// AVX2 build, gcc 12). A row's sums keep their order: the same bits.
template <typename T>
constexpr int gemm_rows() {
  return sizeof(Vectorized<T>) >= 64 ? 8 : 6;
}
constexpr int kGemmVectors = 2;
template <typename T>
constexpr int64_t gemm_block_cols() {
  return kGemmVectors * Vectorized<T>::size();
}

// C (M, N) [+]= A @ B over column blocks of B; `panel(blk)` gives the block's
// first element and leading dimension, `chunk` the K extent of each pass (a
// pass's slice of the panel stays in L1 while the row groups stream past it;
// every pass after the first accumulates into C).
template <typename T, typename Panel>
void gemm_column_blocks(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                        const Panel& panel, int64_t chunk, T* C, int64_t ldc, bool accumulate) {
  constexpr int MR = gemm_rows<T>();
  constexpr int NV = kGemmVectors;
  constexpr int64_t kBlockN = gemm_block_cols<T>();
  const int64_t blocks = (N + kBlockN - 1) / kBlockN;
  // Threads split the columns: each keeps its slice of B hot across all rows.
  // A second thread only pays off above ~0.5 MFLOP per step.
  const int64_t work_per_block = 2 * M * K * kBlockN;
  const int64_t grain = std::max<int64_t>(1, 262144 / std::max<int64_t>(work_per_block, 1));
  ::lstm_ext::cpu::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t j = blk * kBlockN;
      const int64_t n = std::min(kBlockN, N - j);
      const auto [B, ldb] = panel(blk);
      // K == 0 still runs one pass: C is then set to zero (or left as is).
      for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += chunk) {
        const int64_t kk = std::min(chunk, K - k0);
        const bool add = accumulate || k0 > 0;
        const T* a = A + k0;
        const T* b = B + k0 * ldb;
        int64_t i = 0;
        for (; i + MR <= M; i += MR) {
          gemm_block_any<T, MR, NV>(kk, a + i * lda, lda, b, ldb, C + i * ldc + j, ldc, add, n);
        }
        // Rows left over go 4, 2, then 1 at a time: a single row has only NV
        // independent FMA chains, which wait on the FMA's latency.
        if constexpr (MR > 4) {
          for (; i + 4 <= M; i += 4) {
            gemm_block_any<T, 4, NV>(kk, a + i * lda, lda, b, ldb, C + i * ldc + j, ldc, add, n);
          }
        }
        for (; i + 2 <= M; i += 2) {
          gemm_block_any<T, 2, NV>(kk, a + i * lda, lda, b, ldb, C + i * ldc + j, ldc, add, n);
        }
        for (; i < M; ++i) {
          gemm_block_any<T, 1, NV>(kk, a + i * lda, lda, b, ldb, C + i * ldc + j, ldc, add, n);
        }
      }
    }
  });
}

template <typename T>
void small_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  // B as it lies, the whole K in one pass.
  gemm_column_blocks<T>(M, N, K, A, lda,
                        [&](int64_t blk) { return std::pair(B + blk * gemm_block_cols<T>(), ldb); },
                        std::max<int64_t>(K, 1), C, ldc, accumulate);
}

template <typename T>
int64_t gemm_panels_size(int64_t K, int64_t N) {
  constexpr int64_t kBlockN = gemm_block_cols<T>();
  return (N + kBlockN - 1) / kBlockN * K * kBlockN;
}

// packed[blk][k][v] = B[k][blk * kBlockN + v], zero past N.
template <typename T>
void pack_gemm_panels(const T* B, int64_t K, int64_t N, int64_t ldb, T* packed) {
  constexpr int64_t kBlockN = gemm_block_cols<T>();
  const int64_t blocks = (N + kBlockN - 1) / kBlockN;
  ::lstm_ext::cpu::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      T* out = packed + blk * K * kBlockN;
      const int64_t j = blk * kBlockN;
      const int64_t n = std::min(kBlockN, N - j);
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t v = 0; v < kBlockN; ++v) out[k * kBlockN + v] = v < n ? B[k * ldb + j + v] : T(0);
      }
    }
  });
}

template <typename T>
void small_gemm_packed(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed,
                       T* C, int64_t ldc, bool accumulate) {
  constexpr int64_t kBlockN = gemm_block_cols<T>();
  // 256 k of a panel: 32 KB of float32, inside L1 beside the rows of A.
  constexpr int64_t kChunk = 256;
  gemm_column_blocks<T>(
      M, N, K, A, lda,
      [&](int64_t blk) { return std::pair(packed + blk * K * kBlockN, kBlockN); }, kChunk, C,
      ldc, accumulate);
}

// One block of a fused step: rows [r0, r0 + MR) x hidden units [u0, u0 + n),
// all four gates, over k in [k0, k1). The sums carry over K chunks through
// `partial` (rows x 4 vectors, in L1).
template <typename T, int MR>
inline void step_block(const StepForward<T>& a, int64_t r0, int64_t u0, int64_t k0, int64_t k1,
                       T* partial) {
  using Vec = Vectorized<T>;
  constexpr int64_t kVec = Vec::size();
  const int64_t H = a.hidden;
  Vec acc[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      acc[i][q] = k0 == 0 ? Vec(T(0)) : Vec::loadu(partial + ((r0 + i) * 4 + q) * kVec);
    }
  }
  const T* panel = a.w_packed + (u0 / kVec) * H * 4 * kVec;
  for (int64_t k = k0; k < k1; ++k) {
    const T* wk = panel + k * 4 * kVec;
    Vec b[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) b[q] = Vec::loadu(wk + q * kVec);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec h(a.h_prev[(r0 + i) * H + k]);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) acc[i][q] = at::vec::fmadd(h, b[q], acc[i][q]);
    }
  }
  // Always through memory (L1): keeping the sums in registers for the cell
  // update made the compiler spill the accumulators inside the K loop.
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) acc[i][q].store(partial + ((r0 + i) * 4 + q) * kVec);
  }
}

// Asks for the lines that the cell update of rows [r0, r1) will touch in unit
// block [u0, u0 + kVec) to be brought into L2 while the product runs: the
// input projection's four gates (from a (T, B, 4H) buffer far larger than the
// caches, its rows 16 H bytes apart, which no hardware prefetcher follows),
// c_prev, and the h_next and c_next to be written. Without it the cell
// update's first read of the gates stalled on memory (perf, one thread,
// (64,512,512,50) inference: a fifth of the step kernel's samples); with it,
// 0.92 and 0.89 of the time at (64,512,512,50) and (64,256,256,100).
template <typename T>
inline void prefetch_cell_rows(const StepForward<T>& a, int64_t r0, int64_t r1, int64_t u0) {
  const int64_t H = a.hidden;
  for (int64_t r = r0; r < r1; ++r) {
    // (Also where the step makes the projection itself: in training it
    // writes the gates of the whole sequence's buffer.)
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) __builtin_prefetch(a.gates + r * 4 * H + q * H + u0, 1, 2);
    __builtin_prefetch(a.c_prev + r * H + u0, 0, 2);
    __builtin_prefetch(a.c_next + r * H + u0, 1, 2);
    __builtin_prefetch(a.h_next + r * H + u0, 1, 2);
    // GCC deletes a loop whose body only prefetches (gcc 12 -O1 and up: no
    // prefetch instruction was left in this kernel); an empty volatile asm
    // keeps it.
    asm volatile("");
  }
}

template <typename T>
inline void step_unit_block(const StepForward<T>& a, int64_t u0, int64_t n, T* partial) {
  // AVX-512 has 32 vector registers: 6 rows x 4 gates of accumulators fit
  // beside the 4 gates' weights and a broadcast (4 rows did before: 0.90 of the
  // time with 6 at (64,512,512,50) inference, one thread). With 16 (AVX2 and
  // narrower) three rows: 12 accumulators, 3 broadcasts and one gate's weights
  // (gcc 12 keeps them all in registers and reads the other gates' weights as
  // the FMAs' memory operands): 12 FMAs per 7 loads, where two rows gave 8
  // per 6. Against two rows (benchmarks/bench_ab.py --mode infer, an AVX2
  // EPYC, 2 threads, 3-5 rounds): 0.79 of the time at (64,512,512,50), 0.81
  // at (32,32,64,50), 0.82 at (8,64,256,100), 0.90-0.91 at (64,256,256,100)
  // and (64,1,32,336). A row's sums keep their order: the same bits. The rows
  // left over go 4 (AVX-512), 2, then 1 at a time.
  constexpr int MR = sizeof(Vectorized<T>) >= 64 ? 6 : 3;
  // K in chunks whose slice of the packed panel (64 x 4 gates x one vector,
  // contiguous) stays in L1 while every row group streams past it.
  constexpr int64_t kChunk = 64;
  const int64_t H = a.hidden;
  for (int64_t k0 = 0; k0 < H; k0 += kChunk) {
    const int64_t k1 = std::min(H, k0 + kChunk);
    int64_t r = 0;
    for (; r + MR <= a.rows; r += MR) {
      if (k0 == 0) prefetch_cell_rows(a, r, r + MR, u0);
      step_block<T, MR>(a, r, u0, k0, k1, partial);
    }
    if (k0 == 0) prefetch_cell_rows(a, r, a.rows, u0);
    if constexpr (MR > 4) {
      for (; r + 4 <= a.rows; r += 4) step_block<T, 4>(a, r, u0, k0, k1, partial);
    }
    if constexpr (MR > 2) {
      for (; r + 2 <= a.rows; r += 2) step_block<T, 2>(a, r, u0, k0, k1, partial);
    }
    for (; r < a.rows; ++r) step_block<T, 1>(a, r, u0, k0, k1, partial);
  }
  using Vec = Vectorized<T>;
  constexpr int64_t kVec = Vec::size();
  if (a.x != nullptr) {
    // The input projection of this block's units (kernels.h, StepForward::x):
    // input order, the first term an FMA onto -0, which gives round(x * w)
    // with its sign even where it is zero (a GEMM's with beta 0).
    const int64_t I = a.input_size;
    for (int64_t r = 0; r < a.rows; ++r) {
      const T* xr = a.x + r * I;
      Vec acc[4] = {Vec(T(-0.0)), Vec(T(-0.0)), Vec(T(-0.0)), Vec(T(-0.0))};
      for (int64_t i = 0; i < I; ++i) {
        const Vec xi(xr[i]);
        const T* wi = a.w_ih + i * 4 * H + u0;
#pragma GCC unroll 4
        for (int64_t q = 0; q < 4; ++q) acc[q] = at::vec::fmadd(xi, load(wi + q * H, n), acc[q]);
      }
#pragma GCC unroll 4
      for (int64_t q = 0; q < 4; ++q) store(acc[q], a.gates + r * 4 * H + q * H + u0, n);
    }
  }
  for (int64_t r = 0; r < a.rows; ++r) {
    const T* sums = partial + r * 4 * kVec;
    cell_update<T>(a.gates + r * 4 * H + u0, H, a.b_ih ? a.b_ih + u0 : nullptr,
                   a.b_hh ? a.b_hh + u0 : nullptr, Vec::loadu(sums), Vec::loadu(sums + kVec),
                   Vec::loadu(sums + 2 * kVec), Vec::loadu(sums + 3 * kVec),
                   a.c_prev + r * H + u0, a.c_next + r * H + u0, a.h_next + r * H + u0, n);
  }
}

template <typename T>
void fused_forward_step(const StepForward<T>& a) {
  using Vec = Vectorized<T>;
  constexpr int64_t kVec = Vec::size();
  const int64_t H = a.hidden;
  const int64_t blocks = (H + kVec - 1) / kVec;
  // Threads split the hidden units, so each keeps its columns of W^T hot in
  // its own cache from one step to the next.
  const int64_t work_per_block = 8 * a.rows * H * kVec;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(work_per_block, 1));
  ::lstm_ext::cpu::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    // Per-thread scratch for the sums, kept across steps: no allocation per step.
    thread_local std::vector<T> partial;
    if (partial.size() < static_cast<size_t>(a.rows * 4 * kVec)) {
      partial.resize(a.rows * 4 * kVec);
    }
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t u0 = blk * kVec;
      const int64_t n = std::min(kVec, H - u0);
      step_unit_block<T>(a, u0, n, partial.data());
    }
  });
}

template <typename T>
int64_t step_weights_size(int64_t hidden) {
  constexpr int64_t kVec = Vectorized<T>::size();
  return (hidden + kVec - 1) / kVec * hidden * 4 * kVec;
}

// packed[blk][k][q][v] = W_hh[q*H + blk*kVec + v][k], zero past H: each block
// of hidden units gets its four gates' weights as one contiguous panel, read
// in order by the step kernel (W^T read in place has a power-of-two stride
// between k rows, and its cache lines collided in L1: 40% slower at H = 512).
template <typename T>
void pack_step_weights(const T* w_hh, int64_t H, T* packed) {
  constexpr int64_t kVec = Vectorized<T>::size();
  const int64_t blocks = (H + kVec - 1) / kVec;
  ::lstm_ext::cpu::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      T* out = packed + blk * H * 4 * kVec;
      for (int64_t k = 0; k < H; ++k) {
        for (int64_t q = 0; q < 4; ++q) {
          for (int64_t v = 0; v < kVec; ++v) {
            const int64_t u = blk * kVec + v;
            out[(k * 4 + q) * kVec + v] = u < H ? w_hh[(q * H + u) * H + k] : T(0);
          }
        }
      }
    }
  });
}

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
