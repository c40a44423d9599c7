// Core kernel test program (ctest): the time loops against a plain scalar loop on random
// shapes including the edge sizes, forward (float and double) and backward (double, against
// central finite differences of the plain loop). Buffers are sized exactly, so that
// AddressSanitizer sees any access outside them; run under ASan and UBSan in CI.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

#include "../../csrc/cpu/kernels.h"

using namespace fastrnn;
using Vec = std::vector<double>;

namespace {

std::mt19937 rng(1234);

Vec randn(size_t n, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct Shape {
  Cell cell;
  int64_t T, B, H, R;
  bool reverse, lengths, proj;
};

// Plain loop: y [T,B,R], hT [B,R], cT [B,H] from xp [T,B,G*H] and the weights.
void reference(const Shape& s, const Vec& xp, const Vec& whh, const Vec& whr, const Vec& bhh, const Vec& h0,
               const Vec& c0, const std::vector<int64_t>& len, Vec& y, Vec& hT, Vec& cT) {
  const int64_t T = s.T, B = s.B, H = s.H, R = s.R, G = gates_of(s.cell);
  y.assign(T * B * R, 0.0);
  hT = h0;
  cT = c0;
  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = s.reverse ? T - 1 - step : step;
    for (int64_t b = 0; b < B; ++b) {
      if (s.lengths && t >= len[b]) continue;
      Vec pre(G * H), hrow(hT.begin() + b * R, hT.begin() + (b + 1) * R);
      for (int64_t m = 0; m < G * H; ++m) {
        double acc = bhh.empty() ? 0.0 : bhh[m];
        for (int64_t k = 0; k < R; ++k) acc += whh[m * R + k] * hrow[k];
        pre[m] = acc;
      }
      const double* x = &xp[(t * B + b) * G * H];
      Vec hnew(H);
      for (int64_t j = 0; j < H; ++j) {
        if (s.cell == Cell::LSTM) {
          const double i = sigm(x[j] + pre[j]), f = sigm(x[H + j] + pre[H + j]);
          const double g = std::tanh(x[2 * H + j] + pre[2 * H + j]), o = sigm(x[3 * H + j] + pre[3 * H + j]);
          cT[b * H + j] = f * cT[b * H + j] + i * g;
          hnew[j] = o * std::tanh(cT[b * H + j]);
        } else if (s.cell == Cell::GRU) {
          const double r = sigm(x[j] + pre[j]), z = sigm(x[H + j] + pre[H + j]);
          const double n = std::tanh(x[2 * H + j] + r * pre[2 * H + j]);
          hnew[j] = (1 - z) * n + z * hrow[j];
        } else {
          const double v = x[j] + pre[j];
          hnew[j] = s.cell == Cell::RNN_TANH ? std::tanh(v) : (v > 0 ? v : 0.0);
        }
      }
      for (int64_t u = 0; u < R; ++u) {
        double v = hnew[u];
        if (s.proj) {
          v = 0;
          for (int64_t j = 0; j < H; ++j) v += whr[u * H + j] * hnew[j];
        }
        hT[b * R + u] = v;
        y[(t * B + b) * R + u] = v;
      }
    }
  }
}

template <typename S>
std::vector<S> cast(const Vec& v) {
  return std::vector<S>(v.begin(), v.end());
}

template <typename S>
S* ptr_or_null(std::vector<S>& v) {
  return v.empty() ? nullptr : v.data();
}

int failures = 0;

void expect_close(const char* what, const Shape& s, double got, double want, double tol) {
  if (!(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)))) {
    if (failures < 20)
      std::printf("FAIL %s cell=%d T=%ld B=%ld H=%ld R=%ld rev=%d len=%d: got %.10g want %.10g\n", what,
                  static_cast<int>(s.cell), (long)s.T, (long)s.B, (long)s.H, (long)s.R, s.reverse, s.lengths, got,
                  want);
    ++failures;
  }
}

