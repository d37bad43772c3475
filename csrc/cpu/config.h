// Every environment switch of the library, read once (at the first use of
// any, which is at library load: see buffer_cache.cpp). What each changes, and
// why it exists, is said where it acts; this is the one place that reads them.
//
//   LSTM_EXT_GEMM=aten   every product on ATen's GEMM (MKL): no oneDNN
//                        (gemm.h) and no step kernels (below), for comparison
//   LSTM_EXT_CACHE_MB=N  the buffer cache's limit in MiB, default 512, 0 = off
//                        (buffer_cache.h)
//   LSTM_EXT_BF16_AMX=0  bf16 step products on AVX512-BF16 instead of AMX
//                        (vec/bf16_kernels.h), for comparison and tests
//   LSTM_EXT_INT8_AMX=0  int8 products on AVX512-VNNI instead of AMX
//                        (vec/int8_kernels.h), for comparison and tests
//   LSTM_EXT_THREAD_CAP=0  a small float layer call on every configured
//                        thread (layer_steps.h, layer_threads), for comparison
//   LSTM_EXT_POISON=1    NaN-fill every buffer handed out, junk-fill c10's
//                        new blocks (buffer_cache.h; set by the test suite)
#pragma once

#include <cstddef>

namespace lstm_ext::cpu {

struct Config {
  // Whether a layer's steps run on lstm_ext's own step kernels
  // (vec::fused_forward_step, vec::small_gemm) rather than matmul plus
  // separate pointwise passes. Per step, a library GEMM pays set-up, threading
  // and the packing of W_hh again; the step kernels pack once per sequence (or
  // read W_hh as it lies) and were faster at every benchmarked shape, from
  // (32, 64) x (64, 256) (MKL: 2x slower) to (64, 512) x (512, 2048) (oneDNN:
  // ~10% slower). LSTM_EXT_GEMM=aten turns them off.
  bool step_kernels;
  // Whether large float32 products may go to oneDNN (gemm.h).
  // LSTM_EXT_GEMM=aten turns it off.
  bool onednn_gemm;
  // Bytes of freed blocks the buffer cache may keep (LSTM_EXT_CACHE_MB << 20).
  size_t cache_limit_bytes;
  // LSTM_EXT_POISON set to anything but "" or "0".
  bool poison;
  // Whether the bf16 kernels may use AMX where the CPU has it
  // (LSTM_EXT_BF16_AMX=0 turns it off).
  bool bf16_amx;
  // Whether the int8 kernels may use AMX where the CPU has it
  // (LSTM_EXT_INT8_AMX=0 turns it off).
  bool int8_amx;
  // Whether a small float layer call runs on no more threads than its work
  // keeps busy (LSTM_EXT_THREAD_CAP=0 turns it off).
  bool thread_cap;
};

const Config& config();

} // namespace lstm_ext::cpu
