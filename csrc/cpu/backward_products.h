// The products after a backward's time loop (dx, the weight gradients, the
// bias gradient): those whose sums a library would split by thread count are
// cut into pieces fixed by the shapes alone, each piece one library call on
// one thread, and the pieces run side by side on the op's threads
// (for_each_task, step_team.h); the others are one call each on all threads.
//
// Why:
//   * The same bits for any thread count. oneDNN splits a long sum (a weight
//     gradient's K = T * B rows) between its threads where the output is small
//     for the thread count, and MKL (small products) splits even short ones;
//     the results then change with the thread count, and with a one-thread
//     fallback (step_team.h). float32 training against one thread, before:
//     dW_ih and dW_hh differed at (64,1,32,336), the main job's shape, with
//     2, 3, 8 and 16 threads, at (4,1,8,2000) with 4 or more (and dx with 3),
//     and at (64,512,512,50) and (64,256,256,100) with 16
//     (tests/ops/test_threads.py covers these now). A piece on one thread
//     never splits its sums. Left: the large products that stay one call on
//     all threads; at (64,512,512,50) and (64,256,256,100) with 16 threads
//     oneDNN's dW_ih and dW_hh still differed from one thread in the last
//     bits in some runs.
//   * Speed where the products are small: a small layer's GEMMs gain little
//     from a second thread (this project's 2-core Xeon, (32,32,64,50): dx
//     169 us on 2 threads against 208 on 1, dW_ih 245 against 286, dW_hh 365
//     against 423), so two side by side beat two in turn.
//
// A weight gradient (a = dgates^T, column-major) is cut along its sum's K rows
// into chunks, each chunk's partial product in a scratch (the first in the
// output), then added up in chunk order; a bias gradient likewise. A small
// dx (row-major a) runs in tiles of its rows. The smallest products and sums
// (kRunNowMax) run at once, as the one piece they would be. The measurements
// that chose this are at the top of backward_products.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <utility>
#include <vector>

namespace lstm_ext::cpu {

class BackwardProducts {
 public:
  using Term = std::pair<at::Tensor, at::Tensor>;  // a (M, K_i), b (K_i, N)

  // out (M, N) = the sum over terms, in order, of a_i @ b_i (matmul, gemm.h:
  // any strides ATen's GEMMs accept; out contiguous); zeros without terms.
  void product(const at::Tensor& out, const std::vector<Term>& terms);

  // out (N) = the sum of a (K, N) over its rows, accumulated and written in
  // out's dtype.
  void column_sums(const at::Tensor& out, const at::Tensor& a);

  // Every piece added, longest first, side by side on this op's threads, then
  // the chunked products' sums. Returns when all are done; rethrows a piece's
  // error.
  void run();

 private:
  struct Piece {
    double cost;  // FLOPs, plus kReadCost per element read (backward_products.cpp)
    std::function<void()> run;
  };
  void chunked(const at::Tensor& out, const std::vector<Term>& terms, double cost);
  void row_tiles(const at::Tensor& out, const Term& term, double cost);
  void add_partials(const at::Tensor& out, const std::vector<at::Tensor>& partials);
  std::vector<Piece> whole_;   // each on all threads, first
  std::vector<Piece> pieces_;  // side by side, one thread each
  std::vector<Piece> sums_;    // the chunks' partials added up, last
};

} // namespace lstm_ext::cpu
