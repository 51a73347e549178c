// The ptcore operator library: every op schema, and the module's build info.
#include <torch/extension.h>

#include <atomic>
#include <utility>

#include "data_checks.h"
#include "generated/build_info.h"

namespace ptcore {
namespace {
std::atomic<bool> g_input_checks{true};  // the process-wide setting
thread_local int t_input_checks = -1;    // this thread's override (-1: none)
}  // namespace

bool input_checks_enabled() {
  return t_input_checks >= 0 ? t_input_checks == 1
                             : g_input_checks.load(std::memory_order_relaxed);
}

}  // namespace ptcore

TORCH_LIBRARY(ptcore, m) {
  // Fused temperature-softmax distillation loss over rows of [N, V] logits.
  // Returns per-row losses [N] (float32), per-row statistics [N, 7] for backward, and, when
  // compute_grad, the student's gradient [N, V] for a gradient of grad_scale on every row's
  // loss (else an empty tensor): the backward consumes it, rescaling it in place if needed.
  m.def(
      "kd_loss_rows(Tensor student, Tensor teacher, Tensor? labels, float temperature, "
      "str divergence, float beta, float hard_weight, float soft_weight, int ignore_index, "
      "bool scale_by_t2, float grad_scale=1.0, bool compute_grad=False) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "_kd_loss_rows_backward(Tensor grad_rows, Tensor student, Tensor teacher, Tensor? labels, "
      "Tensor stats, float temperature, str divergence, float beta, float hard_weight, "
      "float soft_weight, int ignore_index, bool scale_by_t2) -> Tensor");
  // The same loss against a teacher kept as its top-K logits or log-probabilities: values
  // [N, K], indices [N, K]; with tail_bucket (log-probabilities), the mass they leave is one
  // more bin against the student's remaining mass.
  m.def(
      "kd_loss_topk_rows(Tensor student, Tensor teacher_values, Tensor teacher_indices, "
      "Tensor? labels, float temperature, float hard_weight, float soft_weight, "
      "int ignore_index, bool scale_by_t2, bool tail_bucket=False, float grad_scale=1.0, "
      "bool compute_grad=False) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_kd_loss_topk_rows_backward(Tensor grad_rows, Tensor student, Tensor teacher_values, "
      "Tensor teacher_indices, Tensor? labels, Tensor stats, float temperature, "
      "float hard_weight, float soft_weight, int ignore_index, bool scale_by_t2, "
      "bool tail_bucket=False) -> Tensor");

  // Frozen-layer feature cache: int8 row quantization and fused gather + dequantize.
  m.def("quantize_rows(Tensor x) -> (Tensor, Tensor)");
  m.def("gather_rows(Tensor store, Tensor? scales, Tensor indices, ScalarType dtype) -> Tensor");
  // Into a caller's buffer. Returns nothing: torch.compile functionalizes a custom op only
  // when no output aliases an input (ptcore.ops.gather_rows returns `out`).
  m.def(
      "gather_rows.out(Tensor store, Tensor? scales, Tensor indices, ScalarType dtype, *, "
      "Tensor(a!) out) -> ()");
}

namespace {

py::dict build_info() {
  py::dict d;
  d["version"] = PTCORE_VERSION;
  d["torch"] = PTCORE_BUILT_TORCH;
  d["cuda"] = PTCORE_BUILT_CUDA;
  d["cuda_archs"] = PTCORE_CUDA_ARCHS;
  d["cpu_isa"] = PTCORE_CPU_ISA;
#ifdef PTCORE_WITH_CUDA
  d["with_cuda"] = true;
#else
  d["with_cuda"] = false;
#endif
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ptcore native kernels (ops are registered under torch.ops.ptcore)";
  m.def("build_info", &build_info, "What this library was built against and with");
  m.def("_set_input_checks", [](bool on) { return ptcore::g_input_checks.exchange(on); },
        "Turn the data-dependent input checks of the CUDA kernels on or off for the process; "
        "returns the previous setting");
  m.def("_set_thread_input_checks", [](int on) { return std::exchange(ptcore::t_input_checks, on); },
        "This thread's override of the input checks (1 on, 0 off, -1 follow the process "
        "setting); returns the previous override");
  m.def("_input_checks_enabled", &ptcore::input_checks_enabled,
        "Whether the CUDA input checks run for calls from this thread");
}
