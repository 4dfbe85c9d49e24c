"""The HFVAE objective against the naive implementation a user would write, and the machine's limit.

The naive implementation is the one probtorch and the beta-TCVAE reference code use: build
log q(z^b_e | x^c) as one [B, B, D] tensor with ``Normal.log_prob`` broadcasting, then
log-sum-exp it with the stratified weights, for the joint, each group and each dimension.
It is written here (``naive_terms``) and checked equal to topicvae's terms in float64 before
anything is timed.

Each (implementation, B) runs in a fresh process of this script (``--one``), so that its peak
memory is its own: the peak resident memory on a CPU over the process's memory before the
inputs exist, ``torch.cuda.max_memory_allocated`` on a GPU. Times are forward + backward of
the whole objective, the median of the timed calls after one untimed call (which compiles the
compiled path). The limit beside them is the machine's own throughput of a fused
exp-and-sum kernel (``torch.compile`` of ``exp(x).sum(-1)``) on as many elements.

    python benchmarks/objective_speed.py --batch 1024          # one B, every implementation
    python benchmarks/run.py --only objective [--device cuda]  # the section, into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

#: Latent dimensions (two groups of 25, the 20 Newsgroups setting) and the data set size N.
DIMS = 50
DATASET_SIZE = 11314
#: Posterior scales drawn uniformly from these ranges (the means are standard normal): "wide"
#: puts few pairs' terms far below the largest; "narrow", the spread of a trained model's
#: informative dimensions, puts most of them 87 nats or more below, where exp's result is
#: subnormal in float32 and the CPU's exp is slow (topicvae.objective.kernels.EXP_FLOOR).
POSTERIOR_WIDTHS = {"wide": (0.2, 1.0), "narrow": (0.02, 0.1)}
#: exp(t) is subnormal in float32 below this t (log of the smallest normal float32, 1.18e-38).
SUBNORMAL_EXPONENT = -87.3
#: The implementations timed: topicvae's fused Gaussian kernels run eagerly, through
#: torch.compile, and natively (topicvae.objective.native, C++), and the naive [B, B, D] tensor.
IMPLEMENTATIONS = ("naive", "eager", "compiled", "native")
#: topicvae's own implementations (the ``kernels`` argument of hfvae_objective).
TOPICVAE_KERNELS = IMPLEMENTATIONS[1:]
#: The naive implementation keeps about this many [B, B, D] float32 tensors alive through its
#: backward pass (log_prob's intermediates, the weighted copy, logsumexp's saved input, grads).
NAIVE_TENSORS_ALIVE = 6


def naive_terms(log_likelihood, loc, scale, z, sizes, dataset_size, weights):
    """The HFVAE terms through one [B, B, D] tensor, the straightforward way (probtorch, beta-TCVAE).

    Returns a dict of 0-d tensors named like ``LossTerms``: objective, mutual_information,
    tc_between, tc_within (shape [groups]), dimwise_kl (shape [D]).
    """
    import torch
    from torch.distributions import Normal

    batch = loc.shape[0]
    pairwise = Normal(loc.unsqueeze(0), scale.unsqueeze(0)).log_prob(z.unsqueeze(1))  # [b, c, e]: log q(z^b_e | x^c)
    log_w = torch.full((batch, batch), math.log((dataset_size - 1) / (dataset_size * (batch - 1))), dtype=loc.dtype, device=loc.device)
    log_w.fill_diagonal_(-math.log(dataset_size))
    log_q_joint = torch.logsumexp(pairwise.sum(2) + log_w, dim=1)
    log_q_groups = torch.stack([torch.logsumexp(part.sum(2) + log_w, dim=1) for part in pairwise.split(sizes, dim=2)], dim=1)
    log_q_dims = torch.logsumexp(pairwise + log_w.unsqueeze(2), dim=1)
    log_q_given_x = Normal(loc, scale).log_prob(z)  # [b, e]
    log_p = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z)
    mutual_information = (log_q_given_x.sum(1) - log_q_joint).mean()
    tc_between = (log_q_joint - log_q_groups.sum(1)).mean()  # the prior factorizes: its TC is 0
    tc_within = torch.stack([
        (log_q_groups[:, g] - part.sum(1)).mean() for g, part in enumerate(log_q_dims.split(sizes, dim=1))
    ])
    dimwise_kl = (log_q_dims - log_p).mean(0)
    objective = (
        log_likelihood.mean() - weights.alpha * mutual_information - weights.beta * tc_between
        - weights.gamma * tc_within.sum() - weights.delta * dimwise_kl.sum()
    )
    return {"objective": objective, "mutual_information": mutual_information, "tc_between": tc_between,
            "tc_within": tc_within, "dimwise_kl": dimwise_kl}


def _inputs(batch: int, dims: int, dtype, device, width: str = "wide"):
    import torch

    low, high = POSTERIOR_WIDTHS[width]
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(batch, dims, generator=generator, dtype=dtype).to(device).requires_grad_()
    scale = (torch.rand(batch, dims, generator=generator, dtype=dtype) * (high - low) + low).to(device).requires_grad_()
    noise = torch.randn(batch, dims, generator=generator, dtype=dtype).to(device)
    return loc, scale, noise


def _topicvae_terms(log_likelihood, loc, scale, z, sizes, dataset_size, weights, kernels: str):
    import torch
    from torch.distributions import Normal

    from topicvae.objective.terms import hfvae_objective

    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    priors = [Normal(torch.zeros(e, dtype=loc.dtype, device=loc.device), torch.ones(e, dtype=loc.dtype, device=loc.device)) for e in sizes]
    terms = hfvae_objective(log_likelihood, posteriors, priors, list(z.split(sizes, 1)), dataset_size, weights, kernels=kernels)
    return {name: getattr(terms, name) for name in ("objective", "mutual_information", "tc_between", "tc_within", "dimwise_kl")}


def _terms(implementation: str, loc, scale, noise, sizes, dataset_size, weights) -> dict:
    """One implementation's terms at z = loc + scale * noise, with a log-likelihood -|z|^2."""
    z = loc + scale * noise
    log_likelihood = -(z**2).sum(1)
    if implementation == "naive":
        return naive_terms(log_likelihood, loc, scale, z, sizes, dataset_size, weights)
    return _topicvae_terms(log_likelihood, loc, scale, z, sizes, dataset_size, weights, kernels=implementation)


