// Fused cross-entropy on CUDA: one block per row.
// Forward: one pass over the row with an online logsumexp (running max and rescaled sum), the
// running sum rescaled once per 16-byte pack, not once per element.
// Backward: dlogits = (exp(x - max - log_sum) - onehot) * grad[row], in the logits' dtype, so no
// fp32 probability tensor ever exists; 16-byte loads and stores. Rows are not 16-byte aligned
// when V is odd (GPT-2's 50257): each row runs scalar up to the first aligned element, then
// 16-byte vectors (dlogits rows share the logits rows' alignment: both buffers are contiguous).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <tuple>

#include "cross_entropy.h"
#include "common.cuh"

namespace gpt_ext {
namespace {

constexpr int kThreads = 512;

// A row split into an unaligned head, a middle of whole 16-byte packs, and a tail.
template <typename T>
struct RowSplit {
  static constexpr int VEC = 16 / sizeof(T);
  int64_t head, body_end;
  __device__ __forceinline__ RowSplit(const T* row, int64_t n) {
    const int64_t misalignment = (reinterpret_cast<uintptr_t>(row) % 16) / sizeof(T);
    head = min(n, misalignment ? static_cast<int64_t>(VEC) - misalignment : int64_t{0});
    body_end = head + (n - head) / VEC * VEC;
  }
};

// Running max m and sum s of exp(x - m), merged with one more value.
__device__ __forceinline__ void online_add(float& m, float& s, float v) {
  const float m_new = fmaxf(m, v);
  s = (m == -INFINITY ? 0.f : s * __expf(m - m_new)) + __expf(v - m_new);
  m = m_new;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
cross_entropy_fwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                         float* __restrict__ loss, float* __restrict__ stats, int64_t vocab,
                         int64_t ignore_index) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  float running_max = -INFINITY, running_sum = 0.f;  // sum of exp(x - running_max) over this thread's elements
  const RowSplit<T> split(x, vocab);
  constexpr int VEC = RowSplit<T>::VEC;
  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) online_add(running_max, running_sum, static_cast<float>(x[j]));
  for (int64_t j = split.head + threadIdx.x * VEC; j < split.body_end; j += blockDim.x * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(x + j);
    float pack_max = static_cast<float>(p.v[0]);
#pragma unroll
    for (int k = 1; k < VEC; ++k) pack_max = fmaxf(pack_max, static_cast<float>(p.v[k]));
    const float m_new = fmaxf(running_max, pack_max);
    float pack_sum = 0.f;
#pragma unroll
    for (int k = 0; k < VEC; ++k) pack_sum += __expf(static_cast<float>(p.v[k]) - m_new);
    running_sum = (running_max == -INFINITY ? 0.f : running_sum * __expf(running_max - m_new)) + pack_sum;
    running_max = m_new;
  }
  for (int64_t j = split.body_end + threadIdx.x; j < vocab; j += blockDim.x)
    online_add(running_max, running_sum, static_cast<float>(x[j]));
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
__global__ void __launch_bounds__(kThreads)
cross_entropy_bwd_kernel(const float* __restrict__ grad, const T* __restrict__ logits,
                         const int64_t* __restrict__ targets, const float* __restrict__ stats,
                         T* __restrict__ dlogits, int64_t vocab, int64_t ignore_index) {
  const int64_t row = blockIdx.x;
  const int64_t t = targets[row];
  const float g = t == ignore_index ? 0.f : grad[row];
  const float row_max = stats[2 * row], log_sum = stats[2 * row + 1];
  const T* x = logits + row * vocab;
  T* out = dlogits + row * vocab;
  const auto grad_of = [&](int64_t j, float v) {
    return static_cast<T>((__expf((v - row_max) - log_sum) - (j == t ? 1.f : 0.f)) * g);
  };
  RowSplit<T> split(x, vocab);
  if (reinterpret_cast<uintptr_t>(x) % 16 != reinterpret_cast<uintptr_t>(out) % 16) {
    split.head = split.body_end = 0;  // rows aligned differently (a logits view at an odd offset): all scalar
  }
  constexpr int VEC = RowSplit<T>::VEC;
  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) out[j] = grad_of(j, static_cast<float>(x[j]));
  for (int64_t j = split.head + threadIdx.x * VEC; j < split.body_end; j += blockDim.x * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(x + j);
    Pack<T, VEC> d;
#pragma unroll
    for (int k = 0; k < VEC; ++k) d.v[k] = grad_of(j + k, static_cast<float>(p.v[k]));
    store_pack<T, VEC>(out + j, d);
  }
  for (int64_t j = split.body_end + threadIdx.x; j < vocab; j += blockDim.x) out[j] = grad_of(j, static_cast<float>(x[j]));
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
