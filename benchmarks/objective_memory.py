"""Peak memory and time of the HFVAE objective (forward + backward) at large batches.

    python benchmarks/objective_memory.py [--batch 4096] [--dims 50]

Runs each configuration in a fresh process (so peak RSS belongs to it alone) and writes
benchmarks/results/objective_memory.json. ``benchmarks/run.py --only memory`` runs the same
measurement (``measure_paths``) as part of the benchmark suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, however this is started
from render import table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "objective_memory.json"


#: The estimator's four ways through the pairwise tensor.
PATHS = {
    "native": dict(fused=True, kernels="native"),  # the fused Gaussian kernels in C++ (training's choice at this size, on a CPU)
    "compiled": dict(fused=True, kernels="compiled"),  # the same through torch.compile (training's choice on a GPU)
    "fused": dict(fused=True, kernels="eager"),  # the same run eagerly
    "generic": dict(fused=False),  # autograd over checkpointed blocks, any posterior family
}


def measure(batch: int, dims: int, path: str, dataset_size: int) -> dict:
    import torch
    from torch.distributions import Normal

    from topicvae.objective.terms import ObjectiveWeights, hfvae_objective

    torch.manual_seed(0)
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = [dims // 2, dims - dims // 2]
    loc = torch.randn(batch, dims, requires_grad=True)
    scale = (torch.rand(batch, dims) + 0.3).requires_grad_()
    noise = torch.randn(batch, dims)

    def forward_backward() -> float:
        loc.grad = scale.grad = None
        z = loc + scale * noise
        posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
        priors = [Normal(torch.zeros(e), torch.ones(e)) for e in sizes]
        started = time.perf_counter()
        terms = hfvae_objective(
            -(z**2).sum(1), posteriors, priors, list(z.split(sizes, 1)), dataset_size,
            ObjectiveWeights.preset("hfvae"), **PATHS[path],
        )
        terms.loss.backward()
        return time.perf_counter() - started

    # The first call pays one-off costs (the compiled path compiles there, every path warms the
    # allocator): it is timed apart, and the second call is the measurement.
    first_seconds = forward_backward()
    seconds = forward_backward()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "batch": batch,
        "dims": dims,
        "path": path,
        "seconds_forward_backward": round(seconds, 2),
        "first_call_seconds": round(first_seconds, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "rss_before_mib": round(baseline_mib, 1),
        "pairwise_entries": batch * batch * dims,
        "nanoseconds_per_pairwise_entry": round(seconds / (batch * batch * dims) * 1e9, 2),
        "finite_gradients": bool(torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()),
    }


def measure_paths(batch: int, dims: int, dataset_size: int) -> list[dict]:
    """Every path (compiled, fused, generic), each measured in a fresh process of this script.

    The processes start from the small launcher of ``common.peak_rss_of``, so their peak RSS
    does not inherit the size of whatever process runs this function.
    """
    from common import peak_rss_of

    rows = []
    for path in PATHS:
        run = peak_rss_of(
            [sys.executable, str(Path(__file__).resolve()), "--batch", str(batch), "--dims", str(dims),
             "--dataset-size", str(dataset_size), "--one", path],
        )
        if run["returncode"] != 0:
            raise RuntimeError(f"objective_memory.py --one {path} failed:\n{run['output'][-2000:]}")
        rows.append(json.loads(run["output"].strip().splitlines()[-1]))  # the JSON line comes last
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dims", type=int, default=50)
    parser.add_argument("--dataset-size", type=int, default=11314)
    parser.add_argument("--one", choices=list(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.batch, args.dims, args.one, args.dataset_size)))
        return
    rows = measure_paths(args.batch, args.dims, args.dataset_size)
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(table(["path", "B", "dims", "forward+backward (s)", "ns / pairwise entry", "peak RSS (MiB)", "RSS before (MiB)"],
                [[row[key] for key in ("path", "batch", "dims", "seconds_forward_backward", "nanoseconds_per_pairwise_entry",
                                       "peak_rss_mib", "rss_before_mib")] for row in rows]))


if __name__ == "__main__":
    main()