def check_equal(batch: int = 200, dims: int = DIMS, dataset_size: int = DATASET_SIZE) -> dict:
    """The largest difference between the naive terms and gradients in float64 and topicvae's.

    The eager and compiled kernels run in float64 too (differences at float64 rounding); the
    native kernels are float32 only, so theirs are float32 results against the float64 naive
    ones (their rounding), on the same float32-representable inputs.
    """
    import torch

    from topicvae.objective.terms import ObjectiveWeights

    weights = ObjectiveWeights.preset("hfvae")
    sizes = [dims // 2, dims - dims // 2]
    results = {}
    for name in IMPLEMENTATIONS:
        dtype = torch.float32 if name == "native" else torch.float64
        loc, scale, noise = (t.detach().float().to(dtype).requires_grad_(t.requires_grad)
                             for t in _inputs(batch, dims, torch.float64, "cpu"))
        terms = _terms(name, loc, scale, noise, sizes, dataset_size, weights)
        terms["objective"].backward()
        results[name] = ({k: v.detach().double() for k, v in terms.items()}, loc.grad.double(), scale.grad.double())
    naive, naive_loc, naive_scale = results["naive"]
    differences = {}
    for name in TOPICVAE_KERNELS:
        terms, grad_loc, grad_scale = results[name]
        differences[name] = {
            "dtype": "float32" if name == "native" else "float64",
            "terms": max(float((terms[k] - naive[k]).abs().max()) for k in naive),
            "gradients": max(float((grad_loc - naive_loc).abs().max()), float((grad_scale - naive_scale).abs().max())),
            "gradients_relative": max(float((grad_loc - naive_loc).abs().max() / naive_loc.abs().max()),
                                      float((grad_scale - naive_scale).abs().max() / naive_scale.abs().max())),
        }
    return {"batch": batch, "dims": dims, "reference": "naive, float64", "max_abs_difference": differences}


def subnormal_share(batch: int, dims: int, width: str, dataset_size: int = DATASET_SIZE, rows: int = 64) -> float:
    """The share of the per-dimension softmax terms w exp(log q(z^b_e | x^c)) / q^(z^b_e) that are
    subnormal in float32, over the first ``rows`` samples (float64, the naive formula)."""
    import torch
    from torch.distributions import Normal

    loc, scale, noise = _inputs(batch, dims, torch.float64, "cpu", width)
    loc, scale = loc.detach(), scale.detach()
    z = (loc + scale * noise)[:rows]
    pairwise = Normal(loc.unsqueeze(0), scale.unsqueeze(0)).log_prob(z.unsqueeze(1))  # [rows, B, D]
    log_w = torch.full((z.shape[0], batch), math.log((dataset_size - 1) / (dataset_size * (batch - 1))), dtype=torch.float64)
    log_w[torch.arange(z.shape[0]), torch.arange(z.shape[0])] = -math.log(dataset_size)
    terms = pairwise + log_w.unsqueeze(2)
    return float(((terms - torch.logsumexp(terms, 1, keepdim=True)) < SUBNORMAL_EXPONENT).double().mean())


def measure(implementation: str, batch: int, dims: int, device: str, dataset_size: int = DATASET_SIZE, repeats: int = 5,
            width: str = "wide") -> dict:
    """Forward + backward of one implementation at one B (run in a process of its own)."""
    import torch

    from topicvae.objective.terms import ObjectiveWeights

    weights = ObjectiveWeights.preset("hfvae")
    sizes = [dims // 2, dims - dims // 2]
    loc, scale, noise = _inputs(batch, dims, torch.float32, device, width)
    cuda = device.startswith("cuda")

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward_backward() -> float:
        loc.grad = scale.grad = None
        synchronize()
        started = time.perf_counter()
        (-_terms(implementation, loc, scale, noise, sizes, dataset_size, weights)["objective"]).backward()
        synchronize()
        return time.perf_counter() - started

    first = forward_backward()  # compiles (compiled path) and warms the allocator
    seconds = [forward_backward() for _ in range(repeats)]
    median = statistics.median(seconds)
    entries = batch * batch * dims
    # Memory, after the timing: what one more call needs beyond what is resident already (the
    # inputs, the compiled code). On a CPU, glibc keeps freed blocks of a few MiB in its heap,
    # so the RSS would count every temporary ever freed: large blocks are mapped and unmapped
    # one by one for this call (mallopt), which is slower, hence not timed.
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated() / 2**20
    else:
        live = _return_freed_memory()
        resident = _resident_mib()
        _reset_peak_rss()
    forward_backward()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mib()) - resident
    return {
        "implementation": implementation,
        "batch": batch,
        "width": width,
        "dims": dims,
        "device": device,
        "threads": torch.get_num_threads(),
        "first_call_seconds": round(first, 4),
        "seconds": round(median, 5),
        "timed_calls": [round(s, 5) for s in seconds],
        "pairwise_entries": entries,
        "ns_per_pairwise_entry": round(median / entries * 1e9, 3),
        "peak_memory_mib": round(peak, 1),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else (
            "peak RSS of one call over the RSS before it, blocks of 64 KiB and more mapped and unmapped one by one"
            if live else "peak RSS of one call over the RSS before it (glibc's heap may keep freed blocks)"
        ),
        "finite_gradients": bool(torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()),
    }


def _status_mib(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in MiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _resident_mib() -> float:
    resident = _status_mib("VmRSS")
    return resident if resident is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    """Reset the peak-RSS mark (VmHWM) to the current RSS: Linux's /proc/self/clear_refs, value 5."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak then includes what came before (compilation), said in the result
        pass


def _return_freed_memory() -> bool:
    """Make glibc map every block of 64 KiB or more on its own (and unmap it when freed), and
    give back what its heap holds: the RSS then follows live memory. False where not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold, m_trim_threshold = -3, -1
        ok = libc.mallopt(m_mmap_threshold, 64 * 1024) == 1 and libc.mallopt(m_trim_threshold, 64 * 1024) == 1
        libc.malloc_trim(0)
        return bool(ok)
    except (OSError, AttributeError):
        return False


def _peak_rss_mib() -> float:
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def exp_sum_limit(elements: int, device: str, repeats: int = 5) -> dict:
    """ns per element of a fused exp-and-sum (torch.compile of exp(x).sum(-1)) over ``elements`` floats."""
    import torch

    columns = 4096
    rows = max(1, elements // columns)
    x = torch.randn(rows, columns, device=device) * 0.1
    kernel = torch.compile(lambda values: torch.exp(values).sum(-1), dynamic=False)

    def run() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        kernel(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started

    run()
    median = statistics.median(run() for _ in range(repeats))
    return {"elements": rows * columns, "seconds": round(median, 5), "ns_per_exp": round(median / (rows * columns) * 1e9, 4),
            "threads": torch.get_num_threads(), "device": device}


def naive_fits(batch: int, dims: int, device: str) -> bool:
    """Whether the naive [B, B, D] tensors fit in half the memory (RAM, or the GPU's)."""
    needed = NAIVE_TENSORS_ALIVE * batch * batch * dims * 4
    if device.startswith("cuda"):
        import torch

        return needed < 0.5 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    return needed < 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def run_one(implementation: str, batch: int, dims: int, device: str, width: str = "wide") -> dict:
    """``measure`` in a fresh process (through common.peak_rss_of), its JSON line parsed."""
    from common import peak_rss_of

    run = peak_rss_of([sys.executable, str(Path(__file__).resolve()), "--one", implementation,
                       "--batch", str(batch), "--dims", str(dims), "--device", device, "--width", width])
    if run["returncode"] != 0:
        raise RuntimeError(f"objective_speed.py --one {implementation} --batch {batch} failed:\n{run['output'][-2000:]}")
    return json.loads(run["output"].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dims", type=int, default=DIMS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", choices=POSTERIOR_WIDTHS, default="wide", help="posterior scales: " + ", ".join(
        f"{name} U({low}, {high})" for name, (low, high) in POSTERIOR_WIDTHS.items()))
    parser.add_argument("--one", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.dims, args.device, width=args.width)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(check_equal(), indent=1))
    for implementation in IMPLEMENTATIONS:
        if implementation == "naive" and not naive_fits(args.batch, args.dims, args.device):
            print(f"naive: skipped at B = {args.batch} (does not fit)")
            continue
        print(json.dumps(run_one(implementation, args.batch, args.dims, args.device, args.width)))


if __name__ == "__main__":
    main()


def objective(mode, data: Path) -> tuple[dict, dict]:
    """The section: topicvae's objective (eager, compiled, native) against the naive one, and the exp limit."""
    import torch

    from common import say

    device = mode.device
    say("objective: the naive terms against topicvae's, float64")
    equality = check_equal()
    rows = []
    shares = {}
    for width in POSTERIOR_WIDTHS:
        for batch in mode.objective_batches:
            shares[f"{width} {batch}"] = round(subnormal_share(batch, DIMS, width), 4)
            for implementation in IMPLEMENTATIONS:
                if implementation == "naive" and not naive_fits(batch, DIMS, device):
                    say(f"objective: naive at B = {batch} does not fit in half the memory: skipped")
                    continue
                if implementation == "native" and device != "cpu":
                    continue  # CPU kernels: on a GPU they would run the eager ones under their name
                say(f"objective: {implementation} B = {batch}, {width} posteriors")
                rows.append(run_one(implementation, batch, DIMS, device, width))
    limits = []
    for batch in mode.objective_batches:
        say(f"objective: fused exp-and-sum over B x B x D = {batch * batch * DIMS} elements")
        limits.append({"batch": batch, **exp_sum_limit(batch * batch * DIMS, device)})
    by_key = {(r["implementation"], r["batch"], r["width"]): r for r in rows}
    comparisons = []
    for width in POSTERIOR_WIDTHS:
        for batch in mode.objective_batches:
            naive = by_key.get(("naive", batch, width))
            for implementation in TOPICVAE_KERNELS:
                row = by_key.get((implementation, batch, width))
                if row is None:
                    continue
                comparisons.append({
                    "batch": batch,
                    "width": width,
                    "implementation": implementation,
                    "time_over_naive": None if naive is None else round(row["seconds"] / naive["seconds"], 3),
                    "memory_over_naive": None if naive is None or naive["peak_memory_mib"] <= 0
                    else round(row["peak_memory_mib"] / naive["peak_memory_mib"], 4),
                })
    settings = {
        "dims": DIMS,
        "groups": "2 x 25 (Gaussian)",
        "dataset_size": DATASET_SIZE,
        "weights": "preset hfvae",
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "batches": list(mode.objective_batches),
        "widths": {name: f"scales U({low}, {high}), means N(0, 1)" for name, (low, high) in POSTERIOR_WIDTHS.items()},
        "subnormal_share": "share of the per-dimension softmax terms subnormal in float32 (first 64 rows, float64)",
        "naive": "Normal(loc[None], scale[None]).log_prob(z[:, None]) as one [B, B, D] tensor, then logsumexp with "
                 "the stratified weights (probtorch, beta-TCVAE)",
        "statistic": "median of 5 calls after one untimed call (the compiled path compiles there, the native one loads "
                     "its build), forward + backward",
        "limit": "torch.compile(exp(x).sum(-1)) over B x B x D float32 elements: ns per exp",
    }
    return settings, {"equality": equality, "rows": rows, "comparisons": comparisons, "limits": limits,
                      "subnormal_shares": shares}
