// lstm_ext_predict: run a scripted lstm_ext model from C++, without Python.
//
//   lstm_ext_predict MODEL.pt [INPUT.csv | -] [--stream [--latency]]
//
// INPUT holds one time step per line, `input_size` comma-separated numbers (a
// first line that is not numeric is taken as a header). Without --stream the
// whole sequence goes through forward() once and one line of predictions is
// printed. With --stream the steps are fed one at a time through the model's
// step(x, state) method, carrying the recurrent state across calls as a
// service would, and a line of predictions is printed after each step.
// --latency (with --stream) also times each step() call over repeated passes
// of the input and prints the median and 90th percentile on stderr.
// --gradients backpropagates sum(forward(input)) through the model in C++
// (the ops' C++ autograd, no Python) and prints each parameter's name and
// gradient, flattened, one per line: what fine-tuning in a service builds on.
// Errors (missing or corrupt model, ops not registered, malformed input) are
// reported on stderr with exit status 2.
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The first non-empty line of a (often multi-line) torch error message.
std::string first_line(const std::string& text) {
  std::stringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find_first_not_of(" \t") != std::string::npos) return line;
  }
  return text;
}

torch::jit::Module load_model(const std::string& path) {
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
                     "' (not a TorchScript file, or corrupt): " + first_line(what));
  }
}

// Rows of numbers, each exactly `width` wide.
std::vector<std::vector<double>> read_rows(std::istream& in, const std::string& name,
                                           int64_t width) {
  std::vector<std::vector<double>> rows;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::vector<double> values;
    std::stringstream fields(line);
    std::string field;
    bool numeric = true;
    while (std::getline(fields, field, ',')) {
      try {
        size_t used = 0;
        values.push_back(std::stod(field, &used));
        if (field.find_first_not_of(" \t", used) != std::string::npos) numeric = false;
      } catch (const std::exception&) {
        numeric = false;
      }
      if (!numeric) {
        if (rows.empty() && line_no == 1) break;  // a header line
        throw UsageError(name + " line " + std::to_string(line_no) + ", column " +
                         std::to_string(values.size() + (numeric ? 0 : 1)) + ": '" + field +
                         "' is not a number");
      }
    }
    if (!numeric) continue;
    if (static_cast<int64_t>(values.size()) != width) {
      throw UsageError(name + " line " + std::to_string(line_no) + " has " +
                       std::to_string(values.size()) + " values, but the model takes " +
                       std::to_string(width) + " (its input_size)");
    }
    rows.push_back(std::move(values));
  }
  if (rows.empty()) throw UsageError(name + " holds no rows of numbers");
  return rows;
}

void print_row(const torch::Tensor& t) {
  const auto v = t.to(torch::kDouble).contiguous().reshape({-1});
  const double* p = v.data_ptr<double>();
  for (int64_t i = 0; i < v.numel(); ++i) std::printf(i ? ",%.9g" : "%.9g", p[i]);
  std::printf("\n");
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool stream = false, latency = false, gradients = false;
  std::vector<std::string> positional;
  for (const auto& a : args) {
    if (a == "--stream") {
      stream = true;
    } else if (a == "--latency") {
      latency = true;
    } else if (a == "--gradients") {
      gradients = true;
    } else if (a == "-h" || a == "--help") {
      std::printf("usage: lstm_ext_predict MODEL.pt [INPUT.csv | -] [--stream [--latency]]\n");
      return 0;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.empty() || positional.size() > 2) {
    throw UsageError("usage: lstm_ext_predict MODEL.pt [INPUT.csv | -] [--stream [--latency]]");
  }
  if (latency && !stream) throw UsageError("--latency times streaming steps: add --stream");
  torch::jit::Module model = load_model(positional[0]);
  model.eval();
  if (!model.hasattr("input_size")) {
    throw UsageError("model '" + positional[0] + "' has no input_size attribute: export it "
                     "with `python -m lstm_ext export`");
  }
  const int64_t width = model.attr("input_size").toInt();
  torch::ScalarType dtype = torch::kFloat;
  for (const auto& p : model.parameters()) {
    dtype = p.scalar_type();
    break;
  }

  const std::string input = positional.size() > 1 ? positional[1] : "-";
  std::vector<std::vector<double>> rows;
  if (input == "-") {
    rows = read_rows(std::cin, "standard input", width);
  } else {
    std::ifstream file(input);
    if (!file.good()) throw UsageError("input file '" + input + "' does not exist or cannot be read");
    rows = read_rows(file, input, width);
  }
  auto x = torch::empty({1, static_cast<int64_t>(rows.size()), width}, torch::kDouble);
  for (size_t t = 0; t < rows.size(); ++t) {
    for (int64_t j = 0; j < width; ++j) x[0][t][j] = rows[t][j];
  }
  x = x.to(dtype);

  if (gradients) {
    model.train();
    for (auto p : model.parameters()) p.mutable_grad() = torch::Tensor();
    model.forward({x}).toTensor().sum().backward();
    for (const auto& p : model.named_parameters()) {
      std::printf("%s,", p.name.c_str());
      print_row(p.value.grad());
    }
    return 0;
  }
  torch::NoGradGuard no_grad;
  if (!stream) {
    print_row(model.forward({x}).toTensor());
    return 0;
  }
  auto step = model.get_method("step");
  c10::IValue state;  // None: the model starts from zeros
  for (size_t t = 0; t < rows.size(); ++t) {
    auto result = step({x.select(1, t), state}).toTuple();
    print_row(result->elements()[0].toTensor());
    state = result->elements()[1];
  }
  if (latency) {
    std::vector<double> micros;
    const std::vector<torch::Tensor> steps = x.unbind(1);
    while (micros.size() < 5000) {
      for (const auto& xt : steps) {
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

} // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: the model failed: %s\n", first_line(e.what()).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 2;
}
