// lstm_ext_predict: run an exported lstm_ext model from C++, without Python.
//
//   lstm_ext_predict MODEL.pt|MODEL.pt2 [INPUT.csv | -] [--stream [--latency]]
//                    [--gradients] [--threads N] [--op-library PATH]
//
// MODEL is a scripted model (TorchScript, `.pt`) or an AOTInductor package
// (`.pt2`, written by lstm_ext.export.export_pt2 or `python -m lstm_ext export
// --format pt2`), run with torch::inductor::AOTIModelPackageLoader. Either
// calls lstm_ext's ops, so the op library is loaded first (dlopen), before the
// model: liblstm_ext_ops.so next to this program, or --op-library PATH (say the
// Python package's lstm_ext/_C.abi3.so, lstm_ext.library_path()). A .pt2 names
// the ops it needs in its metadata; each is checked to be registered before
// the package loads, and its exported batch and sequence ranges are enforced
// (the compiled code does not check them). A .pt2 streams through its
// step_start / step programs (state in, state out); --gradients needs a .pt.
//
// INPUT holds one time step per line, `input_size` comma-separated finite
// numbers within the range of the model's dtype (a first line with a text field
// such as `co2` is taken as a header; blank lines are skipped). Without --stream
// the whole sequence goes through forward() once and one line of predictions is
// printed. With --stream the steps are fed one at a time through the model's
// step(x, state) method, carrying the recurrent state across calls as a
// service would, and a line of predictions is printed after each step.
// --latency (with --stream) also times each step() call over repeated passes
// of the input and prints the median and 90th percentile on stderr.
// --gradients backpropagates sum(forward(input)) through the model in C++
// (the ops' C++ autograd, no Python) and prints each parameter's name and
// gradient, flattened, one per line: what fine-tuning in a service builds on.
// --threads N runs the loaded model from N threads at once, each repeating the
// whole-window prediction (and with --stream the streaming one) several times,
// checks that every result is bitwise equal to the serial one, and says so in
// one line on stderr; the printed predictions are the serial run's. A mismatch,
// or a failure in a thread only, exits with status 1.
// Bad input (missing or corrupt model, ops not registered, a model that fails
// on the input, malformed or non-finite numbers, bad options) is reported as one
// line on stderr with exit status 2.
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/runtime/jit_exception.h>
#include <torch/script.h>

#include "lstm_ext/model_file.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

const char* const kUsage =
    "usage: lstm_ext_predict MODEL.pt|MODEL.pt2 [INPUT.csv | -] [--stream [--latency]] "
    "[--gradients] [--threads N] [--op-library PATH]";
const char* const kPt2Format = "lstm_ext.pt2/1";
constexpr int kMaxThreads = 1024;
constexpr int kThreadRepetitions = 10;

// Bad input or options: one line on stderr, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The --threads check found a difference, or a thread failed where the serial
// run did not: exit status 1.
struct CheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The first non-empty line of a (often multi-line) torch error message.
std::string first_line(const std::string& text) {
  std::stringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) return line;
  }
  return text;
}

std::string without_builtins(std::string text) {
  const std::string prefix = "builtins.";
  if (text.compare(0, prefix.size(), prefix) == 0) text.erase(0, prefix.size());
  return text;
}

// `ValueError: ...`, `RuntimeError: ...`, `torch.jit.Error: ...`: the line the
// TorchScript interpreter writes after its traceback.
bool is_exception_line(const std::string& line) {
  const size_t colon = line.find(": ");
  if (colon == std::string::npos || colon == 0) return false;
  const std::string name = line.substr(0, colon);
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  }
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with("Error") || ends_with("Exception");
}

// One line that says what went wrong, without the TorchScript traceback or the
// C++ backtrace: the Python exception a scripted `raise` made, else the
// exception line after the traceback, else the first line of the message.
std::string error_summary(const std::exception& e) {
  if (const auto* jit = dynamic_cast<const torch::jit::JITException*>(&e)) {
    if (const auto original = jit->getOriginalMsg()) {
      return without_builtins(jit->getPythonClassName().value_or("Exception")) + ": " +
             first_line(*original);
    }
  }
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  const std::string text = c10_error ? c10_error->what_without_backtrace() : e.what();
  const size_t traceback = text.rfind("Traceback of TorchScript");
  if (traceback != std::string::npos) {
    std::stringstream lines(text.substr(traceback));
    std::string line;
    while (std::getline(lines, line)) {
      if (is_exception_line(line)) return without_builtins(line);
    }
  }
  return first_line(text);
}

