// graphdl's fused CPU edge kernels: message passing over a CSR (rows = destinations) without
// materialising (E, C) edge tensors that the math does not need.
//
// Every kernel walks rows of a CSR (`rowptr`, `col`), in parallel over rows (for_each_row),
// and accumulates into the row's output in the kernel's own loop, so no two threads write one
// row and no atomics are needed. Gradients that land on the *source* side are computed by the
// same walk over the transposed CSR (`t_rowptr`, `t_col` = the destination of each entry,
// `t2c` = the entry of the row CSR, i.e. the edge, that each transposed entry is).
//
// Conventions (checked by graphdl/ops/kernels.py before any call): float32 or float64 feature
// tensors, 2-D and contiguous; `rowptr`/`col` int32 or int64 (one dtype); `t2c` int64; edge
// tensors indexed by CSR entry (a graphdl Graph's edges are dst-sorted, so entry = edge id).
//
// Written for graphdl; the operations are those of GINE (Hu et al. 2020), ResGatedGraphConv
// (Bresson & Laurent 2017) and GatedGCN (Dwivedi et al. 2020).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kGrain = 256;  // rows per parallel task

// body(i) for every row i in [0, n), rows split across threads (a row is never shared).
template <typename F>
inline void for_each_row(int64_t n, F&& body) {
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) body(i);
  });
}

template <typename T>
inline void zero_row(T* o, int64_t c) {
  for (int64_t f = 0; f < c; ++f) o[f] = T(0);
}

template <typename T>
inline void add_row(T* o, const T* r, int64_t c) {  // o += r
  for (int64_t f = 0; f < c; ++f) o[f] += r[f];
}

template <typename T>
inline void axpy_row(T* o, T a, const T* r, int64_t c) {  // o += a r
  for (int64_t f = 0; f < c; ++f) o[f] += a * r[f];
}

// exp for float32 written so that GCC vectorises loops calling it (glibc's expf is a scalar
// call): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then exp(r) by the classic degree-7
// minimax polynomial (Cephes' expf coefficients; relative error about 2 ulp), times 2^n built in the
// exponent bits. Inputs are clamped to [-87, 88] (exp stays a normal float); NaN stays NaN (the
// clamps are comparisons, false for NaN, and r carries it).
inline float exp_vec(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float shift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (no -ffast-math here)
  const float t = x * 1.44269504088896341f + shift;
  const float n = t - shift;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union { int32_t i; float f; } scale;
  scale.i = (static_cast<int32_t>(n) + 127) << 23;
  return p * scale.f;
}

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t z) {
  return scalar_t(1) / (scalar_t(1) + std::exp(-z));
}

template <>
inline float sigmoid<float>(float z) {
  return 1.0f / (1.0f + exp_vec(-z));
}

void check_feat(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), name, " must be a contiguous 2-D tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name, " must be float32 or float64");
}

void check_csr(const at::Tensor& rowptr, const at::Tensor& col) {
  TORCH_CHECK(rowptr.scalar_type() == col.scalar_type(), "rowptr and col must share one integer dtype");
  TORCH_CHECK(rowptr.scalar_type() == at::kInt || rowptr.scalar_type() == at::kLong, "rowptr must be int32 or int64");
  TORCH_CHECK(rowptr.is_contiguous() && col.is_contiguous(), "rowptr and col must be contiguous");
}

#define GDL_DISPATCH(FEAT, IDX, NAME, ...)                                   \
  AT_DISPATCH_FLOATING_TYPES(FEAT, NAME, [&] {                               \
    if ((IDX) == at::kInt) {                                                 \
      using index_t = int32_t;                                               \
      __VA_ARGS__();                                                         \
    } else {                                                                 \
      using index_t = int64_t;                                               \
      __VA_ARGS__();                                                         \
    }                                                                        \
  })

// out[i] = sum_{k in row i} w[k] * x[col[k]]   (w = 1 when `values` is undefined)
at::Tensor csr_sum(const at::Tensor& rowptr, const at::Tensor& col, const c10::optional<at::Tensor>& values,
                   const at::Tensor& x) {
  check_csr(rowptr, col);
  check_feat(x, "x");
  const int64_t n = rowptr.numel() - 1, c = x.size(1);
  auto out = at::empty({n, c}, x.options());
  const bool weighted = values.has_value() && values->defined();
  GDL_DISPATCH(x.scalar_type(), rowptr.scalar_type(), "csr_sum", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weighted ? values->data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * c;
      zero_row(o, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const scalar_t* xr = xp + static_cast<int64_t>(cl[k]) * c;
        if (wp) {
          const scalar_t w = wp[k];
          axpy_row(o, w, xr, c);
        } else {
          add_row(o, xr, c);
        }
      }
    });
  });
  return out;
}

// out[i] = sum_{k in row i} rows[idx[k]]   (idx int64: the transposed walk over edge rows)
at::Tensor csr_sum_rows(const at::Tensor& rowptr, const at::Tensor& idx, const at::Tensor& rows) {
  check_feat(rows, "rows");
  TORCH_CHECK(idx.scalar_type() == at::kLong && idx.is_contiguous(), "idx must be contiguous int64");
  TORCH_CHECK(rowptr.scalar_type() == at::kInt || rowptr.scalar_type() == at::kLong, "rowptr must be int32 or int64");
  const int64_t n = rowptr.numel() - 1, c = rows.size(1);
  auto out = at::empty({n, c}, rows.options());
  GDL_DISPATCH(rows.scalar_type(), rowptr.scalar_type(), "csr_sum_rows", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const int64_t* ix = idx.data_ptr<int64_t>();
    const scalar_t* rw = rows.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * c;
      zero_row(o, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const scalar_t* r = rw + ix[k] * c;
        add_row(o, r, c);
      }
    });
  });
  return out;
}

