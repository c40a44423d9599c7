// Runtime ISA dispatch: one binary holds the kernels built for AVX-512, AVX2+FMA and the
// portable baseline; the first call picks the best one the CPU supports.
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
#endif

namespace {

enum class Isa { Generic, Avx2, Avx512 };

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

Isa pick() {
  Isa best = Isa::Generic;
  if (avx2_ok()) best = Isa::Avx2;
  if (avx512_ok()) best = Isa::Avx512;
  const char* forced = std::getenv("FASTRNN_ISA");
  if (forced != nullptr) {
    if (std::strcmp(forced, "generic") == 0) return Isa::Generic;
    if (std::strcmp(forced, "avx2") == 0 && avx2_ok()) return Isa::Avx2;
    if (std::strcmp(forced, "avx512") == 0 && avx512_ok()) return Isa::Avx512;
  }
  return best;
}

Isa chosen() {
  static const Isa isa = pick();
  return isa;
}

}  // namespace

const KernelSet<float>& kernels(float) {
  static const KernelSet<float> k = chosen() == Isa::Avx512 ? avx512::kernels_f32()
                                    : chosen() == Isa::Avx2 ? avx2::kernels_f32()
                                                            : generic::kernels_f32();
  return k;
}

const KernelSet<double>& kernels(double) {
  static const KernelSet<double> k = chosen() == Isa::Avx512 ? avx512::kernels_f64()
                                     : chosen() == Isa::Avx2 ? avx2::kernels_f64()
                                                             : generic::kernels_f64();
  return k;
}

const char* selected_isa() { return kernels(0.0f).isa; }

const char* compiled_isas() {
  static const std::string s = std::string("generic") + (FASTRNN_HAVE_AVX2 ? ",avx2" : "") +
                               (FASTRNN_HAVE_AVX512 ? ",avx512" : "");
  return s.c_str();
}

}  // namespace cpu
}  // namespace fastrnn
