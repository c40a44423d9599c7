// fastrnn CPU: vector type, loads/stores and activations for one instruction set.
// Included only by kernel translation units, inside namespace fastrnn::cpu::FASTRNN_ISA,
// which CMake compiles once per ISA (FASTRNN_VEC_BYTES: 64 AVX-512, 32 AVX2 and AVX-512 on
// 256-bit vectors, 16 portable).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#if !defined(FASTRNN_ISA) || !defined(FASTRNN_VEC_BYTES)
#error "simd.h is compiled per ISA: define FASTRNN_ISA and FASTRNN_VEC_BYTES"
#endif

namespace fastrnn {
namespace cpu {
namespace FASTRNN_ISA {

// The activations and the masked loads/stores are forced inline: every ymm/zmm register is
// caller-saved, so an out-of-line call in the gate epilogue spills all live vectors around it
// (measured: 2x the epilogue's instructions at B=32, H=128).
#define FASTRNN_INLINE inline __attribute__((always_inline))

template <typename S>
struct V;
template <>
struct V<float> {
  typedef float type __attribute__((vector_size(FASTRNN_VEC_BYTES)));
  typedef int32_t itype __attribute__((vector_size(FASTRNN_VEC_BYTES)));
  static constexpr int N = FASTRNN_VEC_BYTES / 4;
};
template <>
struct V<double> {
  typedef double type __attribute__((vector_size(FASTRNN_VEC_BYTES)));
  typedef int64_t itype __attribute__((vector_size(FASTRNN_VEC_BYTES)));
  static constexpr int N = FASTRNN_VEC_BYTES / 8;
};
template <typename S>
using vec_t = typename V<S>::type;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename S>
inline vec_t<S> splat(S s) {
  vec_t<S> v = {};
  return v + s;
}
template <typename S>
inline vec_t<S> load(const S* p) {
  vec_t<S> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename S>
inline void store(S* p, vec_t<S> v) {
  std::memcpy(p, &v, sizeof v);
}
// Loads n (0 < n <= N) elements, zero-filling the rest; masked loads and stores where the
// ISA has them (a partial vector built lane by lane stalls store-to-load forwarding).
template <typename S>
FASTRNN_INLINE vec_t<S> load_n(const S* p, int64_t n) {
  if (n >= V<S>::N) return load(p);
#if defined(__AVX512F__) && FASTRNN_VEC_BYTES == 64
  if constexpr (sizeof(S) == 4) {
    return (vec_t<S>)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  } else {
    return (vec_t<S>)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p);
  }
#elif defined(__AVX512VL__) && FASTRNN_VEC_BYTES == 32
  if constexpr (sizeof(S) == 4) {
    return (vec_t<S>)_mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << n) - 1u), p);
  } else {
    return (vec_t<S>)_mm256_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p);
  }
#elif defined(__AVX2__) && FASTRNN_VEC_BYTES == 32
  if constexpr (sizeof(S) == 4) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return (vec_t<S>)_mm256_maskload_ps(reinterpret_cast<const float*>(p), m);
  } else {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return (vec_t<S>)_mm256_maskload_pd(reinterpret_cast<const double*>(p), m);
  }
#else
  vec_t<S> v = {};
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
#endif
}
template <typename S>
FASTRNN_INLINE void store_n(S* p, vec_t<S> v, int64_t n) {
  if (n >= V<S>::N) {
    store(p, v);
    return;
  }
#if defined(__AVX512F__) && FASTRNN_VEC_BYTES == 64
  if constexpr (sizeof(S) == 4) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), (__m512)v);
  } else {
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), (__m512d)v);
  }
#elif defined(__AVX512VL__) && FASTRNN_VEC_BYTES == 32
  // (an AVX-512 mask store, unlike AVX2's vmaskmovps below, is not microcoded on Zen 4)
  if constexpr (sizeof(S) == 4) {
    _mm256_mask_storeu_ps(p, static_cast<__mmask8>((1u << n) - 1u), (__m256)v);
  } else {
    _mm256_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), (__m256d)v);
  }