// xp = x W_ih^T + b_ih for x stored batch-first ([B][T][I]).
Vec project_batch_first(const Shape& s, int64_t I, const Vec& x, const Vec& wih, const Vec& bih) {
  const int64_t T = s.T, B = s.B, GH = gates_of(s.cell) * s.H;
  Vec xp(T * B * GH);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t m = 0; m < GH; ++m) {
        double acc = bih[m];
        for (int64_t i = 0; i < I; ++i) acc += x[(b * T + t) * I + i] * wih[m * I + i];
        xp[(t * B + b) * GH + m] = acc;
      }
  return xp;
}

// L = <dy,y> + <dhT,hT> + <dcT,cT>: backward's incoming gradients as a scalar loss.
double dot_loss(const Vec& dy, const Vec& dhT, const Vec& dcT, const Vec& y, const Vec& hT, const Vec& cT) {
  double L = 0;
  for (size_t i = 0; i < y.size(); ++i) L += dy[i] * y[i];
  for (size_t i = 0; i < hT.size(); ++i) L += dhT[i] * hT[i];
  for (size_t i = 0; i < cT.size(); ++i) L += dcT[i] * cT[i];
  return L;
}

template <typename S>
void run_forward(const Shape& s, const Vec& xp, const Vec& whh, const Vec& whr, const Vec& bhh, const Vec& h0,
                 const Vec& c0, const std::vector<int64_t>& len, bool training, std::vector<S>& y,
                 std::vector<S>& hT, std::vector<S>& cT, std::vector<S>& gates, std::vector<S>& cs,
                 std::vector<S>& hpre, int threads) {
  const int64_t T = s.T, B = s.B, H = s.H, R = s.R, G = gates_of(s.cell);
  const auto& k = cpu::kernels(S{});
  std::vector<S> xs = cast<S>(xp), ws = cast<S>(whh), wr = cast<S>(whr), bh = cast<S>(bhh), h = cast<S>(h0),
                 c = cast<S>(c0);
  y.assign(T * B * R, S(0));
  hT.assign(B * R, S(0));
  cT.assign(s.cell == Cell::LSTM ? B * H : 0, S(0));
  gates.assign(training && s.cell != Cell::RNN_TANH && s.cell != Cell::RNN_RELU ? T * B * G * H : 0, S(0));
  cs.assign(gates.empty() ? 0 : T * B * H, S(0));
  hpre.assign(training && s.proj ? T * B * H : 0, S(0));
  std::vector<S> work(k.forward_workspace(s.cell, B, H, R));
  ForwardArgs<S> a{s.cell, T, B, H, R, s.reverse, xs.data(), ws.data(), ptr_or_null(wr), ptr_or_null(bh),
                   ptr_or_null(h), ptr_or_null(c), s.lengths ? len.data() : nullptr, y.data(), hT.data(),
                   ptr_or_null(cT), ptr_or_null(gates), ptr_or_null(cs), ptr_or_null(hpre), work.data(),
                   static_cast<int64_t>(work.size()), threads, false};
  k.forward(a);
}

