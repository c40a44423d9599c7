// fastrnn CUDA kernels: entry points (compiled by nvcc, called from the bindings).
// Same contract as the CPU core (csrc/core/shapes.h): caller-owned device memory, the
// input projection and weight gradients done by torch; launches go on the caller's stream.
// Argument blocks are type-erased (S = void); `dtype` says what the pointers hold.
#pragma once
#include <cstdint>

#include "../core/shapes.h"

namespace fastrnn {
namespace cuda {

// Scratch elements (of the dtype) the time loops need.
int64_t forward_workspace(Cell cell, int64_t B, int64_t H, int64_t R);
int64_t backward_workspace(Cell cell, int64_t B, int64_t H, int64_t R);

// dtype: DType::Float32, Float64, Float16 or BFloat16 (half types accumulate in float).
// stream: a cudaStream_t. Throws std::invalid_argument on bad arguments and
// std::runtime_error on a CUDA error.
void forward(int dtype, const ForwardArgs<void>& a, uintptr_t stream);
void backward(int dtype, const BackwardArgs<void>& a, uintptr_t stream);

// Number of visible devices (0 without a driver); never throws.
int device_count();

}  // namespace cuda
}  // namespace fastrnn
