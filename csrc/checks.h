// Argument checks shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace gpt_ext {

inline void check_float_input(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16,
              op, ": ", name, " has dtype ", t.scalar_type(), "; expected float32, float16 or bfloat16");
}

inline void check_layer_norm(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  check_float_input(x, "layer_norm", "x");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) >= 1, "layer_norm: x needs a non-empty last dimension");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "layer_norm: weight has shape ", weight.sizes(),
              "; expected (", x.size(-1), ",)");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.device() == x.device(),
              "layer_norm: weight must have x's dtype and device");
  if (bias.has_value()) {
    TORCH_CHECK(bias->sizes() == weight.sizes(), "layer_norm: bias has shape ", bias->sizes(),
                "; expected (", x.size(-1), ",)");
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                "layer_norm: bias must have x's dtype and device");
  }
}

inline void check_layer_norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& rstd, const c10::optional<at::Tensor>& ds) {
  check_layer_norm(x, weight, c10::nullopt);
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "layer_norm_bwd: dy must have x's shape and dtype");
  TORCH_CHECK(rstd.numel() == x.numel() / x.size(-1) && rstd.scalar_type() == at::kFloat,
              "layer_norm_bwd: rstd must be fp32 with one value per row");
  if (ds.has_value()) {
    TORCH_CHECK(ds->sizes() == x.sizes() && ds->scalar_type() == x.scalar_type() && ds->device() == x.device(),
                "layer_norm_bwd: ds must have x's shape, dtype and device");
  }
}

inline void check_add_layer_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias) {
  check_layer_norm(x, weight, bias);
  check_float_input(residual, "add_layer_norm", "residual");
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.device() == x.device(), "add_layer_norm: residual has shape ",
              residual.sizes(), " on ", residual.device(), "; expected x's shape ", x.sizes(), " on ", x.device());
}

inline void check_cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  check_float_input(logits, "cross_entropy", "logits");
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) >= 1, "cross_entropy: logits has shape ", logits.sizes(),
              "; expected (N, V) with V >= 1");
  TORCH_CHECK(targets.scalar_type() == at::kLong, "cross_entropy: targets has dtype ", targets.scalar_type(),
              "; expected int64");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), "cross_entropy: targets has shape ",
              targets.sizes(), "; expected (", logits.size(0), ",)");
  TORCH_CHECK(targets.device() == logits.device(), "cross_entropy: targets on ", targets.device(),
              " but logits on ", logits.device());
}

inline void check_cross_entropy_backward(const at::Tensor& grad_loss, const at::Tensor& logits,
                                         const at::Tensor& targets, const at::Tensor& stats) {
  check_cross_entropy(logits, targets);
  TORCH_CHECK(grad_loss.numel() == logits.size(0) && stats.numel() == 2 * logits.size(0),
              "cross_entropy_bwd: grad_loss needs one value and stats two values per row");
}

}  // namespace gpt_ext

// The three dtypes every op supports (no double: fewer instantiations, faster builds).
#define GPT_DISPATCH_FLOAT_TYPES(TYPE, NAME, ...)              \
  AT_DISPATCH_SWITCH(TYPE, NAME,                               \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)  \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))
