// Body of the fused pointwise kernels. Included by exactly one translation unit
// per CPU capability, each compiled with its own -m flags and CPU_CAPABILITY_*
// macro, so that at::vec::Vectorized maps to AVX-512 / AVX2 registers. Without
// a capability it falls back to one std::exp per element (measured 3x slower
// than nn.LSTM).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "lstm_pointwise.h"

namespace lstm_ext::cpu::CPU_CAPABILITY {

using at::vec::Vectorized;


template <typename T>
inline Vectorized<T> load(const T* p, int64_t n) {
  return n == Vectorized<T>::size() ? Vectorized<T>::loadu(p)
                                    : Vectorized<T>::loadu(p, n);
}

template <typename T>
inline void store(const Vectorized<T>& v, T* p, int64_t n) {
  v.store(p, static_cast<int>(n));
}

// exp_u20 is a short inline polynomial (no call) whose ~1e-6 relative error is
// below float32's tolerance; float64 maps it to the exact exp. It is several
// times cheaper than Sleef's tanh, which dominated the pointwise pass.
//
// But its float32 versions clamp the argument with min/max, which turns NaN
// into a finite number (exp(NaN) = 3.4e38) and stops exp short of overflow
// (exp(+inf) = 3.4e38, so sigmoid(-inf) = 3e-39, not 0, and 3e-39 * inf is
// inf where nn.LSTM's 0 * inf is NaN). Both are put back here, so that NaN
// and +-inf flow through every kernel as they do through torch.nn.
template <typename T>
inline Vectorized<T> exp_ieee(const Vectorized<T>& x) {
  using Vec = Vectorized<T>;
  // log(FLT_MAX) (0x42b17218): the largest argument whose exp is finite in
  // float32; past it, exp_u20 saturates instead of returning inf.
  const Vec overflow(std::is_same_v<T, float> ? T(88.7228394) : T(709.782712893384));
  // One compare and one blend: x <= overflow is false for NaN and past the
  // overflow point alike, and there x * inf is NaN or +inf respectively
  // (measured: two blends cost 2-5% of a layer step).
  const Vec past = x * Vec(std::numeric_limits<T>::infinity());
  return Vec::blendv(past, x.exp_u20(), x <= overflow);
}

template <typename T>
inline Vectorized<T> sigmoid(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1));
  return one / (one + exp_ieee(x.neg()));
}

// tanh(x) = 2 sigmoid(2x) - 1: absolute error ~1e-7 in float32.
template <typename T>
inline Vectorized<T> tanh(const Vectorized<T>& x) {
  const Vectorized<T> two(T(2));
  return at::vec::fmsub(two, sigmoid(x * two), Vectorized<T>(T(1)));
}

template <typename T, typename F>
inline void for_each_chunk(int64_t hidden, const F& f) {
  constexpr int64_t kVec = Vectorized<T>::size();
  int64_t j = 0;
  for (; j + kVec <= hidden; j += kVec) {
    f(j, kVec);
  }
  if (j < hidden) {
    f(j, hidden - j);
  }
}

// Runs f(row, j0, width) over every row and 64-wide column span of a
// (rows, hidden) pass, split between threads even for a single row. Keeping
// the pointwise pass parallel matters beyond its own time: a serial gap
// between the step's GEMM and the next step lets OpenMP's idle threads go to
// sleep, and waking them every step doubled the step time (measured).
template <typename F>
inline void parallel_spans(int64_t rows, int64_t hidden, int64_t elements_per_thread,
                           const F& f) {
  constexpr int64_t kSpan = 64;
  const int64_t spans = (hidden + kSpan - 1) / kSpan;
  const int64_t grain = std::max<int64_t>(1, elements_per_thread / kSpan);
  at::parallel_for(0, rows * spans, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t r = i / spans;
      const int64_t j0 = (i % spans) * kSpan;
      f(r, j0, std::min(kSpan, hidden - j0));
    }
  });
}

