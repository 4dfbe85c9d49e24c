"""Training speed: throughput per objective, growth of the cost, and the machine's matmul limit.

Each section function takes the run mode and the data directory and returns
``(settings, payload)``; ``run.py`` writes them to ``benchmarks/results/<section>-<mode>.json``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path

import scipy.sparse as sp
import torch
from torch import nn

from common import (
    CLOSED_FORM_ELBO,
    MATMUL_OPS,
    Mode,
    TrainingSetup,
    epoch_ends,
    growth_exponent,
    newsgroups_bow,
    say,
    time_epochs,
)

#: The three objectives timed side by side: (objective, groups). The first is the textbook
#: ELBO; "vae" is topicvae's all-weights-1 preset (same value, computed through the HFVAE
#: estimator); "hfvae" is the estimator's default preset (2 x 25, alpha 1, beta 0.1, gamma 4).
THROUGHPUT_OBJECTIVES = ((CLOSED_FORM_ELBO, "50"), ("vae", "50"), ("hfvae", "2x25"))

#: The issue's targets: HFVAE epoch time over plain-ELBO epoch time, at these batch sizes.
RATIO_TARGETS = {200: 1.25, 1024: 1.5}


def throughput(mode: Mode, data: Path) -> tuple[dict, dict]:
    """Documents/s and s/epoch for ProdLDA and NVDM, each objective and batch size, in one run."""
    bow = newsgroups_bow(data, mode.speed_documents)
    rows = []
    for model in ("prodlda", "nvdm"):
        for batch in mode.throughput_batches:
            # The objectives of one (model, batch) run back to back, so a change in the
            # machine's load hits all three rather than one side of a ratio.
            for objective, groups in THROUGHPUT_OBJECTIVES:
                setup = TrainingSetup(model, groups, objective, batch)
                say(f"throughput: {setup.label()}")
                rows.append(time_epochs(setup, bow.train_counts, mode))
    ratios = _hfvae_ratios(rows)
    settings = {
        "corpus": {"name": "20 Newsgroups bydate train, stripped, TextVectorizer defaults", **bow.describe()},
        "objectives": {
            CLOSED_FORM_ELBO: "-(log p(x|z) - KL(q(z|x) || p(z))), KL in closed form, groups 50 (no batch estimate of q(z))",
            "vae": "topicvae preset 'vae' (all weights 1), groups 50: the ELBO through the HFVAE estimator",
            "hfvae": "topicvae preset 'hfvae' (alpha 1, beta 0.1, gamma 4, delta 1), groups 2x25",
        },
        "batch_sizes": list(mode.throughput_batches),
        "warmup_epochs": mode.warmup_epochs,
        "timed_epochs": mode.timed_epochs,
        "statistic": "median of the timed epochs",
        "training_path": "TopicModel.fit_iter (vae, hfvae); the same build_model, BagOfWordsBatches and Adam for the closed-form ELBO",
    }
    return settings, {"rows": rows, "ratios": ratios, "targets": _ratio_targets(ratios)}


def _hfvae_ratios(rows: list[dict]) -> list[dict]:
    """HFVAE seconds per epoch over each baseline's, per (model, batch)."""
    by_key = {(r["model"], r["batch_size"], r["objective"]): r["seconds_per_epoch"] for r in rows}
    ratios = []
    for model, batch in dict.fromkeys((r["model"], r["batch_size"]) for r in rows):
        hfvae = by_key[(model, batch, "hfvae")]
        ratios.append({
            "model": model,
            "batch_size": batch,
            "hfvae_over_closed_form_elbo": round(hfvae / by_key[(model, batch, CLOSED_FORM_ELBO)], 3),
            "hfvae_over_vae_preset": round(hfvae / by_key[(model, batch, "vae")], 3),
        })
    return ratios


def _ratio_targets(ratios: list[dict]) -> list[dict]:
    """Pass or fail of every target that this run measured (batches not run are listed as such)."""
    verdicts = []
    for batch, limit in RATIO_TARGETS.items():
        measured = [r for r in ratios if r["batch_size"] == batch]
        if not measured:
            verdicts.append({"batch_size": batch, "limit": limit, "measured": False})
        for r in measured:
            for baseline in ("closed_form_elbo", "vae_preset"):
                value = r[f"hfvae_over_{baseline}"]
                verdicts.append({"batch_size": batch, "limit": limit, "measured": True, "model": r["model"],
                                 "baseline": baseline, "ratio": value, "pass": value <= limit})
    return verdicts


