// fastrnn core: argument blocks of the recurrent kernels.
//
// Dimension letters, used in every shape comment of the project:
//   T  time steps            B  batch rows
//   I  input features        H  hidden units
//   G  gates (LSTM 4: i,f,g,o; GRU 3: r,z,n; RNN 1)
//   P  LSTM projection size  R  recurrent width: P when projecting, else H
//
// All arrays are dense, row-major and owned by the caller; the core never allocates.
// `work` is scratch memory of at least `*_workspace(...)` elements of the same dtype.
// Time index t always refers to the input position; a reversed direction visits
// t = T-1 .. 0. Row b is active at step t iff t < lengths[b] (all rows when lengths is null);
// an inactive row keeps its state and emits zeros.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastrnn {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };  // half types: CUDA only

enum class Cell : int { LSTM = 0, GRU = 1, RNN_TANH = 2, RNN_RELU = 3 };

inline int gates_of(Cell c) {
  switch (c) {
    case Cell::LSTM: return 4;
    case Cell::GRU: return 3;
    default: return 1;
  }
}

// Forward time loop of one layer and one direction.
template <typename S>
struct ForwardArgs {
  Cell cell;
  int64_t T, B, H, R;      // R == H unless an LSTM projects (w_hr set)
  bool reverse;
  const S* xp;             // [T,B,G*H] input projection x W_ih^T + b_ih
  const S* w_hh;           // [G*H,R] recurrent weights
  const S* w_hr;           // [R,H] LSTM projection, or null
  const S* b_hh;           // [G*H] recurrent bias, added to h W_hh^T (GRU: its n part inside
                           // r * (...)), or null for no bias
  const S* h0;             // [B,R] initial hidden state, or null for zeros
  const S* c0;             // [B,H] LSTM initial cell state (null for zeros), else unused
  const int64_t* lengths;  // [B] steps per row (0..T), or null: all rows T steps
  S* y;                    // [T,B,R] outputs (zero where a row is inactive)
  S* hT;                   // [B,R] final hidden state
  S* cT;                   // [B,H] LSTM final cell state, else null
  // What backward needs, written only when non-null (training):
  S* gates;                // [T,B,G*H] LSTM: activated i,f,g,o; GRU: r,z,n; RNN: unused (null)
  S* cs;                   // [T,B,H] LSTM: cell state after step t (carried when inactive)
                           //         GRU: W_hn h + b_hn, the recurrent part of n
  S* hpre;                 // [T,B,H] LSTM with projection: o*tanh(c) before W_hr
  S* work;                 // scratch
  int64_t work_size;       // elements in work
  int num_threads;         // >= 1
  bool prepacked;          // work already holds the packed weights of an earlier call with the
                           // same cell, sizes and weights (single-step generation loops)
  // Fused input projection (xp null, x set): the loop computes xp = x W_ih^T + b_ih itself,
  // into `gates` when it saves them (xp is consumed in place), else into work. Not with
  // prepacked.
  const S* x = nullptr;     // [T,B,I] input; row (t,b) at x + t*x_st + b*x_sb
  const S* w_ih = nullptr;  // [G*H,I] input weights
  const S* b_ih = nullptr;  // [G*H] input bias, or null
  int64_t I = 0, x_st = 0, x_sb = 0;  // input size and the two row strides of x (elements)
  // Packed layout (a PackedSequence's data, inference only): [T+1] first row of each step,
  // steps[0] = 0, steps[t+1] - steps[t] = the rows active at step t (lengths non-increasing).
  // Row (t,b) of x, xp and y is then row steps[t] + b (x at x + row*x_sb; x_st unused); y is
  // [steps[T],R] and inactive rows have no row there. Null: the padded [T,B] rows t*B + b.
  const int64_t* steps = nullptr;
};

// Backward time loop of one layer and one direction: the reverse of ForwardArgs' visit order.
template <typename S>
struct BackwardArgs {
  Cell cell;
  int64_t T, B, H, R;
  bool reverse;
  const S* w_hh;           // [G*H,R]
  const S* w_hr;           // [R,H] or null
  const S* h0;             // [B,R] (GRU needs h_prev at the first step), or null for zeros
  const S* c0;             // [B,H] LSTM (null for zeros), else unused
  const int64_t* lengths;  // [B] or null
  const S* y;              // [T,B,R] forward outputs (RNN derivative, GRU h_prev)
  const S* gates;          // [T,B,G*H] as saved by forward (null for RNN)
  const S* cs;             // [T,B,H] as saved by forward (LSTM, GRU)
  const S* hpre;           // [T,B,H] LSTM with projection, else null
  const S* dy;             // [T,B,R] gradient of y (strides below), or null for zeros
  const S* dhT;            // [B,R] gradient of hT (strides below), or null for zeros
  const S* dcT;            // [B,H] LSTM gradient of cT (strides below), or null for zeros
  // Outputs; null: not wanted, the loop keeps them in scratch (cpu::backward_extra_workspace).
  S* dxp;                  // [T,B,G*H] gradient of the pre-activations = gradient of xp
  S* dhid;                 // GRU: [T,B,H] gradient of (W_hn h + b_hn); LSTM with
                           // projection: [T,B,R] gradient of the projected h (for dW_hr); else unused
  S* dh0;                  // [B,R]
  S* dc0;                  // [B,H] LSTM, else unused
  S* work;
  int64_t work_size;
  int num_threads;
  // Weight gradients, computed after the loop where non-null (overwritten, not accumulated):
  // sums over the T*B rows of the gate gradients times what each step read.
  S* dw_hh = nullptr;       // [G*H,R] sum dG^T h_prev (GRU: its n rows from dhid)
  S* db_hh = nullptr;       // [G*H] sum dG
  S* dw_hr = nullptr;       // [R,H] LSTM projection: sum dhid^T hpre
  // ... and of a fused input projection (ForwardArgs::x): x as the forward read it.
  const S* x = nullptr;     // [T,B,I]; row (t,b) at x + t*x_st + b*x_sb
  int64_t I = 0, x_st = 0, x_sb = 0;
  S* dw_ih = nullptr;       // [G*H,I] sum dxp^T x
  S* db_ih = nullptr;       // [G*H] sum dxp
  // Element strides of the incoming gradients as torch hands them over (e.g. expanded from a
  // sum, or batch-first): dy's (t, b, unit), the unit stride 0 or 1; dhT's and dcT's (b, unit).
  // A negative first stride: dense.
  int64_t dy_st = -1, dy_sb = 0, dy_su = 1;
  int64_t dhT_sb = -1, dhT_su = 1, dcT_sb = -1, dcT_su = 1;
};

[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument("fastrnn: " + what); }
inline void require(bool ok, const char* what) {
  if (!ok) fail(what);
}

}  // namespace fastrnn