void check_shape(const Shape& s) {
  const int64_t T = s.T, B = s.B, H = s.H, R = s.R, G = gates_of(s.cell);
  const bool lstm = s.cell == Cell::LSTM;
  Vec xp = randn(T * B * G * H), whh = randn(G * H * R, 0.5), bhh = randn(G * H, 0.3), h0 = randn(B * R);
  Vec whr = s.proj ? randn(R * H, 0.5) : Vec(), c0 = lstm ? randn(B * H) : Vec();
  std::vector<int64_t> len(B);
  std::uniform_int_distribution<int64_t> ld(0, T);
  for (auto& l : len) l = ld(rng);
  // even batches: non-increasing lengths (a padded PackedSequence), where the kernels run
  // each step's GEMM over the active rows only
  if (B % 2 == 0) std::sort(len.begin(), len.end(), [](int64_t x, int64_t y) { return x > y; });
  Vec y, hT, cT;
  reference(s, xp, whh, whr, bhh, h0, c0, len, y, hT, cT);

  for (int threads : {1, 3}) {
    std::vector<double> yd, hd, cd, g, cs, hp;
    run_forward<double>(s, xp, whh, whr, bhh, h0, c0, len, true, yd, hd, cd, g, cs, hp, threads);
    for (size_t i = 0; i < y.size(); ++i) expect_close("f64 y", s, yd[i], y[i], 1e-12);
    for (size_t i = 0; i < hT.size(); ++i) expect_close("f64 hT", s, hd[i], hT[i], 1e-12);
    for (size_t i = 0; i < cT.size(); ++i) expect_close("f64 cT", s, cd[i], cT[i], 1e-12);
    std::vector<float> yf, hf, cf, gf, csf, hpf;
    run_forward<float>(s, xp, whh, whr, bhh, h0, c0, len, false, yf, hf, cf, gf, csf, hpf, threads);
    for (size_t i = 0; i < y.size(); ++i) expect_close("f32 y", s, yf[i], y[i], 2e-5);
  }

  // Backward (double) against central differences of L = <dy,y> + <dhT,hT> + <dcT,cT>.
  Vec dy = randn(T * B * R), dhT = randn(B * R), dcT = lstm ? randn(B * H) : Vec();
  auto loss = [&](const Vec& xp_, const Vec& h0_, const Vec& c0_) {
    Vec yy, hh, cc;
    reference(s, xp_, whh, whr, bhh, h0_, c0_, len, yy, hh, cc);
    return dot_loss(dy, dhT, dcT, yy, hh, cc);
  };
  std::vector<double> yd, hd, cd, g, cs, hp;
  run_forward<double>(s, xp, whh, whr, bhh, h0, c0, len, true, yd, hd, cd, g, cs, hp, 1);
  const auto& k = cpu::kernels(0.0);
  Vec dxp(T * B * G * H), dh0(B * R), dc0(lstm ? B * H : 0);
  Vec dhid(s.cell == Cell::GRU ? T * B * H : (s.proj ? T * B * R : 0));
  Vec work(k.backward_workspace(s.cell, B, H, R));
  Vec whh_c = whh, whr_c = whr, h0_c = h0, c0_c = c0;
  // the weight gradients too (exact sizes; NaN-filled: every entry must be written)
  Vec dwhh(G * H * R, NAN), dbhh(G * H, NAN), dwhr(s.proj ? R * H : 0, NAN);
  BackwardArgs<double> a{s.cell, T, B, H, R, s.reverse, whh_c.data(), ptr_or_null(whr_c), ptr_or_null(h0_c),
                         ptr_or_null(c0_c), s.lengths ? len.data() : nullptr, yd.data(), ptr_or_null(g),
                         ptr_or_null(cs), ptr_or_null(hp), dy.data(), dhT.data(), ptr_or_null(dcT), dxp.data(),
                         ptr_or_null(dhid), dh0.data(), ptr_or_null(dc0), work.data(),
                         static_cast<int64_t>(work.size()), s.B > 4 ? 3 : 1};
  a.dw_hh = dwhh.data();
  a.db_hh = dbhh.data();
  a.dw_hr = ptr_or_null(dwhr);
  k.backward(a);
  const double eps = 1e-6;
  auto fd = [&](Vec& v, size_t i, auto&& f) {
    const double keep = v[i];
    v[i] = keep + eps;
    const double lp = f();
    v[i] = keep - eps;
    const double lm = f();
    v[i] = keep;
    return (lp - lm) / (2 * eps);
  };
  // Every entry on small shapes, a random sample of 8 on large ones.
  auto indices = [&](size_t n) {
    std::vector<size_t> idx;
    if (n <= 400) {
      for (size_t i = 0; i < n; ++i) idx.push_back(i);
    } else {
      std::uniform_int_distribution<size_t> d(0, n - 1);
      for (int i = 0; i < 8; ++i) idx.push_back(d(rng));
    }
    return idx;
  };
  // every sampled entry of `got` against central differences of the loss in `v`
  auto check_fd = [&](const char* what, const Vec& got, Vec& v, auto&& f) {
    for (size_t i : indices(v.size())) expect_close(what, s, got[i], fd(v, i, f), 1e-5);
  };
  Vec xp_c = xp;
  check_fd("dxp", dxp, xp_c, [&] { return loss(xp_c, h0, c0); });
  check_fd("dh0", dh0, h0_c, [&] { return loss(xp, h0_c, c0); });
  check_fd("dc0", dc0, c0_c, [&] { return loss(xp, h0, c0_c); });
  // Again with the gradients in other layouts (dy batch-first, dhT and dcT transposed) and no
  // dxp/dhid/dh0/dc0 outputs (the loop keeps them in scratch, sized exactly): the same sums.
  {
    Vec dy_bf(T * B * R), dhT_t(B * R), dcT_t(dcT.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t u = 0; u < R; ++u) dy_bf[(b * T + t) * R + u] = dy[(t * B + b) * R + u];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t u = 0; u < R; ++u) dhT_t[u * B + b] = dhT[b * R + u];
    for (int64_t b = 0; b < (lstm ? B : 0); ++b)
      for (int64_t u = 0; u < H; ++u) dcT_t[u * B + b] = dcT[b * H + u];
    Vec dwhh2(G * H * R, NAN), dbhh2(G * H, NAN), dwhr2(s.proj ? R * H : 0, NAN);
    BackwardArgs<double> a2 = a;
    a2.dy = dy_bf.data();
    a2.dhT = dhT_t.data();
    a2.dcT = ptr_or_null(dcT_t);
    a2.dy_st = R;
    a2.dy_sb = T * R;
    a2.dy_su = 1;
    a2.dhT_sb = 1;
    a2.dhT_su = B;
    a2.dcT_sb = 1;
    a2.dcT_su = B;
    a2.dxp = a2.dhid = a2.dh0 = a2.dc0 = nullptr;
    a2.dw_hh = dwhh2.data();
    a2.db_hh = dbhh2.data();
    a2.dw_hr = ptr_or_null(dwhr2);
    Vec work2(k.backward_workspace(s.cell, B, H, R) + cpu::backward_extra_workspace(a2));
    a2.work = work2.data();
    a2.work_size = static_cast<int64_t>(work2.size());
    k.backward(a2);
    for (size_t i = 0; i < dwhh.size(); ++i) expect_close("strided dw_hh", s, dwhh2[i], dwhh[i], 1e-12);
    for (size_t i = 0; i < dbhh.size(); ++i) expect_close("strided db_hh", s, dbhh2[i], dbhh[i], 1e-12);
    for (size_t i = 0; i < dwhr.size(); ++i) expect_close("strided dw_hr", s, dwhr2[i], dwhr[i], 1e-12);
  }
  // loss() reads whh, bhh and whr by reference
  const auto at_weights = [&] { return loss(xp, h0, c0); };
  check_fd("dw_hh", dwhh, whh, at_weights);
  check_fd("db_hh", dbhh, bhh, at_weights);
  check_fd("dw_hr", dwhr, whr, at_weights);
}

