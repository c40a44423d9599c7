// fastrnn CUDA time loops (LSTM with projection, GRU, RNN tanh/relu), forward and backward.
//
// The same algorithm as the CPU core (csrc/cpu/recurrent.cpp), one step at a time on the
// caller's stream: per step one kernel computes, for a tile of hidden units of one batch row,
// the recurrent matrix product against the (once per call transposed) weights and, in the
// same thread, the gate nonlinearities and the state update (the fused epilogue). A second
// kernel per step applies the LSTM projection. Stream order is the barrier between steps.
// Half types (float16, bfloat16) are stored as such and accumulated in float.
//
// Not here yet: the persistent small-batch kernel that keeps W_hh on chip across steps
// (DESIGN section 4); every step re-reads the weights from L2.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"

namespace fastrnn {
namespace cuda {

namespace {

constexpr int kBlock = 128;

template <typename S>
struct AccOf {
  typedef float type;
};
template <>
struct AccOf<double> {
  typedef double type;
};

template <typename S>
__device__ __forceinline__ typename AccOf<S>::type ld(const S* p) {
  return static_cast<typename AccOf<S>::type>(*p);
}
template <>
__device__ __forceinline__ float ld<__half>(const __half* p) {
  return __half2float(*p);
}
template <>
__device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

template <typename S, typename A>
__device__ __forceinline__ void st(S* p, A v) {
  *p = static_cast<S>(v);
}
template <>
__device__ __forceinline__ void st<__half, float>(__half* p, float v) {
  *p = __float2half(v);
}
template <>
__device__ __forceinline__ void st<__nv_bfloat16, float>(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16(v);
}

__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float th(float x) { return tanhf(x); }
__device__ __forceinline__ double th(double x) { return tanh(x); }

__host__ __device__ constexpr int gates(Cell c) { return c == Cell::LSTM ? 4 : c == Cell::GRU ? 3 : 1; }

__device__ __forceinline__ bool active(const int64_t* lengths, int64_t b, int64_t t) {
  return lengths == nullptr || t < lengths[b];
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("fastrnn CUDA: ") + what + ": " + cudaGetErrorString(e));
}

// out[k][n] = in[n][k]; in: [N,K] -> out: [K,N]
template <typename S>
__global__ void transpose_kernel(const S* __restrict__ in, int64_t N, int64_t K, S* __restrict__ out) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * K) return;
  const int64_t n = i / K, k = i % K;
  out[k * N + n] = in[i];
}

