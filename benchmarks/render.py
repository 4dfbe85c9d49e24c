"""Markdown tables from every result file in ``benchmarks/results``, written into docs/benchmarks.md.

Only the part of the document between ``TABLES_START`` and ``TABLES_END`` is replaced, so the
hand-written introduction stays as it is. Every table says which mode produced it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from common import MATMUL_OPS, SECTIONS

TABLES_START = "<!-- tables:start -->"
TABLES_END = "<!-- tables:end -->"
NO_RESULTS = "No results recorded yet; run `python benchmarks/run.py`."
MODE_ORDER = ("full", "quick", "smoke")
TITLES = {
    "throughput": "Training throughput: plain ELBO against HFVAE",
    "speedup": "Before and after the speed-ups",
    "growth": "How the cost grows",
    "memory": "Peak memory",
    "vectorizer": "Vectorizing the raw corpus",
    "machine_limit": "The machine's matrix-multiply limit",
    "objective": "The objective against a naive implementation",
    "quality": "Topic quality beside gensim and scikit-learn",
    "prodlda_paper": "The ProdLDA paper's test set",
    "streaming": "Streaming a corpus larger than memory",
    "data_parallel": "Data-parallel training with torchrun",
}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; None prints as an em dash."""
    def cell(value: object) -> str:
        return "—" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 3) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def header(record: dict) -> str:
    """Title, mode and the facts of the recorded run."""
    machine = record["machine"]
    lines = [
        f"### {TITLES.get(record['section'], record['section'])} — mode: {record['mode']}"
        + (f", device: {machine.get('gpu', record['device'])}" if record.get("device", "cpu") != "cpu" else ""),
        "",
        f"Recorded {record['date']} on {machine['cpu']} ("
        + (f"family {machine['cpu_family']}, model {machine['cpu_model_number']}, {float(machine['cpu_mhz']):.0f} MHz; "
           if machine.get("cpu_family") and machine.get("cpu_mhz") else "")
        + f"{machine['cores']} cores)"
        + (f" with {machine['gpu']} (CUDA {machine['cuda']})" if "gpu" in machine else "")
        + f", torch {machine['torch']} with "
        f"{machine['torch_threads']} thread(s), commit {record['commit']}; the section took {record['section_seconds']} s.",
    ]
    if record["mode"] != "full":
        lines += ["", f"> **{record['mode']} mode**: {record['mode_note']}."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# One renderer per section
# ------------------------------------------------------------------------------------------
def render_throughput(record: dict) -> str:
    s = record["settings"]
    corpus = s["corpus"]
    parts = [
        f"{corpus['train_documents']} training documents, {corpus['vocabulary']} words; median of "
        f"{s['timed_epochs']} epoch(s) after {s['warmup_epochs']} warm-up epoch(s).",
        table(
            ["model", "batch", "objective", "groups", "s / epoch", "documents / s"],
            [[r["model"], r["batch_size"], r["objective"], r["groups"], _fmt(r["seconds_per_epoch"], 3),
              f"{r['documents_per_second']:.0f}"] for r in record["rows"]],
        ),
        "HFVAE time per epoch over the baselines' (`elbo-closed-form`: the textbook ELBO; `vae`: the same "
        "value through the HFVAE estimator):",
        table(
            ["model", "batch", "HFVAE / closed-form ELBO", "HFVAE / vae preset"],
            [[r["model"], r["batch_size"], _fmt(r["hfvae_over_closed_form_elbo"], 2), _fmt(r["hfvae_over_vae_preset"], 2)]
             for r in record["ratios"]],
        ),
        "Targets (HFVAE at most 1.25x the plain ELBO at batch 200, 1.5x at batch 1024):",
        "\n".join(_target_line(t) for t in record["targets"]),
    ]
    return "\n\n".join(parts)


def _target_line(target: dict) -> str:
    if not target["measured"]:
        return f"- batch {target['batch_size']} (limit {target['limit']}x): not measured in this mode"
    verdict = "pass" if target["pass"] else "**fail**"
    baseline = "closed-form ELBO" if target["baseline"] == "closed_form_elbo" else "vae preset"
    return (f"- batch {target['batch_size']}, {target['model']}, against the {baseline}: "
            f"{target['ratio']:.2f}x (limit {target['limit']}x): {verdict}")


def render_speedup(record: dict) -> str:
    s = record["settings"]
    return "\n\n".join([
        f"ProdLDA on {s['corpus']['train_documents']} documents, {s['corpus']['vocabulary']} words: commit "
        f"{s['before_commit']} (before) against this run's commit (after), each measurement in a fresh process, "
        f"median of {s['timed_epochs']} epoch(s) after {s['warmup_epochs']} warm-up epoch(s).",
        table(
            ["batch", "objective", "groups", "before: s / epoch", "after: s / epoch", "speed-up"],
            [[r["batch_size"], r["objective"], r["groups"], _fmt(r["before_seconds_per_epoch"], 3),
              _fmt(r["after_seconds_per_epoch"], 3), f"{r['speedup']:.2f}x"] for r in record["rows"]],
        ),
        "HFVAE time per epoch over the closed-form ELBO's:",
        table(["batch", "before", "after"], [[r["batch_size"], f"{r['before']:.2f}x", f"{r['after']:.2f}x"]
                                             for r in record["ratios"]]),
    ])


def render_growth(record: dict) -> str:
    s = record["settings"]
    base = s["base"]
    rows = []
    for r in record["rows"]:
        value = r["value"]
        if r["dimension"] == "vocabulary":
            value = f"{r['value']} (asked {r['requested']})"
        elif r["dimension"] == "corpus":
            value = f"x{r['value']} ({r['documents']} documents)"
        rows.append([r["dimension"], value, _fmt(r["seconds_per_epoch"], 3), f"{r['documents_per_second']:.0f}"])
    exponents = [[d, _fmt(e, 2)] for d, e in record["exponents"].items()]
    return "\n\n".join([
        f"Base point: {base['model']}, {base['objective']} {base['groups']}, batch {base['batch_size']}, "
        f"{base['vocabulary']} words, {base['documents']} documents; one dimension moves at a time. Median of "
        f"{s['timed_epochs']} epoch(s) after {s['warmup_epochs']} warm-up epoch(s).",
        table(["dimension", "value", "s / epoch", "documents / s"], rows),
        "Growth exponents (time per epoch ~ size^exponent, least squares in log-log):",
        table(["dimension", "exponent"], exponents),
    ])


def render_memory(record: dict) -> str:
    parts = []
    fit = record.get("fit")
    if fit:
        parts.append(table(
            ["process", "documents", "epochs", "seconds", "peak RSS (MiB)"],
            [["`python -c 'import topicvae.cli'` (the floor)", None, None, None, fit["imports_only_peak_rss_mib"]],
             ["`topicvae fit` (defaults)", fit["documents"], fit["epochs"], fit["seconds"], fit["peak_rss_mib"]]],
        ))
    parts += [f"- {note}" for note in record.get("notes", [])]
    parts.append("The objective alone (forward + backward), each path in a fresh process (`native`: the fused "
                 "Gaussian kernels in C++; `compiled`: the same through `torch.compile`; `fused`: run eagerly; `generic`: autograd "
                 "over checkpointed blocks), timed at the second call; the first call (compiling, for `compiled`) "
                 "is shown apart:")
    parts.append(table(
        ["path", "B", "dims", "forward + backward (s)", "ns / pairwise entry", "first call (s)",
         "peak RSS (MiB)", "RSS before (MiB)"],
        [[r["path"], r["batch"], r["dims"], r["seconds_forward_backward"], r.get("nanoseconds_per_pairwise_entry"),
          r.get("first_call_seconds"), r["peak_rss_mib"], r["rss_before_mib"]]
         for r in record["objective"]],
    ))
    return "\n\n".join(parts)


def render_vectorizer(record: dict) -> str:
    docs = record["settings"]["documents"]
    return "\n\n".join([
        f"{docs['train (fit_transform)']} raw training posts (fit_transform) and {docs['test (transform)']} raw test "
        f"posts (transform); median of {record['settings']['repeats']} repeat(s).",
        table(
            ["vectorizer", "fit_transform (s)", "documents / s", "transform (s)", "documents / s", "words",
             "same vocabulary as topicvae", "vocabulary overlap", "same counts"],
            [[r["vectorizer"], _fmt(r["fit_transform_seconds"], 2), f"{r['fit_transform_documents_per_second']:.0f}",
              _fmt(r["transform_seconds"], 2), f"{r['transform_documents_per_second']:.0f}", r["vocabulary"],
              "yes" if r["same_vocabulary_as_topicvae"] else "no", _fmt(r["vocabulary_overlap"], 3),
              "yes" if r["same_counts_as_topicvae"] else "no"] for r in record["rows"]],
        ),
    ])


def render_machine_limit(record: dict) -> str:
    s = record["settings"]
    profile = record["profile"]
    layers = ", ".join(f"{layer['in']}→{layer['out']}" for layer in s["layers"])
    others = [op for op in profile["top_ops"] if op["op"] not in MATMUL_OPS][:3]
    bound = (
        f"In one profiled epoch ({profile['setup']}), matrix products take {100 * profile['matmul_share']:.0f}% of "
        f"the self CPU time; the largest other operators are "
        + ", ".join(f"`{op['op']}` ({100 * op['share']:.0f}%)" for op in others) + "."
    )
    return "\n\n".join([
        table(["square matmul n", "GFLOP/s"], [[r["size"], r["gflops"]] for r in record["square_matmuls"]]),
        f"Peak (fastest square float32 `torch.mm`): **{record['peak_gflops']} GFLOP/s**. Model: {s['model']}, "
        f"linear layers {layers}, {s['documents']} documents. FLOPs count {s['flop_count']}; not counted: {s['not_counted']}.",
        table(
            ["objective", "batch", "s / epoch", "matmul GFLOP / epoch", "achieved GFLOP/s", "% of peak",
             "matmul-only s / epoch at the model's shapes", "GFLOP/s at the model's shapes", "matmul share of the epoch"],
            [[r["objective"], r["batch_size"], _fmt(r["seconds_per_epoch"], 3), _fmt(r["matmul_flops_per_epoch"] / 1e9, 1),
              r["achieved_gflops"], f"{100 * r['fraction_of_peak']:.1f}%", _fmt(r["matmul_seconds_per_epoch_at_model_shapes"], 3),
              r["model_shape_gflops"], f"{100 * r['matmul_share_of_epoch']:.0f}%"] for r in record["rows"]],
        ),
        bound,
        table(["operator", "self CPU (s)", "share"],
              [[f"`{op['op']}`", op["self_seconds"], f"{100 * op['share']:.1f}%"] for op in profile["top_ops"]]),
    ])


def _perplexity(row: dict, name: str) -> str | None:
    entry = row.get("perplexity", {}).get(name)
    return None if entry is None else f"{entry['value']:.0f}"


def render_quality(record: dict) -> str:
    s = record["settings"]
    corpus = s["corpus"]
    gaps = [
        f"- {metric.replace('npmi_document', 'NPMI, whole documents').replace('npmi_window', 'NPMI, window 10')}: "
        f"best topicvae ({g['topicvae']}) {'ahead of' if g['difference'] >= 0 else 'behind'} the best peer "
        f"({g['peer']}) by {abs(g['difference']):.3f}"
        for metric, g in record["npmi_gap"].items()
    ]
    return "\n\n".join([
        f"{corpus['train_documents']} training and {corpus['test_documents']} test documents, {corpus['vocabulary']} "
        f"words; topicvae {s['epochs']} epoch(s); seed 0. NPMI: {s['npmi']}, against the {s['coherence_reference']}. "
        f"Perplexity: {s['perplexity']}.",
        table(
            ["model", "fit (s)", "NPMI, whole documents", "NPMI, window 10", "diversity (top 25)",
             "test perplexity bound, corpus", "bound, per-document", "plug-in perplexity"],
            [[r["model"], _fmt(r["fit_seconds"], 1), _fmt(r["npmi_document"], 3), _fmt(r["npmi_window"], 3),
              _fmt(r["diversity"], 3), _perplexity(r, "corpus"), _perplexity(r, "per_document"), _perplexity(r, "plug_in")]
             for r in record["rows"]],
        ),
        "\n".join(gaps),
        "Fitting settings: " + "; ".join(f"{r['model']}: " + ", ".join(f"{k} {v}" for k, v in r["settings"].items())
                                          for r in record["rows"]) + ".",
    ])


def render_prodlda_paper(record: dict) -> str:
    s = record["settings"]
    check = s["mapping_check_on_test_posts"]

    def published(row: dict, key: str) -> object:
        return (row.get("published") or {}).get(key)

    return "\n\n".join([
        f"Test: {s['test']['documents']} documents of the paper's test set ({s['test']['tokens']} tokens, "
        f"{s['vocabulary']} words). Train: {s['train']['documents']} {s['train']['source']}. {s['epochs']} epoch(s), "
        f"batch {s['batch_size']}, seed 0.",
        f"Mapping check: the bydate test posts mapped the same way against the paper's own test documents "
        f"({check['documents_compared']} aligned posts): {check['token_ratio_ours_over_theirs']}x their tokens, "
        f"count-vector cosine mean {check['mean_cosine']}, median {check['median_cosine']}.",
        table(
            ["model", "topics", "NPMI, whole documents", "NPMI, window 10", "published NPMI",
             "perplexity, per-document", "corpus", "published perplexity", "fit (s)"],
            [[r["family"] + (f" ({r['settings']['groups']})" if r["family"].endswith("HFVAE") else ""), r["topics"],
              _fmt(r.get("npmi_document"), 3), _fmt(r.get("npmi_window"), 3), published(r, "npmi"),
              _perplexity(r, "per_document"), _perplexity(r, "corpus"), published(r, "perplexity"),
              _fmt(r.get("fit_seconds"), 1) if "diverged" not in r else "diverged"] for r in record["rows"]],
        ),
        *[f"- {r['family']} with {r['topics']} topics diverged: {r['diverged']}" for r in record["rows"] if "diverged" in r],
        f"Protocol differences: NPMI here is against {s['coherence_reference']}; published: {s['published']}. "
        "The training documents are a reconstruction, not the paper's.",
    ])


def render_streaming(record: dict) -> str:
    settings = record["settings"]
    return "\n\n".join([
        f"{settings['corpus']}. Streamed: {settings['streamed']}. In memory: {settings['in_memory']}. "
        f"Peak RSS: {settings['peak_rss']}. Target: {settings['target']}.",
        table(
            ["path", "R", "documents", "corpus (MiB)", "counting (s)", "one epoch (s)", "counting docs/s",
             "training docs/s", "docs/s overall", "peak RSS (MiB)"],
            [[r["path"], r["repeats"], r["documents"], r["corpus_mib"], r["count_seconds"], r["epoch_seconds"],
              r["count_documents_per_second"], r["epoch_documents_per_second"], r["documents_per_second"],
              r["peak_rss_mib"]] for r in record["rows"]],
        ),
    ])


def render_data_parallel(record: dict) -> str:
    settings = record["settings"]
    summary = record["summary"]
    return "\n\n".join([
        f"{settings['corpus']}. {settings['commands']}. Scoring: {settings['scoring']}. {settings['epochs']} epochs.",
        table(
            ["launch", "seed", "NPMI, whole documents", "NPMI, window 10", "diversity", "informative topics",
             "s per epoch", "wall (s)"],
            [[r["launch"], r["seed"], r["npmi_document"], r["npmi_window"], r["diversity"], r["active_topics"],
              r["seconds_per_epoch"], r["wall_seconds"]] for r in record["rows"]],
        ),
        table(
            ["launch", "mean NPMI", "sd over seeds", "mean s per epoch"],
            [[name, s["npmi_document_mean"], s["npmi_document_sd"], s["seconds_per_epoch_mean"]] for name, s in summary.items()],
        ),
    ])


def render_objective(record: dict) -> str:
    """topicvae's objective (eager, compiled, native) beside the naive [B, B, D] one, and the exp limit."""
    settings = record["settings"]
    equality = record["equality"]["max_abs_difference"]
    limits = {row["batch"]: row["ns_per_exp"] for row in record["limits"]}
    # records made before the posterior widths existed measured the "wide" ones only
    ratios = {(row["batch"], row.get("width", "wide"), row["implementation"]): row for row in record["comparisons"]}
    shares = record.get("subnormal_shares", {})
    rows = []
    for row in record["rows"]:
        width = row.get("width", "wide")
        ratio = ratios.get((row["batch"], width, row["implementation"]), {})
        share = shares.get(f"{width} {row['batch']}")
        rows.append([
            row["batch"], width, "—" if share is None else f"{share:.0%}", row["implementation"], _fmt(row["seconds"], 4),
            _fmt(row["ns_per_pairwise_entry"], 2), _fmt(2 * limits.get(row["batch"], float("nan")), 2),
            _fmt(row["peak_memory_mib"], 1), _fmt(ratio.get("time_over_naive")), _fmt(ratio.get("memory_over_naive"), 4),
        ])
    widths = settings.get("widths", {"wide": "scales U(0.2, 1.0), means N(0, 1)"})
    lines = [
        f"D = {settings['dims']} ({settings['groups']}), N = {settings['dataset_size']}, {settings['weights']}, "
        f"{settings['threads']} thread(s) on {settings['device_name']}. Posteriors: "
        + "; ".join(f"{name}: {text}" for name, text in widths.items())
        + f". Naive: {settings['naive']}. "
        f"Each time is the {settings['statistic']}. Checked equal to the naive terms in float64 "
        f"(B = {record['equality']['batch']}): largest difference of terms {equality['eager']['terms']:.1e} (eager) and "
        f"{equality['compiled']['terms']:.1e} (compiled), of gradients "
        f"{max(equality['eager']['gradients'], equality['compiled']['gradients']):.1e}"
        + (f"; the native kernels, float32 only: terms {equality['native']['terms']:.1e}, gradients "
           f"{equality['native']['gradients_relative']:.1e} of the largest (float32 rounding)" if "native" in equality else "")
        + ".",
        "",
        table(["B", "posteriors", "subnormal exps", "implementation", "forward + backward (s)", "ns / pairwise entry",
               "limit: 2 exps (ns)", "peak memory (MiB)", "time / naive", "memory / naive"], rows),
        "",
        f"The limit is twice the measured cost of one exp in {settings['limit']} (the estimator needs at least "
        "one exp per entry forward and one backward). 'subnormal exps': the share of the per-dimension softmax "
        "terms whose exp is subnormal in float32 (below e^-87.3), where the CPU's exp is slow. A missing naive row: "
        "its [B, B, D] tensors do not fit in half the memory.",
    ]
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[dict], str]] = {
    "throughput": render_throughput,
    "speedup": render_speedup,
    "growth": render_growth,
    "memory": render_memory,
    "vectorizer": render_vectorizer,
    "machine_limit": render_machine_limit,
    "objective": render_objective,
    "quality": render_quality,
    "prodlda_paper": render_prodlda_paper,
    "streaming": render_streaming,
    "data_parallel": render_data_parallel,
}


