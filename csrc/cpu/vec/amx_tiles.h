// The AMX tile configuration shared by the AMX builds of the bf16 and int8
// kernels (kernels_amx_{bf16,int8}.cpp, compiled with -mamx-tile): every tile
// 16 rows x 64 bytes, which is all either kernel uses (float32 or int32 sums
// 16 x 16, A 16 rows x 64 bytes, B 16 pair or quad rows x 64 bytes).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

struct TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Loads this thread's tile configuration (the tile state is per thread, and
// other code -- oneDNN, the other dtype's kernels -- configures its own
// between our calls): tiles 0-7, each 16 rows x 64 bytes.
inline void amx_configure() {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