// GINE: out[i] = sum_{k in row i} relu(x[col[k]] + e[k])
at::Tensor relu_sum(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x, const at::Tensor& e) {
  check_csr(rowptr, col);
  check_feat(x, "x");
  check_feat(e, "e");
  const int64_t n = rowptr.numel() - 1, c = x.size(1);
  auto out = at::empty({n, c}, x.options());
  GDL_DISPATCH(x.scalar_type(), rowptr.scalar_type(), "relu_sum", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* ep = e.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * c;
      zero_row(o, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const scalar_t* xr = xp + static_cast<int64_t>(cl[k]) * c;
        const scalar_t* er = ep + k * c;
        for (int64_t f = 0; f < c; ++f) {
          const scalar_t m = xr[f] + er[f];
          o[f] += m > 0 ? m : scalar_t(0);
        }
      }
    });
  });
  return out;
}

// GINE backward, edge side: grad_e[k] = g[i] * [x[col[k]] + e[k] > 0] for k in row i
at::Tensor relu_sum_backward(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                             const at::Tensor& e, const at::Tensor& g) {
  check_csr(rowptr, col);
  check_feat(x, "x");
  check_feat(e, "e");
  check_feat(g, "grad");
  const int64_t n = rowptr.numel() - 1, c = x.size(1);
  auto ge = at::empty_like(e);
  GDL_DISPATCH(x.scalar_type(), rowptr.scalar_type(), "relu_sum_backward", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* ep = e.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* gep = ge.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      const scalar_t* gi = gp + i * c;
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const scalar_t* xr = xp + static_cast<int64_t>(cl[k]) * c;
        const scalar_t* er = ep + k * c;
        scalar_t* o = gep + k * c;
        for (int64_t f = 0; f < c; ++f) o[f] = (xr[f] + er[f]) > 0 ? gi[f] : scalar_t(0);
      }
    });
  });
  return ge;
}

// ResGatedGraphConv: out[i] = sum_{k in row i} sigmoid(kd[i] + qs[j]) * v[j], j = col[k]
at::Tensor gated_sum(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& kd, const at::Tensor& qs,
                     const at::Tensor& v) {
  check_csr(rowptr, col);
  check_feat(kd, "k");
  check_feat(qs, "q");
  check_feat(v, "v");
  const int64_t n = rowptr.numel() - 1, c = v.size(1);
  auto out = at::empty({n, c}, v.options());
  GDL_DISPATCH(v.scalar_type(), rowptr.scalar_type(), "gated_sum", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* kp = kd.data_ptr<scalar_t>();
    const scalar_t* qp = qs.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * c;
      const scalar_t* ki = kp + i * c;
      zero_row(o, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const int64_t j = cl[k];
        const scalar_t* qj = qp + j * c;
        const scalar_t* vj = vp + j * c;
        for (int64_t f = 0; f < c; ++f) o[f] += sigmoid(ki[f] + qj[f]) * vj[f];
      }
    });
  });
  return out;
}

// ResGatedGraphConv backward, destination side: gk[i] = sum_k g[i] * v[j] * s (1 - s)
at::Tensor gated_sum_backward_dst(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& kd,
                                  const at::Tensor& qs, const at::Tensor& v, const at::Tensor& g) {
  check_csr(rowptr, col);
  check_feat(g, "grad");
  const int64_t n = rowptr.numel() - 1, c = v.size(1);
  auto gk = at::empty({n, c}, v.options());
  GDL_DISPATCH(v.scalar_type(), rowptr.scalar_type(), "gated_sum_backward_dst", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* kp = kd.data_ptr<scalar_t>();
    const scalar_t* qp = qs.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* op = gk.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * c;
      const scalar_t* ki = kp + i * c;
      const scalar_t* gi = gp + i * c;
      zero_row(o, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const int64_t j = cl[k];
        const scalar_t* qj = qp + j * c;
        const scalar_t* vj = vp + j * c;
        for (int64_t f = 0; f < c; ++f) {
          const scalar_t s = sigmoid(ki[f] + qj[f]);
          o[f] += gi[f] * vj[f] * s * (scalar_t(1) - s);
        }
      }
    });
  });
  return gk;
}

