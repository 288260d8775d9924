// The time loops of the fused mLSTM layer (mlstm4reco/fused.py) in C++, for the CPU:
// the same buffers and the same arithmetic as the Python loops, without an interpreter
// round trip per operation. Two strategies: row-wise (hidden sizes up to the caller's
// rowwise_max_hidden), where each group of batch rows runs its whole sequence, both
// recurrent matmuls of each step included, in this file's small kernels, with no ATen call
// per step (the rows' recurrences are independent, so the threads split the batch once a
// call and never wait for each other between steps); otherwise each step calls ATen's
// matmuls over the batch and does the gate arithmetic in plain loops. The gate activations
// use a branch-free exp that the compiler vectorises. Built on first use, with OpenMP (else
// ATen's parallel_for runs serially here), by mlstm4reco/loop_extension.py; when no
// compiler is there, the Python loops run instead. Float matmuls large enough go to oneDNN
// (see matmul_into).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

namespace {

// ---------------------------------------------------------------------------- matmuls

// oneDNN's matmul as ATen wraps it (at::native::mkldnn_matmul: result = beta * result +
// alpha * mat1 @ mat2, any strides), exported by libtorch_cpu but not in its shipped
// headers: looked up by name at run time, so that a torch without it (or another
// platform) keeps ATen's matmul rather than failing to load this library.
using DnnlMatmul = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, float, float);

DnnlMatmul find_dnnl_matmul() {
#if defined(__unix__) || defined(__APPLE__)
  const char* name = "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff";
  void* found = dlsym(RTLD_DEFAULT, name);
  if (found == nullptr) {
    for (const char* library : {"libtorch_cpu.so", "libtorch_cpu.dylib"}) {
      void* handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
      if (handle != nullptr && (found = dlsym(handle, name)) != nullptr) break;
    }
  }
  return reinterpret_cast<DnnlMatmul>(found);
#else
  return nullptr;
#endif
}

DnnlMatmul dnnl_matmul() {
  static const DnnlMatmul found = at::hasMKLDNN() ? find_dnnl_matmul() : nullptr;
  return found;
}

// On by default where found; MLSTM4RECO_MATMUL=aten (or use_onednn(false)) turns it off.
std::atomic<bool> onednn_on{[] {
  const char* choice = std::getenv("MLSTM4RECO_MATMUL");
  return choice == nullptr || std::strcmp(choice, "aten") != 0;
}()};

// Below this many multiply-adds a oneDNN call costs more than it saves.
constexpr int64_t kDnnlMinWork = int64_t(1) << 21;

bool onednn_takes(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out) {
  return onednn_on.load() && dnnl_matmul() != nullptr && a.scalar_type() == at::kFloat &&
         b.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat && a.dim() == 2 &&
         b.dim() == 2 && out.dim() == 2 && a.device().is_cpu() &&
         a.size(0) * a.size(1) * b.size(1) >= kDnnlMinWork;
}

// out = beta * out + a @ b (beta 0: out's contents ignored), by oneDNN for float tensors
// large enough (on x86 it is several times faster than MKL's sgemm on AMD CPUs, and
// level with it elsewhere), else by ATen. The choice depends only on shapes and dtypes:
// the same inputs give the same numbers on every call.
void matmul_into(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, double beta) {
  if (onednn_takes(a, b, out)) {
    dnnl_matmul()(a, b, out, static_cast<float>(beta), 1.0f);
  } else {
    at::Tensor result = out;  // a handle on the same storage
    if (beta == 0) {
      at::mm_out(result, a, b);
    } else {
      result.addmm_(a, b, beta, 1);
    }
  }
}

void matmul_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, double beta) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2, "matmul takes matrices");
  TORCH_CHECK(a.size(1) == b.size(0) && out.size(0) == a.size(0) && out.size(1) == b.size(1),
              "matmul: shapes ", a.sizes(), " @ ", b.sizes(), " into ", out.sizes());
  at::NoGradGuard no_grad;
  matmul_into(a, b, out, beta);
}

// Whether oneDNN takes large float matmuls; `enable` (when given) sets it first.
bool use_onednn(c10::optional<bool> enable) {
  if (enable.has_value()) onednn_on.store(*enable);
  return onednn_on.load() && dnnl_matmul() != nullptr;
}

// ---------------------------------------------------------------------------- gates

