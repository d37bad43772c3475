#include "config.h"

#include <cstdlib>
#include <string>

namespace lstm_ext::cpu {
namespace {

Config read_environment() {
  Config c{};
  const char* gemm = std::getenv("LSTM_EXT_GEMM");
  const bool aten_only = gemm != nullptr && std::string(gemm) == "aten";
  c.step_kernels = !aten_only;
  c.onednn_gemm = !aten_only;
  const char* mb = std::getenv("LSTM_EXT_CACHE_MB");
  c.cache_limit_bytes = (mb != nullptr ? std::strtoull(mb, nullptr, 10) : 512ull) << 20;
  const char* poison = std::getenv("LSTM_EXT_POISON");
  c.poison = poison != nullptr && std::string(poison) != "" && std::string(poison) != "0";
  const char* amx = std::getenv("LSTM_EXT_BF16_AMX");
  c.bf16_amx = amx == nullptr || std::string(amx) != "0";
  const char* int8_amx = std::getenv("LSTM_EXT_INT8_AMX");
  c.int8_amx = int8_amx == nullptr || std::string(int8_amx) != "0";
  const char* cap = std::getenv("LSTM_EXT_THREAD_CAP");
  c.thread_cap = cap == nullptr || std::string(cap) != "0";
  return c;
}

} // namespace

const Config& config() {
  static const Config c = read_environment();
  return c;
}

} // namespace lstm_ext::cpu
