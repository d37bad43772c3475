// See backward_products.h. Which products split, and how, measured on this
// project's 2-core Xeon (torch 2.13, float32).
//
// In K chunks, not in tiles of rows: one thread, lstm_ext.ops gemm (oneDNN),
// GFLOP/s of dgates^T @ X for (T*B, 4H, N), whole against two pieces:
//
//   (T*B, 4H, N)        whole   2 K chunks   2 row tiles (as X^T @ tile)
//   (1600, 256, 64)      128      117          84
//   (21504, 128, 32)     114      104          60
//   (6400, 1024, 256)    167      161         144
//   (3200, 2048, 512)    171      175         161
//
// A row tile of a column-major a has a leading dimension above its rows,
// which oneDNN's fast kernels do not take (taken directly: 52 GFLOP/s at
// (1600, 256, 64), 7 at (21504, 128, 32)); a K chunk keeps the whole layout.
//
// Only small weight gradients (at most kSmallOutput elements), the bias
// gradient and products below kOneThreadFlops: there the library calls split
// their sums by thread count (backward_products.h), and there side by side
// gains. Training, pieces / one call each on all threads, 2 threads, same
// process alternating: (64,1,32,336) 0.84-0.87, (4,1,8,2000) 0.91-0.95,
// (32,32,64,50) 0.96-0.98, (1,256,256,150) 0.97-1.02, (16,64,128,100)
// 1.00. Larger products (dx, and weight gradients with 4H * N above 64K)
// stay one call on all threads: every split of them tried was slower
// (single-threaded row tiles: (64,512,512,50) 1.06-1.11 of the time,
// (32,128,128,50) 1.03-1.05, (1,256,256,150) 1.05-1.11).
#include "backward_products.h"

#include <ATen/ATen.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>

#include "gemm.h"
#include "step_team.h"