// ResGatedGraphConv backward, source side, over the transposed CSR (t_col = destinations):
// gq[j] = sum g[i] * v[j] * s (1 - s),  gv[j] = sum g[i] * s
std::tuple<at::Tensor, at::Tensor> gated_sum_backward_src(const at::Tensor& t_rowptr, const at::Tensor& t_col,
                                                          const at::Tensor& kd, const at::Tensor& qs,
                                                          const at::Tensor& v, const at::Tensor& g) {
  check_csr(t_rowptr, t_col);
  check_feat(g, "grad");
  const int64_t n = t_rowptr.numel() - 1, c = v.size(1);
  auto gq = at::empty({n, c}, v.options());
  auto gv = at::empty({n, c}, v.options());
  GDL_DISPATCH(v.scalar_type(), t_rowptr.scalar_type(), "gated_sum_backward_src", [&] {
    const index_t* rp = t_rowptr.data_ptr<index_t>();
    const index_t* cl = t_col.data_ptr<index_t>();
    const scalar_t* kp = kd.data_ptr<scalar_t>();
    const scalar_t* qp = qs.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* gqp = gq.data_ptr<scalar_t>();
    scalar_t* gvp = gv.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t j) {
      scalar_t* oq = gqp + j * c;
      scalar_t* ov = gvp + j * c;
      const scalar_t* qj = qp + j * c;
      const scalar_t* vj = vp + j * c;
      for (int64_t f = 0; f < c; ++f) oq[f] = ov[f] = 0;
      for (int64_t k = rp[j]; k < rp[j + 1]; ++k) {
        const int64_t i = cl[k];
        const scalar_t* ki = kp + i * c;
        const scalar_t* gi = gp + i * c;
        for (int64_t f = 0; f < c; ++f) {
          const scalar_t s = sigmoid(ki[f] + qj[f]);
          const scalar_t gs = gi[f] * s;
          ov[f] += gs;
          oq[f] += gs * vj[f] * (scalar_t(1) - s);
        }
      }
    });
  });
  return {gq, gv};
}

// GatedGCN forward: e_hat[k] = ax[i] + bx[j] (+ ce[k]),  s = sigmoid(e_hat),
// num[i] = sum s * vx[j],  den[i] = sum s;  returns (num, den, e_hat); den only if `with_den`;
// with `into_ce`, e_hat is written into ce's storage (and returned as it).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_edge_forward(const at::Tensor& rowptr, const at::Tensor& col,
                                                                  const at::Tensor& ax, const at::Tensor& bx,
                                                                  const c10::optional<at::Tensor>& ce,
                                                                  const at::Tensor& vx, bool with_den,
                                                                  bool into_ce) {
  check_csr(rowptr, col);
  check_feat(ax, "ax");
  check_feat(bx, "bx");
  check_feat(vx, "vx");
  const bool has_ce = ce.has_value() && ce->defined();
  if (has_ce) check_feat(*ce, "ce");
  const int64_t n = rowptr.numel() - 1, c = vx.size(1), nnz = col.numel();
  auto num = at::empty({n, c}, vx.options());
  auto den = with_den ? at::empty({n, c}, vx.options()) : at::empty({0}, vx.options());
  TORCH_CHECK(!into_ce || has_ce, "into_ce needs ce");
  // into_ce: e_hat overwrites ce (each element is read before it is written), saving an (E, C) buffer
  auto e_hat = into_ce ? *ce : at::empty({nnz, c}, vx.options());
  GDL_DISPATCH(vx.scalar_type(), rowptr.scalar_type(), "gated_edge_forward", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* ap = ax.data_ptr<scalar_t>();
    const scalar_t* bp = bx.data_ptr<scalar_t>();
    const scalar_t* cp = has_ce ? ce->data_ptr<scalar_t>() : nullptr;
    const scalar_t* vp = vx.data_ptr<scalar_t>();
    scalar_t* np_ = num.data_ptr<scalar_t>();
    scalar_t* dp = with_den ? den.data_ptr<scalar_t>() : nullptr;
    scalar_t* ehp = e_hat.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = np_ + i * c;
      const scalar_t* ai = ap + i * c;
      zero_row(o, c);
      if (dp)
        for (int64_t f = 0; f < c; ++f) dp[i * c + f] = 0;
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const int64_t j = cl[k];
        const scalar_t* bj = bp + j * c;
        const scalar_t* vj = vp + j * c;
        scalar_t* eh = ehp + k * c;
        if (cp) {
          const scalar_t* ck = cp + k * c;
          for (int64_t f = 0; f < c; ++f) eh[f] = ai[f] + bj[f] + ck[f];
        } else {
          for (int64_t f = 0; f < c; ++f) eh[f] = ai[f] + bj[f];
        }
        if (dp) {
          scalar_t* di = dp + i * c;
          for (int64_t f = 0; f < c; ++f) {
            const scalar_t s = sigmoid(eh[f]);
            o[f] += s * vj[f];
            di[f] += s;
          }
        } else {
          for (int64_t f = 0; f < c; ++f) o[f] += sigmoid(eh[f]) * vj[f];
        }
      }
    });
  });
  return {num, den, e_hat};
}