template <typename T, typename F>
inline void for_each_chunk_in(int64_t j0, int64_t width, const F& f) {
  for_each_chunk<T>(width, [&](int64_t j, int64_t n) { f(j0 + j, n); });
}

// The LSTM cell's element-wise update for n (<= one vector of) hidden units:
// pre-activations = the gates buffer at g + q*H (+ biases) + extra_q, for gates
// q = i, f, g, o; the activated gates go back to g, the new c and h to c_next
// and h_next. The one home of the forward equations in C++.
template <typename T>
inline void cell_update(T* g, int64_t H, const T* b_ih, const T* b_hh,
                        const Vectorized<T>& extra_i, const Vectorized<T>& extra_f,
                        const Vectorized<T>& extra_g, const Vectorized<T>& extra_o,
                        const T* c_prev, T* c_next, T* h_next, int64_t n) {
  using Vec = Vectorized<T>;
  Vec gi = load(g, n) + extra_i;
  Vec gf = load(g + H, n) + extra_f;
  Vec gg = load(g + 2 * H, n) + extra_g;
  Vec go = load(g + 3 * H, n) + extra_o;
  if (b_ih != nullptr) {
    gi += load(b_ih, n);
    gf += load(b_ih + H, n);
    gg += load(b_ih + 2 * H, n);
    go += load(b_ih + 3 * H, n);
  }
  if (b_hh != nullptr) {
    gi += load(b_hh, n);
    gf += load(b_hh + H, n);
    gg += load(b_hh + 2 * H, n);
    go += load(b_hh + 3 * H, n);
  }
  const Vec i = sigmoid(gi);
  const Vec f = sigmoid(gf);
  const Vec c_hat = tanh(gg);
  const Vec o = sigmoid(go);
  const Vec c = at::vec::fmadd(f, load(c_prev, n), i * c_hat);
  store(i, g, n);
  store(f, g + H, n);
  store(c_hat, g + 2 * H, n);
  store(o, g + 3 * H, n);
  store(c, c_next, n);
  store(o * tanh(c), h_next, n);
}

template <typename T>
void forward_pointwise(const PointwiseForward<T>& a) {
  using Vec = Vectorized<T>;
  const int64_t H = a.hidden;
  parallel_spans(a.rows, H, a.elements_per_thread, [&](int64_t r, int64_t j0, int64_t width) {
    {
      T* g = a.gates + r * 4 * H;
      const T* cp = a.c_prev + r * H;
      T* cn = a.c_next + r * H;
      T* hn = a.h_next + r * H;
      for_each_chunk_in<T>(j0, width, [&](int64_t j, int64_t n) {
        cell_update<T>(g + j, H, a.b_ih ? a.b_ih + j : nullptr, a.b_hh ? a.b_hh + j : nullptr,
                       Vec(T(0)), Vec(T(0)), Vec(T(0)), Vec(T(0)), cp + j, cn + j, hn + j, n);
      });
    }
  });
}

// With tc = tanh(c_next) and the activated gates i, f, g, o:
//   dc     = grad_c + grad_h * o * (1 - tc^2)
//   d(o)   = grad_h * tc * o (1 - o)
//   d(i)   = dc * g * i (1 - i)
//   d(f)   = dc * c_prev * f (1 - f)
//   d(g)   = dc * i * (1 - g^2)
//   grad_c_prev = dc * f
template <typename T>
void backward_pointwise(const PointwiseBackward<T>& a) {
  using Vec = Vectorized<T>;
  const int64_t H = a.hidden;
  const Vec one(T(1));
  parallel_spans(a.rows, H, a.elements_per_thread, [&](int64_t r, int64_t j0, int64_t width) {
    {
      const T* g = a.gates + r * 4 * H;
      const T* cp = a.c_prev + r * H;
      const T* cn = a.c_next + r * H;
      const T* gh = a.grad_h ? a.grad_h + r * H : nullptr;
      const T* gh2 = a.grad_h_extra ? a.grad_h_extra + r * H : nullptr;
      const T* gc = a.grad_c ? a.grad_c + r * H : nullptr;
      T* dg = a.grad_gates + r * 4 * H;
      T* dcp = a.grad_c_prev + r * H;
      for_each_chunk_in<T>(j0, width, [&](int64_t j, int64_t n) {
        Vec dh(T(0));
        if (gh != nullptr) dh = load(gh + j, n);
        if (gh2 != nullptr) dh += load(gh2 + j, n);
        const Vec i = load(g + j, n);
        const Vec f = load(g + H + j, n);
        const Vec gg = load(g + 2 * H + j, n);
        const Vec o = load(g + 3 * H + j, n);
        const Vec tc = tanh(load(cn + j, n));
        Vec dc = dh * o * (one - tc * tc);
        if (gc != nullptr) dc += load(gc + j, n);
        store(dc * gg * i * (one - i), dg + j, n);
        store(dc * load(cp + j, n) * f * (one - f), dg + H + j, n);
        store(dc * i * (one - gg * gg), dg + 2 * H + j, n);
        store(dh * tc * o * (one - o), dg + 3 * H + j, n);
        store(dc * f, dcp + j, n);
      });
    }
  });
}