// ---------------------------------------------------------------------------------------
// Forward step: grid (ceil(H/kBlock), B); thread = unit j of row b.
// wt: [R][G*H] transposed W_hh (coalesced across j).
template <typename S, Cell C>
__global__ void forward_gates(ForwardArgs<S> a, const S* __restrict__ wt, int64_t t, const S* __restrict__ hprev,
                              S* __restrict__ hnext, S* __restrict__ hp_step) {
  typedef typename AccOf<S>::type A;
  constexpr int G = gates(C);
  const int64_t H = a.H, R = a.R, B = a.B, GH = G * H;
  const int64_t b = blockIdx.y;
  const int64_t j = blockIdx.x * int64_t(kBlock) + threadIdx.x;
  extern __shared__ unsigned char smem_raw[];
  A* hs = reinterpret_cast<A*>(smem_raw);  // [R] previous state of row b
  for (int64_t k = threadIdx.x; k < R; k += kBlock) hs[k] = ld(hprev + b * R + k);
  __syncthreads();
  if (j >= H) return;
  const int64_t row = t * B + b;
  const bool proj = a.w_hr != nullptr;
  if (!active(a.lengths, b, t)) {
    if (!proj) {
      hnext[b * R + j] = hprev[b * R + j];
      st(a.y + row * R + j, A(0));
    }
    if (a.gates != nullptr)
      for (int g = 0; g < G; ++g) st(a.gates + row * GH + g * H + j, A(0));
    if (C == Cell::LSTM) {
      if (a.cs != nullptr) a.cs[row * H + j] = a.cT[b * H + j];
      if (proj) st(hp_step + b * H + j, A(0));
    } else if (C == Cell::GRU && a.cs != nullptr) {
      st(a.cs + row * H + j, A(0));
    }
    return;
  }
  A acc[G];
  for (int g = 0; g < G; ++g) acc[g] = a.b_hh != nullptr ? ld(a.b_hh + g * H + j) : A(0);
  for (int64_t k = 0; k < R; ++k) {
    const A hk = hs[k];
    const S* w = wt + k * GH + j;
    for (int g = 0; g < G; ++g) acc[g] += hk * ld(w + g * H);
  }
  const S* xr = a.xp + row * GH + j;
  if (C == Cell::LSTM) {
    const A i = sigm(ld(xr) + acc[0]), f = sigm(ld(xr + H) + acc[1]);
    const A g = th(ld(xr + 2 * H) + acc[2]), o = sigm(ld(xr + 3 * H) + acc[3]);
    const A c = f * ld(a.cT + b * H + j) + i * g;
    const A h = o * th(c);
    st(a.cT + b * H + j, c);
    if (a.cs != nullptr) st(a.cs + row * H + j, c);
    if (a.gates != nullptr) {
      S* gr = a.gates + row * GH + j;
      st(gr, i);
      st(gr + H, f);
      st(gr + 2 * H, g);
      st(gr + 3 * H, o);
    }
    if (proj) {
      st(hp_step + b * H + j, h);
    } else {
      st(hnext + b * R + j, h);
      st(a.y + row * R + j, h);
    }
  } else if (C == Cell::GRU) {
    const A r = sigm(ld(xr) + acc[0]), z = sigm(ld(xr + H) + acc[1]);
    const A n = th(ld(xr + 2 * H) + r * acc[2]);
    const A h = n + z * (hs[j] - n);
    if (a.gates != nullptr) {
      S* gr = a.gates + row * GH + j;
      st(gr, r);
      st(gr + H, z);
      st(gr + 2 * H, n);
    }
    if (a.cs != nullptr) st(a.cs + row * H + j, acc[2]);
    st(hnext + b * R + j, h);
    st(a.y + row * R + j, h);
  } else {
    const A v = ld(xr) + acc[0];
    const A h = C == Cell::RNN_TANH ? th(v) : (v > A(0) ? v : (v != v ? v : A(0)));
    st(hnext + b * R + j, h);
    st(a.y + row * R + j, h);
  }
}

// Projection: grid (ceil(R/kBlock), B); thread = output unit u. wrt: [H][R] transposed W_hr.
template <typename S>
__global__ void forward_proj(ForwardArgs<S> a, const S* __restrict__ wrt, int64_t t, const S* __restrict__ hprev,
                             S* __restrict__ hnext, const S* __restrict__ hp_step) {
  typedef typename AccOf<S>::type A;
  const int64_t H = a.H, R = a.R, B = a.B;
  const int64_t b = blockIdx.y;
  const int64_t u = blockIdx.x * int64_t(kBlock) + threadIdx.x;
  if (u >= R) return;
  S* yr = a.y + (t * B + b) * R + u;
  if (!active(a.lengths, b, t)) {
    hnext[b * R + u] = hprev[b * R + u];
    st(yr, A(0));
    return;
  }
  A acc = 0;
  for (int64_t k = 0; k < H; ++k) acc += ld(hp_step + b * H + k) * ld(wrt + k * R + u);
  st(hnext + b * R + u, acc);
  st(yr, acc);
}