def growth(mode: Mode, data: Path) -> tuple[dict, dict]:
    """Seconds per epoch against corpus size, vocabulary size, topics and batch size, with exponents.

    One dimension moves at a time from the base point: ProdLDA, HFVAE preset, 2 groups of
    50 topics in all, the smallest batch size, the default 2,000-word vocabulary.
    """
    base_batch = mode.growth_batches[0]
    base = TrainingSetup("prodlda", "2x25", "hfvae", base_batch)
    bow = newsgroups_bow(data, mode.speed_documents)
    measurements: dict[str, list[dict]] = {"corpus": [], "vocabulary": [], "topics": [], "batch": []}

    def record(dimension: str, value: float, setup: TrainingSetup, counts: sp.csr_matrix, **extra) -> None:
        say(f"growth: {dimension} = {value} ({setup.label()}, {counts.shape[0]} x {counts.shape[1]})")
        measurements[dimension].append({"dimension": dimension, "value": value, **extra, **time_epochs(setup, counts, mode)})

    for factor in mode.growth_corpus_factors:
        # Repeated documents: the same work per document, only more of it.
        record("corpus", factor, base, sp.vstack([bow.train_counts] * factor, format="csr"), note=f"training set x {factor}")
    for words in mode.growth_vocabularies:
        # min_df = 1 so that the largest sizes are reachable; the actual size is recorded.
        sized = newsgroups_bow(data, mode.speed_documents, min_df=1, max_features=words)
        record("vocabulary", len(sized.vocabulary), base, sized.train_counts, requested=words)
    for topics in mode.growth_topics:
        groups = f"2x{topics // 2}"
        record("topics", topics, TrainingSetup("prodlda", groups, "hfvae", base_batch), bow.train_counts)
    for batch in mode.growth_batches:
        record("batch", batch, TrainingSetup("prodlda", "2x25", "hfvae", batch), bow.train_counts)

    exponents = {
        dimension: growth_exponent([r["value"] for r in rows], [r["seconds_per_epoch"] for r in rows])
        for dimension, rows in measurements.items()
    }
    settings = {
        "base": {**asdict(base), "vocabulary": len(bow.vocabulary), "documents": bow.train_counts.shape[0]},
        "corpus_factors": list(mode.growth_corpus_factors),
        "vocabularies_requested": list(mode.growth_vocabularies),
        "topics": list(mode.growth_topics),
        "batch_sizes": list(mode.growth_batches),
        "warmup_epochs": mode.warmup_epochs,
        "timed_epochs": mode.timed_epochs,
        "exponent": "slope of log(seconds per epoch) against log(size), numpy.polyfit degree 1",
    }
    return settings, {"rows": [row for rows in measurements.values() for row in rows], "exponents": exponents}