template <typename T>
void gemv_rows(const T* w, int64_t rows, int64_t cols, const T* x, T* y) {
  using Vec = Vectorized<T>;
  // Four rows at a time share each load of x.
  at::parallel_for(0, (rows + 3) / 4, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)),
                   [&](int64_t q0, int64_t q1) {
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
  at::parallel_for(0, groups, std::max<int64_t>(1, 512 / std::max<int64_t>(rows, 1)),
                   [&](int64_t g0, int64_t g1) {
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

template <typename T>
void small_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  // 8 rows x 2 vectors: 16 accumulators, and a 2-vector-wide panel of B
  // (K x 32 floats) that stays in L1 while all row groups stream past it.
  constexpr int MR = 8;
  constexpr int NV = 2;
  constexpr int64_t kBlockN = NV * Vectorized<T>::size();
  const int64_t blocks = (N + kBlockN - 1) / kBlockN;
  // Threads split the columns: each keeps its slice of B hot across all rows.
  // A second thread only pays off above ~0.5 MFLOP per step.
  const int64_t work_per_block = 2 * M * K * kBlockN;
  const int64_t grain = std::max<int64_t>(1, 262144 / std::max<int64_t>(work_per_block, 1));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t j = blk * kBlockN;
      const int64_t n = std::min(kBlockN, N - j);
      int64_t i = 0;
      for (; i + MR <= M; i += MR) {
        gemm_block_any<T, MR, NV>(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc,
                                  accumulate, n);
      }
      for (; i < M; ++i) {
        gemm_block_any<T, 1, NV>(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc,
                                 accumulate, n);
      }
    }
  });
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

template <typename T>
inline void step_unit_block(const StepForward<T>& a, int64_t u0, int64_t n, T* partial) {
  // AVX-512 has 32 vector registers: 4 rows x 4 gates of accumulators fit;
  // with 16 (AVX2 and narrower) two rows do.
  constexpr int MR = sizeof(Vectorized<T>) >= 64 ? 4 : 2;
  // K in chunks whose slice of the packed panel (64 x 4 gates x one vector,
  // contiguous) stays in L1 while every row group streams past it.
  constexpr int64_t kChunk = 64;
  const int64_t H = a.hidden;
  for (int64_t k0 = 0; k0 < H; k0 += kChunk) {
    const int64_t k1 = std::min(H, k0 + kChunk);
    int64_t r = 0;
    for (; r + MR <= a.rows; r += MR) step_block<T, MR>(a, r, u0, k0, k1, partial);
    for (; r < a.rows; ++r) step_block<T, 1>(a, r, u0, k0, k1, partial);
  }
  using Vec = Vectorized<T>;
  constexpr int64_t kVec = Vec::size();
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
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
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
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
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


LSTM_EXT_INSTANTIATE_KERNELS(float)
LSTM_EXT_INSTANTIATE_KERNELS(double)

} // namespace lstm_ext::cpu::CPU_CAPABILITY