// ---------------------------------------------------------------------------------------
// Backward.
template <typename S, Cell C>
__device__ void cell_backward(const BackwardArgs<S>& a, int64_t t, int64_t b, int64_t j,
                              typename AccOf<S>::type dh, S* dgh_cur) {
  typedef typename AccOf<S>::type A;
  constexpr int G = gates(C);
  const int64_t T = a.T, B = a.B, H = a.H, R = a.R, GH = G * H;
  const int64_t row = t * B + b;
  S* dx = a.dxp + row * GH + j;
  if (C == Cell::LSTM) {
    const S* gr = a.gates + row * GH + j;
    const A i = ld(gr), f = ld(gr + H), g = ld(gr + 2 * H), o = ld(gr + 3 * H);
    const A c = ld(a.cs + row * H + j);
    const bool first = a.reverse ? t + 1 >= T : t == 0;
    const A cp = first ? (a.c0 != nullptr ? ld(a.c0 + b * H + j) : A(0))
                       : ld(a.cs + (a.reverse ? row + B : row - B) * H + j);
    const A tc = th(c);
    const A dc = ld(a.dc0 + b * H + j) + dh * o * (A(1) - tc * tc);
    st(dx, dc * g * i * (A(1) - i));
    st(dx + H, dc * cp * f * (A(1) - f));
    st(dx + 2 * H, dc * i * (A(1) - g * g));
    st(dx + 3 * H, dh * tc * o * (A(1) - o));
    st(a.dc0 + b * H + j, dc * f);
  } else if (C == Cell::GRU) {
    const S* gr = a.gates + row * GH + j;
    const A r = ld(gr), z = ld(gr + H), n = ld(gr + 2 * H);
    const A hn = ld(a.cs + row * H + j);
    const int64_t len = a.lengths != nullptr ? a.lengths[b] : T;
    const bool first = a.reverse ? t + 1 >= len : t == 0;
    const A hp = first ? (a.h0 != nullptr ? ld(a.h0 + b * R + j) : A(0))
                       : ld(a.y + (a.reverse ? row + B : row - B) * R + j);
    const A dnp = dh * (A(1) - z) * (A(1) - n * n);
    const A drp = dnp * hn * r * (A(1) - r);
    const A dzp = dh * (hp - n) * z * (A(1) - z);
    st(dx, drp);
    st(dx + H, dzp);
    st(dx + 2 * H, dnp);
    st(a.dhid + row * H + j, dnp * r);
    S* dg = dgh_cur + b * GH + j;
    st(dg, drp);
    st(dg + H, dzp);
    st(dg + 2 * H, dnp * r);
    st(a.dh0 + b * R + j, dh * z);
  } else {
    const A h = ld(a.y + row * R + j);
    const A d = C == Cell::RNN_TANH ? dh * (A(1) - h * h) : (h > A(0) ? dh : A(0));
    st(dx, d);
  }
}

template <typename S, Cell C>
__device__ void zero_step(const BackwardArgs<S>& a, int64_t t, int64_t b, int64_t j, S* dgh_cur) {
  typedef typename AccOf<S>::type A;
  constexpr int G = gates(C);
  const int64_t B = a.B, H = a.H, GH = G * H;
  for (int g = 0; g < G; ++g) st(a.dxp + (t * B + b) * GH + g * H + j, A(0));
  if (C == Cell::GRU) {
    st(a.dhid + (t * B + b) * H + j, A(0));
    for (int g = 0; g < G; ++g) st(dgh_cur + b * GH + g * H + j, A(0));
  }
}

// Phase A: grid (ceil(R/kBlock), B); thread = unit u of R: dh = prev_dg @ W_hh + carry (+ dy).
template <typename S, Cell C>
__global__ void backward_a(BackwardArgs<S> a, int64_t t, bool last, const S* __restrict__ prev_dg, S* dgh_cur) {
  typedef typename AccOf<S>::type A;
  constexpr int G = gates(C);
  const int64_t B = a.B, H = a.H, R = a.R, GH = G * H;
  const int64_t b = blockIdx.y;
  const int64_t u = blockIdx.x * int64_t(kBlock) + threadIdx.x;
  if (u >= R) return;
  A acc = 0;
  if (prev_dg != nullptr)
    for (int64_t m = 0; m < GH; ++m) acc += ld(prev_dg + b * GH + m) * ld(a.w_hh + m * R + u);
  S* carry = a.dh0 + b * R + u;
  const bool proj = a.w_hr != nullptr;
  if (last || !active(a.lengths, b, t)) {
    st(carry, ld(carry) + acc);
    if (!last) {
      if (proj)
        st(a.dhid + (t * B + b) * R + u, A(0));
      else
        zero_step<S, C>(a, t, b, u, dgh_cur);
    }
    return;
  }
  const A dh = acc + ld(carry) + ld(a.dy + (t * B + b) * R + u);
  st(carry, A(0));
  if (proj)
    st(a.dhid + (t * B + b) * R + u, dh);
  else
    cell_backward<S, C>(a, t, b, u, dh, dgh_cur);
}

