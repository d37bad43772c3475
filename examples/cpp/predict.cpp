// lstm_ext_predict: run a scripted lstm_ext model from C++, without Python.
//
//   lstm_ext_predict MODEL.pt [INPUT.csv | -] [--stream [--latency]] [--gradients]
//                    [--threads N]
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
#include <torch/csrc/jit/runtime/jit_exception.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

const char* const kUsage =
    "usage: lstm_ext_predict MODEL.pt [INPUT.csv | -] [--stream [--latency]] [--gradients] "
    "[--threads N]";
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

struct Predictor {
  torch::jit::Module& model;
  std::string model_name;
  std::string input_name;
  const Rows& rows;
  torch::Tensor x;  // (1, steps, input_size), read only

  torch::Tensor forward() const {
    const c10::IValue out = guarded(model_name, "forward", [&] { return model.forward({x}); });
    if (!out.isTensor()) {
      throw UsageError(model_name + ": forward returned " + out.tagKind() +
                       ", but a Tensor is expected");
    }
    return out.toTensor();
  }

  std::vector<torch::Tensor> stream() const {
    const auto step = model.find_method("step");
    if (!step) {
      throw UsageError(model_name + ": has no step(x, state) method, which --stream needs "
                       "(export a Forecaster or an LSTMModel)");
    }
    std::vector<torch::Tensor> predictions;
    c10::IValue state;  // None: the model starts from zeros
    for (int64_t t = 0; t < x.size(1); ++t) {
      const std::string doing =
          "step at " + input_name + " line " + std::to_string(rows.line_numbers[t]);
      const c10::IValue out = guarded(model_name, doing, [&] {
        return (*step)({x.select(1, t), state});
      });
      if (!out.isTuple() || out.toTupleRef().elements().size() != 2 ||
          !out.toTupleRef().elements()[0].isTensor()) {
        throw UsageError(model_name + ": " + doing + " returned " + out.tagKind() +
                         ", but (Tensor, state) is expected");
      }
      predictions.push_back(out.toTupleRef().elements()[0].toTensor());
      state = out.toTupleRef().elements()[1];
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

torch::jit::Module load_model(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw UsageError("model file '" + path + "' is a directory");
  }
  if (!std::ifstream(path).good()) {
    throw UsageError("model file '" + path + "' does not exist or cannot be read");
  }
  try {
    return torch::jit::load(path);
  } catch (const std::exception& e) {  // c10::Error, or a TorchScript ErrorReport
    const std::string what = e.what();
    if (what.find("Unknown builtin op") != std::string::npos ||
        what.find("Unknown type name") != std::string::npos) {
      throw UsageError("model '" + path +
                       "' uses an op that is not registered in this program (is the op "
                       "library linked?): " + first_line(what));
    }
    throw UsageError("cannot load model '" + path +
                     "' (not a TorchScript file, or corrupt): " + error_summary(e));
  }
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool stream = false, latency = false, gradients = false;
  int threads = 0;
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
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "%s\n\n"
          "Loads a scripted lstm_ext model and prints its predictions for INPUT (a file, or\n"
          "- / nothing for standard input): one time step per line, input_size\n"
          "comma-separated finite numbers; a first line of text is a header.\n\n"
          "  --stream      feed the steps one at a time through step(x, state), carrying the\n"
          "                state, and print the predictions after each step\n"
          "  --latency     with --stream: time step() and print the median and p90 on stderr\n"
          "  --gradients   print the gradient of sum(forward(input)) for each parameter\n"
          "  --threads N   also run the model from N threads at once (%d times each) and\n"
          "                check that every result is bitwise equal to the serial one\n\n"
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
  torch::jit::Module model = load_model(model_name);
  model.eval();
  if (!model.hasattr("input_size") || !model.attr("input_size").isInt()) {
    throw UsageError("model '" + model_name + "' has no integer input_size attribute: export "
                     "it with `python -m lstm_ext export`");
  }
  const int64_t width = model.attr("input_size").toInt();
  if (width < 1) {
    throw UsageError("model '" + model_name + "' has input_size " + std::to_string(width) +
                     ", expected at least 1");
  }
  torch::ScalarType dtype = torch::kFloat;
  for (const auto& p : model.parameters()) {
    dtype = p.scalar_type();
    break;
  }
  // A Forecaster forecasts from the changes between values: forward needs two.
  const bool forecaster = model.hasattr("window") && model.hasattr("horizon");

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
  if (forecaster && calls_forward && steps < 2) {
    throw UsageError(input_name + " is too short: 1 value, but a forecaster needs at least 2 "
                     "values (--stream alone forecasts from one)");
  }
  std::vector<double> flat;
  flat.reserve(steps * width);
  for (const auto& row : rows.values) flat.insert(flat.end(), row.begin(), row.end());
  const torch::Tensor x =
      torch::from_blob(flat.data(), {1, steps, width}, torch::kDouble).to(dtype).clone();
  const Predictor predictor{model, model_name, input_name, rows, x};

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
    auto step = model.get_method("step");
    c10::IValue state;
    std::vector<double> micros;
    const std::vector<torch::Tensor> inputs = x.unbind(1);
    while (micros.size() < 5000) {
      for (const auto& xt : inputs) {
        const auto start = std::chrono::steady_clock::now();
        auto result = step({xt, state}).toTuple();
        state = result->elements()[1];
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
