// Fork: GNU OpenMP's thread pool does not survive fork(). A child that enters
// a parallel region after its parent used one waits forever for threads that
// were never copied into it (measured: our layer and torch.nn.LSTM alike hang
// at their first parallel kernel in the child). A process that loads this
// library therefore gives its forked children one OpenMP thread, as PyTorch's
// DataLoader does in its workers (torch.set_num_threads(1)): the child runs
// every CPU kernel, ours and torch's, single-threaded instead of hanging.
// Raising the thread count again in such a child brings the hang back; a
// child that needs threads should be started with the "spawn" method
// (torch.multiprocessing), which begins a fresh process.
#include <omp.h>
#include <pthread.h>

// MKL's thread-local thread count (in libtorch_cpu where ATen's BLAS is MKL;
// weak: null elsewhere). MKL keeps its own count, copied from the parent, and
// opens OpenMP regions of that many threads (measured: a forked child hung in
// its first large MKL product once the layers' products ran on MKL).
extern "C" __attribute__((weak)) int MKL_Set_Num_Threads_Local(int threads);

namespace lstm_ext::cpu {
namespace {

void one_thread_after_fork() {
  // The child is single-threaded here: this thread runs its kernels.
  // at::get_num_threads() reads omp_get_max_threads().
  omp_set_num_threads(1);
  if (&MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(1);
}

const int kRegistered = pthread_atfork(nullptr, nullptr, &one_thread_after_fork);

} // namespace
} // namespace lstm_ext::cpu
