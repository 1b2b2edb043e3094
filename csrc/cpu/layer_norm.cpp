// LayerNorm on the CPU: the same op as csrc/cuda/layer_norm.cu, for machines without a GPU.
// Row statistics and the backward's row terms are computed in double, the mean recomputed from
// x in the backward (not the stored fp32 mean, whose rounding would dominate nearly constant
// rows); dweight/dbias are reduced over fixed chunks of rows in a fixed order, so results do not
// depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "layer_norm.h"

namespace gpt_ext {
namespace {

constexpr int64_t kRowsPerChunk = 64;

template <typename T>
double row_mean(const T* xr, int64_t n) {
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) sum += static_cast<float>(xr[j]);
  return sum / n;
}

template <typename T>
void forward_rows(const T* x, const T* w, const T* b, T* y, float* mean, float* rstd, int64_t rows, int64_t n,
                  double eps) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      const double mu = row_mean(xr, n);
      double sq = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        const double d = static_cast<float>(xr[j]) - mu;
        sq += d * d;
      }
      const float rs = static_cast<float>(1.0 / std::sqrt(sq / n + eps));
      for (int64_t j = 0; j < n; ++j) {
        const double v = (static_cast<float>(xr[j]) - mu) * rs * static_cast<float>(w[j]);
        y[r * n + j] = static_cast<T>(b ? v + static_cast<float>(b[j]) : v);
      }
      mean[r] = static_cast<float>(mu);
      rstd[r] = rs;
    }
  });
}

template <typename T>
void backward_rows(const T* dy, const T* x, const T* w, const float* rstd, const T* ds, T* dx,
                   double* dw_partial, double* db_partial, int64_t rows, int64_t n) {
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double* dw = dw_partial + c * n;
      double* db = db_partial + c * n;
      for (int64_t r = c * kRowsPerChunk; r < std::min(rows, (c + 1) * kRowsPerChunk); ++r) {
        const T* xr = x + r * n;
        const T* dyr = dy + r * n;
        const double mu = row_mean(xr, n);
        const float rs = rstd[r];
        double sum_wdy_xhat = 0.0, sum_wdy = 0.0;
        for (int64_t j = 0; j < n; ++j) {
          const double xhat = (static_cast<double>(static_cast<float>(xr[j])) - mu) * rs;
          const double wdy = static_cast<double>(static_cast<float>(w[j])) * static_cast<float>(dyr[j]);
          sum_wdy_xhat += wdy * xhat;
          sum_wdy += wdy;
        }
        // w*dy - (xhat*c1 + c2) cancels when a row is nearly constant (large rstd): keep it in double
        const double c1 = sum_wdy_xhat / n, c2 = sum_wdy / n;
        for (int64_t j = 0; j < n; ++j) {
          const double xhat = (static_cast<double>(static_cast<float>(xr[j])) - mu) * rs;
          const double g = static_cast<float>(dyr[j]);
          const double direct = ds ? static_cast<double>(static_cast<float>(ds[r * n + j])) : 0.0;
          dx[r * n + j] = static_cast<T>((static_cast<float>(w[j]) * g - (xhat * c1 + c2)) * rs + direct);
          dw[j] += g * xhat;
          db[j] += g;
        }
      }
    }
  });
}

