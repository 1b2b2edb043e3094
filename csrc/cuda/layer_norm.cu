// LayerNorm on CUDA: one block per row, 16-byte vector loads, fp32 statistics.
// Rows are centred as (x - x0) - mean(x - x0), x0 the row's first element, in the forward and
// again in the backward (from x, not the stored mean), so nearly constant rows with a large
// offset keep their precision.
// Backward: dx per row, with dweight/dbias accumulated per block into its own row of an fp32
// scratch buffer (no atomics) and summed over blocks in a fixed order: deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks.h"
#include "common.cuh"

namespace gpt_ext {
namespace {

int threads_for(int64_t n, int vec) {
  const int64_t per_thread_work = ceil_div(n, vec);
  int threads = 32;
  while (threads < 1024 && threads < per_thread_work) threads *= 2;
  return threads;
}

// mean(x - x0) over one row, x0 = row[0]; every thread of the block gets it.
template <typename T, int VEC>
__device__ __forceinline__ float shifted_row_mean(const T* row, float shift, int64_t n, float* scratch) {
  float sum = 0.f;
  for (int64_t j = threadIdx.x * VEC; j < n; j += blockDim.x * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(row + j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) sum += static_cast<float>(p.v[k]) - shift;
  }
  return block_sum(sum, scratch) / n;
}

// With a residual (add_layer_norm), the row normalised is s = x + residual rounded to T (the
// residual first rounded to T, as x + residual.to(x.dtype) does), written to s_out in a first
// pass and re-read from there (this thread's own elements, L1/L2-resident) by the passes below.
template <typename T, typename R, int VEC>
__global__ void layer_norm_fwd_kernel(const T* __restrict__ x, const R* __restrict__ residual, T* s_out,
                                      const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                                      float* __restrict__ mean, float* __restrict__ rstd, int64_t n, float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  T* yr = y + row * n;
  if (residual != nullptr) {
    const R* rr = residual + row * n;
    T* sr = s_out + row * n;
    for (int64_t j = threadIdx.x * VEC; j < n; j += blockDim.x * VEC) {
      const Pack<T, VEC> xp = load_pack<T, VEC>(xr + j);
      const Pack<R, VEC> rp = load_pack<R, VEC>(rr + j);
      Pack<T, VEC> sp;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float r = static_cast<float>(static_cast<T>(static_cast<float>(rp.v[k])));
        sp.v[k] = static_cast<T>(static_cast<float>(xp.v[k]) + r);
      }
      store_pack<T, VEC>(sr + j, sp);
    }
    __syncthreads();  // every thread reads s[0] next
    xr = sr;
  }
  // pass 1: mean; pass 2: variance about it; pass 3: y (the row is L1/L2-resident for the re-reads)
  const float shift = static_cast<float>(xr[0]);
  const float mu = shifted_row_mean<T, VEC>(xr, shift, n, scratch);  // of x - shift
  float sq = 0.f;
  for (int64_t j = threadIdx.x * VEC; j < n; j += blockDim.x * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(xr + j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float d = (static_cast<float>(p.v[k]) - shift) - mu;
      sq += d * d;
    }
  }
  const float rs = rsqrtf(block_sum(sq, scratch) / n + eps);
  for (int64_t j = threadIdx.x * VEC; j < n; j += blockDim.x * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(xr + j);
    const Pack<T, VEC> wp = load_pack<T, VEC>(w + j);
    Pack<T, VEC> out;
    if (b != nullptr) {
      const Pack<T, VEC> bp = load_pack<T, VEC>(b + j);
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        out.v[k] = static_cast<T>(((static_cast<float>(p.v[k]) - shift) - mu) * rs * static_cast<float>(wp.v[k]) +
                                  static_cast<float>(bp.v[k]));
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        out.v[k] = static_cast<T>(((static_cast<float>(p.v[k]) - shift) - mu) * rs * static_cast<float>(wp.v[k]));
    }
    store_pack<T, VEC>(yr + j, out);
  }
  if (threadIdx.x == 0) {
    mean[row] = shift + mu;
    rstd[row] = rs;
  }
}

template <typename T, int VEC>
__global__ void layer_norm_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                                      const float* __restrict__ rstd, const T* __restrict__ ds,
                                      T* __restrict__ dx, float* __restrict__ dw_partial,
                                      float* __restrict__ db_partial, int64_t rows, int64_t n) {
  __shared__ float scratch[32];
  float* dw = dw_partial + blockIdx.x * n;  // this block's own row: no other block writes it
  float* db = db_partial + blockIdx.x * n;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    const T* dyr = dy + row * n;
    const float shift = static_cast<float>(xr[0]), rs = rstd[row];
    const float mu = shifted_row_mean<T, VEC>(xr, shift, n, scratch);  // of x - shift
    float sum_wdy_xhat = 0.f, sum_wdy = 0.f;
    for (int64_t j = threadIdx.x * VEC; j < n; j += blockDim.x * VEC) {
      const Pack<T, VEC> xp = load_pack<T, VEC>(xr + j), gp = load_pack<T, VEC>(dyr + j), wp = load_pack<T, VEC>(w + j);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float wdy = __fmul_rn(static_cast<float>(wp.v[k]), static_cast<float>(gp.v[k]));
        sum_wdy_xhat += wdy * ((static_cast<float>(xp.v[k]) - shift) - mu) * rs;
        sum_wdy += wdy;
      }
    }
    const float c1 = block_sum(sum_wdy_xhat, scratch) / n;
    const float c2 = block_sum(sum_wdy, scratch) / n;
    for (int64_t j = threadIdx.x * VEC; j < n; j += blockDim.x * VEC) {
      const Pack<T, VEC> xp = load_pack<T, VEC>(xr + j), gp = load_pack<T, VEC>(dyr + j), wp = load_pack<T, VEC>(w + j);
      Pack<T, VEC> direct;  // add_layer_norm's gradient of its sum, added to dx
      if (ds != nullptr) direct = load_pack<T, VEC>(ds + row * n + j);
      Pack<T, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float xhat = ((static_cast<float>(xp.v[k]) - shift) - mu) * rs;
        const float g = static_cast<float>(gp.v[k]);
        // __fmul_rn is never fused into an FMA: w*dy rounds here exactly as in the sums above,
        // so a width-1 row (xhat = 0, c2 = w*dy) gets dx = 0 exactly, as it must.
        const float add = ds != nullptr ? static_cast<float>(direct.v[k]) : 0.f;
        out.v[k] = static_cast<T>((__fmul_rn(static_cast<float>(wp.v[k]), g) - (xhat * c1 + c2)) * rs + add);
        dw[j + k] += g * xhat;  // each column is owned by one thread of this block
        db[j + k] += g;
      }
      store_pack<T, VEC>(dx + row * n + j, out);
    }
  }
}