void check_rejects() {
  // Preconditions throw instead of touching memory.
  const auto& k = cpu::kernels(0.0f);
  std::vector<float> buf(64);
  int64_t bad_len[1] = {5};
  ForwardArgs<float> a{Cell::LSTM, 2, 1, 1, 1, false, buf.data(), buf.data(), nullptr, nullptr, nullptr, nullptr,
                       bad_len, buf.data(), buf.data(), buf.data(), nullptr, nullptr, nullptr, buf.data(), 64, 1,
                       false};
  int thrown = 0;
  try { k.forward(a); } catch (const std::invalid_argument&) { ++thrown; }
  a.lengths = nullptr;
  a.work_size = 1;
  try { k.forward(a); } catch (const std::invalid_argument&) { ++thrown; }
  a.work_size = 64;
  a.T = -1;
  try { k.forward(a); } catch (const std::invalid_argument&) { ++thrown; }
  a.T = 2;
  int64_t len2[1] = {2}, steps_bad[3] = {0, 1, 2 + 5};  // a packed layout that the lengths do not match
  a.lengths = len2;
  a.steps = steps_bad;
  try { k.forward(a); } catch (const std::invalid_argument&) { ++thrown; }
  if (thrown != 4) {
    std::printf("FAIL: expected 4 rejections, got %d\n", thrown);
    ++failures;
  }
}

}  // namespace