#elif defined(__AVX2__) && FASTRNN_VEC_BYTES == 32
  // Not vmaskmovps/pd: AMD's Zen cores microcode the masked store (measured: the partial
  // panels of an H=20 LSTM took 4 us of an 18 us call). The lanes go out as at most three
  // plain stores of 16, 8 and 4 bytes from a spilled copy (loads inside one store forward).
  alignas(32) S tmp[V<S>::N];
  store(tmp, v);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(S));
  char* dst = reinterpret_cast<char*>(p);
  const char* src = reinterpret_cast<const char*>(tmp);
  int64_t off = 0;
  if (bytes & 16) {
    std::memcpy(dst, src, 16);
    off = 16;
  }
  if (bytes & 8) {
    std::memcpy(dst + off, src + off, 8);
    off += 8;
  }
  if (bytes & 4) std::memcpy(dst + off, src + off, 4);
#else
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
#endif
}

FASTRNN_INLINE vec_t<float> vmin(vec_t<float> a, vec_t<float> b) {
#if defined(__AVX512F__) && FASTRNN_VEC_BYTES == 64
  return (vec_t<float>)_mm512_maskz_min_ps(static_cast<__mmask16>(0xFFFF), (__m512)a, (__m512)b);
#elif defined(__AVX__) && FASTRNN_VEC_BYTES == 32
  return (vec_t<float>)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return a < b ? a : b;
#endif
}
FASTRNN_INLINE vec_t<float> vmax(vec_t<float> a, vec_t<float> b) {
#if defined(__AVX512F__) && FASTRNN_VEC_BYTES == 64
  return (vec_t<float>)_mm512_maskz_max_ps(static_cast<__mmask16>(0xFFFF), (__m512)a, (__m512)b);
#elif defined(__AVX__) && FASTRNN_VEC_BYTES == 32
  return (vec_t<float>)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return a > b ? a : b;
#endif
}