// Runs `call`; a failure becomes `<model>: <doing> failed: <summary>`.
template <typename Call>
auto guarded(const std::string& model_name, const std::string& doing, Call&& call)
    -> decltype(call()) {
  try {
    return call();
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception& e) {
    throw UsageError(model_name + ": " + doing + " failed: " + error_summary(e));
  }
}

// A field as it may be shown in a message: at most 40 characters, odd bytes escaped.
std::string quoted(const std::string& text) {
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  if (text.size() > 40) out += "...";
  return out + "'";
}

std::string trimmed(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(" \t") - begin + 1);
}

// The comma-separated fields of a line, empty ones included: "2," is "2" and "".
std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    fields.push_back(trimmed(line.substr(start, comma == std::string::npos ? std::string::npos
                                                                             : comma - start)));
    if (comma == std::string::npos) return fields;
    start = comma + 1;
  }
}

enum class Field { number, empty, not_a_number, not_finite };

// The whole field as one number (strtod's syntax, in the "C" locale).
Field parse_field(const std::string& field, double& value) {
  if (field.empty()) return Field::empty;
  char* end = nullptr;
  errno = 0;
  value = std::strtod(field.c_str(), &end);
  if (end == field.c_str() || end != field.c_str() + field.size()) return Field::not_a_number;
  if (!std::isfinite(value)) return Field::not_finite;  // nan, inf, or beyond double: 1e400
  return Field::number;
}

// A header field: text, not a number with junk after it (`co2`, `nanoseconds`,
// `# co2` as numpy.savetxt writes it; not `2x`).
bool is_text(const std::string& field) {
  double unused;
  if (field.empty() || parse_field(field, unused) != Field::not_a_number) return false;
  const unsigned char c = static_cast<unsigned char>(field[0]);
  return std::isalpha(c) || c == '_' || c == '"' || c == '\'' || c == '#';
}

std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat: return "float32";
    case torch::kDouble: return "float64";
    case torch::kHalf: return "float16";
    case torch::kBFloat16: return "bfloat16";
    default: return c10::toString(dtype);
  }
}

double largest_finite(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kDouble: return std::numeric_limits<double>::max();
    case torch::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::max());
    case torch::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
    default: return std::numeric_limits<float>::max();
  }
}

struct Rows {
  std::vector<std::vector<double>> values;
  std::vector<int64_t> line_numbers;  // where each row is in the input
};

// Rows of finite numbers, each exactly `width` wide and within `dtype`'s range.
Rows read_rows(std::istream& in, const std::string& name, int64_t width,
               torch::ScalarType dtype) {
  Rows rows;
  std::string line;
  int64_t line_no = 0;
  bool first = true;
  const double largest = largest_finite(dtype);
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);  // BOM
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::vector<std::string> fields = split_fields(line);
    if (first) {
      first = false;
      if (std::any_of(fields.begin(), fields.end(), is_text)) continue;  // a header line
    }
    const std::string where = name + " line " + std::to_string(line_no);
    std::vector<double> values;
    for (size_t i = 0; i < fields.size(); ++i) {
      const std::string at = where + ", column " + std::to_string(i + 1) + ": ";
      double value = 0;
      switch (parse_field(fields[i], value)) {
        case Field::empty:
          throw UsageError(at + "empty field (a stray comma?); expected a number");
        case Field::not_a_number:
          throw UsageError(at + quoted(fields[i]) + " is not a number");
        case Field::not_finite:
          throw UsageError(at + quoted(fields[i]) + " is not a finite number");
        case Field::number:
          break;
      }
      if (std::abs(value) > largest) {
        char limit[32];
        std::snprintf(limit, sizeof limit, "%.9g", largest);
        throw UsageError(at + fields[i] + " is beyond the " + dtype_name(dtype) +
                         " range of the model (magnitude at most " + limit + ")");
      }
      values.push_back(value);
    }
    if (static_cast<int64_t>(values.size()) != width) {
      throw UsageError(where + " has " + std::to_string(values.size()) +
                       " values, but the model takes " + std::to_string(width) +
                       " (its input_size)");
    }
    rows.values.push_back(std::move(values));
    rows.line_numbers.push_back(line_no);
  }
  if (in.bad()) throw UsageError("cannot read " + name);
  if (rows.values.empty()) throw UsageError(name + " holds no rows of numbers");
  return rows;
}