void check_fused_backward(const Shape& s, int64_t I, const Vec& x, const Vec& wih, const Vec& bih, const Vec& whh,
                          const Vec& whr, const Vec& bhh, const Vec& h0, const Vec& c0,
                          const std::vector<int64_t>& len, Vec& xs, Vec& ws, Vec& wr, Vec& h, Vec& c, Vec& yo,
                          Vec& gates, Vec& cs, Vec& hpre, int threads);

// The packed layout (ForwardArgs::steps: a PackedSequence's rows, lengths non-increasing) of
// the inference forward `a` (fused, from the batch-first x), and of the same call given xp
// instead: the packed rows of y and the final states against the plain loop's y, hT, cT.
template <typename S>
void check_packed_as(const Shape& s, int64_t I, const Vec& x, const Vec& xp, ForwardArgs<S> a,
                     const std::vector<int64_t>& len, const Vec& y, const Vec& hT, const Vec& cT, double tol) {
  const int64_t T = s.T, B = s.B, R = s.R, GH = gates_of(s.cell) * s.H;
  std::vector<int64_t> steps(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) {
    int64_t n = 0;
    while (n < B && len[n] > t) ++n;
    steps[t + 1] = steps[t] + n;
  }
  const int64_t N = steps[T];
  std::vector<S> xk(N * I + 1), xpk(N * GH + 1);  // (+1: never a null array, even when N = 0)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < steps[t + 1] - steps[t]; ++b) {
      for (int64_t i = 0; i < I; ++i) xk[(steps[t] + b) * I + i] = S(x[(b * T + t) * I + i]);
      for (int64_t m = 0; m < GH; ++m) xpk[(steps[t] + b) * GH + m] = S(xp[(t * B + b) * GH + m]);
    }
  const auto& k = cpu::kernels(S{});
  for (int fused = 1; fused >= 0; --fused) {  // (the fused call first: it still has w_ih)
    std::vector<S> yk(N * R + 1, S(-7));  // one guard element past the packed rows
    a.steps = steps.data();
    a.y = yk.data();
    if (fused) {
      a.xp = nullptr;
      a.x = xk.data();
      a.x_st = 0;
      a.x_sb = I;
    } else {
      a.xp = xpk.data();
      a.x = nullptr;
      a.w_ih = a.b_ih = nullptr;
    }
    std::fill(a.hT, a.hT + B * R, S(0));
    k.forward(a);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < steps[t + 1] - steps[t]; ++b)
        for (int64_t u = 0; u < R; ++u)
          expect_close("packed y", s, yk[(steps[t] + b) * R + u], y[(t * B + b) * R + u], tol);
    expect_close("packed guard", s, yk[N * R], -7, 0);
    for (size_t i = 0; i < hT.size(); ++i) expect_close("packed hT", s, a.hT[i], hT[i], tol);
    for (size_t i = 0; i < cT.size(); ++i) expect_close("packed cT", s, a.cT[i], cT[i], tol);
  }
}

