// lstm_ext::zip_check::zip_damage(path): why a model file that is a zip archive
// (TorchScript .pt, AOTInductor .pt2) must not be loaded, or "" if nothing is
// wrong with it as an archive (or it is no zip archive: the loaders say what it
// is then).
//
// Why it exists: libtorch builds miniz without its CRC-32 checks
// (MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS), so a bit flipped in a tensor's
// bytes on disk or in a copy loads as another weight and the service forecasts
// from it, silently; and a file cut short gives miniz's "failed finding central
// directory", which does not say what happened. Python's side makes the same
// check (lstm_ext/export/archive.py, zip_damage, with zipfile).
//
// What is checked: the end-of-central-directory record (and its zip64 form),
// every central directory entry and its local header lying within the file,
// and the CRC-32 of every entry: torch writes tensors, pickles and constants
// stored (checked as read), TorchScript's code deflated. This header has no
// dependency and no inflater: a deflated entry is checked through `inflate`,
// the caller's reader of an entry's bytes (lstm_ext/model_file.h passes
// libtorch's own, caffe2::serialize::PyTorchStreamReader); without one,
// deflated entries are left to the loader. Cost: one read of the file (100 MB:
// 47 ms, torch::jit::load 68) and the inflation of the code entries (kilobytes).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace lstm_ext::zip_check {