// GatedGCN backward, destination side. With s = sigmoid(e_hat[k]):
// d[k] = (g_num[i] * vx[j] + g_den[i]) * s (1 - s) + g_ehat[k];  returns (d (E, C), gax[i] = sum_k d[k]).
// g_den / g_ehat may be undefined (no normalisation / no gradient through the edge output).
std::tuple<at::Tensor, at::Tensor> gated_edge_backward_dst(const at::Tensor& rowptr, const at::Tensor& col,
                                                           const at::Tensor& vx, const at::Tensor& e_hat,
                                                           const at::Tensor& g_num,
                                                           const c10::optional<at::Tensor>& g_den,
                                                           const c10::optional<at::Tensor>& g_ehat) {
  check_csr(rowptr, col);
  check_feat(e_hat, "e_hat");
  check_feat(g_num, "g_num");
  const bool has_den = g_den.has_value() && g_den->defined();
  const bool has_ge = g_ehat.has_value() && g_ehat->defined();
  if (has_den) check_feat(*g_den, "g_den");
  if (has_ge) check_feat(*g_ehat, "g_ehat");
  const int64_t n = rowptr.numel() - 1, c = vx.size(1);
  auto d = at::empty_like(e_hat);
  auto gax = at::empty({n, c}, vx.options());
  GDL_DISPATCH(vx.scalar_type(), rowptr.scalar_type(), "gated_edge_backward_dst", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* vp = vx.data_ptr<scalar_t>();
    const scalar_t* ehp = e_hat.data_ptr<scalar_t>();
    const scalar_t* gnp = g_num.data_ptr<scalar_t>();
    const scalar_t* gdp = has_den ? g_den->data_ptr<scalar_t>() : nullptr;
    const scalar_t* gep = has_ge ? g_ehat->data_ptr<scalar_t>() : nullptr;
    scalar_t* dp = d.data_ptr<scalar_t>();
    scalar_t* gap = gax.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = gap + i * c;
      const scalar_t* gn = gnp + i * c;
      zero_row(o, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const int64_t j = cl[k];
        const scalar_t* vj = vp + j * c;
        const scalar_t* eh = ehp + k * c;
        scalar_t* dk = dp + k * c;
        if (gdp) {
          const scalar_t* gd = gdp + i * c;
          for (int64_t f = 0; f < c; ++f) {
            const scalar_t s = sigmoid(eh[f]);
            dk[f] = (gn[f] * vj[f] + gd[f]) * s * (scalar_t(1) - s);
          }
        } else {
          for (int64_t f = 0; f < c; ++f) {
            const scalar_t s = sigmoid(eh[f]);
            dk[f] = gn[f] * vj[f] * s * (scalar_t(1) - s);
          }
        }
        if (gep) {
          const scalar_t* ge = gep + k * c;
          add_row(dk, ge, c);
        }
        add_row(o, dk, c);
      }
    });
  });
  return {d, gax};
}

// GatedGCN backward, source side, over the transposed CSR (t_col = destinations, t2c = edges):
// gbx[j] = sum d[e],  gvx[j] = sum g_num[i] * sigmoid(e_hat[e]).
std::tuple<at::Tensor, at::Tensor> gated_edge_backward_src(const at::Tensor& t_rowptr, const at::Tensor& t_col,
                                                           const at::Tensor& t2c, const at::Tensor& e_hat,
                                                           const at::Tensor& d, const at::Tensor& g_num) {
  check_csr(t_rowptr, t_col);
  TORCH_CHECK(t2c.scalar_type() == at::kLong && t2c.is_contiguous(), "t2c must be contiguous int64");
  check_feat(e_hat, "e_hat");
  check_feat(d, "d");
  check_feat(g_num, "g_num");
  const int64_t n = t_rowptr.numel() - 1, c = e_hat.size(1);
  auto gbx = at::empty({n, c}, e_hat.options());
  auto gvx = at::empty({n, c}, e_hat.options());
  GDL_DISPATCH(e_hat.scalar_type(), t_rowptr.scalar_type(), "gated_edge_backward_src", [&] {
    const index_t* rp = t_rowptr.data_ptr<index_t>();
    const index_t* cl = t_col.data_ptr<index_t>();
    const int64_t* tc = t2c.data_ptr<int64_t>();
    const scalar_t* ehp = e_hat.data_ptr<scalar_t>();
    const scalar_t* dp = d.data_ptr<scalar_t>();
    const scalar_t* gnp = g_num.data_ptr<scalar_t>();
    scalar_t* gbp = gbx.data_ptr<scalar_t>();
    scalar_t* gvp = gvx.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t j) {
      scalar_t* ob = gbp + j * c;
      scalar_t* ov = gvp + j * c;
      for (int64_t f = 0; f < c; ++f) ob[f] = ov[f] = 0;
      for (int64_t k = rp[j]; k < rp[j + 1]; ++k) {
        const int64_t e = tc[k];
        const int64_t i = cl[k];
        const scalar_t* eh = ehp + e * c;
        const scalar_t* de = dp + e * c;
        const scalar_t* gn = gnp + i * c;
        for (int64_t f = 0; f < c; ++f) {
          ob[f] += de[f];
          ov[f] += gn[f] * sigmoid(eh[f]);
        }
      }
    });
  });
  return {gbx, gvx};
}


// Multi-head CSR sum (GAT): x (N, H, C) contiguous, values (E, H):
// out[i, h] = sum_{k in row i} values[k, h] * x[col[k], h].
at::Tensor csr_sum_heads(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& values,
                         const at::Tensor& x) {
  check_csr(rowptr, col);
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && x.device().is_cpu(), "x must be a contiguous (N, H, C) CPU tensor");
  TORCH_CHECK(values.dim() == 2 && values.is_contiguous() && values.size(1) == x.size(1) &&
              values.scalar_type() == x.scalar_type(), "values must be a contiguous (E, H) tensor of x's dtype");
  const int64_t n = rowptr.numel() - 1, nh = x.size(1), c = x.size(2), w = nh * c;
  auto out = at::empty({n, nh, c}, x.options());
  GDL_DISPATCH(x.scalar_type(), rowptr.scalar_type(), "csr_sum_heads", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* vp = values.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * w;
      zero_row(o, w);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const scalar_t* xr = xp + static_cast<int64_t>(cl[k]) * w;
        const scalar_t* vk = vp + k * nh;
        for (int64_t h = 0; h < nh; ++h) {
          const scalar_t a = vk[h];
          scalar_t* oh = o + h * c;
          const scalar_t* xh = xr + h * c;
          axpy_row(oh, a, xh, c);
        }
      }
    });
  });
  return out;
}