void print_row(const torch::Tensor& t) {
  const auto v = t.to(torch::kDouble).contiguous().reshape({-1});
  const double* p = v.data_ptr<double>();
  for (int64_t i = 0; i < v.numel(); ++i) std::printf(i ? ",%.9g" : "%.9g", p[i]);
  std::printf("\n");
}

// --threads N: an integer from 1 to kMaxThreads, nothing else.
int parse_threads(const std::string& text) {
  const bool digits = !text.empty() && text.size() <= 4 &&
                      std::all_of(text.begin(), text.end(),
                                  [](char c) { return c >= '0' && c <= '9'; });
  const int n = digits ? std::atoi(text.c_str()) : 0;
  if (n < 1 || n > kMaxThreads) {
    throw UsageError("--threads expects an integer from 1 to " + std::to_string(kMaxThreads) +
                     ", got " + quoted(text));
  }
  return n;
}

// What one run of the model gives: the whole-window forecast and/or one
// forecast per streamed step.
struct Prediction {
  torch::Tensor whole;
  std::vector<torch::Tensor> steps;
};

// An AOTInductor package written by lstm_ext.export.export_pt2: its programs
// ("model", and for streaming "step_start" and "step") and what its metadata
// says about them.
struct Pt2Package {
  std::map<std::string, std::string> meta;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model, step_start, step;
  int64_t input_size = 1;
  torch::ScalarType dtype = torch::kFloat;
  bool batch_first = true;
  int64_t steps_min = 1, steps_max = 1, batch_min = 1, batch_max = 1;

  // x (1, steps, input_size) as the program takes it.
  torch::Tensor layout(const torch::Tensor& x) const {
    return (batch_first ? x : x.transpose(0, 1)).contiguous();
  }
};

struct Predictor {
  torch::jit::Module* script;  // one of these two
  Pt2Package* pt2;
  std::string model_name;
  std::string input_name;
  const Rows& rows;
  torch::Tensor x;  // (1, steps, input_size), read only

  // One program of the package: its first output and the rest.
  std::vector<torch::Tensor> run_pt2(torch::inductor::AOTIModelPackageLoader& program,
                                     std::vector<torch::Tensor> inputs,
                                     const std::string& doing) const {
    std::vector<torch::Tensor> out =
        guarded(model_name, doing, [&] { return program.run(inputs); });
    if (out.empty()) throw UsageError(model_name + ": " + doing + " returned no tensor");
    return out;
  }

  // One streaming step: (prediction, state); state None at the start.
  std::pair<torch::Tensor, c10::IValue> step_once(const torch::Tensor& xt,
                                                  const c10::IValue& state,
                                                  const std::string& doing) const {
    if (pt2) {
      std::vector<torch::Tensor> inputs{xt.contiguous()};
      if (!state.isNone()) {
        for (const auto& t : state.toTensorVector()) inputs.push_back(t);
      }
      auto out = run_pt2(state.isNone() ? *pt2->step_start : *pt2->step, std::move(inputs), doing);
      torch::Tensor pred = out[0];
      out.erase(out.begin());
      return {pred, c10::IValue(out)};
    }
    const c10::IValue out = guarded(model_name, doing, [&] {
      return script->get_method("step")({xt, state});
    });
    if (!out.isTuple() || out.toTupleRef().elements().size() != 2 ||
        !out.toTupleRef().elements()[0].isTensor()) {
      throw UsageError(model_name + ": " + doing + " returned " + out.tagKind() +
                       ", but (Tensor, state) is expected");
    }
    return {out.toTupleRef().elements()[0].toTensor(), out.toTupleRef().elements()[1]};
  }

  torch::Tensor forward() const {
    if (pt2) return run_pt2(*pt2->model, {pt2->layout(x)}, "forward")[0];
    torch::jit::Module& model = *script;
    const c10::IValue out = guarded(model_name, "forward", [&] { return model.forward({x}); });
    if (!out.isTensor()) {
      throw UsageError(model_name + ": forward returned " + out.tagKind() +
                       ", but a Tensor is expected");
    }
    return out.toTensor();
  }