namespace lstm_ext::cpu {
namespace {

// A split product's pieces cost at least this, about a quarter millisecond on
// one core: a library call's fixed cost (oneDNN: ~15 us) stays small.
constexpr double kPieceCost = 32e6;
// A K chunk has at least this many rows (see the table at the top).
constexpr int64_t kMinChunk = 512;
// Weight gradients with at most this many elements are split (the partial
// products are then small to add up).
constexpr int64_t kSmallOutput = 64 * 1024;
// What reading an element costs, in FLOPs of a product that takes as long
// on one core: these products stream the gate gradients from memory (a
// (3200, 2048) column sum took ~3.5 ms, as long as a 450 MFLOP GEMM; at
// (64,1,32,336), dW_ih, 5.5 MFLOPs over 11 MB of gate gradients, took
// 0.7-1.2 ms).
constexpr double kReadCost = 64.0;
// Products below this many FLOPs, which MKL serves (gemm.h), run on one
// thread: MKL split even a (8000, 32) @ (32, 1) product (dx at (4,1,8,2000))
// between 3 threads otherwise than on one.
constexpr double kOneThreadFlops = 4e6;
// A product with a row-major a (dx = dgates @ W_ih) of at most this many
// FLOPs, and at least kRowTileMinColumns columns, runs in tiles of its rows,
// one thread each (on MKL: gemm.h, matmul_one_thread); its sums, over 4H, are
// not cut. dx at (32,32,64,50) took 145 us on one thread there, against 169
// us for oneDNN on two: training 0.95 of the time (2 threads, 5 rounds).
// Larger ones, and GEMV-like ones (input size below 16), were slower so:
// 1.04-1.05 of the time at (1,256,256,150), (16,64,128,100) and
// (64,1,32,336); they stay one call on all threads.
constexpr double kRowTileMaxFlops = 64e6;
constexpr int64_t kRowTileMinColumns = 16;
// A row tile has at least this many rows, in multiples of 16 (a cache line of
// float32).
constexpr int64_t kMinTile = 256;
constexpr int64_t kTileAlign = 16;
// Below this total, the pieces run one after another on the calling thread
// (still one thread each): waking a team would cost more than it saves.
constexpr double kSideBySideMin = 4e6;

// A product or sum that costs less than this (a few microseconds on one core)
// runs at once, on the calling thread on one thread (OneThread), as the one
// piece it would be: no bookkeeping, no std::function. That bookkeeping cost
// the cell's backward at (100,4,3) 0.8 us of 17 (minimum of 40 rounds, in one
// process against the cell's former direct calls); with this, the three
// (this, without it, the direct calls) were within 0.4 us of 21-22 (60
// rounds, 1 and 2 threads), below what this VM resolves. Waking a team for
// so little would cost more than the piece.
constexpr double kRunNowMax = 256e3;

double product_cost(int64_t m, int64_t k, int64_t n) {
  return 2.0 * m * n * k + kReadCost * (m * k + k * n);
}

// [begin, end) bounds of near-equal chunks of `extent` rows for `cost`: at
// least kPieceCost and kMinChunk rows each.
std::vector<int64_t> chunk_bounds(int64_t extent, double cost) {
  if (extent == 0) return {0, 0};  // one empty chunk: its piece writes zeros
  const int64_t by_cost = static_cast<int64_t>(cost / kPieceCost);
  const int64_t chunks = std::max<int64_t>(1, std::min(by_cost, extent / kMinChunk));
  const int64_t size = (extent + chunks - 1) / chunks;
  std::vector<int64_t> bounds;
  for (int64_t r = 0; r < extent; r += size) bounds.push_back(r);
  bounds.push_back(extent);
  return bounds;
}

// out = the sum of the terms' products, in order; zeros without any (an
// empty sum: batch 0). `one_thread`: a piece's, on matmul_one_thread.
void sum_terms(const at::Tensor& out, const std::vector<BackwardProducts::Term>& terms,
               bool one_thread = false) {
  if (terms.empty()) const_cast<at::Tensor&>(out).zero_();
  for (size_t j = 0; j < terms.size(); ++j) {
    const double beta = j == 0 ? 0.0 : 1.0;
    if (one_thread) {
      matmul_one_thread(terms[j].first, terms[j].second, out, beta);
    } else {
      matmul(terms[j].first, terms[j].second, out, beta);
    }
  }
}

// out (N) = the sum of a's rows, accumulated in out's dtype.
void sum_rows(const at::Tensor& out, const at::Tensor& a) {
  at::Tensor o = out;
  at::sum_out(o, a, {0}, false, out.scalar_type());
}

} // namespace

void BackwardProducts::product(const at::Tensor& out, const std::vector<Term>& terms) {
  if (terms.empty()) {
    whole_.push_back({0.0, [out] { sum_terms(out, {}); }});
    return;
  }
  const int64_t m = out.size(0), n = out.size(1);
  double cost = 0, flops = 0;
  for (const Term& t : terms) {
    cost += product_cost(m, t.first.size(1), n);
    flops += 2.0 * m * n * t.first.size(1);
  }
  if (cost < kRunNowMax && flops < kOneThreadFlops) {  // one piece below: run it now
    const OneThread one;
    sum_terms(out, terms, true);
    return;
  }
  // A weight gradient (a = dgates^T, column-major) with a small output:
  // chunks of its long sum, one thread each.
  const bool column_major = terms[0].first.stride(0) == 1 && m > 1;
  if (column_major && m * n <= kSmallOutput) {
    chunked(out, terms, cost);
  } else if (flops < kOneThreadFlops) {
    pieces_.push_back({cost, [out, terms] { sum_terms(out, terms, true); }});
  } else if (!column_major && terms.size() == 1 && flops <= kRowTileMaxFlops &&
             n >= kRowTileMinColumns) {
    row_tiles(out, terms[0], cost);
  } else {
    whole_.push_back({cost, [out, terms] { sum_terms(out, terms); }});
  }
}

// Tiles of out's rows, each a plain product of a's rows with the whole of b.
void BackwardProducts::row_tiles(const at::Tensor& out, const Term& term, double cost) {
  const int64_t m = out.size(0);
  const int64_t tiles = std::max<int64_t>(
      1, std::min(static_cast<int64_t>(cost / kPieceCost), m / kMinTile));
  int64_t rows = (m + tiles - 1) / tiles;
  rows = (rows + kTileAlign - 1) / kTileAlign * kTileAlign;
  const double share = cost / static_cast<double>((m + rows - 1) / rows);
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t len = std::min(rows, m - r0);
    pieces_.push_back({share, [out, term, r0, len] {
                         matmul_one_thread(term.first.narrow(0, r0, len), term.second,
                                           out.narrow(0, r0, len), 0.0);
                       }});
  }
}

