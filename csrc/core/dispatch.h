// The one dtype-dispatch helper: calls f(float{}) or f(double{}) for a DType code.
#pragma once
#include "shapes.h"

namespace fastrnn {

template <typename F>
auto dispatch_dtype(int dtype, F&& f) -> decltype(f(float{})) {
  switch (static_cast<DType>(dtype)) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Float16:
    case DType::BFloat16:
      break;  // the half types exist on the CUDA side only (csrc/cuda)
  }
  fail("unsupported dtype code " + std::to_string(dtype) + " for the CPU kernels (0: float32, 1: float64)");
}

inline Cell to_cell(int code) {
  if (code < 0 || code > 3) fail("unknown cell code " + std::to_string(code));
  return static_cast<Cell>(code);
}

}  // namespace fastrnn