  void check_step() const {
    if (pt2 ? !pt2->step : !script->find_method("step")) {
      throw UsageError(model_name + ": has no step(x, state) " +
                       std::string(pt2 ? "program" : "method") +
                       ", which --stream needs (export a Forecaster or an LSTMModel)");
    }
  }

  std::vector<torch::Tensor> stream() const {
    check_step();
    std::vector<torch::Tensor> predictions;
    c10::IValue state;  // None: the model starts from zeros
    for (int64_t t = 0; t < x.size(1); ++t) {
      const std::string doing =
          "step at " + input_name + " line " + std::to_string(rows.line_numbers[t]);
      auto [prediction, next] = step_once(x.select(1, t), state, doing);
      predictions.push_back(prediction);
      state = std::move(next);
    }
    return predictions;
  }

  Prediction predict(bool whole, bool streaming) const {
    torch::NoGradGuard no_grad;  // grad mode is per thread
    Prediction p;
    if (whole) p.whole = forward();
    if (streaming) p.steps = stream();
    return p;
  }
};

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

// "" when equal, else how they differ.
std::string difference(const torch::Tensor& got, const torch::Tensor& expected) {
  if (bitwise_equal(got, expected)) return "";
  std::ostringstream out;
  if (got.scalar_type() != expected.scalar_type() || got.sizes() != expected.sizes()) {
    out << "got " << dtype_name(got.scalar_type()) << got.sizes() << ", serial run gave "
        << dtype_name(expected.scalar_type()) << expected.sizes();
  } else {
    const double diff = (got.to(torch::kDouble) - expected.to(torch::kDouble))
                            .abs()
                            .nan_to_num(std::numeric_limits<double>::infinity())
                            .max()
                            .item<double>();
    out << "max abs difference " << diff;
  }
  return out.str();
}

// Runs `predictor` from `n` threads at once, kThreadRepetitions times each,
// and compares every result with `serial` bit for bit.
void check_threads(const Predictor& predictor, const Prediction& serial, bool streaming, int n) {
  std::vector<std::string> failures(n);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < n) std::this_thread::yield();  // start together
      for (int r = 1; r <= kThreadRepetitions && failures[i].empty(); ++r) {
        const std::string who =
            "thread " + std::to_string(i + 1) + ", repetition " + std::to_string(r) + ": ";
        try {
          const Prediction p = predictor.predict(true, streaming);
          std::string diff = difference(p.whole, serial.whole);
          if (!diff.empty()) {
            failures[i] = who + "the whole-window forecast differs from the serial run's (" +
                          diff + ")";
          }
          for (size_t t = 0; t < p.steps.size() && failures[i].empty(); ++t) {
            diff = difference(p.steps[t], serial.steps[t]);
            if (!diff.empty()) {
              failures[i] = who + "the streaming forecast at " + predictor.input_name +
                            " line " + std::to_string(predictor.rows.line_numbers[t]) +
                            " differs from the serial run's (" + diff + ")";
            }
          }
        } catch (const std::exception& e) {
          failures[i] = who + e.what();
        } catch (...) {
          failures[i] = who + "an unknown exception";
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto failed = std::find_if(failures.begin(), failures.end(),
                                   [](const std::string& f) { return !f.empty(); });
  if (failed != failures.end()) {
    const auto count = std::count_if(failures.begin(), failures.end(),
                                     [](const std::string& f) { return !f.empty(); });
    throw CheckFailed("--threads " + std::to_string(n) + ": " + std::to_string(count) + " of " +
                      std::to_string(n) + " threads disagree with the serial run; first: " +
                      *failed);
  }
  std::fprintf(stderr,
               "lstm_ext_predict: --threads %d: %d threads x %d repetitions of the whole-window "
               "forecast%s: every result bitwise equal to the serial run's\n",
               n, n, kThreadRepetitions,
               streaming ? (" and the streaming steps (" + std::to_string(serial.steps.size()) +
                            ")").c_str()
                         : "");
}

void check_model_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw UsageError("model file '" + path + "' is a directory");
  }
  if (!std::ifstream(path).good()) {
    throw UsageError("model file '" + path + "' does not exist or cannot be read");
  }
  // libtorch reads a zip without its checksums (lstm_ext/model_file.h).
  const std::string damage = lstm_ext::model_file_damage(path);
  if (!damage.empty()) throw UsageError("cannot load model '" + path + "': " + damage);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The op library, loaded before any model: --op-library PATH, else
