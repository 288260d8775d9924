// The time loops of the fused mLSTM layer (mlstm4reco/fused.py) in C++, for the CPU:
// the same buffers and the same arithmetic as the Python loops, without an interpreter
// round trip per operation. Per step the forward takes two matmuls and two vectorised
// sigmoids from ATen and does the rest in plain loops; the backward takes two matmuls and
// plain loops. Built on first use by mlstm4reco/loop_extension.py; when no compiler is
// there, the Python loops run instead.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace {

constexpr int64_t kGrain = 16384;  // elements per thread's share of a plain loop

// Rows [begin, end) of a (B, width) step, in parallel when there is enough work.
template <typename F>
void rows(int64_t batch, int64_t width, F body) {
  at::parallel_for(0, batch, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, width)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t b = begin; b < end; ++b) body(b);
                   });
}

template <typename scalar_t>
void forward_steps(const at::Tensor& xp, const at::Tensor& hs, const at::Tensor& cs,
                   const at::Tensor& tanh_cs, const at::Tensor& mh, const at::Tensor& ms,
                   const at::Tensor& w_hm_t, const c10::optional<at::Tensor>& bias_mh,
                   const at::Tensor& w_mh_t) {
  const int64_t T = xp.size(0), B = xp.size(1), H = hs.size(2);
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor mh_t = mh[t];
    if (bias_mh.has_value()) {
      at::addmm_out(mh_t, *bias_mh, hs[t], w_hm_t);
    } else {
      at::mm_out(mh_t, hs[t], w_hm_t);
    }
    scalar_t* x = xp[t].data_ptr<scalar_t>();  // (B, 5H): [W_mx x + b | gates]
    const scalar_t* m = mh_t.data_ptr<scalar_t>();
    scalar_t* s = ms[t].data_ptr<scalar_t>();
    rows(B, H, [&](int64_t b) {
      for (int64_t j = 0; j < H; ++j) s[b * H + j] = x[b * 5 * H + j] * m[b * H + j];
    });
    at::Tensor gates = xp[t].narrow(1, H, 4 * H);
    gates.addmm_(ms[t], w_mh_t);
    rows(B, H, [&](int64_t b) {  // tanh(z) = 2 sigmoid(2z) - 1, as the Python loop
      for (int64_t j = 0; j < H; ++j) x[b * 5 * H + 3 * H + j] *= 2;
    });
    gates.sigmoid_();
    const scalar_t* c_prev = cs[t].data_ptr<scalar_t>();
    scalar_t* c = cs[t + 1].data_ptr<scalar_t>();
    scalar_t* tc = tanh_cs[t].data_ptr<scalar_t>();
    rows(B, H, [&](int64_t b) {
      scalar_t* a = x + b * 5 * H + H;  // i, f, g, o
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t g = a[2 * H + j] * 2 - 1;
        a[2 * H + j] = g;
        const scalar_t cell = a[H + j] * c_prev[b * H + j] + a[j] * g;
        c[b * H + j] = cell;
        tc[b * H + j] = cell * 2;
      }
    });
    tanh_cs[t].sigmoid_();
    scalar_t* h = hs[t + 1].data_ptr<scalar_t>();
    rows(B, H, [&](int64_t b) {
      const scalar_t* o = x + b * 5 * H + 4 * H;
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t value = tc[b * H + j] * 2 - 1;
        tc[b * H + j] = value;
        h[b * H + j] = o[j] * value;
      }
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
                                       const at::Tensor& weight_mh) {
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2) / 5;
  at::Tensor dh = at::zeros({B, H}, xp.options());
  at::Tensor dc = at::zeros({B, H}, xp.options());
  for (int64_t t = T - 1; t >= 0; --t) {
    const scalar_t* x = xp[t].data_ptr<scalar_t>();
    const scalar_t* c_prev = cs[t].data_ptr<scalar_t>();
    const scalar_t* tc = tanh_cs[t].data_ptr<scalar_t>();
    const scalar_t* gh = grad_hs.has_value() ? (*grad_hs)[t].data_ptr<scalar_t>() : nullptr;
    const scalar_t* gc = grad_cs.has_value() ? (*grad_cs)[t].data_ptr<scalar_t>() : nullptr;
    scalar_t* dhp = dh.data_ptr<scalar_t>();
    scalar_t* dcp = dc.data_ptr<scalar_t>();
    scalar_t* dgates = grad_xp[t].data_ptr<scalar_t>();  // (B, 5H); gates part written
    rows(B, H, [&](int64_t b) {
      const scalar_t* a = x + b * 5 * H + H;
      scalar_t* d = dgates + b * 5 * H + H;
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = b * H + j;
        const scalar_t i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
        const scalar_t dh_k = gh ? dhp[k] + gh[k] : dhp[k];
        scalar_t dc_k = gc ? dcp[k] + gc[k] : dcp[k];
        dc_k = dc_k + dh_k * o * (1 - tc[k] * tc[k]);
        d[j] = dc_k * g * (i - i * i);
        d[H + j] = dc_k * c_prev[k] * (f - f * f);
        d[2 * H + j] = dc_k * i * (1 - g * g);
        d[3 * H + j] = dh_k * tc[k] * (o - o * o);
        dcp[k] = dc_k * f;
      }
    });
    at::Tensor gm_t = grad_m[t];
    at::mm_out(gm_t, grad_xp[t].narrow(1, H, 4 * H), weight_mh);
    const scalar_t* gm = gm_t.data_ptr<scalar_t>();
    scalar_t* gmh = grad_mh[t].data_ptr<scalar_t>();
    rows(B, H, [&](int64_t b) {
      for (int64_t j = 0; j < H; ++j) gmh[b * H + j] = gm[b * H + j] * x[b * 5 * H + j];
    });
    at::mm_out(dh, grad_mh[t], weight_hm);
  }
  return {dh, dc};
}