// Sampled dense-dense product per head: a (R, H, C), b (N, H, C) contiguous;
// out[k, h] = <a[i, h], b[col[k], h]> for k in row i. (E, H).
at::Tensor sddmm_heads(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& a, const at::Tensor& b) {
  check_csr(rowptr, col);
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.is_contiguous() && b.is_contiguous() && a.size(1) == b.size(1) &&
              a.size(2) == b.size(2) && a.scalar_type() == b.scalar_type() && a.device().is_cpu(),
              "a and b must be contiguous (rows, H, C) CPU tensors of one dtype and trailing shape");
  const int64_t n = rowptr.numel() - 1, nh = a.size(1), c = a.size(2), w = nh * c;
  auto out = at::empty({col.numel(), nh}, a.options());
  GDL_DISPATCH(a.scalar_type(), rowptr.scalar_type(), "sddmm_heads", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const scalar_t* ai = ap + i * w;
        for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
          const scalar_t* bj = bp + static_cast<int64_t>(cl[k]) * w;
          for (int64_t h = 0; h < nh; ++h) {
            scalar_t acc = 0;
            for (int64_t f = 0; f < c; ++f) acc += ai[h * c + f] * bj[h * c + f];
            op[k * nh + h] = acc;
          }
        }
      }
    });
  });
  return out;
}

// Max aggregation (SAGE max / max-pool): out[i] = max_{k in row i} x[col[k]] elementwise; 0 for an
// empty row; NaN wins (a NaN message makes the row's maximum NaN, as torch's amax).
at::Tensor csr_max(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x) {
  check_csr(rowptr, col);
  check_feat(x, "x");
  const int64_t n = rowptr.numel() - 1, c = x.size(1);
  auto out = at::empty({n, c}, x.options());
  GDL_DISPATCH(x.scalar_type(), rowptr.scalar_type(), "csr_max", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * c;
      if (rp[i] == rp[i + 1]) {
        zero_row(o, c);
        return;  // next row
      }
      const scalar_t* x0 = xp + static_cast<int64_t>(cl[rp[i]]) * c;
      for (int64_t f = 0; f < c; ++f) o[f] = x0[f];
      for (int64_t k = rp[i] + 1; k < rp[i + 1]; ++k) {
        const scalar_t* xr = xp + static_cast<int64_t>(cl[k]) * c;
        for (int64_t f = 0; f < c; ++f) {
          const scalar_t v = xr[f];
          o[f] = (v > o[f] || v != v) && o[f] == o[f] ? v : o[f];
        }
      }
    });
  });
  return out;
}

// Max aggregation backward, destination side: share[i] = grad[i] / (number of entries of row i
// whose x equals out[i]), elementwise (ties split the gradient equally; at least 1).
at::Tensor csr_max_share(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x, const at::Tensor& out,
                         const at::Tensor& g) {
  check_csr(rowptr, col);
  check_feat(x, "x");
  check_feat(out, "out");
  check_feat(g, "grad");
  const int64_t n = rowptr.numel() - 1, c = x.size(1);
  auto share = at::empty({n, c}, x.options());
  GDL_DISPATCH(x.scalar_type(), rowptr.scalar_type(), "csr_max_share", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* sp = share.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* s = sp + i * c;
      const scalar_t* o = op + i * c;
      zero_row(s, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const scalar_t* xr = xp + static_cast<int64_t>(cl[k]) * c;
        for (int64_t f = 0; f < c; ++f) s[f] += xr[f] == o[f] ? scalar_t(1) : scalar_t(0);
      }
      const scalar_t* gi = gp + i * c;
      for (int64_t f = 0; f < c; ++f) s[f] = gi[f] / (s[f] > 0 ? s[f] : scalar_t(1));
    });
  });
  return share;
}

// Max aggregation backward, source side, over the transposed CSR (t_col = destinations):
// grad_x[j] = sum_{k in t-row j} share[i] * [x[j] == out[i]], i = t_col[k].
at::Tensor csr_max_backward_src(const at::Tensor& t_rowptr, const at::Tensor& t_col, const at::Tensor& x,
                                const at::Tensor& out, const at::Tensor& share) {
  check_csr(t_rowptr, t_col);
  check_feat(x, "x");
  const int64_t n = t_rowptr.numel() - 1, c = x.size(1);
  auto gx = at::empty({n, c}, x.options());
  GDL_DISPATCH(x.scalar_type(), t_rowptr.scalar_type(), "csr_max_backward_src", [&] {
    const index_t* rp = t_rowptr.data_ptr<index_t>();
    const index_t* cl = t_col.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t* sp = share.data_ptr<scalar_t>();
    scalar_t* gp = gx.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t j) {
      scalar_t* gj = gp + j * c;
      const scalar_t* xj = xp + j * c;
      zero_row(gj, c);
      for (int64_t k = rp[j]; k < rp[j + 1]; ++k) {
        const int64_t i = cl[k];
        const scalar_t* o = op + i * c;
        const scalar_t* s = sp + i * c;
        for (int64_t f = 0; f < c; ++f) gj[f] += xj[f] == o[f] ? s[f] : scalar_t(0);
      }
    });
  });
  return gx;
}

