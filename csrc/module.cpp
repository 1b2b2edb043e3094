// The Python module gpt_kernels._C. Each op defines its schemas in csrc/cpu/<op>.cpp
// (TORCH_LIBRARY_FRAGMENT) and registers its kernels per dispatch key there and in
// csrc/cuda/<op>.cu; its fakes and autograd are registered from gpt_kernels/ops/<op>/ext.py.
#include <Python.h>

// Loading gpt_kernels._C as a Python module runs the ops' static registrations.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
