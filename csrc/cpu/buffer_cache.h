// Large tensors for the layer ops, from a small cache of recently freed blocks.
//
// A training loop allocates the same few large buffers (gates, states, their
// gradients: tens of MB each) every iteration. From the system allocator each
// comes back as fresh pages, and touching them page-faults (measured: ~25 ms of
// an 86 ms training step at (64, 256, 256, 100)); oneDNN's LSTM avoids this
// with its cached scratchpad. Blocks of 1 MiB and more are kept here when freed
// and handed out again for the same size, up to LSTM_EXT_CACHE_MB in total
// (default 512; 0 turns the cache off; read in config.cpp). Contents are
// uninitialised.
//
// LSTM_EXT_POISON=1 (set by the test suite) fills every buffer handed out here
// with NaN, and makes c10's CPU allocator fill every new block with junk, so
// that a kernel reading memory it never wrote shows up as NaN in a result.
#pragma once

#include <ATen/core/Tensor.h>

namespace lstm_ext::cpu {

// Raises a clear error, instead of wrapping, when the byte count overflows.
at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

} // namespace lstm_ext::cpu