// out[j] = sum over p of partial[p, j], in order p = 0, 1, ...: the same result every run.
template <typename T>
__global__ void column_sum_kernel(const float* __restrict__ partial, T* __restrict__ out, int64_t parts, int64_t n) {
  const int64_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float acc = 0.f;
  for (int64_t p = 0; p < parts; ++p) acc += partial[p * n + j];
  out[j] = static_cast<T>(acc);
}

template <typename T, typename R, int VEC>
void launch_fwd(const T* x, const R* residual, T* s, const T* w, const T* b, T* y, float* mean, float* rstd,
                int64_t rows, int64_t n, float eps, cudaStream_t stream) {
  layer_norm_fwd_kernel<T, R, VEC><<<rows, threads_for(n, VEC), 0, stream>>>(x, residual, s, w, b, y, mean, rstd,
                                                                              n, eps);
  GPT_CHECK_LAUNCH();
}

// The forward for x (rows, n) in T, with (add_layer_norm) or without (residual == nullptr) a residual in R.
template <typename T, typename R>
void forward(const T* x, const R* residual, T* s, const T* w, const T* b, T* y, float* mean, float* rstd,
             int64_t rows, int64_t n, float eps, cudaStream_t stream) {
  const int vec = std::min(vector_width<T>(n, {x, s, w, b, y}), vector_width<R>(n, {residual}));
  if (vec == 8) launch_fwd<T, R, 8>(x, residual, s, w, b, y, mean, rstd, rows, n, eps, stream);
  else if (vec == 4) launch_fwd<T, R, 4>(x, residual, s, w, b, y, mean, rstd, rows, n, eps, stream);
  else if (vec == 2) launch_fwd<T, R, 2>(x, residual, s, w, b, y, mean, rstd, rows, n, eps, stream);
  else launch_fwd<T, R, 1>(x, residual, s, w, b, y, mean, rstd, rows, n, eps, stream);
}