// liblstm_ext_ops.so next to this program. Its static registrations run here.
void load_op_library(std::string path) {
  if (path.empty()) {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    path = (ec ? std::filesystem::path(".") : self.parent_path()) / "liblstm_ext_ops.so";
  }
  if (!dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
    const char* why = dlerror();
    throw UsageError("cannot load the op library '" + path + "' (" +
                     first_line(why ? why : "unknown error") +
                     "); build it (make cpp) or name it with --op-library PATH");
  }
}

int64_t metadata_int(const Pt2Package& p, const std::string& path, const std::string& key) {
  const auto it = p.meta.find(key);
  try {
    if (it != p.meta.end()) return std::stoll(it->second);
  } catch (const std::exception&) {
  }
  throw UsageError("model '" + path + "': metadata '" + key + "' is missing or malformed " +
                   "(re-export it with lstm_ext.export.export_pt2)");
}

void metadata_range(const Pt2Package& p, const std::string& path, const std::string& key,
                    int64_t& low, int64_t& high) {
  const auto it = p.meta.find(key);
  if (it == p.meta.end() ||
      std::sscanf(it->second.c_str(), "%" SCNd64 ",%" SCNd64, &low, &high) != 2 || low > high) {
    throw UsageError("model '" + path + "': metadata '" + key + "' is missing or malformed " +
                     "(re-export it with lstm_ext.export.export_pt2)");
  }
}

// A .pt2 from lstm_ext.export.export_pt2, checked before its code loads: an
// archive, of our format, whose ops are registered in this program.
std::unique_ptr<Pt2Package> load_pt2(const std::string& path, int runners) {
  check_model_file(path);
  {
    std::ifstream file(path, std::ios::binary);
    char magic[4] = {0, 0, 0, 0};
    file.read(magic, 4);
    if (std::memcmp(magic, "PK\x03\x04", 4) != 0) {
      throw UsageError("cannot load model '" + path +
                       "': not a .pt2 package (not a zip archive; export one with `python -m "
                       "lstm_ext export --format pt2`)");
    }
  }
  auto p = std::make_unique<Pt2Package>();
  try {
    for (const auto& [key, value] :
         torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model")) {
      p->meta[key] = value;
    }
  } catch (const std::exception& e) {
    throw UsageError("cannot load model '" + path +
                     "' (not an AOTInductor .pt2 package, say a TorchScript model renamed, or "
                     "corrupt): " + error_summary(e));
  }
  const auto format = p->meta.find("lstm_ext.format");
  if (format == p->meta.end()) {
    throw UsageError("model '" + path + "' is an AOTInductor package, but not one of lstm_ext "
                     "(no lstm_ext.format in its metadata): export it with "
                     "lstm_ext.export.export_pt2");
  }
  if (format->second != kPt2Format) {
    throw UsageError("model '" + path + "' has format " + format->second +
                     ", but this program reads " + kPt2Format);
  }
  // Each op the package calls through the proxy executor must be registered:
  // the op library is loaded before the package, never after.
  std::stringstream ops(p->meta["lstm_ext.ops"]);
  std::string op;
  while (std::getline(ops, op, ',')) {
    if (!op.empty() && !c10::Dispatcher::singleton().findSchema({op, ""})) {
      throw UsageError("model '" + path + "' needs op " + op +
                       ", which is not registered in this program: load the op library "
                       "(liblstm_ext_ops.so, or lstm_ext's _C.abi3.so) before the package");
    }
  }
  p->input_size = metadata_int(*p, path, "lstm_ext.input_size");
  metadata_range(*p, path, "lstm_ext.steps_range", p->steps_min, p->steps_max);
  metadata_range(*p, path, "lstm_ext.batch_range", p->batch_min, p->batch_max);
  p->batch_first = p->meta["lstm_ext.layout"] != "time_first";
  const std::string dtype = p->meta["lstm_ext.dtype"];
  p->dtype = dtype == "float64" ? torch::kDouble : dtype == "float16" ? torch::kHalf
           : dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat;
  const bool steps = p->meta["lstm_ext.programs"].find("step") != std::string::npos;
  try {
    const size_t n = static_cast<size_t>(std::max(1, runners));
    p->model = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", false, n);
    if (steps) {
      p->step_start =
          std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "step_start", false, n);
      p->step = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "step", false, n);
    }
  } catch (const std::exception& e) {
    throw UsageError("cannot load model '" + path + "' (a damaged .pt2 package?): " +
                     error_summary(e));
  }
  return p;
}