// Sum of contiguous row segments: out[s] = sum_{k in [ptr[s], ptr[s+1])} x[k] (edges sorted by
// destination reduced to nodes; nodes grouped by graph reduced to graphs).
at::Tensor segment_sum_rows(const at::Tensor& ptr, const at::Tensor& x) {
  check_feat(x, "x");
  TORCH_CHECK(ptr.scalar_type() == at::kInt || ptr.scalar_type() == at::kLong, "ptr must be int32 or int64");
  TORCH_CHECK(ptr.is_contiguous(), "ptr must be contiguous");
  const int64_t n = ptr.numel() - 1, c = x.size(1);
  auto out = at::empty({n, c}, x.options());
  GDL_DISPATCH(x.scalar_type(), ptr.scalar_type(), "segment_sum_rows", [&] {
    const index_t* rp = ptr.data_ptr<index_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      scalar_t* o = op + i * c;
      zero_row(o, c);
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const scalar_t* r = xp + k * c;
        add_row(o, r, c);
      }
    });
  });
  return out;
}

// An edge MLP's first layer with its node parts multiplied on the nodes (GNS, MPNN edge models):
// out[k] = base[k] + yd[i] + ys[j] + bias for entry k = (j -> i) of row i; each term optional.
// into_base: write into base's storage (it must be given).
at::Tensor edge_gather_add(const at::Tensor& rowptr, const at::Tensor& col, const c10::optional<at::Tensor>& base,
                           const c10::optional<at::Tensor>& yd, const c10::optional<at::Tensor>& ys,
                           const c10::optional<at::Tensor>& bias, int64_t channels, bool into_base) {
  check_csr(rowptr, col);
  const bool hb = base.has_value() && base->defined(), hd = yd.has_value() && yd->defined();
  const bool hs = ys.has_value() && ys->defined(), hbias = bias.has_value() && bias->defined();
  TORCH_CHECK(!into_base || hb, "into_base needs base");
  at::TensorOptions opts;
  at::ScalarType st = at::kFloat;
  for (const c10::optional<at::Tensor>* t : {&base, &yd, &ys}) {
    if (t->has_value() && (*t)->defined()) {
      check_feat(**t, "edge part");
      TORCH_CHECK((*t)->size(1) == channels, "every part must have `channels` columns");
      opts = (*t)->options();
      st = (*t)->scalar_type();
    }
  }
  TORCH_CHECK(hb || hd || hs, "edge_gather_add needs at least one part");
  if (hbias) TORCH_CHECK(bias->is_contiguous() && bias->numel() == channels && bias->scalar_type() == st, "bad bias");
  const int64_t n = rowptr.numel() - 1, c = channels, nnz = col.numel();
  auto out = into_base ? *base : at::empty({nnz, c}, opts);
  GDL_DISPATCH(st, rowptr.scalar_type(), "edge_gather_add", [&] {
    const index_t* rp = rowptr.data_ptr<index_t>();
    const index_t* cl = col.data_ptr<index_t>();
    const scalar_t* bp = hb ? base->data_ptr<scalar_t>() : nullptr;
    const scalar_t* dp = hd ? yd->data_ptr<scalar_t>() : nullptr;
    const scalar_t* sp = hs ? ys->data_ptr<scalar_t>() : nullptr;
    const scalar_t* biasp = hbias ? bias->data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    for_each_row(n, [&](int64_t i) {
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        scalar_t* o = op + k * c;
        if (bp) {
          const scalar_t* r = bp + k * c;
          for (int64_t f = 0; f < c; ++f) o[f] = r[f];
        } else {
          zero_row(o, c);
        }
        if (dp) {
          const scalar_t* r = dp + i * c;
          add_row(o, r, c);
        }
        if (sp) {
          const scalar_t* r = sp + static_cast<int64_t>(cl[k]) * c;
          add_row(o, r, c);
        }
        if (biasp)
          add_row(o, biasp, c);
      }
    });
  });
  return out;
}

// Row offsets of ascending row indices in O(E): rowptr[r] = number of entries with row < r.
// Each entry k writes the offsets of the rows between its predecessor's row and its own.
at::Tensor rowptr_from_sorted(const at::Tensor& rows, int64_t num_rows) {
  TORCH_CHECK(rows.dim() == 1 && rows.is_contiguous() && rows.device().is_cpu(), "rows must be a contiguous 1-D CPU tensor");
  TORCH_CHECK(rows.scalar_type() == at::kInt || rows.scalar_type() == at::kLong, "rows must be int32 or int64");
  const int64_t m = rows.numel();
  auto rowptr = at::empty({num_rows + 1}, rows.options().dtype(at::kLong));
  int64_t* rp = rowptr.data_ptr<int64_t>();
  AT_DISPATCH_INDEX_TYPES(rows.scalar_type(), "rowptr_from_sorted", [&] {
    const index_t* r = rows.data_ptr<index_t>();
    // entry k (with r[-1] = -1 and r[m] = num_rows) sets rowptr[t] = k for r[k-1] < t <= r[k]
    at::parallel_for(0, m + 1, 4096, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t prev = k == 0 ? -1 : static_cast<int64_t>(r[k - 1]);
        const int64_t cur = k == m ? num_rows : static_cast<int64_t>(r[k]);
        for (int64_t t = std::max<int64_t>(prev + 1, 0); t <= std::min(cur, num_rows); ++t) rp[t] = k;
      }
    });
  });
  return rowptr;
}

