// fastrnn CPU kernels: the table one ISA build provides, and the dispatcher's choice.
#pragma once
#include "../core/shapes.h"

namespace fastrnn {
namespace cpu {

template <typename S>
struct KernelSet {
  const char* isa;
  // Scratch elements (of S) the time loops need in ForwardArgs::work / BackwardArgs::work.
  int64_t (*forward_workspace)(Cell cell, int64_t B, int64_t H, int64_t R);
  int64_t (*backward_workspace)(Cell cell, int64_t B, int64_t H, int64_t R);
  // Extra scratch of a forward with the fused input projection (ForwardArgs::x):
  // packed W_ih, plus xp itself unless the call saves gates (training LSTM/GRU).
  int64_t (*projection_workspace)(Cell cell, int64_t T, int64_t B, int64_t H, int64_t I, bool gates_saved);
  void (*forward)(const ForwardArgs<S>& a);
  void (*backward)(const BackwardArgs<S>& a);
  // Runs `iters` rounds of independent fused multiply-adds on this thread and returns the
  // flops done (2 per lane per FMA): timed by the caller, it measures the FMA peak.
  double (*fma_flops)(int64_t iters);
};

#define FASTRNN_DECLARE_ISA(name)       \
  namespace name {                      \
  KernelSet<float> kernels_f32();       \
  KernelSet<double> kernels_f64();      \
  }
FASTRNN_DECLARE_ISA(generic)
FASTRNN_DECLARE_ISA(avx2)
FASTRNN_DECLARE_ISA(avx512)
FASTRNN_DECLARE_ISA(avx512_256)
#undef FASTRNN_DECLARE_ISA

// Scratch elements a backward call needs beyond backward_workspace(cell, B, H, R): room for
// the outputs it was not given (dxp, dhid, dh0, dc0 null), which the loop still needs.
// (static: every ISA's object keeps its own copy, never one built for another ISA)
template <typename S>
static inline int64_t backward_extra_workspace(const BackwardArgs<S>& a) {
  const int64_t G = gates_of(a.cell), TB = a.T * a.B;
  int64_t n = 0;
  if (a.dxp == nullptr) n += TB * G * a.H;
  if (a.dhid == nullptr && a.cell == Cell::GRU) n += TB * a.H;
  if (a.dhid == nullptr && a.w_hr != nullptr) n += TB * a.R;
  if (a.dh0 == nullptr) n += a.B * a.R;
  if (a.dc0 == nullptr && a.cell == Cell::LSTM) n += a.B * a.H;
  return n;
}

// Inputs at most this wide (time series of a few features) are projected inside the gate
// epilogue, I broadcasts and G*I FMAs per row and panel, instead of a K=I GEMM into a
// [T,B,G*H] buffer that the epilogue reads back (at I=1 that GEMM cost 17 % of a GRU
// step's instructions at B=5, H=20).
constexpr int64_t kInlineI = 4;
inline bool inline_projection(int64_t I) { return I <= kInlineI; }
// Wider inputs of LSTM and RNN join each step's GEMM in a fused forward (ForwardArgs::x):
// [x_t h] @ [W_ih; W_hh]^T, the tile's accumulators starting from b_ih + b_hh, so that no
// [T,B,G*H] projection is written and read back (at (100,32,64,128) those reads missed the
// caches: 20 % of an LSTM step). Batches under kStepProjMinB rows project every step up front
// instead, unless W_ih is small: their few rows would stream all of W_ih from L2 each step
// for little work (LSTM (100,4,128,128) inference 1.13 -> 1.22 ms; even at B=8; B=16
// 3.99 -> 3.60 ms). So do inputs much wider than the state, where the projection is most of
// the work and one big GEMM over all T*B rows does it better (LSTM (20,64,1024,256) inference
// 22.9 -> 25.0 ms). GRU's n gate keeps x W_in^T apart from h W_hn^T: GRU projects up front
// (a fourth accumulator for x W_in^T was tried: (100,32,64,128) inference 1.17x faster, but
// (100,16,128,128) 0.86x and (100,64,512,512) 0.79x).
constexpr int64_t kStepProjMinB = 8;
inline bool step_projection(Cell cell, int64_t B, int64_t H, int64_t I, int64_t elem_size) {
  return cell != Cell::GRU && !inline_projection(I) && I <= 2 * H &&
         (B >= kStepProjMinB || gates_of(cell) * H * I * elem_size <= 32 * 1024);
}

// The table for the best ISA this CPU supports (chosen once, at first use: with AVX-512,
// 512-bit vectors where their FMA loop measures at least 1.5x AVX2's, else AVX-512 on 256-bit
// vectors; else AVX2 where supported), or the one forced by
// FASTRNN_ISA=generic|avx2|avx512|avx512_256 in the environment when the CPU supports it.
const KernelSet<float>& kernels(float);
const KernelSet<double>& kernels(double);
const char* selected_isa();
const char* compiled_isas();

}  // namespace cpu
}  // namespace fastrnn