// The fused input projection (ForwardArgs::x): x stored batch-first ([B][T][I], the strided
// case), xp = x W_ih^T + b_ih computed here, outputs against the plain loop on that xp.
template <typename S>
void check_fused_as(const Shape& s, int64_t I, bool training, int threads, double tol) {
  const int64_t T = s.T, B = s.B, H = s.H, R = s.R, G = gates_of(s.cell);
  const bool lstm = s.cell == Cell::LSTM;
  Vec x = randn(B * T * I), wih = randn(G * H * I, 0.5), bih = randn(G * H, 0.3);
  Vec whh = randn(G * H * R, 0.5), bhh = randn(G * H, 0.3), h0 = randn(B * R);
  Vec whr = s.proj ? randn(R * H, 0.5) : Vec(), c0 = lstm ? randn(B * H) : Vec();
  std::vector<int64_t> len(B);
  std::uniform_int_distribution<int64_t> ld(0, T);
  for (auto& l : len) l = ld(rng);
  // even batches: non-increasing lengths (a padded PackedSequence), where the kernels run
  // each step's GEMM over the active rows only
  if (B % 2 == 0) std::sort(len.begin(), len.end(), [](int64_t x, int64_t y) { return x > y; });
  const Vec xp = project_batch_first(s, I, x, wih, bih);
  Vec y, hT, cT;
  reference(s, xp, whh, whr, bhh, h0, c0, len, y, hT, cT);
  const auto& k = cpu::kernels(S{});
  std::vector<S> xs = cast<S>(x), wi = cast<S>(wih), bi = cast<S>(bih), ws = cast<S>(whh), wr = cast<S>(whr),
                 bh = cast<S>(bhh), h = cast<S>(h0), c = cast<S>(c0);
  std::vector<S> yo(T * B * R), ho(B * R), co(lstm ? B * H : 0);
  const bool gated = s.cell == Cell::LSTM || s.cell == Cell::GRU;
  std::vector<S> gates(training && gated ? T * B * G * H : 0), cs(gates.empty() ? 0 : T * B * H);
  std::vector<S> hpre(training && s.proj ? T * B * H : 0);
  std::vector<S> work(k.forward_workspace(s.cell, B, H, R) +
                      k.projection_workspace(s.cell, T, B, H, I, !gates.empty()));
  ForwardArgs<S> a{s.cell, T, B, H, R, s.reverse, nullptr, ws.data(), ptr_or_null(wr), ptr_or_null(bh),
                   ptr_or_null(h), ptr_or_null(c), s.lengths ? len.data() : nullptr, yo.data(), ho.data(),
                   ptr_or_null(co), ptr_or_null(gates), ptr_or_null(cs), ptr_or_null(hpre), work.data(),
                   static_cast<int64_t>(work.size()), threads, false,
                   xs.data(), wi.data(), bi.data(), I, I, T * I};
  k.forward(a);
  for (size_t i = 0; i < y.size(); ++i) expect_close("fused y", s, yo[i], y[i], tol);
  for (size_t i = 0; i < hT.size(); ++i) expect_close("fused hT", s, ho[i], hT[i], tol);
  for (size_t i = 0; i < cT.size(); ++i) expect_close("fused cT", s, co[i], cT[i], tol);
  if constexpr (std::is_same<S, double>::value) {
    if (training && gated) check_fused_backward(s, I, x, wih, bih, whh, whr, bhh, h0, c0, len, xs, ws, wr, h, c, yo,
                                                gates, cs, hpre, threads);
  }
  if (!training && s.lengths && B % 2 == 0) check_packed_as<S>(s, I, x, xp, a, len, y, hT, cT, tol);
}

// Backward after a fused forward (check_fused_as): the input weights' gradients, read from the
// batch-first x, against central differences in w_ih and b_ih of L = <dy,y> + <dhT,hT> + <dcT,cT>.
void check_fused_backward(const Shape& s, int64_t I, const Vec& x, const Vec& wih, const Vec& bih, const Vec& whh,
                          const Vec& whr, const Vec& bhh, const Vec& h0, const Vec& c0,
                          const std::vector<int64_t>& len, Vec& xs, Vec& ws, Vec& wr, Vec& h, Vec& c, Vec& yo,
                          Vec& gates, Vec& cs, Vec& hpre, int threads) {
  const int64_t T = s.T, B = s.B, H = s.H, R = s.R, G = gates_of(s.cell);
  const bool lstm = s.cell == Cell::LSTM;
  const auto& k = cpu::kernels(0.0);
  // Backward with the input weights' gradients, read from the strided x, against central
  // differences of L = <dy,y> + <dhT,hT> + <dcT,cT> in w_ih and b_ih.
  Vec dy = randn(T * B * R), dhT = randn(B * R), dcT = lstm ? randn(B * H) : Vec();
  auto loss = [&](const Vec& wih_, const Vec& bih_) {
    Vec yy, hh, cc;
    reference(s, project_batch_first(s, I, x, wih_, bih_), whh, whr, bhh, h0, c0, len, yy, hh, cc);
    return dot_loss(dy, dhT, dcT, yy, hh, cc);
  };
  Vec dxp(T * B * G * H), dh0(B * R), dc0(lstm ? B * H : 0);
  Vec dhid(s.cell == Cell::GRU ? T * B * H : (s.proj ? T * B * R : 0));
  Vec bwork(k.backward_workspace(s.cell, B, H, R));
  Vec dwih(G * H * I, NAN), dbih(G * H, NAN);
  BackwardArgs<double> ba{s.cell, T, B, H, R, s.reverse, ws.data(), ptr_or_null(wr), ptr_or_null(h),
                          ptr_or_null(c), s.lengths ? len.data() : nullptr, yo.data(), ptr_or_null(gates),
                          ptr_or_null(cs), ptr_or_null(hpre), dy.data(), dhT.data(), ptr_or_null(dcT),
                          dxp.data(), ptr_or_null(dhid), dh0.data(), ptr_or_null(dc0), bwork.data(),
                          static_cast<int64_t>(bwork.size()), threads};
  ba.x = xs.data();
  ba.I = I;
  ba.x_st = I;
  ba.x_sb = T * I;
  ba.dw_ih = dwih.data();
  ba.db_ih = dbih.data();
  k.backward(ba);
  const double eps = 1e-6;
  std::uniform_int_distribution<size_t> pick_w(0, wih.size() - 1), pick_b(0, bih.size() - 1);
  for (int rep = 0; rep < 6; ++rep) {
    const size_t i = wih.size() <= 24 ? rep * wih.size() / 6 : pick_w(rng);
    Vec wp = wih, wm = wih;
    wp[i] += eps;
    wm[i] -= eps;
    expect_close("fused dw_ih", s, dwih[i], (loss(wp, bih) - loss(wm, bih)) / (2 * eps), 1e-5);
    const size_t j = pick_b(rng);
    Vec bp = bih, bm = bih;
    bp[j] += eps;
    bm[j] -= eps;
    expect_close("fused db_ih", s, dbih[j], (loss(wih, bp) - loss(wih, bm)) / (2 * eps), 1e-5);
  }
}