// The terms' K rows, end to end, in chunks; each chunk is the terms' rows in
// it, summed in order into its own scratch (the first chunk: into out), and a
// last step adds the scratches to out in chunk order. (float32 and float64;
// the bfloat16 layer's products where they run in float32,
// bf16/lstm_bf16.cpp.)
void BackwardProducts::chunked(const at::Tensor& out, const std::vector<Term>& terms,
                               double cost) {
  int64_t k = 0;
  for (const Term& t : terms) k += t.first.size(1);
  const std::vector<int64_t> bounds = chunk_bounds(k, cost);
  const double share = cost / static_cast<double>(bounds.size() - 1);
  std::vector<at::Tensor> partials;
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    // The parts of the terms in rows [bounds[i], bounds[i + 1]) of K.
    std::vector<Term> parts;
    int64_t start = 0;
    for (const Term& t : terms) {
      const int64_t len = t.first.size(1);
      const int64_t lo = std::max(bounds[i], start), hi = std::min(bounds[i + 1], start + len);
      if (lo == start && hi == start + len) {
        parts.push_back(t);  // the whole term: no views to make
      } else if (lo < hi) {
        parts.push_back({t.first.narrow(1, lo - start, hi - lo),
                         t.second.narrow(0, lo - start, hi - lo)});
      }
      start += len;
    }
    const at::Tensor dst = i == 0 ? out : at::empty_like(out);
    if (i > 0) partials.push_back(dst);
    pieces_.push_back({share, [dst, parts] { sum_terms(dst, parts, true); }});
  }
  add_partials(out, partials);
}

void BackwardProducts::add_partials(const at::Tensor& out, const std::vector<at::Tensor>& partials) {
  if (partials.empty()) return;
  sums_.push_back({1.0 * out.numel() * partials.size(), [out, partials] {
                     for (const at::Tensor& p : partials) const_cast<at::Tensor&>(out).add_(p);
                   }});
}

// Chunks of a's rows, each summed (a contiguous block), then added up in
// chunk order: ATen's own sum may split it between threads.
void BackwardProducts::column_sums(const at::Tensor& out, const at::Tensor& a) {
  const int64_t k = a.size(0);
  const double cost = kReadCost * a.numel();
  if (cost < kRunNowMax) {  // one chunk: run it now
    const OneThread one;
    sum_rows(out, a);
    return;
  }
  const std::vector<int64_t> bounds = chunk_bounds(k, cost);
  const double share = cost / static_cast<double>(bounds.size() - 1);
  std::vector<at::Tensor> partials;
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    const int64_t k0 = bounds[i], rows = bounds[i + 1] - k0;
    const at::Tensor dst = i == 0 ? out : at::empty_like(out);
    if (i > 0) partials.push_back(dst);
    pieces_.push_back({share, [dst, a, k0, rows, k] {
                         // the whole of a without a view where one chunk takes it
                         sum_rows(dst, rows == k ? a : a.narrow(0, k0, rows));
                       }});
  }
  add_partials(out, partials);
}

void BackwardProducts::run() {
  for (const Piece& p : whole_) p.run();
  double total = 0;
  for (const Piece& p : pieces_) total += p.cost;
  if (total >= kSideBySideMin) {
    // Longest first: the threads claim pieces in this order. (Not where they
    // run in turn: each piece writes its own output, so the order does not
    // change a bit there.)
    std::stable_sort(pieces_.begin(), pieces_.end(),
                     [](const Piece& a, const Piece& b) { return a.cost > b.cost; });
    // The caller's thread-local state (dispatch keys, grad mode) on every
    // thread: OpenMP's threads have their own, and ATen ops called there
    // would otherwise run as if called from Python (autograd included).
    const at::ThreadLocalState state;
    for_each_task(static_cast<int64_t>(pieces_.size()), [&](int64_t k) {
      const at::ThreadLocalStateGuard guard(state);
      pieces_[k].run();
    });
  } else {
    const OneThread one;
    for (const Piece& p : pieces_) p.run();
  }
  // The chunks' partial results, added in order (small: chunks split only
  // small outputs).
  if (!sums_.empty()) {
    const OneThread one;
    for (const Piece& p : sums_) p.run();
  }
  whole_.clear();
  pieces_.clear();
  sums_.clear();
}

} // namespace lstm_ext::cpu
