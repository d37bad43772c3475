// lstm_ext_consumer: calls lstm_ext's layer op from C++ through the installed
// package's header and op library (find_package(lstm_ext)), and, given a .pt2
// package (lstm_ext.export.export_pt2), runs it: the op library is linked, so
// its ops are registered before the package loads.
//
//   lstm_ext_consumer             prints output, h_n, c_n sums of one layer call
//   lstm_ext_consumer MODEL.pt2   also prints the package's forward on ones
#include <lstm_ext/lstm_ext.h>
#include <lstm_ext/model_file.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>
#include <stdexcept>
#include <string>

int main(int argc, char** argv) {
  try {
    const int64_t T = 5, B = 3, I = 4, H = 6;
    // Deterministic inputs that the test recomputes in Python.
    auto values = [](int64_t n, double scale) {
      return torch::sin(torch::arange(n, torch::kDouble) * scale).to(torch::kFloat);
    };
    const auto x = values(T * B * I, 0.7).reshape({T, B, I});
    const auto h0 = values(B * H, 0.3).reshape({B, H}) * 0.5;
    const auto c0 = values(B * H, 0.5).reshape({B, H}) * 0.5;
    const auto w_ih = values(4 * H * I, 1.1).reshape({4 * H, I}) * 0.4;
    const auto w_hh = values(4 * H * H, 1.3).reshape({4 * H, H}) * 0.4;
    const auto b_ih = values(4 * H, 1.7) * 0.1;
    const auto b_hh = values(4 * H, 1.9) * 0.1;
    auto [out, hy, cy, gates, cs] = lstm_ext::ops::lstm_layer_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, /*lengths=*/std::nullopt, /*w_hr=*/std::nullopt);
    std::printf("lstm_ext %s layer: %.9g,%.9g,%.9g\n", LSTM_EXT_VERSION,
                out.sum().item<double>(), hy.sum().item<double>(), cy.sum().item<double>());
    if (argc > 1) {
      // libtorch loads a zip archive without its checksums: checked first.
      const std::string damage = lstm_ext::model_file_damage(argv[1]);
      if (!damage.empty()) {
        throw std::runtime_error("cannot load '" + std::string(argv[1]) + "': " + damage);
      }
      torch::inductor::AOTIModelPackageLoader loader(argv[1]);
      const auto meta = loader.get_metadata();
      const int64_t width = std::stoll(meta.at("lstm_ext.input_size"));
      const auto y = loader.run({torch::ones({1, 12, width})})[0];
      std::printf("pt2 forward: %.9g\n", y.sum().item<double>());
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "lstm_ext_consumer: %s\n", what.substr(0, what.find('\n')).c_str());
    return 2;
  }
  return 0;
}
