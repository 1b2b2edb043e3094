// The argument checks every op's CPU and CUDA implementations share; each op's own are in csrc/<op>.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace gpt_ext {

inline void check_float_input(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16,
              op, ": ", name, " has dtype ", t.scalar_type(), "; expected float32, float16 or bfloat16");
}

}  // namespace gpt_ext

// The three dtypes every op supports (no double: fewer instantiations, faster builds).
#define GPT_DISPATCH_FLOAT_TYPES(TYPE, NAME, ...)              \
  AT_DISPATCH_SWITCH(TYPE, NAME,                               \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)  \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))
