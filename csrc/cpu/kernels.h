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

// The table for the best ISA this CPU supports (chosen once, at first use), or the one
// forced by FASTRNN_ISA=generic|avx2|avx512 in the environment when the CPU supports it.
const KernelSet<float>& kernels(float);
const KernelSet<double>& kernels(double);
const char* selected_isa();
const char* compiled_isas();

}  // namespace cpu
}  // namespace fastrnn