// Kipf & Welling's symmetric normalisation with PyG's add_remaining_self_loops, over the
// destination-row CSR: w' = w with loop entries zeroed, lambda_i = the last existing loop's
// weight of row i else `fill`, deg_i = sum w' + lambda_i, dinv = deg^-1/2 (0 where deg = 0),
// values[k] = dinv[col k] w'[k] dinv[i], diag_i = dinv_i^2 lambda_i. Without loops (fill < 0):
// deg_i = sum w, no diagonal (an empty tensor). Returns (values, diag).
std::tuple<at::Tensor, at::Tensor> gcn_norm(const at::Tensor& rowptr, const at::Tensor& col,
                                            const c10::optional<at::Tensor>& weight, double fill,
                                            at::ScalarType dtype) {
  check_csr(rowptr, col);
  const int64_t n = rowptr.numel() - 1, nnz = col.numel();
  const bool loops = fill >= 0;
  const bool hw = weight.has_value() && weight->defined();
  auto opts = col.options().dtype(dtype);
  auto values = at::empty({nnz}, opts);
  auto diag = at::empty({loops ? n : 0}, opts);
  auto dinv = at::empty({n}, opts);
  AT_DISPATCH_FLOATING_TYPES(dtype, "gcn_norm", [&] {
    at::Tensor wt;
    if (hw) wt = weight->to(dtype).contiguous();
    const scalar_t* wp = hw ? wt.data_ptr<scalar_t>() : nullptr;
    scalar_t* vp = values.data_ptr<scalar_t>();
    scalar_t* dp = loops ? diag.data_ptr<scalar_t>() : nullptr;
    scalar_t* ip = dinv.data_ptr<scalar_t>();
    auto run = [&](auto* rp, auto* cl) {
      at::parallel_for(0, n, 2048, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          scalar_t deg = 0, lam = static_cast<scalar_t>(fill);
          for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
            const scalar_t w = wp ? wp[k] : scalar_t(1);
            if (loops && static_cast<int64_t>(cl[k]) == i) lam = w;
            else deg += w;
          }
          if (loops) {
            deg += lam;
            dp[i] = lam;
          }
          ip[i] = deg == 0 ? scalar_t(0) : scalar_t(1) / std::sqrt(deg);
        }
      });
      at::parallel_for(0, n, 2048, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const scalar_t di = ip[i];
          for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
            const int64_t j = cl[k];
            const scalar_t w = (loops && j == i) ? scalar_t(0) : (wp ? wp[k] : scalar_t(1));
            vp[k] = ip[j] * w * di;
          }
          if (loops) dp[i] = di * di * dp[i];
        }
      });
    };
    if (rowptr.scalar_type() == at::kInt) run(rowptr.data_ptr<int32_t>(), col.data_ptr<int32_t>());
    else run(rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>());
  });
  return {values, diag};
}

// Stable counting sort of `key` (values in [0, num_bins)) carrying `other` along: the transpose of a
// CSR in O(E + num_bins). Returns (rowptr int64 (num_bins + 1), perm int64 (entry k of the result
// is input entry perm[k]), key[perm], other[perm]). Each thread counts and places its own chunk of
// the input; chunk t's entries of a bin follow chunk t - 1's, so the order within a bin is the
// input order (stable), the same result as a stable comparison sort by key.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> counting_sort(const at::Tensor& key,
                                                                         const at::Tensor& other,
                                                                         int64_t num_bins) {
  TORCH_CHECK(key.dim() == 1 && other.dim() == 1 && key.numel() == other.numel(), "key and other must be 1-D of one length");
  TORCH_CHECK(key.scalar_type() == other.scalar_type(), "key and other must share one integer dtype");
  TORCH_CHECK(key.scalar_type() == at::kInt || key.scalar_type() == at::kLong, "key must be int32 or int64");
  TORCH_CHECK(key.is_contiguous() && other.is_contiguous() && key.device().is_cpu(), "key and other must be contiguous CPU tensors");
  TORCH_CHECK(num_bins >= 0, "num_bins must be >= 0");
  const int64_t m = key.numel();
  auto rowptr = at::empty({num_bins + 1}, key.options().dtype(at::kLong));
  auto perm = at::empty({m}, key.options().dtype(at::kLong));
  auto key_s = at::empty_like(key);
  auto other_s = at::empty_like(other);
  int64_t nt = at::get_num_threads();
  if (nt < 1 || num_bins * nt > 4 * m + 4096) nt = 1;  // few entries per bin: one pass is cheaper
  const int64_t chunk = (m + nt - 1) / std::max<int64_t>(nt, 1);
  std::vector<int64_t> count(static_cast<size_t>(nt * num_bins), 0);
  std::vector<int64_t> bad(static_cast<size_t>(nt), 0);
  AT_DISPATCH_INDEX_TYPES(key.scalar_type(), "counting_sort", [&] {
    const index_t* kp = key.data_ptr<index_t>();
    const index_t* op = other.data_ptr<index_t>();
    index_t* ksp = key_s.data_ptr<index_t>();
    index_t* osp = other_s.data_ptr<index_t>();
    int64_t* pp = perm.data_ptr<int64_t>();
    at::parallel_for(0, nt, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        int64_t* c = count.data() + t * num_bins;
        for (int64_t k = t * chunk; k < std::min(m, (t + 1) * chunk); ++k) {
          const int64_t b = kp[k];
          if (b < 0 || b >= num_bins) { bad[t] = 1; continue; }
          ++c[b];
        }
      }
    });
    for (int64_t t = 0; t < nt; ++t) TORCH_CHECK(!bad[t], "counting_sort: a key is outside [0, ", num_bins, ")");
    int64_t* rp = rowptr.data_ptr<int64_t>();
    int64_t run = 0;
    for (int64_t b = 0; b < num_bins; ++b) {
      rp[b] = run;
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t c = count[t * num_bins + b];
        count[t * num_bins + b] = run;
        run += c;
      }
    }
    rp[num_bins] = run;
    at::parallel_for(0, nt, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        int64_t* pos = count.data() + t * num_bins;
        for (int64_t k = t * chunk; k < std::min(m, (t + 1) * chunk); ++k) {
          const int64_t b = kp[k];
          const int64_t p = pos[b]++;
          pp[p] = k;
          ksp[p] = kp[k];
          osp[p] = op[k];
        }
      }
    });
  });
  return {rowptr, perm, key_s, other_s};
}

}  // namespace