// exp(x) for float: Cody-Waite range reduction to r in [-ln2/2, ln2/2] and Cephes' degree-6
// polynomial (within 2 ulp of expf over the clamped range), branch-free so that loops
// calling it vectorise (built with -fno-trapping-math); double uses std::exp.
inline float exp_of(float x) {
  x = x < -87.0f ? -87.0f : x;  // a select, not std::min: the loop vectorises
  x = x > 88.0f ? 88.0f : x;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = x - n * 0.693359375f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline double exp_of(double x) { return std::exp(x); }

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t z) {
  return scalar_t(1) / (scalar_t(1) + exp_of(-z));
}

template <typename scalar_t>
inline scalar_t tanh_of(scalar_t z) {  // 2 sigmoid(2z) - 1, as the Python loop
  return sigmoid(z * 2) * 2 - 1;
}

constexpr int64_t kGrain = 16384;  // elements per thread's share of a plain loop

// Rows [begin, end) of a (B, width) step, in parallel when there is enough work.
template <typename F>
void rows(int64_t batch, int64_t width, F body) {
  at::parallel_for(0, batch, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, width)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t b = begin; b < end; ++b) body(b);
                   });
}

// One batch row of a forward step: the gate activations in place (a: the row's i, f, g, o
// pre-activations, to which `add`, the recurrent part, is added first when given), then
// c_t, tanh(c_t) and h_t. Restrict-qualified so the loops vectorise.
template <typename scalar_t>
void forward_row(scalar_t* __restrict__ a, const scalar_t* __restrict__ add,
                 const scalar_t* __restrict__ c_prev, scalar_t* __restrict__ c,
                 scalar_t* __restrict__ tc, scalar_t* __restrict__ h, int64_t H) {
  if (add) {
    for (int64_t j = 0; j < 4 * H; ++j) a[j] += add[j];
  }
  for (int64_t j = 0; j < 2 * H; ++j) a[j] = sigmoid(a[j]);
  for (int64_t j = 2 * H; j < 3 * H; ++j) a[j] = tanh_of(a[j]);
  for (int64_t j = 3 * H; j < 4 * H; ++j) a[j] = sigmoid(a[j]);
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t cell = a[H + j] * c_prev[j] + a[j] * a[2 * H + j];
    c[j] = cell;
    tc[j] = tanh_of(cell);
    h[j] = a[3 * H + j] * tc[j];
  }
}

// One batch row of a backward step: dh and dc (the gradients of h_t and c_t from step
// t + 1) first take the gradients from outside at step t, gh and gc (either may be null);
// then the gates' pre-activation gradients d; dc becomes the gradient of c_{t-1} (dh is
// overwritten by the caller's matmul).
template <typename scalar_t>
void backward_row(const scalar_t* __restrict__ a, const scalar_t* __restrict__ c_prev,
                  const scalar_t* __restrict__ tc, const scalar_t* __restrict__ gh,
                  const scalar_t* __restrict__ gc, scalar_t* __restrict__ dh,
                  scalar_t* __restrict__ dc, scalar_t* __restrict__ d, int64_t H) {
  if (gh) {
    for (int64_t j = 0; j < H; ++j) dh[j] += gh[j];
  }
  if (gc) {
    for (int64_t j = 0; j < H; ++j) dc[j] += gc[j];
  }
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
    const scalar_t dc_j = dc[j] + dh[j] * o * (1 - tc[j] * tc[j]);
    d[j] = dc_j * g * (i - i * i);
    d[H + j] = dc_j * c_prev[j] * (f - f * f);
    d[2 * H + j] = dc_j * i * (1 - g * g);
    d[3 * H + j] = dh[j] * tc[j] * (o - o * o);
    dc[j] = dc_j * f;
  }
}

// out[r, :] += v[r, :] @ w for the R rows of a row group: v (R, K) with row stride ldv, w
// (K, N) contiguous, out (R, N) with row stride ldo. Blocks of two vectors of columns
// (GCC/Clang vector extensions of MLSTM4RECO_VECTOR_BYTES: 64 for AVX-512 registers, 32
// for AVX ones when built with -mavx2, pairs of SSE ones otherwise), then of one, are held
// in R * 2 (R) accumulators across the K sum, so that w is read once per group of rows
// rather than once per row.
#ifndef MLSTM4RECO_VECTOR_BYTES
#define MLSTM4RECO_VECTOR_BYTES 32
#endif
template <typename scalar_t>
struct Vector {
  typedef scalar_t type __attribute__((vector_size(MLSTM4RECO_VECTOR_BYTES)));
  static constexpr int64_t lanes = MLSTM4RECO_VECTOR_BYTES / sizeof(scalar_t);
};

