// The math of the LSTM cell, vectorised: exp/sigmoid/tanh with IEEE special
// values, the cell update, and the two element-wise passes (forward_pointwise,
// backward_pointwise: arguments and shapes in kernels.h).
//
// A pass reads each row's gates (rows, 4H) and states (rows, H) once and
// writes them once: all of the step's transcendental work in one parallel
// pass over memory. Fast because each activation is a short inline polynomial
// on whole vectors (exp_ieee below), and because the pass stays parallel even
// for one row (parallel_spans). Aliasing: the forward pass rewrites gates in
// place; the backward pass may write grad_c_prev over grad_c.
//
// Included by exactly one translation unit per CPU capability
// (kernel_list.h), each compiled with its own -m flags and CPU_CAPABILITY_*
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

#include "../step_team.h"
#include "kernels.h"

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

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

#if defined(CPU_CAPABILITY_AVX512)
// float32 with AVX-512: exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln 2
// (ln 2 in two parts, Cody and Waite), exp(r) by exp_u20's polynomial, and
// 2^n applied by vscalefps, which overflows to +inf, underflows through the
// subnormals to 0 and passes NaN on: IEEE without the blends above, 12
// operations against ~23. x is first clamped to [-104, 100], where exp is 0
// and +inf already (min/max return their second operand, x, for NaN). The
// cell update took half of a step's samples at (32,32,64,50) (perf, one
// thread); with this, inference took 0.92-0.99 of the time (2 threads, 5
// shapes) and sigmoid's relative error fell from 4.1e-7 to 2.4e-7.
template <>
inline Vectorized<float> exp_ieee(const Vectorized<float>& xv) {
  const __m512 x = _mm512_max_ps(_mm512_set1_ps(-104.f), _mm512_min_ps(_mm512_set1_ps(100.f), xv));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_fmadd_ps(r, _mm512_set1_ps(0.00828929059f), _mm512_set1_ps(0.0418978221f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.166676521f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.499991506f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.999999701f));
  p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}
#endif

// 1 / d for the d of sigmoid: d >= 1, +inf or NaN. A division in general; in
// float32 with AVX-512 a reciprocal estimate (14 bits) refined by one Newton
// step, r (2 - d r): relative error ~2^-24, against a division whose
// throughput was the pointwise pass's limit (measured: the float32 cell update
// of (64,512,512,50) took 12.6 ms of a 93 ms inference call, 1 thread). Where
// d is inf the estimate 0 stands (the refinement would be 0 * inf). AVX2's
// estimate has 12 bits, and flushes results below 2^-126 to zero where the
// division gives sigmoid(-88) = 6e-39, whose product with an inf is inf, not
// NaN as in torch.nn (tests/ops/test_ieee.py found it): AVX2 divides.
// Tried again with the estimate used only where d <= 2^126 (a vector with a
// larger d divided): no faster on this project's AVX2 EPYC (Zen 3, whose
// divider runs beside the FMA pipes), inference 1.04, 0.94 and 0.98 of the
// time at (64,1,32,336), (32,32,64,50), (64,256,256,100) (bench_ab.py, 4
// rounds: noise), and not exact at d = 1 (sigmoid(20) came out 1 - 2^-24, so
// i (1 - i) was not 0 and test_ieee's 0 * inf in the backward not NaN).
template <typename T>
inline Vectorized<T> reciprocal_of_sum(const Vectorized<T>& d) {
  return Vectorized<T>(T(1)) / d;
}

#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> reciprocal_of_sum(const Vectorized<float>& d) {
  const __m512 r = _mm512_rcp14_ps(d);
  const __m512 refined = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(refined, refined, _CMP_ORD_Q), r, refined);
}
#endif

template <typename T>
inline Vectorized<T> sigmoid(const Vectorized<T>& x) {
  return reciprocal_of_sum(Vectorized<T>(T(1)) + exp_ieee(x.neg()));
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
  ::lstm_ext::cpu::parallel_for(0, rows * spans, grain, [&](int64_t i0, int64_t i1) {
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

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