TORCH_LIBRARY(graphdl_kernels, m) {
  m.def("rowptr_from_sorted(Tensor rows, int num_rows) -> Tensor", &rowptr_from_sorted);
  m.def("gcn_norm(Tensor rowptr, Tensor col, Tensor? weight, float fill, ScalarType dtype) -> (Tensor, Tensor)",
        &gcn_norm);
  m.def("segment_sum_rows(Tensor ptr, Tensor x) -> Tensor", &segment_sum_rows);
  m.def("edge_gather_add(Tensor rowptr, Tensor col, Tensor(a!)? base, Tensor? yd, Tensor? ys, Tensor? bias,"
        " int channels, bool into_base) -> Tensor", &edge_gather_add);
  m.def("csr_sum_heads(Tensor rowptr, Tensor col, Tensor values, Tensor x) -> Tensor", &csr_sum_heads);
  m.def("sddmm_heads(Tensor rowptr, Tensor col, Tensor a, Tensor b) -> Tensor", &sddmm_heads);
  m.def("csr_max(Tensor rowptr, Tensor col, Tensor x) -> Tensor", &csr_max);
  m.def("csr_max_share(Tensor rowptr, Tensor col, Tensor x, Tensor out, Tensor grad) -> Tensor", &csr_max_share);
  m.def("csr_max_backward_src(Tensor t_rowptr, Tensor t_col, Tensor x, Tensor out, Tensor share) -> Tensor",
        &csr_max_backward_src);
  m.def("counting_sort(Tensor key, Tensor other, int num_bins) -> (Tensor, Tensor, Tensor, Tensor)", &counting_sort);
  m.def("csr_sum(Tensor rowptr, Tensor col, Tensor? values, Tensor x) -> Tensor", &csr_sum);
  m.def("csr_sum_rows(Tensor rowptr, Tensor idx, Tensor rows) -> Tensor", &csr_sum_rows);
  m.def("relu_sum(Tensor rowptr, Tensor col, Tensor x, Tensor e) -> Tensor", &relu_sum);
  m.def("relu_sum_backward(Tensor rowptr, Tensor col, Tensor x, Tensor e, Tensor grad) -> Tensor",
        &relu_sum_backward);
  m.def("gated_sum(Tensor rowptr, Tensor col, Tensor k, Tensor q, Tensor v) -> Tensor", &gated_sum);
  m.def("gated_sum_backward_dst(Tensor rowptr, Tensor col, Tensor k, Tensor q, Tensor v, Tensor grad) -> Tensor",
        &gated_sum_backward_dst);
  m.def("gated_sum_backward_src(Tensor t_rowptr, Tensor t_col, Tensor k, Tensor q, Tensor v, Tensor grad)"
        " -> (Tensor, Tensor)", &gated_sum_backward_src);
  m.def("gated_edge_forward(Tensor rowptr, Tensor col, Tensor ax, Tensor bx, Tensor(a!)? ce, Tensor vx, bool with_den, bool into_ce)"
        " -> (Tensor, Tensor, Tensor)", &gated_edge_forward);
  m.def("gated_edge_backward_dst(Tensor rowptr, Tensor col, Tensor vx, Tensor e_hat, Tensor g_num, Tensor? g_den,"
        " Tensor? g_ehat) -> (Tensor, Tensor)", &gated_edge_backward_dst);
  m.def("gated_edge_backward_src(Tensor t_rowptr, Tensor t_col, Tensor t2c, Tensor e_hat, Tensor d, Tensor g_num)"
        " -> (Tensor, Tensor)", &gated_edge_backward_src);
}