template <typename V, typename scalar_t>
inline V load(const scalar_t* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <typename V, typename scalar_t>
inline void store(scalar_t* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof v);
}

template <typename scalar_t, int R>
void group_matmul(const scalar_t* __restrict__ v, int64_t ldv, const scalar_t* __restrict__ w,
                  int64_t K, int64_t N, scalar_t* __restrict__ out, int64_t ldo) {
  using V = typename Vector<scalar_t>::type;
  constexpr int64_t L = Vector<scalar_t>::lanes;
  int64_t j = 0;
  for (; j + 2 * L <= N; j += 2 * L) {
    V acc[R][2];
    for (int r = 0; r < R; ++r) {
      acc[r][0] = load<V>(out + r * ldo + j);
      acc[r][1] = load<V>(out + r * ldo + j + L);
    }
    for (int64_t k = 0; k < K; ++k) {
      const V w0 = load<V>(w + k * N + j), w1 = load<V>(w + k * N + j + L);
      for (int r = 0; r < R; ++r) {
        const scalar_t s = v[r * ldv + k];
        acc[r][0] += w0 * s;
        acc[r][1] += w1 * s;
      }
    }
    for (int r = 0; r < R; ++r) {
      store(out + r * ldo + j, acc[r][0]);
      store(out + r * ldo + j + L, acc[r][1]);
    }
  }
  for (; j + L <= N; j += L) {  // one vector of columns
    V acc[R];
    for (int r = 0; r < R; ++r) acc[r] = load<V>(out + r * ldo + j);
    for (int64_t k = 0; k < K; ++k) {
      const V w0 = load<V>(w + k * N + j);
      for (int r = 0; r < R; ++r) acc[r] += w0 * v[r * ldv + k];
    }
    for (int r = 0; r < R; ++r) store(out + r * ldo + j, acc[r]);
  }
  for (; j < N; ++j) {  // columns past the last full vector
    for (int r = 0; r < R; ++r) {
      scalar_t acc = out[r * ldo + j];
      for (int64_t k = 0; k < K; ++k) acc += v[r * ldv + k] * w[k * N + j];
      out[r * ldo + j] = acc;
    }
  }
}

constexpr int kGroup = 4;  // rows per group of the row-wise steps

// Row groups [0, B) in kGroup-row groups (the last may be shorter), in parallel when there
// is enough work: body(b, rows) with rows == kGroup or fewer.
template <typename F>
void row_groups(int64_t batch, int64_t work_per_row, F body) {
  const int64_t groups = (batch + kGroup - 1) / kGroup;
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, work_per_row * kGroup));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t b = g * kGroup;
      body(b, std::min<int64_t>(kGroup, batch - b));
    }
  });
}

// group_matmul for a group of `rows` rows (kGroup, or fewer at the end of the batch).
template <typename scalar_t>
void matmul_rows(int64_t rows, const scalar_t* v, int64_t ldv, const scalar_t* w, int64_t K,
                 int64_t N, scalar_t* out, int64_t ldo) {
  if (rows == kGroup) {
    group_matmul<scalar_t, kGroup>(v, ldv, w, K, N, out, ldo);
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      group_matmul<scalar_t, 1>(v + r * ldv, ldv, w, K, N, out + r * ldo, ldo);
    }
  }
}