template <typename T, int VEC>
void launch_bwd(const T* dy, const T* x, const T* w, const float* rstd, const T* ds, T* dx, float* dw_partial,
                float* db_partial, int64_t rows, int64_t n, int blocks, cudaStream_t stream) {
  layer_norm_bwd_kernel<T, VEC><<<blocks, threads_for(n, VEC), 0, stream>>>(dy, x, w, rstd, ds, dx, dw_partial,
                                                                             db_partial, rows, n);
  GPT_CHECK_LAUNCH();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                                   const c10::optional<at::Tensor>& bias,
                                                                   double eps) {
  check_layer_norm(x, weight, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(-1);
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  const at::Tensor bc = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t rows = xc.numel() / n;
  at::Tensor y = at::empty_like(xc);
  at::Tensor mean = at::empty({rows}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  if (rows == 0) return {y, mean, rstd};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GPT_DISPATCH_FLOAT_TYPES(x.scalar_type(), "layer_norm_fwd_cuda", [&] {
    forward<scalar_t, scalar_t>(xc.const_data_ptr<scalar_t>(), nullptr, nullptr, wc.const_data_ptr<scalar_t>(),
                                bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
                                mean.mutable_data_ptr<float>(), rstd.mutable_data_ptr<float>(), rows, n,
                                static_cast<float>(eps), stream);
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_bwd_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                                   const at::Tensor& weight, const at::Tensor& rstd,
                                                                   const c10::optional<at::Tensor>& ds) {
  check_layer_norm_backward(dy, x, weight, rstd, ds);
  const at::Tensor dsc = ds.has_value() ? ds->contiguous() : at::Tensor();
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(-1);
  const at::Tensor xc = x.contiguous(), dyc = dy.contiguous(), wc = weight.contiguous();
  const at::Tensor rc = rstd.contiguous();
  const int64_t rows = xc.numel() / n;
  const int sms = multiprocessor_count();
  const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rows, 2 * sms)));
  at::Tensor dx = at::empty_like(xc);
  at::Tensor dw_partial = at::zeros({blocks, n}, x.options().dtype(at::kFloat));
  at::Tensor db_partial = at::zeros({blocks, n}, x.options().dtype(at::kFloat));
  at::Tensor dweight = at::empty_like(wc), dbias = at::empty_like(wc);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GPT_DISPATCH_FLOAT_TYPES(x.scalar_type(), "layer_norm_bwd_cuda", [&] {
    const scalar_t *g = dyc.const_data_ptr<scalar_t>(), *xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* wp = wc.const_data_ptr<scalar_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    const float* r = rc.const_data_ptr<float>();
    const scalar_t* dsp = dsc.defined() ? dsc.const_data_ptr<scalar_t>() : nullptr;
    float *dwp = dw_partial.mutable_data_ptr<float>(), *dbp = db_partial.mutable_data_ptr<float>();
    if (rows > 0) {
      const int vec = vector_width<scalar_t>(n, {g, xp, wp, dxp, dsp});
      if (vec == 8) launch_bwd<scalar_t, 8>(g, xp, wp, r, dsp, dxp, dwp, dbp, rows, n, blocks, stream);
      else if (vec == 4) launch_bwd<scalar_t, 4>(g, xp, wp, r, dsp, dxp, dwp, dbp, rows, n, blocks, stream);
      else if (vec == 2) launch_bwd<scalar_t, 2>(g, xp, wp, r, dsp, dxp, dwp, dbp, rows, n, blocks, stream);
      else launch_bwd<scalar_t, 1>(g, xp, wp, r, dsp, dxp, dwp, dbp, rows, n, blocks, stream);
    }
    const int threads = 256;
    column_sum_kernel<scalar_t><<<ceil_div(n, threads), threads, 0, stream>>>(
        dwp, dweight.mutable_data_ptr<scalar_t>(), blocks, n);
    GPT_CHECK_LAUNCH();
    column_sum_kernel<scalar_t><<<ceil_div(n, threads), threads, 0, stream>>>(
        dbp, dbias.mutable_data_ptr<scalar_t>(), blocks, n);
    GPT_CHECK_LAUNCH();
  });
  return {dx, dweight, dbias};
}

// s = x + residual in x's dtype and y = LayerNorm of s, in one kernel: x and residual read once,
// s and y written once. residual may have another float dtype than x.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> add_layer_norm_fwd_cuda(
    const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    double eps) {
  check_add_layer_norm(x, residual, weight, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(-1);
  const at::Tensor xc = x.contiguous(), rc = residual.contiguous(), wc = weight.contiguous();
  const at::Tensor bc = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t rows = xc.numel() / n;
  at::Tensor y = at::empty_like(xc), s = at::empty_like(xc);
  at::Tensor mean = at::empty({rows}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  if (rows == 0) return {y, s, mean, rstd};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GPT_DISPATCH_FLOAT_TYPES(x.scalar_type(), "add_layer_norm_fwd_cuda", [&] {
    auto run = [&](auto residual_element) {
      using R = decltype(residual_element);
      forward<scalar_t, R>(xc.const_data_ptr<scalar_t>(), rc.const_data_ptr<R>(), s.mutable_data_ptr<scalar_t>(),
                           wc.const_data_ptr<scalar_t>(), bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr,
                           y.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<float>(),
                           rstd.mutable_data_ptr<float>(), rows, n, static_cast<float>(eps), stream);
    };
    switch (rc.scalar_type()) {
      case at::kFloat: run(float{}); break;
      case at::kHalf: run(at::Half{}); break;
      case at::kBFloat16: run(at::BFloat16{}); break;
      default: TORCH_CHECK(false, "add_layer_norm: residual has dtype ", rc.scalar_type(),
                           "; expected float32, float16 or bfloat16");
    }
  });
  return {y, s, mean, rstd};
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_ext, CUDA, m) {
  m.impl("layer_norm_fwd", &layer_norm_fwd_cuda);
  m.impl("layer_norm_bwd", &layer_norm_bwd_cuda);
  m.impl("add_layer_norm_fwd", &add_layer_norm_fwd_cuda);
}

}  // namespace gpt_ext