void check_fused(const Shape& s, int64_t I) {
  for (int threads : {1, 3}) {
    check_fused_as<double>(s, I, threads == 1, threads, 1e-12);
    check_fused_as<float>(s, I, threads == 3, threads, 5e-5);
  }
}

int main() {
  std::printf("kernel ISA: %s\n", cpu::selected_isa());
  int cases = 0;
  const Cell cells[] = {Cell::LSTM, Cell::GRU, Cell::RNN_TANH, Cell::RNN_RELU};
  std::uniform_int_distribution<int64_t> dT(1, 5), dB(1, 6), dH(1, 19);
  for (Cell cell : cells) {
    for (int rep = 0; rep < 12; ++rep) {
      Shape s{cell, dT(rng), dB(rng), dH(rng), 0, rep % 2 == 1, rep % 3 == 0, false};
      if (rep < 2) s.T = s.B = s.H = 1;  // the edge sizes
      if (rep == 2) s.B = 1;
      s.R = s.H;
      if (cell == Cell::LSTM && rep % 4 == 3 && s.H > 1) {
        s.proj = true;
        s.R = 1 + (s.H - 1) / 2;
      }
      check_shape(s);
      check_fused(s, 1 + rep % 5);
      cases += 2;
    }
  }
  // Shapes that take the threaded path, and (H = 150 > the K chunk) the chunked GEMM with
  // more rows than one row block.
  for (Cell cell : cells) {
    Shape s{cell, 3, 40, 70, 70, cell == Cell::GRU, true, false};
    check_shape(s);
    Shape big{cell, 2, 67, 150, 150, cell == Cell::LSTM, cell != Cell::GRU, false};
    check_shape(big);
    check_fused(s, 33);
    check_fused(big, 150);
    // A batch under kStepProjMinB with a wide W_ih: projected up front, not in the step's GEMM.
    Shape few{cell, 4, 3, 70, 70, cell != Cell::LSTM, cell == Cell::GRU, false};
    check_fused(few, 150);
    cases += 5;
  }
  // Saved gates over kPrefetchBytes: the backward loop prefetches a step ahead.
  Shape longer{Cell::LSTM, 60, 64, 20, 20, true, true, false};
  check_shape(longer);
  cases += 1;
  check_rejects();
  std::printf("%d passed, %d failed\n", failures == 0 ? cases : 0, failures);
  return failures == 0 ? 0 : 1;
}
