// fastrnn CPU time loops (LSTM, GRU, RNN tanh/relu), forward and backward.
//
// Compiled once per ISA (see CMakeLists.txt). Each step is one register-tiled GEMM of the
// previous state against the packed recurrent weights, whose epilogue applies the gate
// nonlinearities and the state update in registers (DESIGN section 3). Threads split the
// hidden-unit panels and meet at one barrier per phase of a step.
#include <cstring>
#include <type_traits>

#include "kernels.h"
#include "parallel.h"
#include "simd.h"

namespace fastrnn {
namespace cpu {
namespace FASTRNN_ISA {

namespace {

constexpr int kVecBytes = FASTRNN_VEC_BYTES;

template <Cell C>
struct CellTraits {
  static constexpr int G = C == Cell::LSTM ? 4 : C == Cell::GRU ? 3 : 1;
  // Rows per register tile: keeps MR*G accumulators within the register file.
  // Single-group tiles (RNN) take 8 rows on AVX2: 4 accumulators left half of the two FMA
  // pipes idle on the 4-cycle latency. GRU's 4 x 3 fills AVX2's 16 registers (12 sums, 3
  // panel vectors, a broadcast): 7 loads per 12 FMAs instead of 6 per 9 with 3 rows (C++
  // harness, 1 thread, min of 8 alternating runs: loop (100,32,128) 4.90 -> 4.68 ms,
  // (100,64,512) 146 -> 138 ms, (10,8,64) with its input projected inline 44 -> 37 us).
  static constexpr int MR = G == 4 ? (kVecBytes == 64 ? 4 : 3) : G == 3 ? (kVecBytes == 64 ? 5 : 4) : (kVecBytes == 64 ? 16 : 8);
};
// Whether the build has 32 vector registers (AVX-512, on either vector width).
#if defined(__AVX512F__)
constexpr bool kRegs32 = true;
#else
constexpr bool kRegs32 = false;
#endif
// LSTM and RNN step tiles of 4 rows (16 sums: 4 gates, or RNN's 4 blocks of units) where 32
// registers hold them but the tile shape is AVX2's 3 rows (AVX-512 on 256-bit vectors), for
// batches of 8 rows or more. Same process, alternating the two builds, Zen 4, 2 threads,
// medians of 15-21 rounds, inference: LSTM (100,8,128,128) 1.12-1.16x, (64,16,512,256) 1.10x,
// (100,32,64,128) 1.04-1.05x, (100,64,512,512) 1.03-1.06x, float64 (50,16,32,64) 1.09-1.11x,
// proj=64 1.04-1.05x, T=1 B=16 H=256 1.07x; RNN (50,16,32,256) 1.12-1.14x, (100,8,64,128)
// 1.11-1.12x, (100,32,64,128) 1.06-1.07x, (100,64,512,512) 1.06-1.07x; training LSTM even
// (0.97-1.03x, the noise of one row here), RNN 1.01-1.05x. At B=5 they lost (LSTM
// (100,5,16,64) 0.88x, RNN 0.91x: a tile of 4 rows and a single row do worse than tiles of
// 3 and 2).
constexpr int kWideMR = 4;
constexpr int64_t kWideMinB = 8;

// Rows per tile for the backward dh_r @ W_hr (LSTM projection).
constexpr int kMR1 = kVecBytes == 64 ? 16 : 8;
// Single-gate GEMMs (RNN's recurrence, the LSTM projection): tiles of
// kRnnMR rows x kRnnGW blocks of N units, the 3 x 4 shape of the LSTM tile (8 rows x 1 block
// needs a broadcast per FMA).
constexpr int kRnnGW = 4;
constexpr int kRnnMR = kVecBytes == 64 ? 6 : 3;
inline int64_t unit_group(Cell cell) { return cell == Cell::RNN_TANH || cell == Cell::RNN_RELU ? kRnnGW : 1; }
// Saved gates (backward) and input projections (forward) above this size come from memory:
// each row's are prefetched a step ahead (LSTM (100,32,128) backward loop, 2 threads:
// 6.0-6.6 -> 4.7-6.4 ms), and in backward so are the dxp lines it writes next (their
// write-allocate misses were 12 % of the loop: 1 thread, LSTM 7.9 -> 6.9 ms, GRU 6.2 -> 5.6).
// Prefetching the forward's outputs (y, gates, cs) the same way gained nothing.
constexpr int64_t kPrefetchBytes = 1 << 20;
// Backward dG @ W_hh: tiles of kMRB rows x kGW blocks of N columns (8 accumulators on AVX2).
constexpr int kMRB = kVecBytes == 64 ? 8 : 4;
constexpr int kGW = 2;

inline void split(int64_t n, int tid, int nt, int64_t* begin, int64_t* end) {
  const int64_t chunk = n / nt, rest = n % nt;
  *begin = tid * chunk + (tid < rest ? tid : rest);
  *end = *begin + chunk + (tid < rest ? 1 : 0);
}

// Threads worth using for a loop of T steps over `panels` panels with `flops` per step, whose
// threads first pack `packed` weight elements (each its own panels). A second thread pays
// once per call for the workers' wake-up (about 4.6 us from Python) and per step for the
// barrier (about 0.45 us), so it takes both enough work per step (30k flops: batch-1 RNN
// H=128 219 -> 183 us, LSTM H=64 130 -> 96 us) and enough work per call: about 10^6 flops,
// gate epilogues counting 1.5x and a packed element 30. Forward calls from Python, time on
// 1 thread / on 2: T=1 RNN B=16 I=64 H=64 0.96x, B=1 I=64 H=128 0.99x, I=256 H=256 1.30x;
// LSTM B=1 I=32 H=64 1.00x, I=64 H=96 1.11x, I=128 H=128 1.28x; GRU B=1 I=32 H=64 0.95x, I=128
// H=128 1.23x (before the threads packed their own panels, the line was 10^6 flops without
// the packing); T=10 RNN B=8 H=64 16.0 vs 17.0 us but LSTM B=8 H=32 20.1 vs 15.8 us; the
// backward loop alike, e.g. T=10 RNN B=8 H=64 14.9 vs 18.0 us.
constexpr double kPackFlops = 30;
inline int threads_for(int requested, int64_t panels, int64_t flops_per_step, int64_t T, bool gated, int64_t packed) {
  if (requested <= 1 || flops_per_step < 30000) return 1;
  const double work = double(T) * double(flops_per_step) * (gated ? 1.5 : 1.0) + kPackFlops * double(packed);
  if (work < 1e6) return 1;
  int64_t nt = requested;
  if (nt > panels) nt = panels;
  return nt < 1 ? 1 : static_cast<int>(nt);
}

inline bool active(const int64_t* lengths, int64_t b, int64_t t) { return lengths == nullptr || t < lengths[b]; }

// Whether the lengths are non-increasing (a padded PackedSequence): the rows active at step t
// are then the first active_rows(...) rows, and the step's GEMM skips the others.
inline bool lengths_sorted(const int64_t* lengths, int64_t B) {
  if (lengths == nullptr) return false;
  for (int64_t b = 1; b < B; ++b)
    if (lengths[b] > lengths[b - 1]) return false;
  return true;
}

// Rows whose GEMM result is needed at step t: all B, or with sorted lengths the prefix of
// rows with lengths[b] > t.
inline int64_t active_rows(const int64_t* lengths, bool sorted, int64_t B, int64_t t) {
  if (!sorted) return B;
  int64_t lo = 0, hi = B;  // first row with lengths[b] <= t
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (lengths[mid] > t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

inline void check_sizes(int64_t T, int64_t B, int64_t H, int64_t R, int G) {
  require(T >= 0 && B >= 0, "sizes must be non-negative");
  require(H >= 1 && R >= 1, "hidden and recurrent sizes must be positive");
  const int64_t lim = int64_t(1) << 40;
  require(T < lim && B < lim && H < (int64_t(1) << 24) && R < (int64_t(1) << 24), "sizes too large");
  require(B == 0 || T == 0 || (T * B < lim && T * B * G * H < lim * 16), "sizes too large");
}

inline void check_lengths(const int64_t* lengths, int64_t B, int64_t T) {
  if (lengths == nullptr) return;
  for (int64_t b = 0; b < B; ++b) require(lengths[b] >= 0 && lengths[b] <= T, "lengths must lie in [0, T]");
}

// A packed layout (ForwardArgs::steps) must match the lengths: steps[0] = 0 and step t holds
// exactly the rows with lengths[b] > t, the first ones (lengths non-increasing).
inline void check_steps(const int64_t* steps, const int64_t* lengths, int64_t B, int64_t T) {
  if (steps == nullptr) return;
  require(lengths != nullptr && lengths_sorted(lengths, B), "a packed layout needs non-increasing lengths");
  require(steps[0] == 0, "a packed layout starts at row 0");
  for (int64_t t = 0; t < T; ++t)
    require(steps[t + 1] - steps[t] == active_rows(lengths, true, B, t), "packed steps do not match the lengths");
}

inline int cell_gates(Cell c) { return gates_of(c); }

template <typename S>
int64_t forward_workspace(Cell cell, int64_t B, int64_t H, int64_t R) {
  constexpr int N = V<S>::N;
  const int64_t G = cell_gates(cell);
  const bool proj = cell == Cell::LSTM && R != H;
  const int64_t gw = unit_group(cell);
  int64_t n = ceil_div(H, gw * N) * gw * N * G * R + 2 * B * R;
  if (proj) n += ceil_div(R, kRnnGW * N) * kRnnGW * N * H + B * H;
  return n;
}

template <typename S>
int64_t projection_workspace(Cell cell, int64_t T, int64_t B, int64_t H, int64_t I, bool gates_saved) {
  constexpr int N = V<S>::N;
  const int64_t G = cell_gates(cell), gw = unit_group(cell);
  int64_t n = ceil_div(H, gw * N) * gw * N * G * I;
  if (!gates_saved && !inline_projection(I) && !step_projection(cell, B, H, I, sizeof(S))) n += T * B * G * H;
  return n;
}

template <typename S>
int64_t backward_workspace(Cell cell, int64_t B, int64_t H, int64_t R) {
  constexpr int N = V<S>::N;
  const int64_t G = cell_gates(cell);
  const bool proj = cell == Cell::LSTM && R != H;
  int64_t n = ceil_div(R, kGW * N) * kGW * N * G * H;
  if (proj) n += ceil_div(H, N) * N * R;
  if (cell == Cell::GRU) n += 2 * B * G * H;
  return n;
}

// ------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------
template <typename S, Cell C>
struct Forward {
  static constexpr int G = CellTraits<C>::G;
  static constexpr int MR = CellTraits<C>::MR;
  static constexpr int N = V<S>::N;
  // recurrent tile: MRR rows x GW blocks of N units (x G gates)
  static constexpr int GW = G == 1 ? kRnnGW : 1;
  static constexpr int MRR = G == 1 ? kRnnMR : MR;
  typedef vec_t<S> vec;

  const ForwardArgs<S>* a;
  const S* xp;   // [T,B,G*H] input projection: a->xp, or computed here from a->x (null:
                 // projected in the epilogue, inline_projection, or in the step's GEMM)
  S* xpw;        // where the fused projection writes xp (null: a->xp given, or inline)
  S* wpi;        // packed W_ih^T panels: [ceil(H/N)][I][G][N] (fused projection), laid out as
                 // wp1 ([ceil(H/(GW*N))][I][G*GW][N]) when step_proj
  bool step_proj;  // x W_ih^T + b_ih summed in the step's GEMM (step_projection)
  bool prefetch;   // xp streams from memory (over kPrefetchBytes): prefetched a step ahead
  bool wide;       // step tiles of kWideMR rows instead of MRR (see kWideMR)
  static constexpr bool kHasWide = kRegs32 && kVecBytes == 32 && (G == 4 || G == 1) && MRR != kWideMR;
  // The weights' panels are packed by run(), each thread those it multiplies by (unless
  // ForwardArgs::prepacked: W_hh's and W_hr's are there from an earlier call).
  S* wp1;        // packed W_hh^T panels: [ceil(H/(GW*N))][R][G*GW][N]
  S* wp2;        // packed W_hr^T panels: [ceil(R/(kRnnGW*N))][H][kRnnGW][N] (projection)
  S* hbuf[2];    // [B,R] each: state before / after the step
  S* hpre_s;     // [B,H] projection input when not saved
  bool sorted;   // lengths non-increasing: GEMMs over the active prefix of rows only
  Barrier* bar;

  // Row (t,b) of xp and y: padded t*B + b, or packed (ForwardArgs::steps) steps[t] + b.
  FASTRNN_INLINE int64_t row_at(int64_t t, int64_t b) const {
    return a->steps != nullptr ? a->steps[t] + b : t * a->B + b;
  }
  // Row (t,b) of x (the fused projection).
  FASTRNN_INLINE const S* x_at(int64_t t, int64_t b) const {
    return a->steps != nullptr ? a->x + (a->steps[t] + b) * a->x_sb : a->x + t * a->x_st + b * a->x_sb;
  }

  // Gate epilogue for row b, units j0..j0+nu of step t.
  FASTRNN_INLINE void epilogue(int64_t t, int64_t b, int64_t j0, int64_t nu, const vec* acc, const S* hprev, S* hnext,
                       S* hp_step) const {
    const int64_t T = a->T, B = a->B, H = a->H, R = a->R;
    (void)T;
    const int64_t row = t * B + b;  // (gates and cs: training, never packed)
    const bool proj = a->w_hr != nullptr;
    if (!active(a->lengths, b, t)) {
      const vec zero = {};
      if (!proj) {
        store_n(hnext + b * R + j0, load_n(hprev + b * R + j0, nu), nu);
        if (a->steps == nullptr) store_n(a->y + row * R + j0, zero, nu);
      }
      if (a->gates != nullptr)
        for (int g = 0; g < G; ++g) store_n(a->gates + row * G * H + g * H + j0, zero, nu);
      if (C == Cell::LSTM) {
        if (a->cs != nullptr) store_n(a->cs + row * H + j0, load_n(a->cT + b * H + j0, nu), nu);
        if (proj) store_n(hp_step + b * H + j0, zero, nu);
      } else if (C == Cell::GRU && a->cs != nullptr) {
        store_n(a->cs + row * H + j0, zero, nu);
      }
      return;
    }
    const vec* one[1] = {acc};
    epilogue_rows<1, false>(t, b, j0, nu, one, hprev, hnext, hp_step);
  }

  // The epilogue of M active rows b0.. of step t at units j0..j0+nu, acc[r] pointing at row r's
  // G accumulators of these units: stage by stage across the rows, so that the rows'
  // activation chains (exp, division) overlap instead of each waiting on its own (a whole
  // tile's rows at once: LSTM/GRU/RNN loops at (40,8,1,64), 1 thread, 8/14/10 % faster).
  template <int M, bool Full>
  FASTRNN_INLINE void epilogue_rows(int64_t t, int64_t b0, int64_t j0, int64_t nu, const vec* const (&acc)[M],
                                    const S* hprev, S* hnext, S* hp_step) const {
    const int64_t H = a->H, R = a->R;
    const int64_t row0 = row_at(t, b0);  // rows of xp and y (the tile's rows are active)
    // Full: nu == N, plain vector loads and stores
    auto ld = [nu](const S* p) __attribute__((always_inline)) {
      if constexpr (Full) return load<S>(p); else return load_n(p, nu);
    };
    auto st = [nu](S* p, vec v) __attribute__((always_inline)) {
      if constexpr (Full) store(p, v); else store_n(p, v, nu);
    };
    // x W_ih^T + b_ih of these units: read back, or (narrow inputs) computed here; acc holds
    // h W_hh^T + b_hh (the GEMM starts from the bias)
    vec xin[M][G];
    if (step_proj) {
      for (int r = 0; r < M; ++r)
        for (int g = 0; g < G; ++g) xin[r][g] = vec{};
    } else if (xp != nullptr) {
      for (int r = 0; r < M; ++r)
        for (int g = 0; g < G; ++g) xin[r][g] = ld(xp + (row0 + r) * G * H + g * H + j0);
    } else {
      const S* wpanel = wpi + (j0 / N) * a->I * G * N;  // [I][G][N], zero past H
      for (int r = 0; r < M; ++r) {
        const S* xrow = x_at(t, b0 + r);
        for (int g = 0; g < G; ++g) xin[r][g] = a->b_ih != nullptr ? ld(a->b_ih + g * H + j0) : vec{};
        for (int64_t i = 0; i < a->I; ++i) {
          const S xi = xrow[i];
          for (int g = 0; g < G; ++g) xin[r][g] += xi * load<S>(wpanel + (i * G + g) * N);
        }
      }
    }
    if (C == Cell::LSTM) {
      vec gi[M], gf[M], gg[M], go[M], c[M], h[M];
      for (int r = 0; r < M; ++r) gi[r] = vsigmoid(xin[r][0] + acc[r][0]);
      for (int r = 0; r < M; ++r) gf[r] = vsigmoid(xin[r][1] + acc[r][1]);
      for (int r = 0; r < M; ++r) gg[r] = vtanh(xin[r][2] + acc[r][2]);
      for (int r = 0; r < M; ++r) go[r] = vsigmoid(xin[r][3] + acc[r][3]);
      for (int r = 0; r < M; ++r) c[r] = gf[r] * ld(a->cT + (b0 + r) * H + j0) + gi[r] * gg[r];
      for (int r = 0; r < M; ++r) h[r] = go[r] * vtanh(c[r]);
      for (int r = 0; r < M; ++r) {
        const int64_t row = row0 + r, b = b0 + r;
        st(a->cT + b * H + j0, c[r]);
        if (a->cs != nullptr) st(a->cs + row * H + j0, c[r]);
        if (a->gates != nullptr) {
          S* gr = a->gates + row * G * H + j0;
          st(gr, gi[r]);
          st(gr + H, gf[r]);
          st(gr + 2 * H, gg[r]);
          st(gr + 3 * H, go[r]);
        }
        if (a->w_hr != nullptr) {
          st(hp_step + b * H + j0, h[r]);
        } else {
          st(hnext + b * R + j0, h[r]);
          st(a->y + row * R + j0, h[r]);
        }
      }
    } else if (C == Cell::GRU) {
      vec gr_[M], gz[M], gn[M], h[M];
      for (int r = 0; r < M; ++r) gr_[r] = vsigmoid(xin[r][0] + acc[r][0]);
      for (int r = 0; r < M; ++r) gz[r] = vsigmoid(xin[r][1] + acc[r][1]);
      for (int r = 0; r < M; ++r) gn[r] = vtanh(xin[r][2] + gr_[r] * acc[r][2]);
      for (int r = 0; r < M; ++r) {
        const vec hp = ld(hprev + (b0 + r) * R + j0);
        h[r] = gn[r] + gz[r] * (hp - gn[r]);
      }
      for (int r = 0; r < M; ++r) {
        const int64_t row = row0 + r, b = b0 + r;
        if (a->gates != nullptr) {
          S* gr = a->gates + row * G * H + j0;
          st(gr, gr_[r]);
          st(gr + H, gz[r]);
          st(gr + 2 * H, gn[r]);
        }
        if (a->cs != nullptr) st(a->cs + row * H + j0, acc[r][2]);
        st(hnext + b * R + j0, h[r]);
        st(a->y + row * R + j0, h[r]);
      }
    } else {
      vec h[M];
      for (int r = 0; r < M; ++r) {
        const vec v = xin[r][0] + acc[r][0];
        h[r] = C == Cell::RNN_TANH ? vtanh(v) : vrelu<S>(v);
      }
      for (int r = 0; r < M; ++r) {
        st(hnext + (b0 + r) * R + j0, h[r]);
        st(a->y + (row0 + r) * R + j0, h[r]);
      }
    }
  }

  void run(int tid, int nt) const {
    const int64_t T = a->T, B = a->B, H = a->H, R = a->R;
    const bool proj = a->w_hr != nullptr;
    int64_t p1b, p1e, p2b, p2e;
    split(ceil_div(H, GW * N), tid, nt, &p1b, &p1e);  // groups of GW panels
    split(ceil_div(R, kRnnGW * N), tid, nt, &p2b, &p2e);
    // This thread's panels of the weights, packed here: no other thread reads them, so no
    // barrier, and they start in the caches of the core that multiplies by them (packing
    // them all on one thread before the loop was half of a T=1 call: LSTM B=16 H=256).
    if (!a->prepacked) {
      if (GW > 1)
        pack_rows_grouped<S, GW>(a->w_hh, H, R, wp1, p1b, p1e);
      else
        pack_rows(a->w_hh, G, H, R, wp1, p1b, p1e);
      if (proj) pack_rows_grouped<S, kRnnGW>(a->w_hr, R, H, wp2, p2b, p2e);
    }
    if (wpi != nullptr) {
      if (step_proj && GW > 1)
        pack_rows_grouped<S, GW>(a->w_ih, H, a->I, wpi, p1b, p1e);
      else
        pack_rows(a->w_ih, G, H, a->I, wpi, p1b * GW, imin(p1e * GW, ceil_div(H, N)));
    }
    if (xpw != nullptr) {
      // this thread's projection panels: those of its unit groups
      const int64_t pb = p1b * GW, pe = imin(p1e * GW, ceil_div(H, N));
      // Fused input projection of this thread's panels for every step: the epilogues of the
      // same panels are its only readers, so no barrier is needed before the time loop.
      // Rows go in blocks (all of this thread's panels per block), so that a block of x
      // stays in cache while the panels pass over it.
      const int64_t I = a->I, st = a->x_st, sb = a->x_sb;
      const int64_t rblk = MR * imax(int64_t(1), int64_t(8192 / sizeof(S)) / (MR * imax(I, int64_t(1))));
      auto project = [&](int64_t p, const S* xa, int64_t lda, int64_t rows, S* out, int64_t ld_out) {
        const int64_t j0 = p * N, nu = imin(N, H - j0);
        vec bias[G];
        for (int g = 0; g < G; ++g) bias[g] = a->b_ih != nullptr ? load_n(a->b_ih + g * H + j0, nu) : vec{};
        out += j0;
        gemm_rows<S, MR, G>(xa, lda, rows, I, wpi + p * I * G * N, [&](int64_t r, const vec* acc) {
          S* o = out + r * ld_out;
          for (int g = 0; g < G; ++g) store_n(o + g * H, acc[g] + bias[g], nu);
        });
      };
      if (a->steps != nullptr || st == B * sb) {  // rows evenly spaced: one matrix (T*B rows, or packed)
        const int64_t n = a->steps != nullptr ? a->steps[T] : T * B;
        for (int64_t r0 = 0; r0 < n; r0 += rblk) {
          const int64_t rows = imin(rblk, n - r0);
          for (int64_t p = pb; p < pe; ++p) project(p, a->x + r0 * sb, sb, rows, xpw + r0 * G * H, G * H);
        }
      } else if (T <= B) {
        for (int64_t t = 0; t < T; ++t)
          for (int64_t p = pb; p < pe; ++p) project(p, a->x + t * st, sb, B, xpw + t * B * G * H, G * H);
      } else {  // e.g. batch_first: the T rows of one sequence
        for (int64_t b = 0; b < B; ++b)
          for (int64_t p = pb; p < pe; ++p) project(p, a->x + b * sb, st, T, xpw + b * G * H, B * G * H);
      }
    }
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = a->reverse ? T - 1 - s : s;
      const S* hprev = hbuf[s & 1];
      S* hnext = hbuf[(s + 1) & 1];
      S* hp_step = proj ? (a->hpre != nullptr ? a->hpre + t * B * H : hpre_s) : nullptr;
      const int64_t nb = active_rows(a->lengths, sorted, B, t);
      const vec zeros[G * GW] = {};
      for (int64_t q = p1b; q < p1e; ++q) {
        // b_hh (+ b_ih) of the tile's columns ([gw][g], as the accumulators): the GEMM's
        // starting sums
        vec bias[G * GW] = {};
        const S* b_in = step_proj ? a->b_ih : nullptr;
        if (a->b_hh != nullptr || b_in != nullptr)
          for (int gw = 0; gw < GW; ++gw) {
            const int64_t j0 = (q * GW + gw) * N, nu = imin(N, H - j0);
            if (j0 >= H) break;
            for (int g = 0; g < G; ++g) {
              if (a->b_hh != nullptr) bias[gw * G + g] = load_n(a->b_hh + g * H + j0, nu);
              if (b_in != nullptr) bias[gw * G + g] += load_n(b_in + g * H + j0, nu);
            }
          }
        auto epi = [&](int64_t b, const vec* acc) {
          for (int gw = 0; gw < GW; ++gw) {
            const int64_t j0 = (q * GW + gw) * N;
            if (j0 >= H) break;
            epilogue(t, b, j0, imin(N, H - j0), acc + gw * G, hprev, hnext, hp_step);
          }
        };
        // a tile's rows together (epilogue_rows) where they are all active
        auto epi_tile = [&](int64_t b0, int64_t rows, auto& acc) -> void {
          constexpr int M = std::extent<std::remove_reference_t<decltype(acc)>>::value;
          if (prefetch && s + 1 < T)  // the rows' projections at the next step, into L2
            for (int64_t r = 0; r < rows; ++r) {
              const S* nx = xp + row_at(a->reverse ? t - 1 : t + 1, b0 + r) * G * H + q * GW * N;
              for (int g = 0; g < G; ++g) __builtin_prefetch(nx + g * H, 0, 2);
            }
          bool on = rows == M;
          for (int64_t r = 0; on && r < rows; ++r) on = active(a->lengths, b0 + r, t);
          for (int gw = 0; gw < GW; ++gw) {
            const int64_t j0 = (q * GW + gw) * N;
            if (j0 >= H) break;
            if (on) {
              const vec* rows_acc[M];
              for (int r = 0; r < M; ++r) rows_acc[r] = acc[r] + gw * G;
              if (j0 + N <= H)
                epilogue_rows<M, true>(t, b0, j0, N, rows_acc, hprev, hnext, hp_step);
              else
                epilogue_rows<M, false>(t, b0, j0, H - j0, rows_acc, hprev, hnext, hp_step);
            } else {
              for (int64_t r = 0; r < rows; ++r)
                epilogue(t, b0 + r, j0, imin(N, H - j0), acc[r] + gw * G, hprev, hnext, hp_step);
            }
          }
        };
        auto step_gemm = [&](auto rows_per_tile) {
          constexpr int M = decltype(rows_per_tile)::value;
          if (step_proj)
            gemm_rows2<S, M, G * GW>(x_at(t, 0), a->x_sb, a->I, wpi + q * a->I * G * GW * N, hprev, R, nb, R,
                                     wp1 + q * R * G * GW * N, epi_tile, bias);
          else
            gemm_rows<S, M, G * GW>(hprev, R, nb, R, wp1 + q * R * G * GW * N, epi_tile, bias);
        };
        if constexpr (kHasWide) {
          if (wide) {
            step_gemm(std::integral_constant<int, kWideMR>{});
          } else {
            step_gemm(std::integral_constant<int, MRR>{});
          }
        } else {
          step_gemm(std::integral_constant<int, MRR>{});
        }
        for (int64_t b = nb; b < B; ++b) epi(b, zeros);
      }
      if (proj) {
        bar->wait();
        // the same tile shape as RNN's: kRnnMR rows x kRnnGW blocks of N projected units
        const vec pzeros[kRnnGW] = {};
        for (int64_t q = p2b; q < p2e; ++q) {
          auto out = [&](int64_t b, const vec* acc) {
            const bool on = active(a->lengths, b, t);
            for (int gw = 0; gw < kRnnGW; ++gw) {
              const int64_t u0 = (q * kRnnGW + gw) * N;
              if (u0 >= R) break;
              const int64_t nu = imin(N, R - u0);
              if (on) {
                store_n(hnext + b * R + u0, acc[gw], nu);
                store_n(a->y + row_at(t, b) * R + u0, acc[gw], nu);
              } else {
                store_n(hnext + b * R + u0, load_n(hprev + b * R + u0, nu), nu);
                if (a->steps == nullptr) store_n(a->y + (t * B + b) * R + u0, vec{}, nu);
              }
            }
          };
          gemm_rows<S, kRnnMR, kRnnGW>(hp_step, H, nb, H, wp2 + q * H * kRnnGW * N, out);
          for (int64_t b = nb; b < B; ++b) out(b, pzeros);
        }
      }
      bar->wait();
    }
  }
};

template <typename S, Cell C>
void forward_cell(const ForwardArgs<S>& a) {
  typedef Forward<S, C> F;
  constexpr int N = V<S>::N;
  const int64_t B = a.B, H = a.H, R = a.R, G = F::G;
  const bool proj = a.w_hr != nullptr;
  S* w = a.work;
  F f;
  f.a = &a;
  f.xp = a.xp;
  f.xpw = nullptr;
  f.wpi = nullptr;
  f.step_proj = a.x != nullptr && step_projection(C, B, H, a.I, sizeof(S));
  S* wp1 = w;
  w += ceil_div(H, F::GW * N) * F::GW * N * G * R;
  f.wp1 = wp1;
  f.wp2 = nullptr;
  f.hpre_s = nullptr;
  f.sorted = lengths_sorted(a.lengths, B);
  f.hbuf[0] = w;
  f.hbuf[1] = w + B * R;
  w += 2 * B * R;
  if (proj) {
    S* wp2 = w;
    w += ceil_div(R, kRnnGW * N) * kRnnGW * N * H;
    f.wp2 = wp2;
    f.hpre_s = w;
    w += B * H;
  }
  if (a.x != nullptr) {
    S* wpi = w;
    w += ceil_div(H, F::GW * N) * F::GW * N * G * a.I;
    f.wpi = wpi;
    if (!inline_projection(a.I) && !f.step_proj) {
      f.xpw = a.gates != nullptr ? a.gates : w;
      f.xp = f.xpw;
    }
  }
  if (a.h0 != nullptr)
    std::memcpy(f.hbuf[0], a.h0, sizeof(S) * B * R);
  else
    std::memset(static_cast<void*>(f.hbuf[0]), 0, sizeof(S) * B * R);
  if (C == Cell::LSTM) {
    if (a.c0 != nullptr)
      std::memcpy(a.cT, a.c0, sizeof(S) * B * H);
    else
      std::memset(static_cast<void*>(a.cT), 0, sizeof(S) * B * H);
  }
  f.prefetch = f.xp != nullptr && a.T * B * G * H * int64_t(sizeof(S)) > kPrefetchBytes;
  f.wide = F::kHasWide && B >= kWideMinB;
  const int64_t packed = (a.prepacked ? 0 : G * H * R + (proj ? R * H : 0)) + (a.x != nullptr ? G * H * a.I : 0);
  const int nt = threads_for(a.num_threads, ceil_div(H, F::GW * N), 2 * B * G * H * (R + (a.x != nullptr ? a.I : 0)),
                             a.T, G > 1, packed);
  Barrier bar(nt);
  f.bar = &bar;
  parallel_run(
      nt, [](void* ctx, int tid, int n) { static_cast<const F*>(ctx)->run(tid, n); }, &f);
  if (B > 0) std::memcpy(a.hT, f.hbuf[a.T & 1], sizeof(S) * B * R);
}

template <typename S>
void forward(const ForwardArgs<S>& a) {
  const int G = cell_gates(a.cell);
  check_sizes(a.T, a.B, a.H, a.R, G);
  require(a.num_threads >= 1, "num_threads must be positive");
  if (a.B == 0) return;  // nothing to compute (empty arrays may have null data)
  require(a.w_hh && a.hT && a.work, "missing array");
  require(a.T == 0 || ((a.xp || a.x) && a.y), "missing array");
  require(a.x == nullptr || (a.xp == nullptr && a.w_ih != nullptr && !a.prepacked),
          "the fused input projection takes x and w_ih instead of xp, and no prepacked weights");
  require(a.x == nullptr || (a.I >= 1 && a.I < (int64_t(1) << 24)), "input size must be positive");
  require(a.cell == Cell::LSTM || a.w_hr == nullptr, "only LSTM has a projection");
  require((a.w_hr != nullptr) == (a.R != a.H), "R differs from H exactly when there is a projection");
  require(a.cell != Cell::LSTM || a.cT, "LSTM needs cT");
  require(a.cell != Cell::LSTM || a.gates == nullptr || a.cs != nullptr, "LSTM training needs cs");
  require(a.cell != Cell::LSTM || a.w_hr == nullptr || a.gates == nullptr || a.hpre != nullptr,
          "LSTM projection training needs hpre");
  require(a.cell != Cell::GRU || a.gates == nullptr || a.cs != nullptr, "GRU training needs cs");
  require(a.work_size >= forward_workspace<S>(a.cell, a.B, a.H, a.R) +
                            (a.x != nullptr ? projection_workspace<S>(a.cell, a.T, a.B, a.H, a.I, a.gates != nullptr)
                                            : 0),
          "workspace too small");
  check_lengths(a.lengths, a.B, a.T);
  require(a.steps == nullptr || (a.gates == nullptr && a.hpre == nullptr),
          "a packed layout is for inference (no saved gates)");
  check_steps(a.steps, a.lengths, a.B, a.T);
  switch (a.cell) {
    case Cell::LSTM: return forward_cell<S, Cell::LSTM>(a);
    case Cell::GRU: return forward_cell<S, Cell::GRU>(a);
    case Cell::RNN_TANH: return forward_cell<S, Cell::RNN_TANH>(a);
    case Cell::RNN_RELU: return forward_cell<S, Cell::RNN_RELU>(a);
  }
  fail("unknown cell");
}

// ------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------
template <typename S, Cell C>
struct Backward {
  static constexpr int G = CellTraits<C>::G;
  static constexpr int MR = CellTraits<C>::MR;
  static constexpr int N = V<S>::N;
  typedef vec_t<S> vec;

  const BackwardArgs<S>* a;  // outputs all set (scratch for those the caller did not want)
  int64_t dy_st, dy_sb;       // dy's strides; dy_su 0 (a broadcast per row) or 1
  bool dy_bcast;
  S* wp1;        // packed W_hh panels: [ceil(R/(kGW*N))][G*H][kGW][N]  (dG @ W_hh)
  S* wp2;        // packed W_hr panels: [ceil(H/N)][R][N]  (dh_r @ W_hr)
                 // (each thread packs those it multiplies by, as the forward's)
  S* dgh[2];     // GRU: [B,G*H] each, gradient of the recurrent pre-activations
  bool sorted;   // lengths non-increasing: GEMMs over the active prefix of rows only
  bool prefetch;  // the saved gates and states stream from memory (kPrefetchBytes)
  Barrier* bar;

  // Cell backward for an active row b at step t, units j0..j0+nu, with dh the gradient
  // of the (unprojected) hidden output. Writes dxp (and GRU's dhid, dgh); updates carries.
  // (Unlike the forward's epilogue, running a whole tile's rows stage by stage did not pay
  // here: C++ harness, 1 thread, (100,32,128) LSTM 7.0 -> 7.4 ms, GRU 6.0 -> 7.5 ms, RNN
  // 1.77 -> 1.65 ms, even with the data in cache.)
  FASTRNN_INLINE void cell_backward(int64_t t, int64_t b, int64_t j0, int64_t nu, vec dh, S* dgh_cur) const {
    const int64_t T = a->T, B = a->B, H = a->H, R = a->R;
    const int64_t row = t * B + b;
    S* dx = a->dxp + row * G * H + j0;
    if (C == Cell::LSTM) {
      const S* gr = a->gates + row * G * H + j0;
      const vec i = load_n(gr, nu), f = load_n(gr + H, nu), g = load_n(gr + 2 * H, nu), o = load_n(gr + 3 * H, nu);
      const vec c = load_n(a->cs + row * H + j0, nu);
      const bool first = a->reverse ? t + 1 >= T : t == 0;
      const vec cp = first ? (a->c0 != nullptr ? load_n(a->c0 + b * H + j0, nu) : vec{})
                           : load_n(a->cs + (a->reverse ? row + B : row - B) * H + j0, nu);
      const vec tc = vtanh(c);
      S* dcc = a->dc0 + b * H + j0;
      const vec dc = load_n(dcc, nu) + dh * o * (S(1) - tc * tc);
      store_n(dx, dc * g * i * (S(1) - i), nu);
      store_n(dx + H, dc * cp * f * (S(1) - f), nu);
      store_n(dx + 2 * H, dc * i * (S(1) - g * g), nu);
      store_n(dx + 3 * H, dh * tc * o * (S(1) - o), nu);
      store_n(dcc, dc * f, nu);
    } else if (C == Cell::GRU) {
      const S* gr = a->gates + row * G * H + j0;
      const vec r = load_n(gr, nu), z = load_n(gr + H, nu), n = load_n(gr + 2 * H, nu);
      const vec hn = load_n(a->cs + row * H + j0, nu);
      const int64_t len = a->lengths ? a->lengths[b] : T;
      const bool first = a->reverse ? t + 1 >= len : t == 0;
      const vec hp = first ? (a->h0 != nullptr ? load_n(a->h0 + b * R + j0, nu) : vec{})
                           : load_n(a->y + (a->reverse ? row + B : row - B) * R + j0, nu);
      const vec dnp = dh * (S(1) - z) * (S(1) - n * n);
      const vec drp = dnp * hn * r * (S(1) - r);
      const vec dzp = dh * (hp - n) * z * (S(1) - z);
      store_n(dx, drp, nu);
      store_n(dx + H, dzp, nu);
      store_n(dx + 2 * H, dnp, nu);
      const vec dhn = dnp * r;
      store_n(a->dhid + row * H + j0, dhn, nu);
      S* dg = dgh_cur + b * G * H + j0;
      store_n(dg, drp, nu);
      store_n(dg + H, dzp, nu);
      store_n(dg + 2 * H, dhn, nu);
      store_n(a->dh0 + b * R + j0, dh * z, nu);  // carried to the previous step
    } else {
      const vec h = load_n(a->y + row * R + j0, nu);
      vec d;
      if (C == Cell::RNN_TANH) {
        d = dh * (S(1) - h * h);
      } else {
        d = h > splat<S>(0) ? dh : splat<S>(0);
      }
      store_n(dx, d, nu);
    }
  }

  inline void zero_step(int64_t t, int64_t b, int64_t j0, int64_t nu, S* dgh_cur) const {
    const int64_t B = a->B, H = a->H;
    const int64_t row = t * B + b;
    const vec zero = {};
    for (int g = 0; g < G; ++g) store_n(a->dxp + row * G * H + g * H + j0, zero, nu);
    if (C == Cell::GRU) {
      store_n(a->dhid + row * H + j0, zero, nu);
      for (int g = 0; g < G; ++g) store_n(dgh_cur + b * G * H + g * H + j0, zero, nu);
    }
  }

  void run(int tid, int nt) const {
    const int64_t T = a->T, B = a->B, H = a->H, R = a->R;
    const int64_t GH = G * H;
    const bool proj = a->w_hr != nullptr;
    int64_t p1b, p1e, p2b, p2e;
    split(ceil_div(R, kGW * N), tid, nt, &p1b, &p1e);
    split(ceil_div(H, N), tid, nt, &p2b, &p2e);
    pack_cols<S, kGW>(a->w_hh, GH, R, wp1, p1b, p1e);
    if (proj) pack_cols(a->w_hr, R, H, wp2, p2b, p2e);
    const S* prev_dg = nullptr;  // [B,G*H] dG of the previously visited step
    for (int64_t s = 0; s <= T; ++s) {
      const bool last = s == T;  // after the loop: dh0 = carry + dG_first @ W_hh
      const int64_t t = a->reverse ? s : T - 1 - s;
      S* dgh_cur = C == Cell::GRU ? dgh[s & 1] : nullptr;
      // Rows of dG_prev that can be non-zero: those active at the previously visited step.
      const int64_t nb_prev = s == 0 ? 0 : active_rows(a->lengths, sorted, B, a->reverse ? s - 1 : T - s);
      const vec zeros[kGW] = {};
      // Phase A: dh (R wide) = dG_prev @ W_hh + carry (+ dy), per panel of R units.
      for (int64_t p = p1b; p < p1e; ++p) {
        auto epi = [&](int64_t b, const vec* accs) {
          for (int gw = 0; gw < kGW; ++gw) {
            const int64_t u0 = (p * kGW + gw) * N;
            if (u0 >= R) break;
            const int64_t nu = imin(N, R - u0);
            const vec acc = accs[gw];
            S* carry = a->dh0 + b * R + u0;
            if (last || !active(a->lengths, b, t)) {
              store_n(carry, load_n(carry, nu) + acc, nu);
              if (!last) {
                if (proj)
                  store_n(a->dhid + (t * B + b) * R + u0, vec{}, nu);
                else
                  zero_step(t, b, u0, nu, dgh_cur);
              }
              continue;
            }
            if (prefetch && gw == 0 && (a->reverse ? t + 1 < T : t > 0)) {
              // what the step visited next reads of this row, on its way into L2: its saved
              // gates (RNN: output), dy, and the state before it (LSTM's c, GRU's h), which is
              // the row of the step after that
              const int64_t tn = a->reverse ? t + 1 : t - 1, tb = a->reverse ? t + 2 : t - 2;
              const int64_t nrow = tn * B + b, brow = tb * B + b;
              const bool before = tb >= 0 && tb < T;
              if (C == Cell::LSTM || C == Cell::GRU)
                for (int g = 0; g < G; ++g) __builtin_prefetch(a->gates + nrow * GH + g * H + u0, 0, 2);
              for (int g = 0; g < G; ++g) __builtin_prefetch(a->dxp + nrow * GH + g * H + u0, 1, 2);
              if (C == Cell::GRU) __builtin_prefetch(a->dhid + nrow * H + u0, 1, 2);
              if (C == Cell::LSTM && before) __builtin_prefetch(a->cs + brow * H + u0, 0, 2);
              if (C == Cell::GRU) __builtin_prefetch(a->cs + nrow * H + u0, 0, 2);
              if (C == Cell::GRU && before) __builtin_prefetch(a->y + brow * R + u0, 0, 2);
              if (C == Cell::RNN_TANH || C == Cell::RNN_RELU) __builtin_prefetch(a->y + nrow * R + u0, 0, 2);
              if (a->dy != nullptr && !dy_bcast) __builtin_prefetch(a->dy + tn * dy_st + b * dy_sb + u0, 0, 2);
            }
            vec dh = acc + load_n(carry, nu);
            if (a->dy != nullptr) {
              const S* dyr = a->dy + t * dy_st + b * dy_sb;
              dh += dy_bcast ? splat<S>(*dyr) : load_n(dyr + u0, nu);
            }
            store_n(carry, vec{}, nu);
            if (proj)
              store_n(a->dhid + (t * B + b) * R + u0, dh, nu);
            else
              cell_backward(t, b, u0, nu, dh, dgh_cur);
          }
        };
        gemm_rows<S, kMRB, kGW>(prev_dg, GH, nb_prev, GH, wp1 + p * GH * kGW * N, epi);
        for (int64_t b = nb_prev; b < B; ++b) epi(b, zeros);
      }
      if (last) break;
      if (proj) {
        bar->wait();
        // Phase B: dh_pre (H wide) = dh_r @ W_hr, then the LSTM cell backward.
        const S* dhr = a->dhid + t * B * R;
        // (tiles of kMR1 rows x 1 block: measured faster here than the 3 x 4 tile)
        const int64_t nb = active_rows(a->lengths, sorted, B, t);
        for (int64_t p = p2b; p < p2e; ++p) {
          const int64_t j0 = p * N, nu = imin(N, H - j0);
          gemm_rows<S, kMR1, 1>(dhr, R, nb, R, wp2 + p * R * N, [&](int64_t b, const vec* acc) {
            if (active(a->lengths, b, t))
              cell_backward(t, b, j0, nu, acc[0], nullptr);
            else
              zero_step(t, b, j0, nu, nullptr);
          });
          for (int64_t b = nb; b < B; ++b) zero_step(t, b, j0, nu, nullptr);
        }
      }
      bar->wait();
      prev_dg = C == Cell::GRU ? dgh_cur : a->dxp + t * B * GH;
    }
  }
};

// ------------------------------------------------------------------------------------
// Weight gradients (BackwardArgs::dw_*, db_*): after the loop, dW = sum over the T*B rows of
// dG[row]^T x what the step read at that row, in this call instead of torch's mm, sum and
// slicing nodes (at tutorial sizes those cost several times the loop itself).
// ------------------------------------------------------------------------------------
// Tiles of kWgMR rows of dW (broadcasts of dG) x up to kWgNR vectors of its columns; the sum
// over rows runs in blocks of about kWgKC rows, dW accumulating between blocks.
constexpr int kWgMR = 4;
constexpr int kWgNR = kVecBytes == 64 ? 2 : 3;
constexpr int64_t kWgKC = 128;
constexpr int64_t kWgMB = 64;  // rows of dW per packed group (a multiple of kWgMR)
// dW with at most this many columns (narrow inputs): vectors along dW's rows instead.
constexpr int64_t kWgNarrow = 4;

// The right-hand rows: the state each step started from (LSTM/GRU/RNN's h_prev), null where
// it is zero (h0 not given) or the row is inactive (its dG is zero): those rows are skipped.
template <typename S>
struct PrevRows {
  const S* y;  // [T,B,R]
  const S* h0;  // [B,R] or null
  const int64_t* lengths;  // [B] or null
  int64_t T, B, R;
  bool reverse;
  FASTRNN_INLINE const S* operator()(int64_t t, int64_t b) const {
    const int64_t len = lengths != nullptr ? lengths[b] : T;
    if (t >= len) return nullptr;
    const bool first = reverse ? t + 1 == len : t == 0;
    if (first) return h0 != nullptr ? h0 + b * R : nullptr;
    return y + ((reverse ? t + 1 : t - 1) * B + b) * R;
  }
};

// Rows at base + t*st + b*sb (x, hpre), null where the row is inactive.
template <typename S>
struct StridedRows {
  const S* base;  // row (t,b) at base + t*st + b*sb
  int64_t st, sb;
  const int64_t* lengths;  // [B] or null
  FASTRNN_INLINE const S* operator()(int64_t t, int64_t b) const {
    return lengths != nullptr && t >= lengths[b] ? nullptr : base + t * st + b * sb;
  }
};

// C[m..m+mrows)[n0..n0+nn) (+)= sum_j ap[j][r] * bk[j][0..nn) over the nk gathered rows j:
// ap the tile's dG block packed [nk][kWgMR], bk the rows' column slice packed [nk][NV*N]
// (zero past nn); NV vectors of columns (nn > (NV-1)*N).
template <typename S, int NV>
FASTRNN_INLINE void wg_tile(const S* ap, const S* bk, int64_t nk, int64_t m, int64_t mrows, int64_t n0,
                            int64_t nn, S* C, int64_t ldc, bool first) {
  constexpr int N = V<S>::N;
  typedef vec_t<S> vec;
  vec acc[kWgMR][NV] = {};
  for (int64_t j = 0; j < nk; ++j) {
    const S* src = bk + j * NV * N;
    vec bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load(src + v * N);
    const S* a = ap + j * kWgMR;
    for (int r = 0; r < kWgMR; ++r) {
      const S av = a[r];
      for (int v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
    }
  }
  // (constant indices only: a runtime index into acc would keep it in memory, not registers)
  const int64_t tail = nn - (NV - 1) * N;  // lanes of the last vector
  for (int r = 0; r < kWgMR; ++r) {
    if (r >= mrows) break;
    for (int v = 0; v < NV; ++v) {
      const int64_t cnt = v + 1 < NV ? N : tail;
      S* c = C + (m + r) * ldc + n0 + v * N;
      store_n(c, first ? acc[r][v] : load_n(c, cnt) + acc[r][v], cnt);
    }
  }
}

// Narrow dW (NN <= kWgNarrow columns): vectors along m (A's rows), a broadcast per column,
// two vectors per pass; C[m][n] for m in [m0, m1).
template <typename S, int NN, typename Rows>
void wg_narrow(const S* A, int64_t lda, int64_t m0, int64_t m1, int64_t T, int64_t B, const Rows& rows, S* C,
               int64_t ldc) {
  constexpr int VN = V<S>::N;
  constexpr int MV = 2;
  typedef vec_t<S> vec;
  for (int64_t m = m0; m < m1; m += MV * VN) {
    vec acc[NN][MV] = {};
    int64_t cnt[MV];
    for (int v = 0; v < MV; ++v) cnt[v] = imax(int64_t(0), imin(int64_t(VN), m1 - m - v * VN));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b) {
        const S* src = rows(t, b);
        if (src == nullptr) continue;
        const S* a = A + (t * B + b) * lda + m;
        vec av[MV];
        for (int v = 0; v < MV; ++v) av[v] = cnt[v] > 0 ? load_n(a + v * VN, cnt[v]) : vec{};
        for (int n = 0; n < NN; ++n) {
          const S sc = src[n];
          for (int v = 0; v < MV; ++v) acc[n][v] += sc * av[v];
        }
      }
    for (int v = 0; v < MV; ++v)
      for (int n = 0; n < NN; ++n) {
        alignas(64) S lanes[VN];
        store(lanes, acc[n][v]);
        for (int64_t l = 0; l < cnt[v]; ++l) C[(m + v * VN + l) * ldc + n] = lanes[l];
      }
  }
}

// C[m][0..N) = sum over rows of A[row][m] * rows(row)[0..N) for m in [m0, m1) (C: [M][ldc]).
template <typename S, typename Rows>
void wg_gemm(const S* A, int64_t lda, int64_t m0, int64_t m1, int64_t T, int64_t B, const Rows& rows, int64_t N,
             S* C, int64_t ldc) {
  constexpr int VN = V<S>::N;
  if (m0 >= m1) return;
  switch (N) {  // narrow: see wg_narrow
    case 1: return wg_narrow<S, 1>(A, lda, m0, m1, T, B, rows, C, ldc);
    case 2: return wg_narrow<S, 2>(A, lda, m0, m1, T, B, rows, C, ldc);
    case 3: return wg_narrow<S, 3>(A, lda, m0, m1, T, B, rows, C, ldc);
    case 4: return wg_narrow<S, 4>(A, lda, m0, m1, T, B, rows, C, ldc);
    default: break;
  }
  static_assert(kWgNarrow == 4, "wg_gemm's switch covers the narrow widths");
  // Rows in blocks of kWgKC: the active ones gathered (pointers); then per group of kWgMB
  // rows of dW their dG block packed contiguously, [tile][row j][kWgMR] (dG's rows are G*H
  // apart: walking them down thrashed L1's sets), and per tile of columns the rows' slice
  // packed too ([j][NV*N], zero-padded; rows R apart alias in L1 just the same), which every
  // tile of the group then reads from L1.
  const S* bp[kWgKC];
  const S* ar[kWgKC];
  alignas(64) S ap[kWgKC * kWgMB];
  alignas(64) S bk[kWgKC * kWgNR * VN];
  const int64_t K = T * B;
  for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kWgKC) {
    const bool first = k0 == 0;
    int64_t nk = 0;
    for (int64_t k = k0; k < imin(K, k0 + kWgKC); ++k) {
      const S* src = rows(k / B, k % B);
      if (src == nullptr) continue;
      bp[nk] = src;
      ar[nk++] = A + k * lda;
    }
    for (int64_t mg = m0; mg < m1; mg += kWgMB) {
      const int64_t mge = imin(m1, mg + kWgMB);
      for (int64_t m = mg; m < mge; m += kWgMR) {
        const int64_t mrows = imin(int64_t(kWgMR), mge - m);
        S* apt = ap + (m - mg) * nk;
        if (mrows == kWgMR) {
          for (int64_t j = 0; j < nk; ++j) std::memcpy(apt + j * kWgMR, ar[j] + m, sizeof(S) * kWgMR);
        } else {
          for (int64_t j = 0; j < nk; ++j)
            for (int r = 0; r < kWgMR; ++r) apt[j * kWgMR + r] = ar[j][m + imin(int64_t(r), mrows - 1)];
        }
      }
      for (int64_t n0 = 0; n0 < N; n0 += kWgNR * VN) {
        const int64_t nn = imin(int64_t(kWgNR * VN), N - n0);
        const int64_t nv = ceil_div(nn, VN), w = nv * VN;
        for (int64_t j = 0; j < nk; ++j)
          for (int64_t u = 0; u < w; u += VN) store(bk + j * w + u, load_n(bp[j] + n0 + u, nn - u));
        for (int64_t m = mg; m < mge; m += kWgMR) {
          const int64_t mrows = imin(int64_t(kWgMR), mge - m);
          const S* apt = ap + (m - mg) * nk;
          if (nv >= 3 && kWgNR >= 3)
            wg_tile<S, kWgNR >= 3 ? 3 : 1>(apt, bk, nk, m, mrows, n0, nn, C, ldc, first);
          else if (nv == 2)
            wg_tile<S, 2>(apt, bk, nk, m, mrows, n0, nn, C, ldc, first);
          else
            wg_tile<S, 1>(apt, bk, nk, m, mrows, n0, nn, C, ldc, first);
        }
      }
    }
    if (k0 + kWgKC >= K) break;
  }
}

// out[m] = sum over the active rows of A[row][m], m in [m0, m1).
template <typename S>
void wg_colsum(const S* A, int64_t lda, int64_t m0, int64_t m1, int64_t T, int64_t B, const int64_t* lengths,
               S* out) {
  constexpr int VN = V<S>::N;
  typedef vec_t<S> vec;
  constexpr int MV = 4;
  for (int64_t m = m0; m < m1; m += MV * VN) {
    vec acc[MV] = {};
    int64_t cnt[MV];
    for (int v = 0; v < MV; ++v) cnt[v] = imax(int64_t(0), imin(int64_t(VN), m1 - m - v * VN));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b) {
        if (lengths != nullptr && t >= lengths[b]) continue;
        const S* a = A + (t * B + b) * lda + m;
        for (int v = 0; v < MV; ++v)
          if (cnt[v] > 0) acc[v] += load_n(a + v * VN, cnt[v]);
      }
    for (int v = 0; v < MV; ++v)
      if (cnt[v] > 0) store_n(out + m + v * VN, acc[v], cnt[v]);
  }
}

template <typename S>
struct WeightGrads {
  const BackwardArgs<S>* a;
  int G;

