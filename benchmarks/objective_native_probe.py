"""Probe: the fused Gaussian backward as one hand-written pass over each block, against topicvae's kernels.

topicvae's backward kernel (``topicvae.objective.kernels``), eager or compiled, streams each
[rows, B, variables] block through several loops: one takes the exps and stores the softmax
weights, then one per reduction (over b' for d/dz, over b for d/dmu and d/ds). This probe
computes every entry once instead: for each row and item, the variables' densities, the groups'
and the joint's softmax weights, then d/dz, d/dmu and d/ds accumulated in the same loop (per
thread for the columns), written in C++ and built with ``torch.utils.cpp_extension.load_inline``
(``-O3 -march=native -ffast-math``: glibc's vector exp). It is a measurement for issue 18, not a
code path of the package. Inputs as ``objective_speed.py``'s narrow posteriors; both
implementations' gradients are compared with the float64 eager kernel's.

    python benchmarks/objective_native_probe.py --batch 200 1024 --implementation eager compiled
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS_DIR, git_commit, machine_info  # noqa: E402
from render import table  # noqa: E402

from topicvae.objective import kernels  # noqa: E402

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

// d/dz (rows), d/dmu and d/ds (this block's share) of the stratified log-marginals' weighted sum,
// in one pass: for each row r and item b, the variables' log densities and the groups' sums,
// the softmax weights of the three log-sum-exps, then the gradients of every variable.
std::vector<at::Tensor> block_backward(at::Tensor z, at::Tensor loc, at::Tensor inv, at::Tensor lnorm, int64_t first_row,
    double log_w_diagonal, double log_w_off, std::vector<int64_t> group_sizes, at::Tensor lq_v, at::Tensor lq_g,
    at::Tensor lq_j, at::Tensor g_v, at::Tensor g_g, at::Tensor g_j) {
  const int64_t R = z.size(0), B = loc.size(0), V = z.size(1), G = group_sizes.size();
  const int threads = at::get_num_threads();
  auto grad_z = at::zeros({R, V}, z.options());
  auto grad_loc = at::zeros({threads, B, V}, z.options());
  auto grad_scale = at::zeros({threads, B, V}, z.options());
  const float *Z = z.data_ptr<float>(), *L = loc.data_ptr<float>(), *I = inv.data_ptr<float>(), *N = lnorm.data_ptr<float>();
  const float *LQV = lq_v.data_ptr<float>(), *LQG = lq_g.data_ptr<float>(), *LQJ = lq_j.data_ptr<float>();
  const float *GV = g_v.data_ptr<float>(), *GG = g_g.data_ptr<float>(), *GJ = g_j.data_ptr<float>();
  float *GZ = grad_z.data_ptr<float>();
  std::vector<int64_t> start(G + 1, 0);
  for (int64_t d = 0; d < G; ++d) start[d + 1] = start[d] + group_sizes[d];
  at::parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) {
    const int t = at::get_thread_num();
    float *GL = grad_loc.data_ptr<float>() + t * B * V, *GS = grad_scale.data_ptr<float>() + t * B * V;
    std::vector<float> residual(V), density(V), group_weight(V), gz(V), sums(G);
    for (int64_t r = r0; r < r1; ++r) {
      const float *zr = Z + r * V, *lqv = LQV + r * V, *gv = GV + r * V;
      std::fill(gz.begin(), gz.end(), 0.f);
      for (int64_t b = 0; b < B; ++b) {
        const float *lb = L + b * V, *ib = I + b * V, *nb = N + b * V;
        const float log_w = (first_row + r == b) ? (float)log_w_diagonal : (float)log_w_off;
        float *res = residual.data(), *den = density.data();
        #pragma omp simd
        for (int64_t v = 0; v < V; ++v) {
          const float s = (zr[v] - lb[v]) * ib[v];
          res[v] = s;
          den[v] = nb[v] - 0.5f * s * s;
        }
        float joint = 0.f;
        for (int64_t d = 0; d < G; ++d) {
          float acc = 0.f;
          for (int64_t v = start[d]; v < start[d + 1]; ++v) acc += den[v];
          sums[d] = acc;
          joint += acc;
        }
        const float w_joint = std::exp(std::max(joint + log_w - LQJ[r], -60.f)) * GJ[r];
        for (int64_t d = 0; d < G; ++d) {
          const float w = std::exp(std::max(sums[d] + log_w - LQG[r * G + d], -60.f)) * GG[r * G + d] + w_joint;
          for (int64_t v = start[d]; v < start[d + 1]; ++v) group_weight[v] = w;
        }
        float *glb = GL + b * V, *gsb = GS + b * V, *gw = group_weight.data(), *gzr = gz.data();
        #pragma omp simd
        for (int64_t v = 0; v < V; ++v) {
          const float w = std::exp(std::max(den[v] + log_w - lqv[v], -60.f)) * gv[v] + gw[v];
          const float weighted = w * res[v] * ib[v];
          gzr[v] -= weighted;
          glb[v] += weighted;
          gsb[v] += weighted * res[v] - w * ib[v];
        }
      }
      std::copy(gz.begin(), gz.end(), GZ + r * V);
    }
  });
  return {grad_z, grad_loc.sum(0), grad_scale.sum(0)};
}
"""


