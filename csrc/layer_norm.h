// The argument checks of layer_norm and add_layer_norm, shared by csrc/cpu/layer_norm.cpp and csrc/cuda/layer_norm.cu.
#pragma once

#include "checks.h"

namespace gpt_ext {

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

}  // namespace gpt_ext
