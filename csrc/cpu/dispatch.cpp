// Runtime ISA dispatch: one binary holds the kernels built for AVX-512 (on 512-bit and on
// 256-bit vectors), AVX2+FMA and the portable baseline; the first call picks the best one the
// CPU supports (512-bit vectors only where they run more flops per cycle, see avx512_pays).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels.h"

namespace fastrnn {
namespace cpu {

#if !FASTRNN_HAVE_AVX2
namespace avx2 {
KernelSet<float> kernels_f32() { return generic::kernels_f32(); }
KernelSet<double> kernels_f64() { return generic::kernels_f64(); }
}  // namespace avx2
#endif
#if !FASTRNN_HAVE_AVX512
namespace avx512 {
KernelSet<float> kernels_f32() { return generic::kernels_f32(); }
KernelSet<double> kernels_f64() { return generic::kernels_f64(); }
}  // namespace avx512
namespace avx512_256 {
KernelSet<float> kernels_f32() { return generic::kernels_f32(); }
KernelSet<double> kernels_f64() { return generic::kernels_f64(); }
}  // namespace avx512_256
#endif

namespace {

enum class Isa { Generic, Avx2, Avx512, Avx512_256 };

bool avx2_ok() {
#if FASTRNN_HAVE_AVX2
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool avx512_ok() {
#if FASTRNN_HAVE_AVX512
  return avx2_ok() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

// Best FMA rate (flops per second) of one ISA's loop over a few short runs on this thread:
// the maximum, since another tenant or a preemption can only slow a run down.
double fma_rate(double (*fma_flops)(int64_t)) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const double flops = fma_flops(2000);  // 24k vector FMAs: a few microseconds
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0 && flops / s > best) best = flops / s;
  }
  return best;
}

// 512-bit vectors pay only where they raise the FMA throughput: CPUs that split each zmm
// operation into two 256-bit halves (AMD Zen 4) run as many flops per cycle either way,
// and there the 512-bit kernels' wider panels (16 lanes: more padding at small H, half as
// many hidden-unit blocks to share among threads) made them slower than the AVX2 ones
// (Zen 4, 2 threads, same bench rows in alternating processes: LSTM (100,32,64,128)
// 4.82 -> 4.22 ms, GRU 4.60 -> 3.23 ms, LSTM (200,1,128,128) 0.80 -> 0.55 ms). So 512-bit
// vectors are picked only when their FMA loop measures at least 1.5x AVX2's; otherwise
// AVX-512 runs on 256-bit vectors (avx512_256: AVX2's panels, with AVX-512's 32 registers and
// mask loads and stores), which on Zen 4 matched AVX2 or beat it (same process, alternating
// the two builds, medians of 21 rounds: batch-1 inference GRU (200,1,128,128) 1.10x,
// (200,1,32,256) 1.12x, LSTM 1.05x / 1.08x; mid-size shapes even).
bool avx512_pays() {
#if FASTRNN_HAVE_AVX512
  const double r2 = fma_rate(avx2::kernels_f32().fma_flops);
  const double r5 = fma_rate(avx512::kernels_f32().fma_flops);
  return r5 >= 1.5 * r2;
#else
  return false;
#endif
}

Isa pick() {
  Isa best = Isa::Generic;
  if (avx2_ok()) best = Isa::Avx2;
  const char* forced = std::getenv("FASTRNN_ISA");
  if (forced != nullptr) {
    if (std::strcmp(forced, "generic") == 0) return Isa::Generic;
    if (std::strcmp(forced, "avx2") == 0 && avx2_ok()) return Isa::Avx2;
    if (std::strcmp(forced, "avx512") == 0 && avx512_ok()) return Isa::Avx512;
    if (std::strcmp(forced, "avx512_256") == 0 && avx512_ok()) return Isa::Avx512_256;
  }
  if (avx512_ok()) best = avx512_pays() ? Isa::Avx512 : Isa::Avx512_256;
  return best;
}

Isa chosen() {
  static const Isa isa = pick();
  return isa;
}

}  // namespace

const KernelSet<float>& kernels(float) {
  static const KernelSet<float> k = chosen() == Isa::Avx512       ? avx512::kernels_f32()
                                    : chosen() == Isa::Avx512_256 ? avx512_256::kernels_f32()
                                    : chosen() == Isa::Avx2       ? avx2::kernels_f32()
                                                                  : generic::kernels_f32();
  return k;
}

const KernelSet<double>& kernels(double) {
  static const KernelSet<double> k = chosen() == Isa::Avx512       ? avx512::kernels_f64()
                                     : chosen() == Isa::Avx512_256 ? avx512_256::kernels_f64()
                                     : chosen() == Isa::Avx2       ? avx2::kernels_f64()
                                                                   : generic::kernels_f64();
  return k;
}

const char* selected_isa() { return kernels(0.0f).isa; }

const char* compiled_isas() {
  static const std::string s = std::string("generic") + (FASTRNN_HAVE_AVX2 ? ",avx2" : "") +
                               (FASTRNN_HAVE_AVX512 ? ",avx512,avx512_256" : "");
  return s.c_str();
}

}  // namespace cpu
}  // namespace fastrnn