// Phase B (projection): grid (ceil(H/kBlock), B); dh_pre[j] = dh_r @ W_hr, then the cell.
template <typename S, Cell C>
__global__ void backward_b(BackwardArgs<S> a, int64_t t) {
  typedef typename AccOf<S>::type A;
  const int64_t B = a.B, H = a.H, R = a.R;
  const int64_t b = blockIdx.y;
  const int64_t j = blockIdx.x * int64_t(kBlock) + threadIdx.x;
  if (j >= H) return;
  if (!active(a.lengths, b, t)) {
    zero_step<S, C>(a, t, b, j, nullptr);
    return;
  }
  A acc = 0;
  const S* dhr = a.dhid + (t * B + b) * R;
  for (int64_t u = 0; u < R; ++u) acc += ld(dhr + u) * ld(a.w_hr + u * H + j);
  cell_backward<S, C>(a, t, b, j, acc, nullptr);
}

// ---------------------------------------------------------------------------------------
inline dim3 grid_for(int64_t units, int64_t B) {
  return dim3(static_cast<unsigned>((units + kBlock - 1) / kBlock), static_cast<unsigned>(B));
}

void check_sizes(int64_t T, int64_t B, int64_t H, int64_t R) {
  require(T >= 0 && B >= 0, "sizes must be non-negative");
  require(H >= 1 && R >= 1, "hidden and recurrent sizes must be positive");
  require(B < 65536, "CUDA kernels take at most 65535 batch rows");
  require(T < (int64_t(1) << 40) && H < (int64_t(1) << 24) && R < (int64_t(1) << 24), "sizes too large");
}

void check_lengths_device(const int64_t* lengths, int64_t B, int64_t T, cudaStream_t stream) {
  if (lengths == nullptr || B == 0) return;
  std::vector<int64_t> host(static_cast<size_t>(B));
  check(cudaMemcpyAsync(host.data(), lengths, sizeof(int64_t) * B, cudaMemcpyDeviceToHost, stream), "lengths copy");
  check(cudaStreamSynchronize(stream), "lengths copy");
  for (int64_t v : host) require(v >= 0 && v <= T, "lengths must lie in [0, T]");
}

template <typename S>
ForwardArgs<S> typed(const ForwardArgs<void>& v) {
  return ForwardArgs<S>{v.cell, v.T, v.B, v.H, v.R, v.reverse,
                        static_cast<const S*>(v.xp), static_cast<const S*>(v.w_hh), static_cast<const S*>(v.w_hr),
                        static_cast<const S*>(v.b_hh), static_cast<const S*>(v.h0), static_cast<const S*>(v.c0),
                        v.lengths, static_cast<S*>(v.y), static_cast<S*>(v.hT), static_cast<S*>(v.cT),
                        static_cast<S*>(v.gates), static_cast<S*>(v.cs), static_cast<S*>(v.hpre),
                        static_cast<S*>(v.work), v.work_size, v.num_threads, v.prepacked};
}

template <typename S>
BackwardArgs<S> typed(const BackwardArgs<void>& v) {
  return BackwardArgs<S>{v.cell, v.T, v.B, v.H, v.R, v.reverse,
                         static_cast<const S*>(v.w_hh), static_cast<const S*>(v.w_hr), static_cast<const S*>(v.h0),
                         static_cast<const S*>(v.c0), v.lengths, static_cast<const S*>(v.y),
                         static_cast<const S*>(v.gates), static_cast<const S*>(v.cs), static_cast<const S*>(v.hpre),
                         static_cast<const S*>(v.dy), static_cast<const S*>(v.dhT), static_cast<const S*>(v.dcT),
                         static_cast<S*>(v.dxp), static_cast<S*>(v.dhid), static_cast<S*>(v.dh0),
                         static_cast<S*>(v.dc0), static_cast<S*>(v.work), v.work_size, v.num_threads};
}