template <typename scalar_t>
void forward_steps(const at::Tensor& xp, const at::Tensor& hs, const at::Tensor& cs,
                   const at::Tensor& tanh_cs, const at::Tensor& mh, const at::Tensor& ms,
                   const at::Tensor& w_hm_t, const c10::optional<at::Tensor>& bias_mh,
                   const at::Tensor& w_mh_t, bool rowwise) {
  const int64_t T = xp.size(0), B = xp.size(1), H = hs.size(2);
  const int64_t step = B * H;  // elements of one step of hs, cs, tanh_cs, mh, ms
  scalar_t* const xp0 = xp.data_ptr<scalar_t>();
  scalar_t* const hs0 = hs.data_ptr<scalar_t>();
  scalar_t* const cs0 = cs.data_ptr<scalar_t>();
  scalar_t* const tanh_cs0 = tanh_cs.data_ptr<scalar_t>();
  scalar_t* const mh0 = mh.data_ptr<scalar_t>();
  scalar_t* const ms0 = ms.data_ptr<scalar_t>();
  if (rowwise) {  // each row group's whole sequence, matmuls included: no ATen call
    const at::Tensor whm_t = w_hm_t.contiguous(), wmh_t = w_mh_t.contiguous();
    const scalar_t* const w1 = whm_t.data_ptr<scalar_t>();  // (H, H)
    const scalar_t* const w2 = wmh_t.data_ptr<scalar_t>();  // (H, 4H)
    const scalar_t* const bias = bias_mh.has_value() ? bias_mh->data_ptr<scalar_t>() : nullptr;
    row_groups(B, T * 5 * H * H, [&](int64_t b, int64_t rows) {
      for (int64_t t = 0; t < T; ++t) {
        scalar_t* x = xp0 + (t * B + b) * 5 * H;  // rows' [W_mx x + b | gates], stride 5H
        scalar_t* m = mh0 + t * step + b * H;
        scalar_t* s = ms0 + t * step + b * H;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < H; ++j) m[r * H + j] = bias ? bias[j] : scalar_t(0);
        matmul_rows(rows, hs0 + t * step + b * H, H, w1, H, H, m, H);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < H; ++j) s[r * H + j] = x[r * 5 * H + j] * m[r * H + j];
        matmul_rows(rows, s, H, w2, H, 4 * H, x + H, 5 * H);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t k = t * step + (b + r) * H;
          forward_row(x + r * 5 * H + H, static_cast<const scalar_t*>(nullptr), cs0 + k,
                      cs0 + step + k, tanh_cs0 + k, hs0 + step + k, H);
        }
      }
    });
    return;
  }
  // The matmuls write fresh, contiguous buffers (beta 0: oneDNN's accumulating form is
  // slower); the bias and the gates' input part are added in the elementwise loops.
  at::Tensor recurrent = at::empty({B, 4 * H}, xp.options());  // m_t @ W_mh^T
  scalar_t* const rec = recurrent.data_ptr<scalar_t>();
  const scalar_t* const bias = bias_mh.has_value() ? bias_mh->data_ptr<scalar_t>() : nullptr;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor mh_t = mh[t], ms_t = ms[t];
    matmul_into(hs[t], w_hm_t, mh_t, 0.0);
    scalar_t* x = xp0 + t * 5 * step;  // (B, 5H): [W_mx x + b | gates]
    scalar_t* m = mh0 + t * step;
    scalar_t* s = ms0 + t * step;
    rows(B, H, [&](int64_t b) {
      if (bias) {
        for (int64_t j = 0; j < H; ++j) m[b * H + j] += bias[j];
      }
      for (int64_t j = 0; j < H; ++j) s[b * H + j] = x[b * 5 * H + j] * m[b * H + j];
    });
    matmul_into(ms_t, w_mh_t, recurrent, 0.0);
    const scalar_t* c_prev = cs0 + t * step;
    scalar_t* c = cs0 + (t + 1) * step;
    scalar_t* tc = tanh_cs0 + t * step;
    scalar_t* h = hs0 + (t + 1) * step;
    rows(B, 4 * H, [&](int64_t b) {
      forward_row(x + b * 5 * H + H, rec + b * 4 * H, c_prev + b * H, c + b * H, tc + b * H,
                  h + b * H, H);
    });
  }
}