// exp(s * x) for float lanes (s a compile-time scale folded into the range reduction):
// n = round(s x / ln2) by the 1.5*2^23 shifter (n then sits in the low mantissa bits, so
// 2^n is one integer add and shift), r = s x - n ln2 in two FMAs (Cody-Waite), and Cephes
// expf's degree-6 polynomial on |r| <= ln2/2: about 1 ulp. The argument is clamped to
// [-87.3, 88.3] (2^n stays a normal float). NaN propagates without a final select: min/max
// return their second operand when either is NaN (x86 and the portable forms alike), so a
// NaN argument survives the clamp and makes the polynomial, hence the product, NaN.
template <int Scale = 1>
FASTRNN_INLINE vec_t<float> vexp(vec_t<float> x) {
  typedef vec_t<float> v;
  typedef V<float>::itype vi;
  constexpr float s = static_cast<float>(Scale);
  const v xc = vmax(splat(-87.3f), vmin(splat(88.3f), x * s));
  const v shifter = splat(12582912.0f);  // 1.5 * 2^23
  const v fx = xc * 1.44269504088896341f + shifter;
  const v nf = fx - shifter;
  v r = xc - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  const v z = r * r;
  v y = (((((1.9875691500E-4f * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r + 4.1665795894E-2f) * r +
          1.6666665459E-1f) * r + 5.0000001201E-1f) * z + r + 1.0f;
  vi bits;
  std::memcpy(&bits, &fx, sizeof bits);
  bits = (bits - 0x4B400000 + 127) << 23;  // 2^n
  v pow2;
  std::memcpy(&pow2, &bits, sizeof pow2);
  return y * pow2;
}

// sigmoid(x) = 1 / (1 + exp(-x)) with a true division (one divider op per vector, which
// overlaps the surrounding FMAs; exact where a reciprocal estimate is not).
FASTRNN_INLINE vec_t<float> vsigmoid(vec_t<float> x) { return 1.0f / (1.0f + vexp<-1>(x)); }

// tanh(x) as the odd rational x P(x^2) / Q(x^2) of degrees 13 / 6 on [-7.905, 7.905] (the
// minimax coefficients that Eigen and XLA use for float; tanh(7.905) rounds to 1 - 3 ulp),
// clamped outside: within 2.8e-7 relative of the true value everywhere (measured on a 1e-5
// grid of [-20, 20]), 10 FMAs and a division instead of exp's 20 operations (LSTM's five
// activations of a vector: 31 -> 19 ns). NaN survives the clamp (see vexp) and the ratio.
FASTRNN_INLINE vec_t<float> vtanh(vec_t<float> x) {
  typedef vec_t<float> v;
  const v xc = vmax(splat(-7.90531110763549805f), vmin(splat(7.90531110763549805f), x));
  const v x2 = xc * xc;
  v p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  v q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return (p * xc) / q;
}

// exp(s * x) for double lanes: Cephes exp's range reduction (n = round(s x / ln2) by the
// 1.5*2^52 shifter, r = s x - n ln2 in two steps) and its Pade form 1 + 2 r P / (Q - r P) on
// |r| <= ln2/2: about 1 ulp, as float64 parity (1e-10) needs. Clamped to [-708.3, 709]
// (2^n stays normal); NaN passes the clamp (its comparisons are false) and so propagates.
template <int Scale = 1>
FASTRNN_INLINE vec_t<double> vexp_d(vec_t<double> x) {
  typedef vec_t<double> v;
  typedef V<double>::itype vi;
  constexpr double s = static_cast<double>(Scale);
  v xc = x * s;
  xc = xc > splat(709.0) ? splat(709.0) : xc;
  xc = xc < splat(-708.3) ? splat(-708.3) : xc;
  const v shifter = splat(6755399441055744.0);  // 1.5 * 2^52
  const v fx = xc * 1.4426950408889634073599 + shifter;
  const v nf = fx - shifter;
  v r = xc - nf * 6.93145751953125E-1;
  r = r - nf * 1.42860682030941723212E-6;
  const v rr = r * r;
  const v px = r * ((1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr + 9.99999999999999999910E-1);
  const v qx = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr + 2.27265548208155028766E-1) * rr +
               2.00000000000000000009E0;
  v y = 1.0 + 2.0 * (px / (qx - px));
  vi bits;
  std::memcpy(&bits, &fx, sizeof bits);
  bits = (bits - 0x4338000000000000LL + 1023) << 52;  // 2^n
  v pow2;
  std::memcpy(&pow2, &bits, sizeof pow2);
  return y * pow2;
}
FASTRNN_INLINE vec_t<double> vsigmoid(vec_t<double> x) { return 1.0 / (1.0 + vexp_d<-1>(x)); }
FASTRNN_INLINE vec_t<double> vtanh(vec_t<double> x) { return 2.0 / (1.0 + vexp_d<-2>(x)) - 1.0; }

template <typename S>
FASTRNN_INLINE vec_t<S> vrelu(vec_t<S> x) {
  // NaN stays NaN (the comparison is false for NaN), as torch's relu.
  return x < splat<S>(0) ? splat<S>(0) : x;
}

// ---- packing and the register-tiled micro-kernel -------------------------------------
// A packed panel holds, for N consecutive columns u (of each of G column groups), the
// K rows of the right-hand matrix: panel[k][g][u]. Panels are zero-padded past the edge.

// dst[k * ld_dst + u] = src[u * ld_src + k] for u, k < N: an N x N block transposed (packing
// a weight matrix's rows into panels; in registers on AVX2, where the scalar copy took half of
// a (1,8,1,64) LSTM call).
template <typename S>
FASTRNN_INLINE void transpose_block(const S* src, int64_t ld_src, S* dst, int64_t ld_dst) {
#if defined(__AVX2__) && FASTRNN_VEC_BYTES == 32
  if constexpr (sizeof(S) == 4) {
    __m256 r[8], t[8];
    for (int u = 0; u < 8; ++u) r[u] = _mm256_loadu_ps(src + u * ld_src);
    for (int u = 0; u < 8; u += 2) {
      t[u] = _mm256_unpacklo_ps(r[u], r[u + 1]);
      t[u + 1] = _mm256_unpackhi_ps(r[u], r[u + 1]);
    }
    for (int u = 0; u < 8; u += 4)
      for (int h = 0; h < 2; ++h) {
        r[u + h] = _mm256_shuffle_ps(t[u + h], t[u + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[u + h + 2] = _mm256_shuffle_ps(t[u + h], t[u + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
      }
    // r[0..3]: columns (0,4) (2,6) (1,5) (3,7) of rows 0-3 in 128-bit halves; r[4..7] rows 4-7
    const int col[4] = {0, 2, 1, 3};
    for (int i = 0; i < 4; ++i) {
      _mm256_storeu_ps(dst + col[i] * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
      _mm256_storeu_ps(dst + (col[i] + 4) * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
    return;
  }
#endif
  constexpr int N = V<S>::N;
  for (int k = 0; k < N; ++k)
    for (int u = 0; u < N; ++u) dst[k * ld_dst + u] = src[u * ld_src + k];
}

// Packs rows of W (each contiguous along K) into panels out[q][k][g][N]: lane u of group g of
// panel q takes row row_of(q, g, u) (negative: a zero-padded lane past the edge). Blocks of
// k keep both sides in L1: walking all lanes per k instead read every row's cache line
// again for each k (a 2048 x 512 LSTM W_hh took 1.7 ms to pack, now 0.5 ms).
// Only panels q0..q1-1 are written (the packers below take the same range: each thread of a
// loop packs the panels it multiplies by, see Forward::run).
template <typename S, typename RowOf>
inline void pack_row_panels(const S* W, int64_t q0, int64_t q1, int64_t G, int64_t K, RowOf&& row_of, S* out) {
  constexpr int N = V<S>::N;
  constexpr int64_t KB = 4 * 64 / int64_t(sizeof(S));  // k per block: 4 cache lines of a row
  for (int64_t q = q0; q < q1; ++q)
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
      const int64_t k1 = imin(K, k0 + KB);
      for (int64_t g = 0; g < G; ++g) {
        S* const panel = out + q * K * G * N + g * N;  // lane u of element k: panel[k * G * N + u]
        const int64_t r0 = row_of(q, g, 0);
        if (r0 >= 0 && row_of(q, g, N - 1) == r0 + N - 1) {  // N consecutive rows: N x N transposes
          int64_t k = k0;
          for (; k + N <= k1; k += N) transpose_block<S>(W + r0 * K + k, K, panel + k * G * N, G * N);
          for (; k < k1; ++k)
            for (int u = 0; u < N; ++u) panel[k * G * N + u] = W[(r0 + u) * K + k];
          continue;
        }
        for (int u = 0; u < N; ++u) {
          S* const dst = panel + u;  // element k at dst[k * G * N]
          const int64_t row = row_of(q, g, u);
          if (row >= 0) {
            const S* src = W + row * K;
            for (int64_t k = k0; k < k1; ++k) dst[k * G * N] = src[k];
          } else {
            for (int64_t k = k0; k < k1; ++k) dst[k * G * N] = S(0);
          }
        }
      }
    }
}

// out: [ceil(N_cols/N)][K][G][N]; right-hand B(k, g, u) = W[(g*N_cols + u)*K + k]
// (W: [G*N_cols, K], i.e. x @ W^T). Panels q0..q1-1 (q1 < 0: to the last).
template <typename S>
inline void pack_rows(const S* W, int64_t G, int64_t n_cols, int64_t K, S* out, int64_t q0 = 0, int64_t q1 = -1) {
  constexpr int N = V<S>::N;
  if (q1 < 0) q1 = ceil_div(n_cols, N);
  pack_row_panels(W, q0, q1, G, K, [&](int64_t p, int64_t g, int u) {
    const int64_t col = p * N + u;
    return col < n_cols ? g * n_cols + col : int64_t(-1);
  }, out);
}

// out: [ceil(N_cols/(GW*N))][K][GW][N]; right-hand B(k, g, u) = W[((q*GW + g)*N + u)*K + k]
// (W: [N_cols, K], x @ W^T): GW consecutive blocks of N output columns side by side.
// Panels q0..q1-1 (q1 < 0: to the last).
template <typename S, int GW>
inline void pack_rows_grouped(const S* W, int64_t n_cols, int64_t K, S* out, int64_t q0 = 0, int64_t q1 = -1) {
  constexpr int N = V<S>::N;
  if (q1 < 0) q1 = ceil_div(n_cols, GW * N);
  pack_row_panels(W, q0, q1, GW, K, [&](int64_t q, int64_t g, int u) {
    const int64_t col = (q * GW + g) * N + u;
    return col < n_cols ? col : int64_t(-1);
  }, out);
}

// out: [ceil(N_cols/(GW*N))][K][GW][N]; right-hand B(k, g, u) = W[k*N_cols + (q*GW + g)*N + u]
// (W: [K, N_cols], x @ W): GW consecutive blocks of N columns side by side, so that one
// micro-kernel tile covers GW*N columns (GW = 1: plain panels of N columns). Panels
// q0..q1-1 (q1 < 0: to the last).
template <typename S, int GW = 1>
inline void pack_cols(const S* W, int64_t K, int64_t n_cols, S* out, int64_t q0 = 0, int64_t q1 = -1) {
  constexpr int N = V<S>::N;
  if (q1 < 0) q1 = ceil_div(n_cols, GW * N);
  for (int64_t q = q0; q < q1; ++q)
    for (int64_t k = 0; k < K; ++k)
      for (int g = 0; g < GW; ++g) {
        S* dst = out + ((q * K + k) * GW + g) * N;
        for (int u = 0; u < N; ++u) {
          const int64_t col = (q * GW + g) * N + u;
          dst[u] = col < n_cols ? W[k * n_cols + col] : S(0);
        }
      }
}

// acc[r][g] += sum_k a[r][k] * panel[k][g][:] for MR rows (rows past the batch repeat the
// last row, so every load stays inside the caller's array).
template <typename S, int MR, int G>
inline void panel_gemm(const S* const (&arow)[MR], int64_t K, const S* panel, vec_t<S> (&acc)[MR][G]) {
  constexpr int N = V<S>::N;
  int64_t k = 0;
  if constexpr (MR == 1 && G <= 4) {
    // One row (batch 1): even and odd k into separate sums, so that 2G chains cover the
    // FMA latency (G alone would idle half the pipes).
    vec_t<S> odd[G] = {};
    for (; k + 1 < K; k += 2) {
      const S* bk = panel + k * G * N;
      const S a0 = arow[0][k], a1 = arow[0][k + 1];
      for (int g = 0; g < G; ++g) {
        acc[0][g] += a0 * load<S>(bk + g * N);
        odd[g] += a1 * load<S>(bk + (G + g) * N);
      }
    }
    for (int g = 0; g < G; ++g) acc[0][g] += odd[g];
  }
  for (; k < K; ++k) {
    const S* bk = panel + k * G * N;
    vec_t<S> w[G];
    for (int g = 0; g < G; ++g) w[g] = load(bk + g * N);
    for (int r = 0; r < MR; ++r) {
      const S a = arow[r][k];
      for (int g = 0; g < G; ++g) acc[r][g] += a * w[g];
    }
  }
}

// One row tile [b0, b0+rows) over columns [k0, k0+kc) of a, accumulating into acc.
template <typename S, int MR, int G>
inline void tile_gemm(const S* a, int64_t lda, int64_t B, int64_t b0, int64_t k0, int64_t kc, const S* panel,
                      vec_t<S> (&acc)[MR][G]) {
  constexpr int N = V<S>::N;
  const S* arow[MR];
  for (int r = 0; r < MR; ++r) arow[r] = a + imin(b0 + r, B - 1) * lda + k0;
  panel_gemm<S, MR, G>(arow, kc, panel + k0 * G * N, acc);
}

// Hands a finished tile's accumulators to the epilogue: all its rows at once,
// epi(b0, rows, acc[MR][G]), when epi takes tiles (the gate epilogues, whose activation
// chains of several rows then overlap), else row by row, epi(b, acc[G]).
template <typename S, int MR, int G, typename Epi>
FASTRNN_INLINE void tile_out(Epi& epi, int64_t b0, int64_t rows, vec_t<S> (&acc)[MR][G]) {
  if constexpr (std::is_invocable_v<Epi&, int64_t, int64_t, vec_t<S>(&)[MR][G]>) {
    epi(b0, rows, acc);
  } else {
    for (int64_t r = 0; r < rows; ++r) epi(b0 + r, acc[r]);
  }
}

// Runs the panel GEMM over all B rows of a (row stride lda, K columns) in tiles of MR and hands
// each row's accumulators to epi(b, acc[G]) (or each tile's, see tile_out). A null `a` stands
// for zeros (no GEMM). The sums start from init[G] (e.g. a bias of the panel's columns) when
// given, else from zero.
// Long K is split into chunks whose slice of the panel stays in L1 while every row tile of a
// block of rows passes over it; partial sums wait in a small stack buffer between chunks.
// An optional first segment (a0: B rows of stride lda0 and K0 columns against panel0, laid
// out as `panel`) is summed into the same accumulators first: [a0 a] @ [panel0; panel], as
// when a step's input projection x W_ih^T joins its recurrent h W_hh^T.
template <typename S, int MR, int G, typename Epi>
inline void gemm_rows2(const S* a0, int64_t lda0, int64_t K0, const S* panel0, const S* a, int64_t lda, int64_t B,
                       int64_t K, const S* panel, Epi&& epi, const vec_t<S>* init = nullptr) {
  constexpr int N = V<S>::N;
  // Panel slice per K chunk: 8 KiB for the gate-wide tiles (with the rows' slice of a it
  // leaves room in L1 for the epilogue's streams: 7 % faster than 16 KiB at H=128), 16 KiB
  // for the narrower ones.
  constexpr int64_t kc_bytes = G >= 3 ? 8192 : 16384;
  constexpr int64_t KC = (kc_bytes / int64_t(G * N * sizeof(S))) < 32 ? 32 : kc_bytes / int64_t(G * N * sizeof(S));
  constexpr int64_t RB = 64;  // rows per block (the partial sums: RB*G*N elements, <= 16 KiB)
  typedef vec_t<S> vec;
  if (a0 == nullptr) K0 = 0;
  if (a == nullptr) K = 0;  // zeros: no GEMM
  // (init is read where a tile starts, not held in registers: the MR*G accumulators need them)
  auto start = [init](int g) { return init != nullptr ? init[g] : vec{}; };
  if (K0 + K <= KC || B <= MR) {
    for (int64_t b0 = 0; b0 < B; b0 += MR) {
      if (MR > 1 && B - b0 == 1) {  // a single row left (B = 1 included): no duplicated work
        vec acc1[1][G];
        for (int g = 0; g < G; ++g) acc1[0][g] = start(g);
        if (K0 > 0) tile_gemm<S, 1, G>(a0, lda0, B, b0, 0, K0, panel0, acc1);
        if (K > 0) tile_gemm<S, 1, G>(a, lda, B, b0, 0, K, panel, acc1);
        tile_out<S, 1, G>(epi, b0, 1, acc1);
        break;
      }
      vec acc[MR][G];
      for (int r = 0; r < MR; ++r)
        for (int g = 0; g < G; ++g) acc[r][g] = start(g);
      if (K0 > 0) tile_gemm<S, MR, G>(a0, lda0, B, b0, 0, K0, panel0, acc);
      if (K > 0) tile_gemm<S, MR, G>(a, lda, B, b0, 0, K, panel, acc);
      tile_out<S, MR, G>(epi, b0, imin(MR, B - b0), acc);
    }
    return;
  }
  vec partial[RB][G];
  for (int64_t rb0 = 0; rb0 < B; rb0 += RB) {
    const int64_t rbn = imin(RB, B - rb0);
    // chunks of the first segment, then of the second
    const int64_t n0 = ceil_div(K0, KC), n1 = ceil_div(K, KC);
    for (int64_t c = 0; c < n0 + n1; ++c) {
      const bool seg0 = c < n0;
      const int64_t k0 = (seg0 ? c : c - n0) * KC;
      const int64_t kc = imin(KC, (seg0 ? K0 : K) - k0);
      const bool first = c == 0, last = c == n0 + n1 - 1;
      for (int64_t b0 = rb0; b0 < rb0 + rbn; b0 += MR) {
        const int64_t rows = imin(MR, rb0 + rbn - b0);
        vec acc[MR][G];
        for (int r = 0; r < MR; ++r)
          for (int g = 0; g < G; ++g) acc[r][g] = first || r >= rows ? start(g) : partial[b0 - rb0 + r][g];
        if (seg0)
          tile_gemm<S, MR, G>(a0, lda0, B, b0, k0, kc, panel0, acc);
        else
          tile_gemm<S, MR, G>(a, lda, B, b0, k0, kc, panel, acc);
        if (last)
          tile_out<S, MR, G>(epi, b0, rows, acc);
        else
          for (int64_t r = 0; r < rows; ++r)
            for (int g = 0; g < G; ++g) partial[b0 - rb0 + r][g] = acc[r][g];
      }
    }
  }
}

template <typename S, int MR, int G, typename Epi>
inline void gemm_rows(const S* a, int64_t lda, int64_t B, int64_t K, const S* panel, Epi&& epi,
                      const vec_t<S>* init = nullptr) {
  gemm_rows2<S, MR, G>(static_cast<const S*>(nullptr), 0, 0, static_cast<const S*>(nullptr), a, lda, B, K, panel,
                       static_cast<Epi&&>(epi), init);
}

}  // namespace FASTRNN_ISA
}  // namespace cpu
}  // namespace fastrnn
