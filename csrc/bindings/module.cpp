// pybind11 bindings of the fastrnn core: pointers (as integers), sizes, dtype and cell codes.
// Thin by design: validation lives in fastrnn/_backend.py; the kernels re-check and throw
// std::invalid_argument (ValueError in Python). The GIL is released while a kernel runs.
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "../core/dispatch.h"
#include "../cpu/kernels.h"
#include "../cpu/parallel.h"
#ifdef FASTRNN_WITH_CUDA
#include "../cuda/kernels.h"
#endif

namespace py = pybind11;
using namespace fastrnn;

namespace {

template <typename S>
S* ptr(uintptr_t p) {
  return reinterpret_cast<S*>(p);
}

// Scratch for a call given no workspace (work == 0): a per-thread buffer kept across calls up
// to kCachedScratch bytes (no allocation per call), a fresh one above, left uninitialized (the
// kernels write before they read; zeroing megabytes per call cost as much as a small layer's
// loop). The limit covers mid-size training, whose backward keeps dG ([T,B,G*H]) here for the
// weight gradients: a fresh buffer is new pages from the OS on every call once glibc has
// trimmed the heap (RNN (100,32,64,128), the bench's training step in a fresh process: with a
// 1 MiB limit 1,540 page faults and 5.6-5.8 ms a step, with this one none and 3.5 ms).
// The kernel runs on the calling thread's stack of arguments, so a thread never shares it.
// Aligned to 64 bytes like torch's allocations: packed panels then never split a vector load
// across cache lines.
template <typename S>
S* scratch(int64_t n, std::unique_ptr<S[]>& fresh) {
  constexpr int64_t kCachedScratch = (int64_t(16) << 20) / int64_t(sizeof(S));  // 16 MiB per thread
  constexpr int64_t kPad = 64 / sizeof(S);
  static thread_local std::vector<S> cache;
  if (n < 1) n = 1;
  S* base;
  if (n > kCachedScratch) {
    fresh.reset(new S[static_cast<size_t>(n + kPad)]);
    base = fresh.get();
  } else {
    if (static_cast<int64_t>(cache.size()) < n + kPad) cache.resize(static_cast<size_t>(n + kPad));
    base = cache.data();
  }
  const uintptr_t p = reinterpret_cast<uintptr_t>(base);
  return reinterpret_cast<S*>((p + 63) & ~uintptr_t(63));
}

int64_t forward_workspace(int dtype, int cell, int64_t B, int64_t H, int64_t R) {
  return dispatch_dtype(dtype, [&](auto s) {
    return cpu::kernels(s).forward_workspace(to_cell(cell), B, H, R);
  });
}

bool step_projection(int dtype, int cell, int64_t B, int64_t H, int64_t I) {
  return dispatch_dtype(dtype, [&](auto s) { return cpu::step_projection(to_cell(cell), B, H, I, sizeof(s)); });
}

int64_t backward_workspace(int dtype, int cell, int64_t B, int64_t H, int64_t R) {
  return dispatch_dtype(dtype, [&](auto s) {
    return cpu::kernels(s).backward_workspace(to_cell(cell), B, H, R);
  });
}

void forward(int dtype, int cell, int64_t T, int64_t B, int64_t H, int64_t R, bool reverse, uintptr_t xp,
             uintptr_t w_hh, uintptr_t w_hr, uintptr_t b_hh, uintptr_t h0, uintptr_t c0, uintptr_t lengths,
             uintptr_t y, uintptr_t hT, uintptr_t cT, uintptr_t gates, uintptr_t cs, uintptr_t hpre, uintptr_t work,
             int64_t work_size, int num_threads, bool prepacked, uintptr_t x, uintptr_t w_ih, uintptr_t b_ih,
             int64_t I, int64_t x_st, int64_t x_sb, uintptr_t steps) {
  dispatch_dtype(dtype, [&](auto s) {
    using S = decltype(s);
    const auto& k = cpu::kernels(s);
    ForwardArgs<S> a{to_cell(cell), T,          B,           H,           R,          reverse,
                     ptr<const S>(xp), ptr<const S>(w_hh), ptr<const S>(w_hr), ptr<const S>(b_hh),
                     ptr<const S>(h0), ptr<const S>(c0), ptr<const int64_t>(lengths),
                     ptr<S>(y),  ptr<S>(hT),  ptr<S>(cT),  ptr<S>(gates), ptr<S>(cs), ptr<S>(hpre),
                     ptr<S>(work), work_size, num_threads, prepacked,
                     ptr<const S>(x), ptr<const S>(w_ih), ptr<const S>(b_ih), I, x_st, x_sb,
                     ptr<const int64_t>(steps)};
    std::unique_ptr<S[]> fresh;
    if (work == 0) {
      require(T >= 0 && B >= 0 && H >= 0 && R >= 0 && I >= 0, "sizes must be non-negative");
      a.work_size = k.forward_workspace(a.cell, B, H, R) +
                    (x != 0 ? k.projection_workspace(a.cell, T, B, H, I, gates != 0) : 0);
      a.work = scratch<S>(a.work_size, fresh);
    }
    k.forward(a);
  });
}

void backward(int dtype, int cell, int64_t T, int64_t B, int64_t H, int64_t R, bool reverse, uintptr_t w_hh,
              uintptr_t w_hr, uintptr_t h0, uintptr_t c0, uintptr_t lengths, uintptr_t y, uintptr_t gates,
              uintptr_t cs, uintptr_t hpre, uintptr_t dy, uintptr_t dhT, uintptr_t dcT, uintptr_t dxp,
              uintptr_t dhid, uintptr_t dh0, uintptr_t dc0, uintptr_t work, int64_t work_size, int num_threads,
              uintptr_t dw_hh, uintptr_t db_hh, uintptr_t dw_hr, uintptr_t x, int64_t I, int64_t x_st, int64_t x_sb,
              uintptr_t dw_ih, uintptr_t db_ih, int64_t dy_st, int64_t dy_sb, int64_t dy_su, int64_t dhT_sb,
              int64_t dhT_su, int64_t dcT_sb, int64_t dcT_su) {
  dispatch_dtype(dtype, [&](auto s) {
    using S = decltype(s);
    BackwardArgs<S> a{to_cell(cell),      T,                  B,                  H,
                      R,                  reverse,            ptr<const S>(w_hh), ptr<const S>(w_hr),
                      ptr<const S>(h0),   ptr<const S>(c0),   ptr<const int64_t>(lengths),
                      ptr<const S>(y),    ptr<const S>(gates), ptr<const S>(cs),  ptr<const S>(hpre),
                      ptr<const S>(dy),   ptr<const S>(dhT),  ptr<const S>(dcT),  ptr<S>(dxp),
                      ptr<S>(dhid),       ptr<S>(dh0),        ptr<S>(dc0),        ptr<S>(work),
                      work_size,          num_threads,
                      ptr<S>(dw_hh),      ptr<S>(db_hh),      ptr<S>(dw_hr),      ptr<const S>(x),
                      I,                  x_st,               x_sb,               ptr<S>(dw_ih),
                      ptr<S>(db_ih),      dy_st,              dy_sb,              dy_su,
                      dhT_sb,             dhT_su,             dcT_sb,             dcT_su};
    const auto& k = cpu::kernels(s);
    std::unique_ptr<S[]> fresh;
    if (work == 0) {
      require(T >= 0 && B >= 0 && H >= 0 && R >= 0, "sizes must be non-negative");
      require(H < (int64_t(1) << 24) && R < (int64_t(1) << 24) && (B == 0 || T <= (int64_t(1) << 40) / B),
              "sizes too large");
      a.work_size = k.backward_workspace(a.cell, B, H, R) + cpu::backward_extra_workspace(a);
      a.work = scratch<S>(a.work_size, fresh);
    }
    k.backward(a);
  });
}

#ifdef FASTRNN_WITH_CUDA
void cuda_forward(int dtype, int cell, int64_t T, int64_t B, int64_t H, int64_t R, bool reverse, uintptr_t xp,
                  uintptr_t w_hh, uintptr_t w_hr, uintptr_t b_hh, uintptr_t h0, uintptr_t c0, uintptr_t lengths,
                  uintptr_t y, uintptr_t hT, uintptr_t cT, uintptr_t gates, uintptr_t cs, uintptr_t hpre,
                  uintptr_t work, int64_t work_size, uintptr_t stream) {
  ForwardArgs<void> a{to_cell(cell), T, B, H, R, reverse, ptr<const void>(xp), ptr<const void>(w_hh),
                      ptr<const void>(w_hr), ptr<const void>(b_hh), ptr<const void>(h0), ptr<const void>(c0),
                      ptr<const int64_t>(lengths), ptr<void>(y), ptr<void>(hT), ptr<void>(cT), ptr<void>(gates),
                      ptr<void>(cs), ptr<void>(hpre), ptr<void>(work), work_size, 1, false};
  cuda::forward(dtype, a, stream);
}

void cuda_backward(int dtype, int cell, int64_t T, int64_t B, int64_t H, int64_t R, bool reverse, uintptr_t w_hh,
                   uintptr_t w_hr, uintptr_t h0, uintptr_t c0, uintptr_t lengths, uintptr_t y, uintptr_t gates,
                   uintptr_t cs, uintptr_t hpre, uintptr_t dy, uintptr_t dhT, uintptr_t dcT, uintptr_t dxp,
                   uintptr_t dhid, uintptr_t dh0, uintptr_t dc0, uintptr_t work, int64_t work_size,
                   uintptr_t stream) {
  BackwardArgs<void> a{to_cell(cell), T, B, H, R, reverse, ptr<const void>(w_hh), ptr<const void>(w_hr),
                       ptr<const void>(h0), ptr<const void>(c0), ptr<const int64_t>(lengths), ptr<const void>(y),
                       ptr<const void>(gates), ptr<const void>(cs), ptr<const void>(hpre), ptr<const void>(dy),
                       ptr<const void>(dhT), ptr<const void>(dcT), ptr<void>(dxp), ptr<void>(dhid), ptr<void>(dh0),
                       ptr<void>(dc0), ptr<void>(work), work_size, 1};
  cuda::backward(dtype, a, stream);
}
#endif

// Measured float32 FMA peak of `threads` threads (GFLOP/s): each runs the ISA's FMA loop.
double fma_peak_gflops(int threads, int64_t iters) {
  if (threads < 1 || iters < 1) fail("fma_peak_gflops needs threads >= 1 and iters >= 1");
  struct Ctx {
    int64_t iters;
    double flops[256];
  } ctx{iters, {}};
  if (threads > 256) threads = 256;
  const auto t0 = std::chrono::steady_clock::now();
  cpu::parallel_run(
      threads,
      [](void* p, int tid, int) {
        auto* c = static_cast<Ctx*>(p);
        c->flops[tid] = cpu::kernels(0.0f).fma_flops(c->iters);
      },
      &ctx);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  for (int i = 0; i < threads; ++i) total += ctx.flops[i];
  return total / s / 1e9;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastrnn native core (torch-free): recurrent time loops on raw pointers";
  m.attr("DTYPE_FLOAT32") = static_cast<int>(DType::Float32);
  m.attr("DTYPE_FLOAT64") = static_cast<int>(DType::Float64);
  m.attr("CELL_LSTM") = static_cast<int>(Cell::LSTM);
  m.attr("CELL_GRU") = static_cast<int>(Cell::GRU);
  m.attr("CELL_RNN_TANH") = static_cast<int>(Cell::RNN_TANH);
  m.attr("CELL_RNN_RELU") = static_cast<int>(Cell::RNN_RELU);
#ifdef FASTRNN_VERSION
  m.attr("__version__") = FASTRNN_VERSION;
#endif
#ifdef FASTRNN_WITH_CUDA
  m.attr("cuda_compiled") = true;
  m.attr("DTYPE_FLOAT16") = static_cast<int>(DType::Float16);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(DType::BFloat16);
  m.def("cuda_device_count", &cuda::device_count, "visible CUDA devices (0 without a driver)");
  m.def("cuda_forward_workspace", [](int cell, int64_t B, int64_t H, int64_t R) {
    return cuda::forward_workspace(to_cell(cell), B, H, R);
  });
  m.def("cuda_backward_workspace", [](int cell, int64_t B, int64_t H, int64_t R) {
    return cuda::backward_workspace(to_cell(cell), B, H, R);
  });
  m.def("cuda_forward", &cuda_forward, py::call_guard<py::gil_scoped_release>());
  m.def("cuda_backward", &cuda_backward, py::call_guard<py::gil_scoped_release>());
#else
  m.attr("cuda_compiled") = false;
#endif
  m.def("isa", &cpu::selected_isa, "the CPU kernel ISA picked at load time");
  m.def("fma_peak_gflops", &fma_peak_gflops, py::call_guard<py::gil_scoped_release>(), py::arg("threads"),
        py::arg("iters"), "measured float32 FMA peak of `threads` threads, GFLOP/s");
  m.def("compiled_isas", &cpu::compiled_isas, "the ISAs this binary carries");
  m.def("forward_workspace", &forward_workspace, py::arg("dtype"), py::arg("cell"), py::arg("B"), py::arg("H"),
        py::arg("R"));
  m.def("step_projection", &step_projection, py::arg("dtype"), py::arg("cell"), py::arg("B"), py::arg("H"),
        py::arg("I"), "whether a fused forward of this shape projects the input inside each step's GEMM");
  m.def("backward_workspace", &backward_workspace, py::arg("dtype"), py::arg("cell"), py::arg("B"), py::arg("H"),
        py::arg("R"));
  m.def("forward", &forward, py::call_guard<py::gil_scoped_release>(), py::arg("dtype"), py::arg("cell"),
        py::arg("T"), py::arg("B"), py::arg("H"), py::arg("R"), py::arg("reverse"), py::arg("xp"), py::arg("w_hh"),
        py::arg("w_hr"), py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("y"),
        py::arg("hT"), py::arg("cT"), py::arg("gates"), py::arg("cs"), py::arg("hpre"), py::arg("work"),
        py::arg("work_size"), py::arg("num_threads"), py::arg("prepacked") = false, py::arg("x") = 0,
        py::arg("w_ih") = 0, py::arg("b_ih") = 0, py::arg("I") = 0, py::arg("x_st") = 0, py::arg("x_sb") = 0,
        py::arg("steps") = 0,
        "one layer and direction; work = 0: scratch managed here; x set (xp = 0): fused input projection; "
        "steps set: packed rows (inference)");
  m.def("backward", &backward, py::call_guard<py::gil_scoped_release>(), py::arg("dtype"), py::arg("cell"),
        py::arg("T"), py::arg("B"), py::arg("H"), py::arg("R"), py::arg("reverse"), py::arg("w_hh"),
        py::arg("w_hr"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("y"), py::arg("gates"),
        py::arg("cs"), py::arg("hpre"), py::arg("dy"), py::arg("dhT"), py::arg("dcT"), py::arg("dxp"),
        py::arg("dhid"), py::arg("dh0"), py::arg("dc0"), py::arg("work"), py::arg("work_size"),
        py::arg("num_threads"), py::arg("dw_hh") = 0, py::arg("db_hh") = 0, py::arg("dw_hr") = 0,
        py::arg("x") = 0, py::arg("I") = 0, py::arg("x_st") = 0, py::arg("x_sb") = 0, py::arg("dw_ih") = 0,
        py::arg("db_ih") = 0, py::arg("dy_st") = -1, py::arg("dy_sb") = 0, py::arg("dy_su") = 1,
        py::arg("dhT_sb") = -1, py::arg("dhT_su") = 1, py::arg("dcT_sb") = -1, py::arg("dcT_su") = 1,
        "backward time loop; work = 0: scratch managed here; dw_* / db_* set: those weight gradients too; "
        "dy/dhT/dcT strides: -1 dense; null gradients: zeros; null outputs: not wanted");
}
