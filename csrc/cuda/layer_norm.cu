// LayerNorm on CUDA: one block per row, 16-byte vector loads, fp32 statistics.
// Rows are centred as (x - x0) - mean(x - x0), x0 the row's first element, in the forward and
// again in the backward (from x, not the stored mean), so nearly constant rows with a large
// offset keep their precision.
// Backward, rows up to WARP_ROW_MAX_WIDTH wide (GPT widths): one warp per row, several rows per
// block at once and no block-wide barrier per row; each warp accumulates its rows' dweight/dbias
// terms in its own shared-memory rows. Wider rows: one block per row. Either way each block
// writes its sums into its own row of an fp32 scratch buffer (no atomics) and a second kernel sums
// those rows in a fixed order, many threads per column: deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "layer_norm.h"
#include "common.cuh"

namespace gpt_ext {
namespace {

// The block-per-row kernels' block size follows the width (128 threads at 768 wide in bf16), so they
// declare no __launch_bounds__: a bound of 1024 let ptxas take 44 registers instead of 31 in the bf16
// forward, which at 128-thread blocks means 62.5% occupancy instead of 100% (python -m bench.compiled).
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
// x is not __restrict__: the passes read s_out through the same pointer, and a read-only (.nc) load
// of data the kernel wrote is undefined.
template <typename T, typename R, int VEC>
__global__ void layer_norm_fwd_kernel(const T* x, const R* __restrict__ residual, T* s_out,
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

// dx of one row, and its dweight/dbias terms added to dw_acc/db_acc at column slot(j); the row is
// spread over `lanes` threads (a warp, or the block) and reduced with `sum_over_lanes`.
template <typename T, int VEC, typename Sum, typename Slot>
__device__ __forceinline__ void backward_row(const T* xr, const T* dyr, const T* w, float rs, const T* dsr, T* dxr,
                                             float* dw_acc, float* db_acc, int64_t n, int lane, int lanes,
                                             Sum sum_over_lanes, Slot slot) {
  const float shift = static_cast<float>(xr[0]);
  float sum = 0.f;
  for (int64_t j = lane * VEC; j < n; j += lanes * VEC) {
    const Pack<T, VEC> p = load_pack<T, VEC>(xr + j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) sum += static_cast<float>(p.v[k]) - shift;
  }
  const float mu = sum_over_lanes(sum) / n;  // of x - shift
  float sum_wdy_xhat = 0.f, sum_wdy = 0.f;
  for (int64_t j = lane * VEC; j < n; j += lanes * VEC) {
    const Pack<T, VEC> xp = load_pack<T, VEC>(xr + j), gp = load_pack<T, VEC>(dyr + j), wp = load_pack<T, VEC>(w + j);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float wdy = __fmul_rn(static_cast<float>(wp.v[k]), static_cast<float>(gp.v[k]));
      sum_wdy_xhat += wdy * ((static_cast<float>(xp.v[k]) - shift) - mu) * rs;
      sum_wdy += wdy;
    }
  }
  const float c1 = sum_over_lanes(sum_wdy_xhat) / n;
  const float c2 = sum_over_lanes(sum_wdy) / n;
  for (int64_t j = lane * VEC; j < n; j += lanes * VEC) {
    const Pack<T, VEC> xp = load_pack<T, VEC>(xr + j), gp = load_pack<T, VEC>(dyr + j), wp = load_pack<T, VEC>(w + j);
    Pack<T, VEC> direct;  // add_layer_norm's gradient of its sum, added to dx
    if (dsr != nullptr) direct = load_pack<T, VEC>(dsr + j);
    Pack<T, VEC> out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float xhat = ((static_cast<float>(xp.v[k]) - shift) - mu) * rs;
      const float g = static_cast<float>(gp.v[k]);
      // __fmul_rn is never fused into an FMA: w*dy rounds here exactly as in the sums above,
      // so a width-1 row (xhat = 0, c2 = w*dy) gets dx = 0 exactly, as it must.
      const float add = dsr != nullptr ? static_cast<float>(direct.v[k]) : 0.f;
      out.v[k] = static_cast<T>((__fmul_rn(static_cast<float>(wp.v[k]), g) - (xhat * c1 + c2)) * rs + add);
      dw_acc[slot(j, k)] += g * xhat;  // each slot is owned by one thread
      db_acc[slot(j, k)] += g;
    }
    store_pack<T, VEC>(dxr + j, out);
  }
}

// Warp-per-row up to 1024 columns (a warp's lanes then hold at most 4 packs of a row; wider rows
// keep a block busy on their own), with the accumulators within the default 48 KB of dynamic
// shared memory: 8 warps per block at width 768, 6 at 1024.
constexpr int64_t WARP_ROW_SHARED_BYTES = 48 * 1024;
constexpr int64_t WARP_ROW_MAX_WIDTH = 1024;
constexpr int WARP_ROW_MAX_WARPS = 8;

// Column j of a warp's accumulators lives at slot (pack * VEC + k) * 32 + lane, j = (pack * 32 + lane) * VEC + k:
// the 32 lanes touch 32 consecutive words (no bank conflicts). A warp's rows are padded_width(n) long.
template <int VEC>
__host__ __device__ constexpr int64_t padded_width(int64_t n) { return ceil_div(n, 32 * VEC) * 32 * VEC; }

template <int VEC>
__device__ __forceinline__ int64_t warp_slot(int64_t j, int k) {
  const int64_t pack = j / (32 * VEC), lane = (j / VEC) % 32;
  return (pack * VEC + k) * 32 + lane;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(32 * WARP_ROW_MAX_WARPS)
layer_norm_bwd_warp_rows_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                const T* __restrict__ w, const float* __restrict__ rstd,
                                const T* __restrict__ ds, T* __restrict__ dx,
                                float* __restrict__ dw_partial, float* __restrict__ db_partial,
                                int64_t rows, int64_t n) {
  extern __shared__ float shared[];  // per warp: dweight terms, then dbias terms, padded_width(n) each
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int64_t width = padded_width<VEC>(n);
  float* dw_acc = shared + 2 * warp * width;
  float* db_acc = dw_acc + width;
  for (int64_t j = lane; j < width; j += 32) dw_acc[j] = db_acc[j] = 0.f;
  __syncwarp();
  auto slot = [](int64_t j, int k) { return warp_slot<VEC>(j, k); };
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + warp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    backward_row<T, VEC>(x + row * n, dy + row * n, w, rstd[row], ds != nullptr ? ds + row * n : nullptr, dx + row * n,
                         dw_acc, db_acc, n, lane, 32, [](float v) { return warp_sum(v); }, slot);
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {  // this block's row: its warps in order
    const int64_t at = warp_slot<VEC>(j - j % VEC, static_cast<int>(j % VEC));
    float dw = 0.f, db = 0.f;
    for (int v = 0; v < warps; ++v) {
      dw += shared[2 * v * width + at];
      db += shared[(2 * v + 1) * width + at];
    }
    dw_partial[blockIdx.x * n + j] = dw;
    db_partial[blockIdx.x * n + j] = db;
  }
}

template <typename T, int VEC>
__global__ void layer_norm_bwd_block_rows_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                 const T* __restrict__ w, const float* __restrict__ rstd,
                                                 const T* __restrict__ ds, T* __restrict__ dx,
                                                 float* __restrict__ dw_partial, float* __restrict__ db_partial,
                                                 int64_t rows, int64_t n) {
  __shared__ float scratch[32];
  float* dw = dw_partial + blockIdx.x * n;  // this block's own row: no other block writes it
  float* db = db_partial + blockIdx.x * n;
  for (int64_t j = threadIdx.x * VEC; j < n; j += blockDim.x * VEC) {  // the columns this thread owns below
#pragma unroll
    for (int k = 0; k < VEC; ++k) dw[j + k] = db[j + k] = 0.f;
  }
  auto sum = [&](float v) { return block_sum(v, scratch); };
  auto slot = [](int64_t j, int k) { return j + k; };
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    backward_row<T, VEC>(x + row * n, dy + row * n, w, rstd[row], ds != nullptr ? ds + row * n : nullptr, dx + row * n,
                         dw, db, n, threadIdx.x, blockDim.x, sum, slot);
  }
}

