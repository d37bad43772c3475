#include "buffer_cache.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>

#include "checks.h"
#include "config.h"

namespace lstm_ext::cpu {
namespace {

constexpr size_t kMinBytes = size_t(1) << 20;
constexpr size_t kAlignment = 64;

class BlockCache {
 public:
  BlockCache() : limit_(config().cache_limit_bytes) {}

  size_t limit() const { return limit_; }

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= bytes;
        return p;
      }
    }
    void* p = nullptr;
    TORCH_CHECK(posix_memalign(&p, kAlignment, bytes) == 0 && p != nullptr,
                "lstm_ext: out of memory allocating ", bytes, " bytes");
    return p;
  }

  void give_back(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= limit_) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
  const size_t limit_;
};

// Never destroyed: tensors may be freed during static destruction.
BlockCache& cache() {
  static BlockCache* instance = new BlockCache();
  return *instance;
}

} // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  // Sizes come from user tensors, and expanded ones can claim any size at no
  // cost: a wrapped byte count would hand out a small block for a huge tensor.
  uint64_t bytes = 0;
  TORCH_CHECK(buffer_bytes(sizes, options.dtype().itemsize(), &bytes),
              "lstm_ext: a buffer of shape ", sizes, " and dtype ", options.dtype(),
              " needs more bytes than this machine can address");
  at::Tensor out;
  if (bytes < kMinBytes || cache().limit() == 0 || !options.device().is_cpu()) {
    out = at::empty(sizes, options);
  } else {
    void* p = cache().take(bytes);
    out = at::from_blob(
        p, sizes, [bytes](void* q) { cache().give_back(q, bytes); }, options);
  }
  if (config().poison && out.is_floating_point()) {
    out.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

} // namespace lstm_ext::cpu

// c10's CPU allocator fills every new block with junk (a NaN pattern in
// float32) when this flag is set; declared weak so that a libc10 without it
// still loads us. Set only under LSTM_EXT_POISON, for tests.
extern bool FLAGS_caffe2_cpu_allocator_do_junk_fill __attribute__((weak));

namespace {
const bool kJunkFillSet = [] {
  if (lstm_ext::cpu::config().poison && &FLAGS_caffe2_cpu_allocator_do_junk_fill != nullptr) {
    FLAGS_caffe2_cpu_allocator_do_junk_fill = true;
  }
  return true;
}();
} // namespace