torch::jit::Module load_model(const std::string& path) {
  check_model_file(path);
  try {
    return torch::jit::load(path);
  } catch (const std::exception& e) {  // c10::Error, or a TorchScript ErrorReport
    const std::string what = e.what();
    if (what.find("Unknown builtin op") != std::string::npos ||
        what.find("Unknown type name") != std::string::npos) {
      throw UsageError("model '" + path +
                       "' uses an op that is not registered in this program (is the op "
                       "library loaded?): " + first_line(what));
    }
    if (ends_with(path, ".pt2") || error_summary(e).find("constants.pkl") != std::string::npos) {
      throw UsageError("cannot load model '" + path + "' as TorchScript (an AOTInductor .pt2 "
                       "package? give it a .pt2 name): " + error_summary(e));
    }
    throw UsageError("cannot load model '" + path +
                     "' (not a TorchScript file, or corrupt): " + error_summary(e));
  }
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool stream = false, latency = false, gradients = false;
  int threads = 0;
  std::string op_library;
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--stream") {
      stream = true;
    } else if (a == "--latency") {
      latency = true;
    } else if (a == "--gradients") {
      gradients = true;
    } else if (a == "--threads") {
      if (i + 1 == args.size()) {
        throw UsageError("--threads needs a value: an integer from 1 to " +
                         std::to_string(kMaxThreads));
      }
      threads = parse_threads(args[++i]);
    } else if (a.compare(0, 10, "--threads=") == 0) {
      threads = parse_threads(a.substr(10));
    } else if (a == "--op-library") {
      if (i + 1 == args.size()) throw UsageError("--op-library needs a value: a library path");
      op_library = args[++i];
      if (op_library.empty()) throw UsageError("--op-library needs a value: a library path");
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "%s\n\n"
          "Loads an exported lstm_ext model (TorchScript .pt or AOTInductor .pt2) and prints\n"
          "its predictions for INPUT (a file, or\n"
          "- / nothing for standard input): one time step per line, input_size\n"
          "comma-separated finite numbers; a first line of text is a header.\n\n"
          "  --stream      feed the steps one at a time through step(x, state), carrying the\n"
          "                state, and print the predictions after each step\n"
          "  --latency     with --stream: time step() and print the median and p90 on stderr\n"
          "  --gradients   print the gradient of sum(forward(input)) for each parameter\n"
          "  --threads N   also run the model from N threads at once (%d times each) and\n"
          "                check that every result is bitwise equal to the serial one\n"
          "  --op-library PATH  the op library to load before the model (default:\n"
          "                liblstm_ext_ops.so next to this program)\n\n"
          "Exit status: 0 ok, 2 bad input or options (one line on stderr), 1 --threads\n"
          "found a difference.\n",
          kUsage, kThreadRepetitions);
      return 0;
    } else if (a.size() > 1 && a[0] == '-') {
      throw UsageError("unknown option " + quoted(a) + "; " + kUsage);
    } else {
      positional.push_back(a);
    }
  }
  if (positional.empty() || positional.size() > 2) throw UsageError(kUsage);
  if (latency && !stream) throw UsageError("--latency times streaming steps: add --stream");
  if (gradients && (stream || threads)) {
    throw UsageError("--gradients cannot be combined with --stream or --threads");
  }
  const std::string& model_name = positional[0];
  load_op_library(op_library);
  const bool is_pt2 = ends_with(model_name, ".pt2");
  if (is_pt2 && gradients) {
    throw UsageError("--gradients needs a TorchScript model (.pt): a .pt2 package is "
                     "compiled for inference only");
  }
  torch::jit::Module model;
  std::unique_ptr<Pt2Package> pt2;
  int64_t width = 0;
  torch::ScalarType dtype = torch::kFloat;
  int64_t min_steps = 1;  // a Forecaster needs 2: it forecasts from the changes
  if (is_pt2) {
    pt2 = load_pt2(model_name, threads);
    width = pt2->input_size;
    dtype = pt2->dtype;
    min_steps = pt2->steps_min;
  } else {
    model = load_model(model_name);
    model.eval();
    if (!model.hasattr("input_size") || !model.attr("input_size").isInt()) {
      throw UsageError("model '" + model_name + "' has no integer input_size attribute: export "
                       "it with `python -m lstm_ext export`");
    }
    width = model.attr("input_size").toInt();
    for (const auto& p : model.parameters()) {
      dtype = p.scalar_type();
      break;
    }
    if (model.hasattr("window") && model.hasattr("horizon")) min_steps = 2;
  }
  if (width < 1) {
    throw UsageError("model '" + model_name + "' has input_size " + std::to_string(width) +
                     ", expected at least 1");
  }

  const std::string input = positional.size() > 1 ? positional[1] : "-";
  const std::string input_name = input == "-" ? "standard input" : input;
  Rows rows;
  if (input == "-") {
    rows = read_rows(std::cin, input_name, width, dtype);
  } else {
    std::error_code ec;
    if (std::filesystem::is_directory(input, ec)) {
      throw UsageError("input file '" + input + "' is a directory");
    }
    std::ifstream file(input);
    if (!file.good()) {
      throw UsageError("input file '" + input + "' does not exist or cannot be read");
    }
    rows = read_rows(file, input_name, width, dtype);
  }
  const int64_t steps = static_cast<int64_t>(rows.values.size());
  const bool calls_forward = !stream || threads > 0;
  if (calls_forward && steps < min_steps) {
    throw UsageError(input_name + " is too short: " + std::to_string(steps) + " value" +
                     (steps == 1 ? "" : "s") + ", but " +
                     (is_pt2 ? "the package was exported for at least " +
                                   std::to_string(min_steps) + " steps"
                             : "a forecaster needs at least 2 values") +
                     " (--stream alone forecasts from one)");
  }
  if (pt2 && calls_forward && steps > pt2->steps_max) {
    throw UsageError(input_name + " has " + std::to_string(steps) + " rows, but '" + model_name +
                     "' was exported for sequences of " + std::to_string(pt2->steps_min) +
                     " to " + std::to_string(pt2->steps_max) + " steps");
  }
  std::vector<double> flat;
  flat.reserve(steps * width);
  for (const auto& row : rows.values) flat.insert(flat.end(), row.begin(), row.end());
  const torch::Tensor x =
      torch::from_blob(flat.data(), {1, steps, width}, torch::kDouble).to(dtype).clone();
  const Predictor predictor{pt2 ? nullptr : &model, pt2.get(), model_name, input_name, rows, x};

  if (gradients) {
    model.train();
    for (auto p : model.parameters()) p.mutable_grad() = torch::Tensor();
    const torch::Tensor out = predictor.forward();
    guarded(model_name, "backward", [&] {
      out.sum().backward();
      return 0;
    });
    for (const auto& p : model.named_parameters()) {
      std::printf("%s,", p.name.c_str());
      print_row(p.value.grad().defined() ? p.value.grad() : torch::zeros_like(p.value));
    }
    return 0;
  }

  const Prediction serial = predictor.predict(calls_forward, stream);
  if (threads > 0) check_threads(predictor, serial, stream, threads);
  if (!stream) {
    print_row(serial.whole);
  } else {
    for (const auto& prediction : serial.steps) print_row(prediction);
  }
  std::fflush(stdout);
  if (latency) {
    torch::NoGradGuard no_grad;
    c10::IValue state;
    std::vector<double> micros;
    const std::vector<torch::Tensor> inputs = x.unbind(1);
    while (micros.size() < 5000) {
      for (const auto& xt : inputs) {
        const auto start = std::chrono::steady_clock::now();
        state = predictor.step_once(xt, state, "step").second;
        micros.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count());
      }
    }
    std::sort(micros.begin(), micros.end());
    std::fprintf(stderr, "streaming step latency: median %.2f us, p90 %.2f us over %zu steps\n",
                 micros[micros.size() / 2], micros[micros.size() * 9 / 10], micros.size());
  }
  return 0;
}

// One line: a message never spills a traceback onto further lines.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  return text;
}

} // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "lstm_ext_predict: %s\n", one_line(e.what()).c_str());
  } catch (const CheckFailed& e) {
    std::fprintf(stderr, "lstm_ext_predict: %s\n", one_line(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lstm_ext_predict: %s\n", one_line(error_summary(e)).c_str());
  }
  return 2;
}