template <typename scalar_t>
std::vector<at::Tensor> backward_steps(const at::Tensor& xp, const at::Tensor& cs,
                                       const at::Tensor& tanh_cs,
                                       const c10::optional<at::Tensor>& grad_hs,
                                       const c10::optional<at::Tensor>& grad_cs,
                                       const at::Tensor& grad_xp, const at::Tensor& grad_m,
                                       const at::Tensor& grad_mh, const at::Tensor& weight_hm,
                                       const at::Tensor& weight_mh, bool rowwise) {
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2) / 5;
  at::Tensor dh = at::zeros({B, H}, xp.options());
  at::Tensor dc = at::zeros({B, H}, xp.options());
  const int64_t step = B * H;
  const scalar_t* const xp0 = xp.data_ptr<scalar_t>();
  const scalar_t* const cs0 = cs.data_ptr<scalar_t>();
  const scalar_t* const tanh_cs0 = tanh_cs.data_ptr<scalar_t>();
  const scalar_t* const gh0 = grad_hs.has_value() ? grad_hs->data_ptr<scalar_t>() : nullptr;
  const scalar_t* const gc0 = grad_cs.has_value() ? grad_cs->data_ptr<scalar_t>() : nullptr;
  scalar_t* const grad_xp0 = grad_xp.data_ptr<scalar_t>();
  scalar_t* const grad_m0 = grad_m.data_ptr<scalar_t>();
  scalar_t* const grad_mh0 = grad_mh.data_ptr<scalar_t>();
  scalar_t* const dhp = dh.data_ptr<scalar_t>();
  scalar_t* const dcp = dc.data_ptr<scalar_t>();
  if (rowwise) {  // each row group's whole sequence: at each step its dh is consumed, then
                  // rewritten
    const scalar_t* const w_mh = weight_mh.data_ptr<scalar_t>();  // (4H, H)
    const scalar_t* const w_hm = weight_hm.data_ptr<scalar_t>();  // (H, H)
    row_groups(B, T * 5 * H * H, [&](int64_t b, int64_t rows) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t k = t * step + b * H;  // the group's first row of a (T, B, H) buffer
        const scalar_t* x = xp0 + (t * B + b) * 5 * H;
        scalar_t* d = grad_xp0 + (t * B + b) * 5 * H;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t kr = k + r * H;
          backward_row(x + r * 5 * H + H, cs0 + kr, tanh_cs0 + kr, gh0 ? gh0 + kr : nullptr,
                       gc0 ? gc0 + kr : nullptr, dhp + (b + r) * H, dcp + (b + r) * H,
                       d + r * 5 * H + H, H);
        }
        scalar_t* gm = grad_m0 + k;
        scalar_t* gmh = grad_mh0 + k;
        std::fill(gm, gm + rows * H, scalar_t(0));
        matmul_rows(rows, d + H, 5 * H, w_mh, 4 * H, H, gm, H);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < H; ++j) gmh[r * H + j] = gm[r * H + j] * x[r * 5 * H + j];
        scalar_t* dh_group = dhp + b * H;
        std::fill(dh_group, dh_group + rows * H, scalar_t(0));
        matmul_rows(rows, gmh, H, w_hm, H, H, dh_group, H);
      }
    });
    return {dh, dc};
  }
  // The weights stored transposed (same values; oneDNN's faster layout for the right
  // factor, as the forward's weight.t() views).
  const at::Tensor w_mh = weight_mh.t().contiguous().t(), w_hm = weight_hm.t().contiguous().t();
  for (int64_t t = T - 1; t >= 0; --t) {
    const scalar_t* x = xp0 + t * 5 * step;
    const scalar_t* c_prev = cs0 + t * step;
    const scalar_t* tc = tanh_cs0 + t * step;
    const scalar_t* gh = gh0 ? gh0 + t * step : nullptr;
    const scalar_t* gc = gc0 ? gc0 + t * step : nullptr;
    scalar_t* dgates = grad_xp0 + t * 5 * step;  // (B, 5H); gates part written
    rows(B, H, [&](int64_t b) {
      backward_row(x + b * 5 * H + H, c_prev + b * H, tc + b * H, gh ? gh + b * H : nullptr,
                   gc ? gc + b * H : nullptr, dhp + b * H, dcp + b * H,
                   dgates + b * 5 * H + H, H);
    });
    at::Tensor gm_t = grad_m[t], gmh_t = grad_mh[t];
    matmul_into(grad_xp[t].narrow(1, H, 4 * H), w_mh, gm_t, 0.0);
    const scalar_t* gm = grad_m0 + t * step;
    scalar_t* gmh = grad_mh0 + t * step;
    rows(B, H, [&](int64_t b) {
      for (int64_t j = 0; j < H; ++j) gmh[b * H + j] = gm[b * H + j] * x[b * 5 * H + j];
    });
    matmul_into(gmh_t, w_hm, dh, 0.0);
  }
  return {dh, dc};
}