# ------------------------------------------------------------------------------------------
# The machine's limit
# ------------------------------------------------------------------------------------------
def matmul_seconds(m: int, k: int, n: int, *, min_seconds: float = 0.2, repeats: int = 5) -> float:
    """Median seconds of one float32 [m, k] x [k, n] product (torch.mm, preallocated output)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # first call: allocations and thread-pool start-up
    started = time.perf_counter()
    torch.mm(a, b, out=out)
    once = max(time.perf_counter() - started, 1e-6)
    inner = max(1, int(min_seconds / repeats / once))
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        samples.append((time.perf_counter() - started) / inner)
    return statistics.median(samples)


def _linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The model's linear maps in definition order (encoder, posterior heads, decoder)."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)]


def training_matmuls(model: nn.Module, batch: int) -> list[dict]:
    """Every matrix product of one training step, with its shape and FLOPs.

    Forward: x [B, in] W^T per layer. Backward: the weight gradient [out, B] x [B, in] for every
    layer and the input gradient [B, out] x [out, in] for all but the first layer, whose input is
    the data (no gradient). So training costs 3x the forward FLOPs, less one input gradient.
    """
    products = []
    for index, layer in enumerate(_linear_layers(model)):
        n_in, n_out = layer.in_features, layer.out_features
        products.append({"layer": index, "pass": "forward", "shape": (batch, n_in, n_out)})
        products.append({"layer": index, "pass": "weight gradient", "shape": (n_out, batch, n_in)})
        if index > 0:
            products.append({"layer": index, "pass": "input gradient", "shape": (batch, n_out, n_in)})
    for product in products:
        m, k, n = product["shape"]
        product["flops"] = 2 * m * k * n
    return products


def machine_limit(mode: Mode, data: Path) -> tuple[dict, dict]:
    """Measured matmul GFLOP/s, the model's FLOPs per epoch, and the share of the limit reached."""
    from topicvae.latent.groups import GroupSpec
    from topicvae.topics.models import build_model

    say("machine_limit: square matmuls")
    square = []
    for size in mode.matmul_sizes:
        seconds = matmul_seconds(size, size, size)
        square.append({"size": size, "seconds": seconds, "gflops": round(2 * size**3 / seconds / 1e9, 2)})
    peak_gflops = max(row["gflops"] for row in square)

    bow = newsgroups_bow(data, mode.speed_documents)
    documents, vocabulary = bow.train_counts.shape
    model = build_model("prodlda", vocabulary, GroupSpec.coerce("2x25"))
    layers = [{"in": layer.in_features, "out": layer.out_features} for layer in _linear_layers(model)]
    rows = []
    for batch in mode.limit_batches:
        steps = -(-documents // batch)  # BagOfWordsBatches folds only a lone last document
        products = training_matmuls(model, batch)
        for product in products:
            product["seconds"] = matmul_seconds(*product["shape"], min_seconds=0.05, repeats=3)
        # FLOPs per epoch count every document once (the last batch is smaller, not padded).
        flops_per_epoch = sum(p["flops"] for p in products) / batch * documents
        matmul_epoch_seconds = sum(p["seconds"] for p in products) * steps
        for objective, groups in ((CLOSED_FORM_ELBO, "50"), ("hfvae", "2x25")):
            setup = TrainingSetup("prodlda", groups, objective, batch)
            say(f"machine_limit: {setup.label()}")
            timing = time_epochs(setup, bow.train_counts, mode)
            achieved = flops_per_epoch / timing["seconds_per_epoch"] / 1e9
            rows.append({
                **timing,
                "matmul_flops_per_epoch": flops_per_epoch,
                "matmul_seconds_per_epoch_at_model_shapes": round(matmul_epoch_seconds, 4),
                "model_shape_gflops": round(flops_per_epoch / matmul_epoch_seconds / 1e9, 2),
                "achieved_gflops": round(achieved, 2),
                "fraction_of_peak": round(achieved / peak_gflops, 4),
                "matmul_share_of_epoch": round(matmul_epoch_seconds / timing["seconds_per_epoch"], 4),
            })
    profile = profile_epoch(TrainingSetup("prodlda", "2x25", "hfvae", mode.limit_batches[0]), bow.train_counts)
    settings = {
        "model": "ProdLDA, groups 2x25, default layers",
        "layers": layers,
        "documents": documents,
        "vocabulary": vocabulary,
        "matmul_sizes": list(mode.matmul_sizes),
        "peak": "the fastest square float32 torch.mm measured here",
        "flop_count": "2 m k n per product; forward, weight gradients, and input gradients of all but the first layer",
        "not_counted": "element-wise work: softplus, batch-norm, softmax over the vocabulary, the objective's B x B x 50 pairwise term",
        "warmup_epochs": mode.warmup_epochs,
        "timed_epochs": mode.timed_epochs,
    }
    return settings, {"square_matmuls": square, "peak_gflops": peak_gflops, "rows": rows, "profile": profile}


def profile_epoch(setup: TrainingSetup, counts: sp.csr_matrix, top: int = 10) -> dict:
    """Self CPU time per operator over one steady-state epoch (after a warm-up epoch)."""
    from torch.profiler import ProfilerActivity, profile

    say(f"machine_limit: profiling one epoch of {setup.label()}")
    ends = epoch_ends(setup, counts, 2)
    next(ends)  # warm-up epoch, not profiled
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        next(ends)
    wall = time.perf_counter() - started
    ends.close()
    events = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    total = sum(seconds for _, seconds in events) or float("nan")
    matmul = sum(seconds for key, seconds in events if key in MATMUL_OPS)
    events.sort(key=lambda item: -item[1])
    return {
        "setup": setup.label(),
        "profiled_wall_seconds": round(wall, 3),
        "self_cpu_seconds": round(total, 3),
        "matmul_share": round(matmul / total, 4),
        "top_ops": [{"op": key, "self_seconds": round(s, 4), "share": round(s / total, 4)} for key, s in events[:top]],
        "note": "profiler overhead inflates the wall time; the shares are of summed self CPU time",
    }
