"""20 Newsgroups: HFVAE (2 groups x 25 topics, beta 0.1, gamma 4) against a plain VAE (50 topics).

The experiment of the paper's Section 5.6, over several seeds:

1. write the stripped bydate train and test posts one per line (``topicvae data 20newsgroups``);
2. fit both models with ``topicvae fit`` for every seed (a fit whose directory already holds a
   model is reused, so an interrupted run can be continued);
3. score every model with the library's ``evaluate`` on the test posts (coherence against the
   training posts) and with the information analysis on the training posts;
4. write every figure to a JSON file and the summary tables as Markdown.

    python recipes/newsgroups_hfvae_vs_vae.py --source ../shared/data/20newsgroups --work runs/

``--source`` is a local copy of the bydate corpus (jsonl.gz files or the bydate folders); without
it scikit-learn downloads and caches the corpus. Each fit takes about 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from topicvae import TopicModel, __version__
from topicvae.evaluation import evaluate, information_summary
from topicvae.text import read_corpus

MODELS = {
    "hfvae": {"label": "HFVAE 2x25 (alpha 1, beta 0.1, gamma 4)", "args": ["--groups", "2x25", "--beta", "0.1", "--gamma", "4"]},
    "vae": {"label": "VAE 50 (all weights 1)", "args": ["--objective", "vae", "--groups", "50"]},
}
STRONG_CORRELATION = 0.2  # |r| counted as a strong topic pair in the summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="local copy of 20 Newsgroups bydate")
    parser.add_argument("--work", type=Path, required=True, help="directory for corpora, models and results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--mi-threshold", type=float, default=0.1)
    parser.add_argument("--results", type=Path, default=None, help="JSON results file (default WORK/results.json)")
    parser.add_argument("--tables-only", action="store_true", help="print the tables of an existing results file")
    args = parser.parse_args(argv)
    if args.tables_only:
        print(markdown_tables(json.loads((args.results or args.work / "results.json").read_text())))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    train_path, test_path = args.work / "train.txt", args.work / "test.txt"
    for subset, path in (("train", train_path), ("test", test_path)):
        if not path.is_file():
            source = ["--source", str(args.source)] if args.source else []
            _topicvae(["data", "20newsgroups", "--subset", subset, *source, "--out", str(path)])

    train_docs, test_docs = read_corpus(train_path), read_corpus(test_path)
    runs = []
    for seed in args.seeds:
        for kind, spec in MODELS.items():
            model_dir = args.work / f"{kind}-s{seed}"
            if not (model_dir / "weights.pt").is_file():
                log = args.work / f"{kind}-s{seed}.log"
                with log.open("w") as handle:
                    _topicvae(["fit", str(train_path), *spec["args"], "--epochs", str(args.epochs), "--seed", str(seed),
                               "--out", str(model_dir), "--no-progress"], stdout=handle)
            print(f"evaluating {model_dir}", flush=True)
            runs.append(_score(kind, seed, model_dir, train_docs, test_docs, args.mi_threshold))

    results = {
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads {__import__('torch').get_num_threads()}",
        "topicvae": __version__,
        "commit": _commit(),
        "train_documents": len(train_docs),
        "test_documents": len(test_docs),
        "epochs": args.epochs,
        "mi_threshold": args.mi_threshold,
        "runs": runs,
    }
    results_path = args.results or args.work / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {results_path}\n")
    print(markdown_tables(results))


def _topicvae(arguments: list[str], stdout=None) -> None:
    command = [sys.executable, "-m", "topicvae.cli", *arguments]
    completed = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"topicvae {' '.join(arguments)} failed: {completed.stderr.strip().splitlines()[-1]}")


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _score(kind: str, seed: int, model_dir: Path, train_docs: list[str], test_docs: list[str], mi_threshold: float) -> dict:
    model = TopicModel.load(model_dir)
    started = time.perf_counter()
    report = evaluate(
        model, test_docs, reference_docs=train_docs, corpus_name="20 Newsgroups bydate test (stripped)",
        reference_name="20 Newsgroups bydate train (stripped)", mi_threshold=mi_threshold, n_pairs=10,
        within_groups=len(model.groups_) == 1,
    )
    train_information = information_summary(model, model.information(train_docs), mi_threshold)
    labels = model.topic_labels()
    correlation = model.topic_correlation(model.vectorizer_.transform(test_docs))
    groups_of = [label.split(":")[0] for label in labels]
    upper = np.triu_indices(len(labels), k=1)
    across = np.array([groups_of[i] != groups_of[j] for i, j in zip(*upper)])
    values = np.abs(correlation[upper])
    # run.json holds the timings since it was split from report.json; older runs kept them there
    facts_file = model_dir / "run.json" if (model_dir / "run.json").is_file() else model_dir / "report.json"
    run_facts = json.loads(facts_file.read_text())
    return {
        "model": kind,
        "label": MODELS[kind]["label"],
        "seed": seed,
        "directory": model_dir.name,
        "training_seconds": run_facts.get("training_seconds"),
        "evaluation_seconds": time.perf_counter() - started,
        "test": report,
        "train_information": train_information,
        "strong_pairs": {
            "threshold": STRONG_CORRELATION,
            "across_groups": int((values[across] >= STRONG_CORRELATION).sum()),
            "within_groups": int((values[~across] >= STRONG_CORRELATION).sum()),
            "largest_across": float(values[across].max()) if across.any() else None,
            "largest_within": float(values[~across].max()) if (~across).any() else None,
        },
    }


def _mean_sd(values: list[float], digits: int) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else f"{values[0]:.{digits}f}"


def _p_value(p: float) -> str:
    return "< 1e-300" if p < 1e-300 else f"{p:.1e}"  # below double precision's normal range


def markdown_tables(results: dict) -> str:
    """The summary table (mean ± sample standard deviation over seeds), one row per run, and the HFVAE pairs."""
    lines = [
        "| model | seeds | topics with I(x; z_k) >= {t} nats, test (train) | NPMI, whole documents | NPMI, window 10 | C_V | UMass "
        "| diversity (top 25) | test perplexity, corpus / per-document | I(x; z), test (train) | TC between groups | TC within groups (sum) "
        "| largest \\|r\\| between topics, across / within groups |".format(t=results["mi_threshold"]),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in MODELS:
        runs = [run for run in results["runs"] if run["model"] == kind]
        if not runs:
            continue
        test = [run["test"] for run in runs]
        train = [run["train_information"] for run in runs]
        column = lambda get, digits: _mean_sd([get(t) for t in test], digits)  # noqa: E731
        lines.append(
            "| " + " | ".join([
                runs[0]["label"],
                ", ".join(str(run["seed"]) for run in runs),
                f"{_mean_sd([len(t['information']['active_topics']) for t in test], 1)} ({_mean_sd([len(t['active_topics']) for t in train], 1)})",
                column(lambda t: t["coherence"]["npmi_document"]["mean"], 3),
                column(lambda t: t["coherence"]["npmi_window"]["mean"], 3),
                column(lambda t: t["coherence"]["c_v"]["mean"], 3),
                column(lambda t: t["coherence"]["u_mass"]["mean"], 2),
                column(lambda t: t["diversity"]["value"], 3),
                f"{column(lambda t: t['perplexity']['corpus_level']['value'], 0)} / {column(lambda t: t['perplexity']['per_document']['value'], 0)}",
                f"{column(lambda t: t['information']['mutual_information'], 2)} ({_mean_sd([t['mutual_information'] for t in train], 2)})",
                column(lambda t: t["information"]["tc_between"], 3) if len(test[0]["information"]["tc_within"]) > 1 else "— (one group)",
                column(lambda t: sum(t["information"]["tc_within"].values()), 2),
                " / ".join(
                    _mean_sd([run["strong_pairs"][key] for run in runs], 2) if runs[0]["strong_pairs"][key] is not None else "—"
                    for key in ("largest_across", "largest_within")
                ),
            ]) + " |"
        )
    lines += [
        "",
        "| run | seed | topics >= threshold, test (train) | NPMI doc / window | C_V | UMass | diversity | perplexity corpus / per-doc "
        "| I(x; z) test (train) | TC between | TC within (sum) | largest \\|r\\| across / within |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        t, train = run["test"], run["train_information"]
        info, pairs = t["information"], run["strong_pairs"]
        across = f"{pairs['largest_across']:.2f}" if pairs["largest_across"] is not None else "—"
        lines.append(
            f"| {run['model']} | {run['seed']} | {len(info['active_topics'])} ({len(train['active_topics'])}) "
            f"| {t['coherence']['npmi_document']['mean']:.3f} / {t['coherence']['npmi_window']['mean']:.3f} "
            f"| {t['coherence']['c_v']['mean']:.3f} | {t['coherence']['u_mass']['mean']:.2f} | {t['diversity']['value']:.3f} "
            f"| {t['perplexity']['corpus_level']['value']:.0f} / {t['perplexity']['per_document']['value']:.0f} "
            f"| {info['mutual_information']:.2f} ({train['mutual_information']:.2f}) "
            f"| {info['tc_between']:.3f} | {sum(info['tc_within'].values()):.2f} | {across} / {pairs['largest_within']:.2f} |"
        )
    hfvae = [run for run in results["runs"] if run["model"] == "hfvae"]
    if hfvae:
        first = hfvae[0]
        lines += [
            "",
            f"Five strongest cross-group pairs of the HFVAE model, seed {first['seed']}, under q(z) on the test posts:",
            "",
            "| r | adjusted p | topic | top words | topic | top words |",
            "|---|---|---|---|---|---|",
        ]
        for pair in first["test"]["correlations"]["strongest"][:5]:
            lines.append(
                f"| {pair['correlation']:.3f} | {_p_value(pair['p_adjusted'])} | {pair['topic_a']} | {' '.join(pair['words_a'][:8])} "
                f"| {pair['topic_b']} | {' '.join(pair['words_b'][:8])} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
