// The argument checks of cross_entropy, shared by csrc/cpu/cross_entropy.cpp and csrc/cuda/cross_entropy.cu.
#pragma once

#include "checks.h"

namespace gpt_ext {

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