# ------------------------------------------------------------------------------------------
# All results into the document
# ------------------------------------------------------------------------------------------
def load_results(results_dir: Path) -> list[dict]:
    """Every ``<section>-<mode>.json`` in section order, full before quick before smoke."""
    records = []
    for path in results_dir.glob("*-*.json"):
        section, _, mode = path.stem.rpartition("-")
        if section.split(".")[0] in SECTIONS and mode in MODE_ORDER:  # "<section>.cuda": a GPU run
            records.append(json.loads(path.read_text()))
    records.sort(key=lambda r: (SECTIONS.index(r["section"]), r.get("device", "cpu") != "cpu", MODE_ORDER.index(r["mode"])))
    return records


def render_all(results_dir: Path) -> str:
    """The Markdown of every recorded result, or a line saying there is none."""
    records = load_results(results_dir)
    if not records:
        return NO_RESULTS
    return "\n\n".join(header(record) + "\n\n" + RENDERERS[record["section"]](record) for record in records)


def update_document(document: Path, tables: str) -> None:
    """Replace what lies between the markers of ``document`` with ``tables``."""
    text = document.read_text()
    if TABLES_START not in text or TABLES_END not in text:
        raise SystemExit(f"{document} lacks the markers {TABLES_START} and {TABLES_END}: add them where the tables go")
    before, rest = text.split(TABLES_START, 1)
    _, after = rest.split(TABLES_END, 1)
    document.write_text(f"{before}{TABLES_START}\n\n{tables}\n\n{TABLES_END}{after}")
