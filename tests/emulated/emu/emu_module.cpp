// The test-only extension that runs ptcore's CUDA kernels on the CPU (tests/emulated): the
// ops as plain functions, and the emulation's settings.
#include <torch/extension.h>

#include "emu_ops.h"
#include "emu_runtime.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ptcore's CUDA kernels, emulated on the CPU (tests only)";
  m.def("kd_loss_rows", &ptcore_emu::kd_loss_rows);
  m.def("kd_loss_rows_backward", &ptcore_emu::kd_loss_rows_backward);
  m.def("kd_loss_topk_rows", &ptcore_emu::kd_loss_topk_rows);
  m.def("kd_loss_topk_rows_backward", &ptcore_emu::kd_loss_topk_rows_backward);
  m.def("quantize_rows", &ptcore_emu::quantize_rows);
  m.def("gather_rows", &ptcore_emu::gather_rows);
  m.def("gather_rows_out", &ptcore_emu::gather_rows_out);
  m.def("run_selftest", &ptcore_emu::run_selftest,
        "Run one of the emulation's own test kernels (tests/emulated/emu/emu_selftest.cpp)");
  m.def("set_input_checks", &ptcore_emu::set_input_checks,
        "Turn the emulated CUDA input checks on or off; returns the previous setting");
  m.def(
      "configure",
      [](uint64_t seed, int multiprocessors) {
        ptcore_emu::config() = {seed, multiprocessors};
      },
      py::arg("seed"), py::arg("multiprocessors") = 132,
      "The seed of block order, thread order, poison and guard layout; the SM count");
  m.def("shared_variables", &ptcore_emu::shared_variables,
        "The kernels' __shared__ variables, poisoned before each block");
  m.def("take_launches", &ptcore_emu::take_launches,
        "The kernels launched since the last call: 'name grid=(x,y,z) block=(x,y,z)'");
}
