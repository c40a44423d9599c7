// fastrnn CPU runtime: a fork-join of a few threads with one barrier per phase.
// Compiled once for the baseline ISA and kept free of templates, so the per-ISA kernel
// objects never share an out-of-line symbol compiled with other instruction sets.
#pragma once

namespace fastrnn {
namespace cpu {

class Barrier {
 public:
  explicit Barrier(int parties);
  // Blocks until `parties` threads have called wait() for this round.
  void wait();

 private:
  int parties_;
  alignas(64) int count_;
  alignas(64) int generation_;
};

// Calls fn(ctx, tid, nt) for tid in 0..nt-1, tid 0 on the calling thread, and joins.
// If a worker throws, the first exception is rethrown on the calling thread.
void parallel_run(int nt, void (*fn)(void* ctx, int tid, int nt), void* ctx);

}  // namespace cpu
}  // namespace fastrnn