def build():
    from torch.utils.cpp_extension import load_inline

    return load_inline("topicvae_native_backward_probe", cpp_sources=SOURCE, functions=["block_backward"],
                       extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
                       extra_ldflags=["-lmvec", "-fopenmp"])


#: Latent variables of every probed problem, in two groups (the throughput section's 2 x 25).
DIMS, GROUPS = 50, (25, 25)


def problem(batch: int, dims: int = DIMS, groups=GROUPS, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, dims, generator=generator, dtype=torch.float64)
    scale = 0.02 + 0.08 * torch.rand(batch, dims, generator=generator, dtype=torch.float64)  # narrow posteriors
    z = loc + scale * torch.randn(batch, dims, generator=generator, dtype=torch.float64)
    incoming = (torch.randn(batch, dims, generator=generator, dtype=torch.float64),
                torch.randn(batch, len(groups), generator=generator, dtype=torch.float64),
                torch.randn(batch, generator=generator, dtype=torch.float64))
    return [t.to(dtype) for t in (z, loc, scale, *incoming)]


def backward(batch: int, implementation: str, native, dtype=torch.float32):
    """d/dz, d/dmu, d/ds over all blocks (2^20 entries each, the package's default) of one problem."""
    z, loc, scale, grad_v, grad_g, grad_j = problem(batch, dtype=dtype)
    groups = GROUPS
    inv, log_norm, log_w_diagonal, log_w_off = kernels._gaussian_constants(scale, batch, 11314)
    rows = max(1, 2**20 // (batch * z.shape[1]))
    blocks = [(a, min(batch, a + rows)) for a in range(0, batch, rows)]
    compiled = implementation == "compiled"
    forward = [kernels.run_kernel("forward", compiled, z[a:b], loc, inv, log_norm, torch.tensor(a), log_w_diagonal, log_w_off,
                                  groups) for a, b in blocks]

    def run():
        parts = []
        for (a, b), (lq_v, lq_g, lq_j) in zip(blocks, forward):
            if implementation == "native":
                parts.append(native.block_backward(z[a:b].contiguous(), loc, inv, log_norm, a, log_w_diagonal.item(),
                                                   log_w_off.item(), list(groups), lq_v.contiguous(), lq_g.contiguous(),
                                                   lq_j.contiguous(), grad_v[a:b].contiguous(), grad_g[a:b].contiguous(),
                                                   grad_j[a:b].contiguous()))
            else:
                parts.append(kernels.run_kernel("backward", compiled, z[a:b], loc, inv, log_norm, torch.tensor(a),
                                                log_w_diagonal, log_w_off, groups, lq_v, lq_g, lq_j, grad_v[a:b],
                                                grad_g[a:b], grad_j[a:b]))
        return torch.cat([p[0] for p in parts]), sum(p[1] for p in parts), sum(p[2] for p in parts)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[200, 1024])
    parser.add_argument("--implementation", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="objective_native_probe.json")
    args = parser.parse_args()
    native = build()
    rows = []
    for batch in args.batch:
        reference = backward(batch, "eager", None, dtype=torch.float64)()
        for implementation in args.implementation:
            runs = {name: backward(batch, name, native) for name in (implementation, "native")}
            errors = {}
            for name, run in runs.items():
                got = run()  # also the warm-up (and the compile)
                errors[name] = max(((g.double() - e).abs().max() / e.abs().max()).item() for g, e in zip(got, reference))
            seconds = {name: [] for name in runs}
            for _ in range(args.repeats):  # alternate call by call: the machine's drift falls on both
                for name, run in runs.items():
                    started = time.perf_counter()
                    run()
                    seconds[name].append(time.perf_counter() - started)
            medians = {name: statistics.median(values) for name, values in seconds.items()}
            entries = batch * batch * DIMS
            rows.append({"batch": batch, "against": implementation, "threads": torch.get_num_threads(),
                         "seconds": medians, "ns_per_entry": {n: round(s / entries * 1e9, 2) for n, s in medians.items()},
                         "native_over_package": round(medians["native"] / medians[implementation], 3),
                         "relative_error_vs_float64": {n: float(f"{e:.2e}") for n, e in errors.items()}})
            print(json.dumps(rows[-1]), flush=True)
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info("cpu"),
              "commit": git_commit(), "statistic": f"median of {args.repeats} alternating calls, backward of all blocks",
              "rows": rows}
    (RESULTS_DIR / args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(table(["B", "package kernel", "threads", "package ns / entry", "native ns / entry", "native / package",
                 "max relative error vs float64 (package, native)"],
                [[r["batch"], r["against"], r["threads"], r["ns_per_entry"][r["against"]], r["ns_per_entry"]["native"],
                  r["native_over_package"], f"{r['relative_error_vs_float64'][r['against']]:.1e}, "
                  f"{r['relative_error_vs_float64']['native']:.1e}"] for r in rows]))


if __name__ == "__main__":
    main()