void check(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(tensor.is_contiguous(), name, " must be contiguous");
}

void forward_loop(const at::Tensor& xp, const at::Tensor& hs, const at::Tensor& cs,
                  const at::Tensor& tanh_cs, const at::Tensor& mh, const at::Tensor& ms,
                  const at::Tensor& w_hm_t, const c10::optional<at::Tensor>& bias_mh,
                  const at::Tensor& w_mh_t) {
  for (const auto& [tensor, name] : {std::pair{&xp, "xp"}, {&hs, "hs"}, {&cs, "cs"},
                                     {&tanh_cs, "tanh_cs"}, {&mh, "mh"}, {&ms, "ms"}}) {
    check(*tensor, name);
  }
  at::NoGradGuard no_grad;
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "mlstm_forward_loop", [&] {
    forward_steps<scalar_t>(xp, hs, cs, tanh_cs, mh, ms, w_hm_t, bias_mh, w_mh_t);
  });
}

std::vector<at::Tensor> backward_loop(const at::Tensor& xp, const at::Tensor& cs,
                                      const at::Tensor& tanh_cs,
                                      const c10::optional<at::Tensor>& grad_hs,
                                      const c10::optional<at::Tensor>& grad_cs,
                                      const at::Tensor& grad_xp, const at::Tensor& grad_m,
                                      const at::Tensor& grad_mh, const at::Tensor& weight_hm,
                                      const at::Tensor& weight_mh) {
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
                                      grad_mh, weight_hm, weight_mh);
  });
  return result;
}

}  // namespace

TORCH_LIBRARY(mlstm4reco_loop, m) {
  m.def(
      "forward_loop(Tensor(a!) xp, Tensor(b!) hs, Tensor(c!) cs, Tensor(d!) tanh_cs, "
      "Tensor(e!) mh, Tensor(f!) ms, Tensor w_hm_t, Tensor? bias_mh, Tensor w_mh_t) -> ()");
  m.def(
      "backward_loop(Tensor xp, Tensor cs, Tensor tanh_cs, Tensor? grad_hs, Tensor? grad_cs, "
      "Tensor(a!) grad_xp, Tensor(b!) grad_m, Tensor(c!) grad_mh, Tensor weight_hm, "
      "Tensor weight_mh) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(mlstm4reco_loop, CPU, m) {
  m.impl("forward_loop", forward_loop);
  m.impl("backward_loop", backward_loop);
}
