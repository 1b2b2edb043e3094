// Fused cross-entropy on CUDA: one block per row.
// Forward: one pass over the row with an online logsumexp (running max and rescaled sum).
// Backward: dlogits = (exp(x - max - log_sum) - onehot) * grad[row], in the logits' dtype, so no
// fp32 probability tensor ever exists. Rows are not 16-byte aligned when V is odd (GPT-2's
// 50257): each row runs scalar up to the first aligned element, then 16-byte vectors.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "common.cuh"

namespace gpt_ext {
namespace {

constexpr int kThreads = 512;

// Calls f(j, value) for every element of row[0, n), with 16-byte loads for the aligned middle.
template <typename T, typename F>
__device__ __forceinline__ void for_each_in_row(const T* row, int64_t n, F f) {
  constexpr int VEC = 16 / sizeof(T);
  const int64_t misalignment = (reinterpret_cast<uintptr_t>(row) % 16) / sizeof(T);
  const int64_t head = min(n, misalignment ? static_cast<int64_t>(VEC) - misalignment : int64_t{0});
  const int64_t body_end = head + (n - head) / VEC * VEC;
  for (int64_t j = threadIdx.x; j < head; j += blockDim.x) f(j, static_cast<float>(row[j]));
  for (int64_t j = head + threadIdx.x * VEC; j < body_end; j += blockDim.x * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(row + j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) f(j + k, static_cast<float>(p.v[k]));
  }
  for (int64_t j = body_end + threadIdx.x; j < n; j += blockDim.x) f(j, static_cast<float>(row[j]));
}

template <typename T>
__global__ void cross_entropy_fwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                         float* __restrict__ loss, float* __restrict__ stats, int64_t vocab,
                                         int64_t ignore_index) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  float running_max = -INFINITY, running_sum = 0.f;  // sum of exp(x - running_max) over this thread's elements
  for_each_in_row<T>(x, vocab, [&](int64_t, float v) {
    if (v > running_max) {
      running_sum = running_sum * __expf(running_max - v) + 1.f;
      running_max = v;
    } else {
      running_sum += __expf(v - running_max);
    }
  });
  const float row_max = block_max(running_max, scratch);
  const float scaled = running_max == -INFINITY ? 0.f : running_sum * __expf(running_max - row_max);
  const float log_sum = logf(block_sum(scaled, scratch));
  if (threadIdx.x == 0) {
    const int64_t t = targets[row];
    CUDA_KERNEL_ASSERT((t == ignore_index || (t >= 0 && t < vocab)) && "cross_entropy: target out of range");
    stats[2 * row] = row_max;
    stats[2 * row + 1] = log_sum;
    // x[t] - row_max first: exact for nearby values, so large logits lose no precision
    loss[row] = t == ignore_index ? 0.f : log_sum - (static_cast<float>(x[t]) - row_max);
  }
}

template <typename T>
__global__ void cross_entropy_bwd_kernel(const float* __restrict__ grad, const T* __restrict__ logits,
                                         const int64_t* __restrict__ targets, const float* __restrict__ stats,
                                         T* __restrict__ dlogits, int64_t vocab, int64_t ignore_index) {
  const int64_t row = blockIdx.x;
  const int64_t t = targets[row];
  const float g = t == ignore_index ? 0.f : grad[row];
  const float row_max = stats[2 * row], log_sum = stats[2 * row + 1];
  T* out = dlogits + row * vocab;
  // reads are vectorised; each thread's stores cover VEC adjacent elements, which L2 merges
  for_each_in_row<T>(logits + row * vocab, vocab, [&](int64_t j, float v) {
    out[j] = static_cast<T>((__expf((v - row_max) - log_sum) - (j == t ? 1.f : 0.f)) * g);
  });
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_fwd_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                                          int64_t ignore_index) {
  check_cross_entropy(logits, targets);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor lc = logits.contiguous(), tc = targets.contiguous();
  const int64_t rows = lc.size(0), vocab = lc.size(1);
  at::Tensor loss = at::empty({rows}, logits.options().dtype(at::kFloat));
  at::Tensor stats = at::empty({rows, 2}, logits.options().dtype(at::kFloat));
  if (rows == 0) return {loss, stats};
  GPT_DISPATCH_FLOAT_TYPES(logits.scalar_type(), "cross_entropy_fwd_cuda", [&] {
    cross_entropy_fwd_kernel<scalar_t><<<rows, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        lc.const_data_ptr<scalar_t>(), tc.const_data_ptr<int64_t>(), loss.mutable_data_ptr<float>(),
        stats.mutable_data_ptr<float>(), vocab, ignore_index);
    GPT_CHECK_LAUNCH();
  });
  return {loss, stats};
}

at::Tensor cross_entropy_bwd_cuda(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& targets,
                                  const at::Tensor& stats, int64_t ignore_index) {
  check_cross_entropy_backward(grad_loss, logits, targets, stats);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor lc = logits.contiguous(), tc = targets.contiguous();
  const at::Tensor gc = grad_loss.to(at::kFloat).contiguous(), sc = stats.to(at::kFloat).contiguous();
  at::Tensor dlogits = at::empty_like(lc);
  if (rows == 0) return dlogits;
  GPT_DISPATCH_FLOAT_TYPES(logits.scalar_type(), "cross_entropy_bwd_cuda", [&] {
    cross_entropy_bwd_kernel<scalar_t><<<rows, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        gc.const_data_ptr<float>(), lc.const_data_ptr<scalar_t>(), tc.const_data_ptr<int64_t>(),
        sc.const_data_ptr<float>(), dlogits.mutable_data_ptr<scalar_t>(), vocab, ignore_index);
    GPT_CHECK_LAUNCH();
  });
  return dlogits;
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_ext, CUDA, m) {
  m.impl("cross_entropy_fwd", &cross_entropy_fwd_cuda);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd_cuda);
}

}  // namespace gpt_ext
