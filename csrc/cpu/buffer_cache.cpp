#include "buffer_cache.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace lstm_ext::cpu {
namespace {

constexpr size_t kMinBytes = size_t(1) << 20;
constexpr size_t kAlignment = 64;

class BlockCache {
 public:
  BlockCache() {
    const char* mb = std::getenv("LSTM_EXT_CACHE_MB");
    limit_ = (mb != nullptr ? std::strtoull(mb, nullptr, 10) : 512ull) << 20;
  }

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
  size_t limit_ = 0;
};

// Never destroyed: tensors may be freed during static destruction.
BlockCache& cache() {
  static BlockCache* instance = new BlockCache();
  return *instance;
}

} // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const size_t bytes = c10::multiply_integers(sizes) * options.dtype().itemsize();
  if (bytes < kMinBytes || cache().limit() == 0 || !options.device().is_cpu()) {
    return at::empty(sizes, options);
  }
  void* p = cache().take(bytes);
  return at::from_blob(
      p, sizes, [bytes](void* q) { cache().give_back(q, bytes); }, options);
}

} // namespace lstm_ext::cpu