// CRC-32 (zip's polynomial) sliced by 8: eight tables, eight bytes a step. The
// byte-at-a-time loop it replaced checked a 100 MB model in 228 ms, where
// torch::jit::load took 68 ms (this project's Zen 4 VM).
inline uint32_t crc32_update(uint32_t crc, const unsigned char* data, size_t n) {
  using Tables = std::array<std::array<uint32_t, 256>, 8>;
  static const Tables t = [] {
    Tables t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (int k = 1; k < 8; ++k) {
      for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
    }
    return t;
  }();
  crc = ~crc;
  for (; n >= 8; data += 8, n -= 8) {
    const uint32_t a = crc ^ (uint32_t(data[0]) | uint32_t(data[1]) << 8 |
                              uint32_t(data[2]) << 16 | uint32_t(data[3]) << 24);
    crc = t[7][a & 0xFF] ^ t[6][(a >> 8) & 0xFF] ^ t[5][(a >> 16) & 0xFF] ^ t[4][a >> 24] ^
          t[3][data[4]] ^ t[2][data[5]] ^ t[1][data[6]] ^ t[0][data[7]];
  }
  for (size_t i = 0; i < n; ++i) crc = t[0][(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

inline uint64_t le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// An entry's name as a message shows it: printable ASCII, at most 80 characters
// (a damaged name can hold any byte, a newline too).
inline std::string shown(const std::string& name) {
  std::string out;
  for (unsigned char ch : name.substr(0, 80)) out += (ch >= 0x20 && ch < 0x7F) ? char(ch) : '?';
  return name.size() > 80 ? out + "... (" + std::to_string(name.size()) + " bytes)" : out;
}

// inflate(name, header_offset): the bytes of the entry whose local header is at
// that offset, inflated; an exception if they do not inflate; nullopt if the
// caller's reader does not reach that entry (or this archive), and then it is
// left unchecked (model_file.h says when that is).
using Inflate = std::function<std::optional<std::string>(const std::string& name,
                                                         uint64_t header_offset)>;

inline std::string zip_damage(const std::string& path, const Inflate& inflate = nullptr) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return "";
  const uint64_t size = static_cast<uint64_t>(f.tellg());
  auto read_at = [&](uint64_t offset, unsigned char* out, uint64_t n) {
    if (offset > size || n > size - offset) return false;
    f.seekg(static_cast<std::streamoff>(offset));
    return static_cast<bool>(f.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n)));
  };
  unsigned char magic[4];
  if (!read_at(0, magic, 4) || std::memcmp(magic, "PK\x03\x04", 4) != 0) return "";
  const std::string cut = "a zip archive cut short or damaged (" + std::to_string(size) +
                          " bytes, no readable central directory): was the copy interrupted?";

  // The end-of-central-directory record: 22 bytes and a comment of up to 64 KiB.
  const uint64_t tail_len = std::min<uint64_t>(size, 22 + 65535);
  std::vector<unsigned char> tail(tail_len);
  if (!read_at(size - tail_len, tail.data(), tail_len)) return cut;
  int64_t eocd = -1;
  for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i) {
    if (le(&tail[i], 4) == 0x06054b50u) { eocd = i; break; }
  }
  if (eocd < 0) return cut;
  const unsigned char* e = &tail[eocd];
  uint64_t entries = le(e + 10, 2), cd_size = le(e + 12, 4), cd_offset = le(e + 16, 4);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    // zip64: a locator 20 bytes before the record points at the zip64 record.
    const uint64_t at = size - tail_len + static_cast<uint64_t>(eocd);
    unsigned char loc[20], rec[56];
    if (at < 20 || !read_at(at - 20, loc, 20) || le(loc, 4) != 0x07064b50u) return cut;
    if (!read_at(le(loc + 8, 8), rec, 56) || le(rec, 4) != 0x06064b50u) return cut;
    entries = le(rec + 32, 8), cd_size = le(rec + 40, 8), cd_offset = le(rec + 48, 8);
  }
  if (cd_offset > size || cd_size > size - cd_offset) return cut;
  std::vector<unsigned char> cd(cd_size);
  if (!read_at(cd_offset, cd.data(), cd_size)) return cut;

  std::vector<unsigned char> buffer(1 << 20);
  uint64_t pos = 0;
  for (uint64_t k = 0; k < entries; ++k) {
    if (pos + 46 > cd_size || le(&cd[pos], 4) != 0x02014b50u) return cut;
    const unsigned char* c = &cd[pos];
    const uint64_t method = le(c + 10, 2), crc = le(c + 16, 4);
    uint64_t comp = le(c + 20, 4), uncomp = le(c + 24, 4), offset = le(c + 42, 4);
    const uint64_t name_len = le(c + 28, 2), extra_len = le(c + 30, 2), comment = le(c + 32, 2);
    if (pos + 46 + name_len + extra_len + comment > cd_size) return cut;
    const std::string name(reinterpret_cast<const char*>(c + 46), name_len);
    // zip64 extra field (id 1): 8-byte values for the fields saturated above, in order.
    for (uint64_t x = 0; x + 4 <= extra_len;) {
      const unsigned char* field = c + 46 + name_len + x;
      const uint64_t id = le(field, 2), len = le(field + 2, 2);
      if (x + 4 + len > extra_len) return cut;  // a field longer than the extra area
      if (id == 1) {
        uint64_t at = 4;
        for (uint64_t* v : {&uncomp, &comp, &offset}) {
          const uint64_t saturated = 0xFFFFFFFFu;
          if (*v == saturated && at + 8 <= 4 + len) { *v = le(field + at, 8); at += 8; }
        }
      }
      x += 4 + len;
    }
    unsigned char local[30];
    if (!read_at(offset, local, 30) || le(local, 4) != 0x04034b50u) return cut;
    const uint64_t data = offset + 30 + le(local + 26, 2) + le(local + 28, 2);
    if (data > size || comp > size - data) return cut;
    const auto damaged = [&](const char* why) {
      return "a damaged zip archive (entry '" + shown(name) + "': " + why + ")";
    };
    // The entry's CRC-32 as read (stored) or inflated (deflated); none where
    // it is left unchecked (no inflate, or a reader that does not reach it).
    std::optional<uint32_t> got;
    if (method == 0) {
      if (comp != uncomp) return damaged("sizes disagree");
      got = 0;
      for (uint64_t done = 0; done < comp;) {
        const uint64_t n = std::min<uint64_t>(buffer.size(), comp - done);
        if (!read_at(data + done, buffer.data(), n)) return cut;
        got = crc32_update(*got, buffer.data(), n);
        done += n;
      }
    } else if (inflate) {
      // Deflate shrinks at most 1032:1: a larger recorded size is damage, not
      // an allocation to make.
      if (uncomp > comp * 1032 + 64) return damaged("sizes disagree");
      std::optional<std::string> bytes;
      try {
        bytes = inflate(name, offset);
      } catch (const std::exception&) {
        return damaged("does not inflate");
      }
      if (bytes) {
        if (bytes->size() != uncomp) return damaged("sizes disagree");
        got = crc32_update(0, reinterpret_cast<const unsigned char*>(bytes->data()),
                           bytes->size());
      }
    }
    if (got && *got != crc) return damaged("Bad CRC-32");
    pos += 46 + name_len + extra_len + comment;
  }
  return "";
}

}  // namespace lstm_ext::zip_check
