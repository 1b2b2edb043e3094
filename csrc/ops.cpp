// Schemas of every op in the extension, in one place. Implementations register per dispatch
// key: csrc/cpu/<op>.cpp (CPU) and csrc/cuda/<op>.cu (CUDA). Fake (meta) implementations and
// autograd are registered from Python in kernels/extension.py.
#include <Python.h>
#include <torch/library.h>

// Loading kernels._C as a Python module runs the static registrations below.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(gpt_ext, m) {
  // y (same shape and dtype as x), mean and rstd (rows,) fp32; normalises over the last dim.
  m.def("layer_norm_fwd(Tensor x, Tensor weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)");
  // dx, dweight, dbias from dy and the forward's saved x and rstd. The rows are centred again
  // from x (as (x - x0) - mean(x - x0)), not with the stored fp32 mean, to keep nearly constant
  // rows precise.
  m.def("layer_norm_bwd(Tensor dy, Tensor x, Tensor weight, Tensor rstd) -> (Tensor, Tensor, Tensor)");
  // Per-row loss (N,) fp32 (0 where target == ignore_index) and stats (N, 2) fp32 of logits (N, V):
  // the row max and log(sum(exp(x - max))). Kept apart (not summed into one logsumexp) so that
  // large logits lose no precision: loss = log_sum - (x[target] - max).
  m.def("cross_entropy_fwd(Tensor logits, Tensor targets, int ignore_index) -> (Tensor, Tensor)");
  // dlogits = (softmax(logits) - onehot(target)) * grad_loss[row], 0 on ignored rows; logits' dtype.
  m.def("cross_entropy_bwd(Tensor grad_loss, Tensor logits, Tensor targets, Tensor stats, int ignore_index) -> Tensor");
}