template <typename S, Cell C>
void forward_cell(const ForwardArgs<S>& a, cudaStream_t stream) {
  typedef typename AccOf<S>::type A;
  constexpr int G = gates(C);
  const int64_t T = a.T, B = a.B, H = a.H, R = a.R, GH = G * H;
  const bool proj = a.w_hr != nullptr;
  S* w = a.work;
  S* wt = w;  // [R][G*H]
  w += R * GH;
  S* hbuf[2] = {w, w + B * R};
  w += 2 * B * R;
  S* wrt = nullptr;  // [H][R]
  S* hpre_s = nullptr;
  if (proj) {
    wrt = w;
    w += H * R;
    hpre_s = w;
    w += B * H;
  }
  const unsigned tb = 256;
  if (!a.prepacked) {
    transpose_kernel<<<static_cast<unsigned>((GH * R + tb - 1) / tb), tb, 0, stream>>>(a.w_hh, GH, R, wt);
    if (proj) transpose_kernel<<<static_cast<unsigned>((R * H + tb - 1) / tb), tb, 0, stream>>>(a.w_hr, R, H, wrt);
  }
  if (a.h0 != nullptr)
    check(cudaMemcpyAsync(hbuf[0], a.h0, sizeof(S) * B * R, cudaMemcpyDeviceToDevice, stream), "h0");
  else
    check(cudaMemsetAsync(hbuf[0], 0, sizeof(S) * B * R, stream), "h0");
  if (C == Cell::LSTM) {
    if (a.c0 != nullptr)
      check(cudaMemcpyAsync(a.cT, a.c0, sizeof(S) * B * H, cudaMemcpyDeviceToDevice, stream), "c0");
    else
      check(cudaMemsetAsync(a.cT, 0, sizeof(S) * B * H, stream), "c0");
  }
  const size_t smem = sizeof(A) * static_cast<size_t>(R);
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(forward_gates<S, C>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "shared memory");
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = a.reverse ? T - 1 - s : s;
    const S* hprev = hbuf[s & 1];
    S* hnext = hbuf[(s + 1) & 1];
    S* hp_step = proj ? (a.hpre != nullptr ? a.hpre + t * B * H : hpre_s) : nullptr;
    forward_gates<S, C><<<grid_for(H, B), kBlock, smem, stream>>>(a, wt, t, hprev, hnext, hp_step);
    if (proj) forward_proj<S><<<grid_for(R, B), kBlock, 0, stream>>>(a, wrt, t, hprev, hnext, hp_step);
  }
  check(cudaGetLastError(), "forward launch");
  check(cudaMemcpyAsync(a.hT, hbuf[T & 1], sizeof(S) * B * R, cudaMemcpyDeviceToDevice, stream), "hT");
}

template <typename S, Cell C>
void backward_cell(const BackwardArgs<S>& a, cudaStream_t stream) {
  constexpr int G = gates(C);
  const int64_t T = a.T, B = a.B, H = a.H, R = a.R, GH = G * H;
  const bool proj = a.w_hr != nullptr;
  S* dgh[2] = {nullptr, nullptr};
  if (C == Cell::GRU) {
    dgh[0] = a.work;
    dgh[1] = a.work + B * GH;
  }
  check(cudaMemcpyAsync(a.dh0, a.dhT, sizeof(S) * B * R, cudaMemcpyDeviceToDevice, stream), "dhT");
  if (C == Cell::LSTM)
    check(cudaMemcpyAsync(a.dc0, a.dcT, sizeof(S) * B * H, cudaMemcpyDeviceToDevice, stream), "dcT");
  const S* prev_dg = nullptr;
  for (int64_t s = 0; s <= T; ++s) {
    const bool last = s == T;
    const int64_t t = a.reverse ? s : T - 1 - s;
    S* dgh_cur = C == Cell::GRU ? dgh[s & 1] : nullptr;
    backward_a<S, C><<<grid_for(R, B), kBlock, 0, stream>>>(a, t, last, prev_dg, dgh_cur);
    if (last) break;
    if (proj) backward_b<S, C><<<grid_for(H, B), kBlock, 0, stream>>>(a, t);
    prev_dg = C == Cell::GRU ? dgh_cur : a.dxp + t * B * GH;
  }
  check(cudaGetLastError(), "backward launch");
}