// out_w[j], out_b[j] = sums over p of the partial rows, each thread summing a fixed stride of
// parts and the block combining its threads in a fixed order: the same result every run.
constexpr int SUM_COLUMNS = 32, SUM_GROUPS = 32;

template <typename T>
__global__ void __launch_bounds__(SUM_COLUMNS * SUM_GROUPS)
column_sums_kernel(const float* __restrict__ dw_partial, const float* __restrict__ db_partial,
                   T* __restrict__ dweight, T* __restrict__ dbias, int64_t parts, int64_t n) {
  __shared__ float shared[2][SUM_GROUPS][SUM_COLUMNS];
  const int column = threadIdx.x % SUM_COLUMNS, group = threadIdx.x / SUM_COLUMNS;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * SUM_COLUMNS + column;
  float dw = 0.f, db = 0.f;
  if (j < n) {
    for (int64_t p = group; p < parts; p += SUM_GROUPS) {
      dw += dw_partial[p * n + j];
      db += db_partial[p * n + j];
    }
  }
  shared[0][group][column] = dw;
  shared[1][group][column] = db;
  __syncthreads();
  if (group == 0 && j < n) {
    float total_w = 0.f, total_b = 0.f;
    for (int g = 0; g < SUM_GROUPS; ++g) {
      total_w += shared[0][g][column];
      total_b += shared[1][g][column];
    }
    dweight[j] = static_cast<T>(total_w);
    dbias[j] = static_cast<T>(total_b);
  }
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

// The backward's row kernel for width n; returns the number of blocks (rows of the scratch buffers).
template <typename T, int VEC>
void launch_bwd(const T* dy, const T* x, const T* w, const float* rstd, const T* ds, T* dx, float* dw_partial,
                float* db_partial, int64_t rows, int64_t n, int blocks, cudaStream_t stream) {
  const int64_t width = padded_width<VEC>(n);
  if (width <= WARP_ROW_MAX_WIDTH) {
    const int warps = static_cast<int>(
        std::min<int64_t>(WARP_ROW_MAX_WARPS, WARP_ROW_SHARED_BYTES / (2 * width * sizeof(float))));
    const size_t shared = 2 * warps * width * sizeof(float);
    layer_norm_bwd_warp_rows_kernel<T, VEC><<<blocks, 32 * warps, shared, stream>>>(dy, x, w, rstd, ds, dx,
                                                                                    dw_partial, db_partial, rows, n);
  } else {
    layer_norm_bwd_block_rows_kernel<T, VEC><<<blocks, threads_for(n, VEC), 0, stream>>>(dy, x, w, rstd, ds, dx,
                                                                                        dw_partial, db_partial, rows, n);
  }
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
  // a few blocks per multiprocessor, each owning a run of rows (and one row of each scratch buffer)
  const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rows, 4 * multiprocessor_count())));
  at::Tensor dx = at::empty_like(xc);
  // every block writes its whole row, so only an empty batch (no block runs) needs zeros
  const auto scratch = x.options().dtype(at::kFloat);
  at::Tensor dw_partial = rows > 0 ? at::empty({blocks, n}, scratch) : at::zeros({blocks, n}, scratch);
  at::Tensor db_partial = rows > 0 ? at::empty({blocks, n}, scratch) : at::zeros({blocks, n}, scratch);
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
    column_sums_kernel<scalar_t><<<ceil_div(n, SUM_COLUMNS), SUM_COLUMNS * SUM_GROUPS, 0, stream>>>(
        dwp, dbp, dweight.mutable_data_ptr<scalar_t>(), dbias.mutable_data_ptr<scalar_t>(), blocks, n);
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
