// lstm_ext::model_file_damage(path): why a model file (a TorchScript .pt, an
// AOTInductor .pt2 package) must not be loaded, or "" if nothing is wrong with
// it as a zip archive. Call it before torch::jit::load or
// torch::inductor::AOTIModelPackageLoader: libtorch reads a zip without its
// checksums, so a bit flipped on disk or in a copy loads as another weight and
// a service forecasts from it, silently (lstm_ext/zip_check.h says more). The
// message is one line, such as
//   a damaged zip archive (entry 'model/data/6': Bad CRC-32)
//   a zip archive cut short or damaged (50453 bytes, no readable central
//   directory): was the copy interrupted?
//
// Stored entries (tensors, pickles, compiled code) are checked as read;
// deflated ones (TorchScript's code) are inflated by libtorch's own zip reader,
// opened only if the archive holds one. A deflated entry that reader does not
// reach (outside the archive's top folder, or in an archive it cannot open) is
// left unchecked: torch::jit::load does not read it either. torch writes a .pt2
// package's entries stored, so each of them is checked. lstm_ext_predict
// (examples/cpp) and the find_package example (examples/cpp/consumer) call it;
// Python makes the same check (lstm_ext/export/archive.py).
#pragma once

#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include <lstm_ext/zip_check.h>

namespace lstm_ext {

inline std::string model_file_damage(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  bool unreadable = false;
  const auto inflate = [&](const std::string& name,
                           uint64_t header_offset) -> std::optional<std::string> {
    if (!reader && !unreadable) {
      try {
        reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
      } catch (const std::exception&) {
        unreadable = true;  // not an archive libtorch reads: its loader says why
      }
    }
    // The reader names records without the archive's top folder ("model/"),
    // and reads only those under its own.
    const auto slash = name.find('/');
    if (unreadable || slash == std::string::npos) return std::nullopt;
    const std::string record = name.substr(slash + 1);
    if (!reader->hasRecord(record) || reader->getRecordHeaderOffset(record) != header_offset) {
      return std::nullopt;
    }
    // Into a buffer of the recorded size, zeroed: where the stream does not
    // inflate, libtorch's miniz may return without an error and leave it
    // partly unwritten, and the checksum then fails on defined bytes.
    std::string bytes(reader->getRecordSize(record), '\0');
    reader->getRecord(record, bytes.data(), bytes.size());
    return bytes;
  };
  return zip_check::zip_damage(path, inflate);
}

}  // namespace lstm_ext