  // Thread tid's share [*m0, *m1) of M rows, in whole tiles of `unit` rows.
  static void share(int64_t M, int64_t unit, int tid, int nt, int64_t* m0, int64_t* m1) {
    int64_t b, e;
    split(ceil_div(M, unit), tid, nt, &b, &e);
    *m0 = imin(M, b * unit);
    *m1 = imin(M, e * unit);
  }

  void run(int tid, int nt) const {
    constexpr int VN = V<S>::N;
    const int64_t T = a->T, B = a->B, H = a->H, R = a->R, GH = G * H;
    const bool gru = a->cell == Cell::GRU;
    // GRU: the n rows of W_hh's gradient come from dhid (the gradient of W_hn h + b_hn)
    const int64_t MX = gru ? 2 * H : GH;  // rows whose dG is dxp
    const int64_t unit = kWgMR * VN;      // rows per thread share: whole tiles and vectors
    int64_t m0, m1, n0, n1;
    share(MX, unit, tid, nt, &m0, &m1);
    if (gru) share(H, unit, tid, nt, &n0, &n1);
    const PrevRows<S> prev{a->y, a->h0, a->lengths, T, B, R, a->reverse};
    if (a->dw_hh != nullptr) {
      wg_gemm(a->dxp, GH, m0, m1, T, B, prev, R, a->dw_hh, R);
      if (gru) wg_gemm(a->dhid, H, n0, n1, T, B, prev, R, a->dw_hh + 2 * H * R, R);
    }
    if (a->db_hh != nullptr) {
      wg_colsum(a->dxp, GH, m0, m1, T, B, a->lengths, a->db_hh);
      if (gru) wg_colsum(a->dhid, H, n0, n1, T, B, a->lengths, a->db_hh + 2 * H);
    }
    int64_t i0, i1;
    share(GH, unit, tid, nt, &i0, &i1);
    if (a->dw_ih != nullptr) {
      const StridedRows<S> xs{a->x, a->x_st, a->x_sb, a->lengths};
      wg_gemm(a->dxp, GH, i0, i1, T, B, xs, a->I, a->dw_ih, a->I);
    }
    if (a->db_ih != nullptr) {
      if (a->db_hh != nullptr && !gru) {  // the same sums
        if (i1 > i0) std::memcpy(a->db_ih + i0, a->db_hh + i0, sizeof(S) * (i1 - i0));
      } else {
        wg_colsum(a->dxp, GH, i0, i1, T, B, a->lengths, a->db_ih);
      }
    }
    if (a->dw_hr != nullptr) {
      int64_t r0, r1;
      share(R, unit, tid, nt, &r0, &r1);
      const StridedRows<S> hp{a->hpre, B * H, H, a->lengths};
      wg_gemm(a->dhid, R, r0, r1, T, B, hp, H, a->dw_hr, H);
    }
  }
};

template <typename S, Cell C>
void backward_cell(const BackwardArgs<S>& args) {
  typedef Backward<S, C> F;
  constexpr int N = V<S>::N;
  const int64_t T = args.T, B = args.B, H = args.H, R = args.R, G = F::G;
  const bool proj = args.w_hr != nullptr;
  S* w = args.work;
  F f;
  f.wp1 = w;
  w += ceil_div(R, kGW * N) * kGW * N * G * H;
  f.wp2 = nullptr;
  if (proj) {
    f.wp2 = w;
    w += ceil_div(H, N) * N * R;
  }
  f.dgh[0] = f.dgh[1] = nullptr;
  f.sorted = lengths_sorted(args.lengths, B);
  f.prefetch = (args.gates != nullptr ? T * B * G * H : T * B * R) * int64_t(sizeof(S)) > kPrefetchBytes;
  if (C == Cell::GRU) {
    f.dgh[0] = w;
    f.dgh[1] = w + B * G * H;
    w += 2 * B * G * H;
  }
  // the outputs the caller did not want: scratch (backward_extra_workspace)
  BackwardArgs<S> a = args;
  auto take = [&w](S*& p, int64_t n) {
    if (p == nullptr) {
      p = w;
      w += n;
    }
  };
  take(a.dxp, T * B * G * H);
  if (C == Cell::GRU) take(a.dhid, T * B * H);
  if (proj) take(a.dhid, T * B * R);
  take(a.dh0, B * R);
  if (C == Cell::LSTM) take(a.dc0, B * H);
  f.a = &a;
  f.dy_st = a.dy_st < 0 ? B * R : a.dy_st;
  f.dy_sb = a.dy_st < 0 ? R : a.dy_sb;
  f.dy_bcast = a.dy_st >= 0 && a.dy_su == 0;
  // the carries start from dhT and dcT (any strides), or zeros
  auto init_carry = [B](S* dst, const S* src, int64_t sb, int64_t su, int64_t n) {
    if (src == nullptr) {
      std::memset(static_cast<void*>(dst), 0, sizeof(S) * B * n);
    } else if (sb < 0 || (sb == n && su == 1)) {
      std::memcpy(dst, src, sizeof(S) * B * n);
    } else {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t u = 0; u < n; ++u) dst[b * n + u] = src[b * sb + u * su];
    }
  };
  init_carry(a.dh0, a.dhT, a.dhT_sb, a.dhT_su, R);
  if (C == Cell::LSTM) init_carry(a.dc0, a.dcT, a.dcT_sb, a.dcT_su, H);
  const int nt = threads_for(a.num_threads, ceil_div(R, kGW * N), 2 * B * G * H * R, T, G > 1,
                             G * H * R + (proj ? R * H : 0));
  Barrier bar(nt);
  f.bar = &bar;
  parallel_run(
      nt, [](void* ctx, int tid, int n) { static_cast<const F*>(ctx)->run(tid, n); }, &f);
  if (a.dw_hh != nullptr || a.db_hh != nullptr || a.dw_ih != nullptr || a.db_ih != nullptr || a.dw_hr != nullptr) {
    WeightGrads<S> wg{&a, static_cast<int>(G)};
    const int64_t flops = 2 * a.T * B * (G * H * (R + a.I) + (proj ? R * H : 0));
    const int nw = flops < 400000 ? 1 : imax(1, imin(a.num_threads, ceil_div(G * H, kWgMR * N)));
    parallel_run(
        static_cast<int>(nw), [](void* ctx, int tid, int n) { static_cast<const WeightGrads<S>*>(ctx)->run(tid, n); },
        &wg);
  }
}

template <typename S>
void backward(const BackwardArgs<S>& a) {
  const int G = cell_gates(a.cell);
  check_sizes(a.T, a.B, a.H, a.R, G);
  require(a.num_threads >= 1, "num_threads must be positive");
  require(a.dw_ih == nullptr || (a.x != nullptr && a.I >= 1 && a.I < (int64_t(1) << 24)),
          "the input weights' gradient needs x and a positive input size");
  require(a.dw_hr == nullptr || a.w_hr != nullptr, "only a projection has dw_hr");
  if (a.B == 0) {  // no rows: the weight gradients are zero
    const int64_t GH = G * a.H;
    S* outs[] = {a.dw_hh, a.db_hh, a.dw_hr, a.dw_ih, a.db_ih};
    const int64_t sizes[] = {GH * a.R, GH, a.R * a.H, GH * a.I, GH};
    for (int i = 0; i < 5; ++i)
      if (outs[i] != nullptr) std::memset(static_cast<void*>(outs[i]), 0, sizeof(S) * sizes[i]);
    return;
  }
  require(a.w_hh && a.work, "missing array");
  require(a.T == 0 || a.y, "missing array");
  require(a.cell == Cell::LSTM || a.w_hr == nullptr, "only LSTM has a projection");
  require((a.w_hr != nullptr) == (a.R != a.H), "R differs from H exactly when there is a projection");
  require(a.cell != Cell::LSTM || (a.gates && a.cs), "LSTM backward needs gates, cs");
  require(a.w_hr == nullptr || a.hpre, "LSTM projection backward needs hpre");
  require(a.cell != Cell::GRU || (a.gates && a.cs), "GRU backward needs gates, cs");
  require(a.dy_st < 0 || (a.dy_su == 0 || a.dy_su == 1), "dy's unit stride must be 0 or 1");
  require(a.work_size >= backward_workspace<S>(a.cell, a.B, a.H, a.R) + backward_extra_workspace(a),
          "workspace too small");
  check_lengths(a.lengths, a.B, a.T);
  switch (a.cell) {
    case Cell::LSTM: return backward_cell<S, Cell::LSTM>(a);
    case Cell::GRU: return backward_cell<S, Cell::GRU>(a);
    case Cell::RNN_TANH: return backward_cell<S, Cell::RNN_TANH>(a);
    case Cell::RNN_RELU: return backward_cell<S, Cell::RNN_RELU>(a);
  }
  fail("unknown cell");
}

template <typename S>
double fma_flops(int64_t iters) {
  constexpr int kChains = 12;  // enough independent chains to cover FMA latency x units
  vec_t<S> acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = splat<S>(S(c) * S(1e-3));
  const vec_t<S> m = splat<S>(S(0.999999)), a = splat<S>(S(1e-7));
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * m + a;
  S sink = 0;
  for (int c = 0; c < kChains; ++c)
    for (int l = 0; l < V<S>::N; ++l) sink += acc[c][l];
  volatile S keep = sink;  // the result is used: the loop cannot be removed
  (void)keep;
  return 2.0 * kChains * V<S>::N * static_cast<double>(iters);
}

#define FASTRNN_STR2(x) #x
#define FASTRNN_STR(x) FASTRNN_STR2(x)

}  // namespace

KernelSet<float> kernels_f32() {
  return {FASTRNN_STR(FASTRNN_ISA), &forward_workspace<float>, &backward_workspace<float>,
          &projection_workspace<float>, &forward<float>,
          &backward<float>, &fma_flops<float>};
}
KernelSet<double> kernels_f64() {
  return {FASTRNN_STR(FASTRNN_ISA), &forward_workspace<double>, &backward_workspace<double>,
          &projection_workspace<double>, &forward<double>,
          &backward<double>, &fma_flops<double>};
}

// Explicit instantiations for the two dtypes.
template void forward<float>(const ForwardArgs<float>&);
template void forward<double>(const ForwardArgs<double>&);
template void backward<float>(const BackwardArgs<float>&);
template void backward<double>(const BackwardArgs<double>&);

}  // namespace FASTRNN_ISA
}  // namespace cpu
}  // namespace fastrnn