// How many threads a parallel_for of this build spreads `tasks` one-task chunks over: 1
// where the build has no OpenMP (ATen's parallel_for is a header template, serial in code
// compiled without it), up to torch's thread count where it has.
int64_t threads_used(int64_t tasks) {
  TORCH_CHECK(tasks >= 1, "threads_used: tasks must be positive, got ", tasks);
  std::vector<std::atomic<bool>> seen(std::max(at::get_num_threads(), 1));
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    const int thread = at::get_thread_num();
    if (thread >= 0 && thread < static_cast<int>(seen.size())) seen[thread] = true;
  });
  return std::count_if(seen.begin(), seen.end(), [](const auto& s) { return s.load(); });
}

void check(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(tensor.is_contiguous(), name, " must be contiguous");
}

void forward_loop(const at::Tensor& xp, const at::Tensor& hs, const at::Tensor& cs,
                  const at::Tensor& tanh_cs, const at::Tensor& mh, const at::Tensor& ms,
                  const at::Tensor& w_hm_t, const c10::optional<at::Tensor>& bias_mh,
                  const at::Tensor& w_mh_t, int64_t rowwise_max_hidden) {
  for (const auto& [tensor, name] : {std::pair{&xp, "xp"}, {&hs, "hs"}, {&cs, "cs"},
                                     {&tanh_cs, "tanh_cs"}, {&mh, "mh"}, {&ms, "ms"}}) {
    check(*tensor, name);
  }
  at::NoGradGuard no_grad;
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "mlstm_forward_loop", [&] {
    forward_steps<scalar_t>(xp, hs, cs, tanh_cs, mh, ms, w_hm_t, bias_mh, w_mh_t,
                            hs.size(2) <= rowwise_max_hidden);
  });
}

std::vector<at::Tensor> backward_loop(const at::Tensor& xp, const at::Tensor& cs,
                                      const at::Tensor& tanh_cs,
                                      const c10::optional<at::Tensor>& grad_hs,
                                      const c10::optional<at::Tensor>& grad_cs,
                                      const at::Tensor& grad_xp, const at::Tensor& grad_m,
                                      const at::Tensor& grad_mh, const at::Tensor& weight_hm,
                                      const at::Tensor& weight_mh,
                                      int64_t rowwise_max_hidden) {
  for (const auto& [tensor, name] : {std::pair{&xp, "xp"}, {&cs, "cs"}, {&tanh_cs, "tanh_cs"},
                                     {&grad_xp, "grad_xp"}, {&grad_m, "grad_m"},
                                     {&grad_mh, "grad_mh"}}) {
    check(*tensor, name);
  }
  if (grad_hs.has_value()) check(*grad_hs, "grad_hs");
  if (grad_cs.has_value()) check(*grad_cs, "grad_cs");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "mlstm_backward_loop", [&] {
    result = backward_steps<scalar_t>(xp, cs, tanh_cs, grad_hs, grad_cs, grad_xp, grad_m,
                                      grad_mh, weight_hm, weight_mh,
                                      xp.size(2) / 5 <= rowwise_max_hidden);
  });
  return result;
}

}  // namespace

TORCH_LIBRARY(mlstm4reco_loop, m) {
  m.def(
      "forward_loop(Tensor(a!) xp, Tensor(b!) hs, Tensor(c!) cs, Tensor(d!) tanh_cs, "
      "Tensor(e!) mh, Tensor(f!) ms, Tensor w_hm_t, Tensor? bias_mh, Tensor w_mh_t, "
      "int rowwise_max_hidden) -> ()");
  m.def("matmul(Tensor a, Tensor b, Tensor(a!) out, float beta) -> ()");
  m.def("use_onednn(bool? enable) -> bool", &use_onednn);
  m.def("threads_used(int tasks) -> int", &threads_used);
  m.def(
      "backward_loop(Tensor xp, Tensor cs, Tensor tanh_cs, Tensor? grad_hs, Tensor? grad_cs, "
      "Tensor(a!) grad_xp, Tensor(b!) grad_m, Tensor(c!) grad_mh, Tensor weight_hm, "
      "Tensor weight_mh, int rowwise_max_hidden) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(mlstm4reco_loop, CPU, m) {
  m.impl("forward_loop", forward_loop);
  m.impl("backward_loop", backward_loop);
  m.impl("matmul", matmul_op);
}