// s = x + residual (x's dtype; residual converted to it), then LayerNorm of s: y, s, mean, rstd.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> add_layer_norm_fwd_cpu(
    const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    double eps);

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                                  const c10::optional<at::Tensor>& bias,
                                                                  double eps) {
  check_layer_norm(x, weight, bias);
  const int64_t n = x.size(-1);
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  const at::Tensor bc = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t rows = xc.numel() / n;
  at::Tensor y = at::empty_like(xc);
  at::Tensor mean = at::empty({rows}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  GPT_DISPATCH_FLOAT_TYPES(x.scalar_type(), "layer_norm_fwd_cpu", [&] {
    forward_rows<scalar_t>(xc.const_data_ptr<scalar_t>(), wc.const_data_ptr<scalar_t>(),
                           bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
                           mean.mutable_data_ptr<float>(), rstd.mutable_data_ptr<float>(), rows, n, eps);
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_bwd_cpu(const at::Tensor& dy, const at::Tensor& x,
                                                                  const at::Tensor& weight, const at::Tensor& rstd,
                                                                  const c10::optional<at::Tensor>& ds) {
  check_layer_norm_backward(dy, x, weight, rstd, ds);
  const at::Tensor dsc = ds.has_value() ? ds->contiguous() : at::Tensor();
  const int64_t n = x.size(-1);
  const at::Tensor xc = x.contiguous(), dyc = dy.contiguous(), wc = weight.contiguous();
  const at::Tensor rc = rstd.contiguous();
  const int64_t rows = xc.numel() / n;
  const int64_t chunks = std::max<int64_t>(1, (rows + kRowsPerChunk - 1) / kRowsPerChunk);
  at::Tensor dx = at::empty_like(xc);
  at::Tensor dw_partial = at::zeros({chunks, n}, x.options().dtype(at::kDouble));
  at::Tensor db_partial = at::zeros({chunks, n}, x.options().dtype(at::kDouble));
  GPT_DISPATCH_FLOAT_TYPES(x.scalar_type(), "layer_norm_bwd_cpu", [&] {
    backward_rows<scalar_t>(dyc.const_data_ptr<scalar_t>(), xc.const_data_ptr<scalar_t>(),
                            wc.const_data_ptr<scalar_t>(), rc.const_data_ptr<float>(),
                            dsc.defined() ? dsc.const_data_ptr<scalar_t>() : nullptr, dx.mutable_data_ptr<scalar_t>(), dw_partial.mutable_data_ptr<double>(),
                            db_partial.mutable_data_ptr<double>(), rows, n);
  });
  // at::sum over dim 0 of a fixed-shape buffer: a fixed reduction order
  return {dx, dw_partial.sum(0).to(weight.scalar_type()), db_partial.sum(0).to(weight.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> add_layer_norm_fwd_cpu(
    const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    double eps) {
  check_add_layer_norm(x, residual, weight, bias);
  const at::Tensor s = at::add(x, residual.to(x.scalar_type()));  // one rounding to x's dtype, as unfused
  auto [y, mean, rstd] = layer_norm_fwd_cpu(s, weight, bias, eps);
  return {y, s, mean, rstd};
}

}  // namespace

// The schemas of this op (its CUDA kernels register in csrc/cuda/layer_norm.cu; fakes and autograd
// in gpt_kernels/ops/layer_norm/ext.py).
TORCH_LIBRARY_FRAGMENT(gpt_ext, m) {
  // y (same shape and dtype as x), mean and rstd (rows,) fp32; normalises over the last dim.
  m.def("layer_norm_fwd(Tensor x, Tensor weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)");
  // dx, dweight, dbias from dy and the forward's saved x and rstd. The rows are centred again
  // from x (as (x - x0) - mean(x - x0)), not with the stored fp32 mean, to keep nearly constant
  // rows precise.
  // ds (optional, x's shape and dtype) is added to dx: add_layer_norm's gradient reaching its sum directly.
  m.def("layer_norm_bwd(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor? ds) -> (Tensor, Tensor, Tensor)");
  // s = x + residual in x's dtype and y = layer_norm(s): y, s, mean, rstd. Its backward is
  // layer_norm_bwd(dy, s, weight, rstd, ds).
  m.def("add_layer_norm_fwd(Tensor x, Tensor residual, Tensor weight, Tensor? bias, float eps) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(gpt_ext, CPU, m) {
  m.impl("layer_norm_fwd", &layer_norm_fwd_cpu);
  m.impl("layer_norm_bwd", &layer_norm_bwd_cpu);
  m.impl("add_layer_norm_fwd", &add_layer_norm_fwd_cpu);
}

}  // namespace gpt_ext
