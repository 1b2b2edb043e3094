// Fused cross-entropy on the CPU: the same op as csrc/cuda/cross_entropy.cu.
// Forward: one pass per row with an online logsumexp. Backward: dlogits written directly
// in the logits' dtype; no probability tensor is materialised.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "cross_entropy.h"

namespace gpt_ext {
namespace {

void check_targets(const int64_t* targets, int64_t rows, int64_t vocab, int64_t ignore_index) {
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(targets[r] == ignore_index || (targets[r] >= 0 && targets[r] < vocab), "cross_entropy: target ",
                targets[r], " at row ", r, " is outside [0, ", vocab, ") and is not ignore_index (", ignore_index, ")");
  }
}

template <typename T>
void forward_rows(const T* logits, const int64_t* targets, float* loss, float* stats, int64_t rows, int64_t vocab,
                  int64_t ignore_index) {
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = logits + r * vocab;
      float running_max = -std::numeric_limits<float>::infinity();
      double running_sum = 0.0;  // sum of exp(x - running_max)
      for (int64_t j = 0; j < vocab; ++j) {
        const float v = static_cast<float>(row[j]);
        if (v > running_max) {
          running_sum = running_sum * std::exp(static_cast<double>(running_max) - v) + 1.0;
          running_max = v;
        } else {
          running_sum += std::exp(static_cast<double>(v) - running_max);
        }
      }
      const double log_sum = std::log(running_sum);
      stats[2 * r] = running_max;
      stats[2 * r + 1] = static_cast<float>(log_sum);
      loss[r] = targets[r] == ignore_index
                    ? 0.f
                    : static_cast<float>(log_sum - (static_cast<double>(row[targets[r]]) - running_max));
    }
  });
}

template <typename T>
void backward_rows(const float* grad, const T* logits, const int64_t* targets, const float* stats, T* dlogits,
                   int64_t rows, int64_t vocab, int64_t ignore_index) {
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = logits + r * vocab;
      T* out = dlogits + r * vocab;
      if (targets[r] == ignore_index) {
        for (int64_t j = 0; j < vocab; ++j) out[j] = static_cast<T>(0.f);
        continue;
      }
      const float g = grad[r], row_max = stats[2 * r], log_sum = stats[2 * r + 1];
      for (int64_t j = 0; j < vocab; ++j) {
        const float p = std::exp((static_cast<float>(row[j]) - row_max) - log_sum);
        out[j] = static_cast<T>((p - (j == targets[r] ? 1.f : 0.f)) * g);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_fwd_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                         int64_t ignore_index) {
  check_cross_entropy(logits, targets);
  const at::Tensor lc = logits.contiguous(), tc = targets.contiguous();
  const int64_t rows = lc.size(0), vocab = lc.size(1);
  check_targets(tc.const_data_ptr<int64_t>(), rows, vocab, ignore_index);
  at::Tensor loss = at::empty({rows}, logits.options().dtype(at::kFloat));
  at::Tensor stats = at::empty({rows, 2}, logits.options().dtype(at::kFloat));
  GPT_DISPATCH_FLOAT_TYPES(logits.scalar_type(), "cross_entropy_fwd_cpu", [&] {
    forward_rows<scalar_t>(lc.const_data_ptr<scalar_t>(), tc.const_data_ptr<int64_t>(), loss.mutable_data_ptr<float>(),
                           stats.mutable_data_ptr<float>(), rows, vocab, ignore_index);
  });
  return {loss, stats};
}

at::Tensor cross_entropy_bwd_cpu(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& targets,
                                 const at::Tensor& stats, int64_t ignore_index) {
  check_cross_entropy_backward(grad_loss, logits, targets, stats);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  const at::Tensor lc = logits.contiguous(), tc = targets.contiguous();
  const at::Tensor gc = grad_loss.to(at::kFloat).contiguous(), sc = stats.to(at::kFloat).contiguous();
  at::Tensor dlogits = at::empty_like(lc);
  GPT_DISPATCH_FLOAT_TYPES(logits.scalar_type(), "cross_entropy_bwd_cpu", [&] {
    backward_rows<scalar_t>(gc.const_data_ptr<float>(), lc.const_data_ptr<scalar_t>(), tc.const_data_ptr<int64_t>(),
                            sc.const_data_ptr<float>(), dlogits.mutable_data_ptr<scalar_t>(), rows, vocab, ignore_index);
  });
  return dlogits;
}

}  // namespace

// The schemas of this op (its CUDA kernels register in csrc/cuda/cross_entropy.cu; fakes and
// autograd in gpt_kernels/ops/cross_entropy/ext.py).
TORCH_LIBRARY_FRAGMENT(gpt_ext, m) {
  // Per-row loss (N,) fp32 (0 where target == ignore_index) and stats (N, 2) fp32 of logits (N, V):
  // the row max and log(sum(exp(x - max))). Kept apart (not summed into one logsumexp) so that
  // large logits lose no precision: loss = log_sum - (x[target] - max).
  m.def("cross_entropy_fwd(Tensor logits, Tensor targets, int ignore_index) -> (Tensor, Tensor)");
  // dlogits = (softmax(logits) - onehot(target)) * grad_loss[row], 0 on ignored rows; logits' dtype.
  m.def("cross_entropy_bwd(Tensor grad_loss, Tensor logits, Tensor targets, Tensor stats, int ignore_index) -> Tensor");
}

TORCH_LIBRARY_IMPL(gpt_ext, CPU, m) {
  m.impl("cross_entropy_fwd", &cross_entropy_fwd_cpu);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd_cpu);
}

}  // namespace gpt_ext