template <typename S>
void forward_typed(const ForwardArgs<S>& a, cudaStream_t stream) {
  switch (a.cell) {
    case Cell::LSTM: return forward_cell<S, Cell::LSTM>(a, stream);
    case Cell::GRU: return forward_cell<S, Cell::GRU>(a, stream);
    case Cell::RNN_TANH: return forward_cell<S, Cell::RNN_TANH>(a, stream);
    case Cell::RNN_RELU: return forward_cell<S, Cell::RNN_RELU>(a, stream);
  }
}

template <typename S>
void backward_typed(const BackwardArgs<S>& a, cudaStream_t stream) {
  switch (a.cell) {
    case Cell::LSTM: return backward_cell<S, Cell::LSTM>(a, stream);
    case Cell::GRU: return backward_cell<S, Cell::GRU>(a, stream);
    case Cell::RNN_TANH: return backward_cell<S, Cell::RNN_TANH>(a, stream);
    case Cell::RNN_RELU: return backward_cell<S, Cell::RNN_RELU>(a, stream);
  }
}

// The one dtype dispatch of the CUDA side (half types exist only in nvcc-compiled code).
template <typename F>
void dispatch_cuda_dtype(int dtype, F&& f) {
  switch (static_cast<DType>(dtype)) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
  }
  fail("unsupported dtype code " + std::to_string(dtype));
}

}  // namespace

int64_t forward_workspace(Cell cell, int64_t B, int64_t H, int64_t R) {
  const int64_t G = gates(cell);
  int64_t n = R * G * H + 2 * B * R;
  if (cell == Cell::LSTM && R != H) n += H * R + B * H;
  return n;
}

int64_t backward_workspace(Cell cell, int64_t B, int64_t H, int64_t R) {
  (void)R;
  return cell == Cell::GRU ? 2 * B * 3 * H : 1;
}

void forward(int dtype, const ForwardArgs<void>& v, uintptr_t stream_ptr) {
  check_sizes(v.T, v.B, v.H, v.R);
  require(v.cell == Cell::LSTM || v.w_hr == nullptr, "only LSTM has a projection");
  require((v.w_hr != nullptr) == (v.R != v.H), "R differs from H exactly when there is a projection");
  if (v.B == 0) return;
  require(v.w_hh && v.hT && v.work, "missing array");
  require(v.T == 0 || (v.xp && v.y), "missing array");
  require(v.cell != Cell::LSTM || v.cT, "LSTM needs cT");
  require(v.cell == Cell::RNN_TANH || v.cell == Cell::RNN_RELU || v.gates == nullptr || v.cs != nullptr,
          "training needs cs");
  require(v.w_hr == nullptr || v.gates == nullptr || v.hpre != nullptr, "LSTM projection training needs hpre");
  require(v.work_size >= forward_workspace(v.cell, v.B, v.H, v.R), "workspace too small");
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  check_lengths_device(v.lengths, v.B, v.T, stream);
  dispatch_cuda_dtype(dtype, [&](auto s) { forward_typed(typed<decltype(s)>(v), stream); });
}

void backward(int dtype, const BackwardArgs<void>& v, uintptr_t stream_ptr) {
  check_sizes(v.T, v.B, v.H, v.R);
  require(v.cell == Cell::LSTM || v.w_hr == nullptr, "only LSTM has a projection");
  require((v.w_hr != nullptr) == (v.R != v.H), "R differs from H exactly when there is a projection");
  if (v.B == 0) return;
  require(v.w_hh && v.dhT && v.dh0 && v.work, "missing array");
  require(v.T == 0 || (v.y && v.dy && v.dxp), "missing array");
  require(v.cell != Cell::LSTM || (v.dcT && v.dc0 && v.gates && v.cs), "LSTM backward needs dcT, dc0, gates, cs");
  require(v.w_hr == nullptr || (v.hpre && v.dhid), "LSTM projection backward needs hpre and dhid");
  require(v.cell != Cell::GRU || (v.gates && v.cs && v.dhid), "GRU backward needs gates, cs, dhid");
  require(v.work_size >= backward_workspace(v.cell, v.B, v.H, v.R), "workspace too small");
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
  check_lengths_device(v.lengths, v.B, v.T, stream);
  dispatch_cuda_dtype(dtype, [&](auto s) { backward_typed(typed<decltype(s)>(v), stream); });
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace cuda
}  // namespace fastrnn
