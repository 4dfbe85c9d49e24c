"""20 Newsgroups: HFVAE (2 groups x 25 topics, beta 0.1, gamma 4) against a plain VAE (50 topics),
with scikit-learn's LDA on the same bag-of-words, and NVDM.

The experiment of the paper's Section 5.6 over several seeds, judged on what the paper claims:

1. ``--fit``: fit every model on the stripped bydate training posts and save it (a model
   already saved is reused; ``--jobs`` fits in parallel, ``--device cuda`` on a GPU);
2. ``--score``: score every saved model on the test posts (coherence against the training
   posts, NPMI over all and over active topics, diversity, perplexity, the sorted per-topic
   I(x; z_k) and the pruning it gives, the associations between active topics with their
   permutation null and each topic's dominant newsgroup, the agreement of ``transform`` with
   the topics' words on the training posts), and scikit-learn's LDA with the same vocabulary
   for the same seeds, in the same run; write every figure to a JSON file, the sorted MI
   plots, and print the tables.

    python recipes/newsgroups_hfvae_vs_vae.py --source ../shared/data/20newsgroups --work runs/ --fit --score

With ``--jobs N`` the fits run in N processes; set FIT_THREADS to the threads each may use (the
recorded run: ``FIT_THREADS=1 ... --fit --jobs 8 --device cuda`` on an H200).
``--source`` is a local copy of the bydate corpus (jsonl.gz files or the bydate folders); without
it scikit-learn downloads and caches the corpus.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

RUNS = {
    "hfvae": {"label": "ProdLDA HFVAE 2x25 (beta 0.1, gamma 4)", "model": "prodlda", "groups": "2x25", "objective": "hfvae", "beta": 0.1, "gamma": 4.0},
    "vae": {"label": "ProdLDA VAE 50", "model": "prodlda", "groups": "50", "objective": "vae"},
    "nvdm-hfvae": {"label": "NVDM HFVAE 2x25 (beta 0.1, gamma 4)", "model": "nvdm", "groups": "2x25", "objective": "hfvae", "beta": 0.1, "gamma": 4.0},
    "nvdm-vae": {"label": "NVDM VAE 50", "model": "nvdm", "groups": "50", "objective": "vae"},
}


def _corpus(work: Path, source: Path | None) -> None:
    for subset in ("train", "test"):
        if not (work / f"{subset}.txt").is_file():
            command = [sys.executable, "-m", "topicvae.cli", "data", "20newsgroups", "--subset", subset, "--out", str(work / f"{subset}.txt"),
                       "--labels", str(work / f"{subset}.labels.txt"), *(["--source", str(source)] if source else [])]
            subprocess.run(command, check=True)


def fit_one(kind: str, seed: int, work: Path, epochs: int, device: str, batch_size: int = 200) -> str:
    import torch

    if "FIT_THREADS" in os.environ:  # parallel fits (--jobs) share the cores: say how many each takes
        torch.set_num_threads(int(os.environ["FIT_THREADS"]))
    from topicvae import TopicModel
    from topicvae.text.corpus import read_corpus

    options = {k: v for k, v in RUNS[kind].items() if k != "label"}
    model = TopicModel(options.pop("model"), **options, epochs=epochs, batch_size=batch_size, seed=seed, device=device)
    started = time.perf_counter()
    model.fit(read_corpus(work / "train.txt"))
    seconds = time.perf_counter() - started
    model.device = "cpu"
    model.save(work / "models" / f"{kind}-s{seed}")
    (work / "models" / f"{kind}-s{seed}" / "seconds.txt").write_text(f"{seconds:.1f}\n")
    return f"{kind}-s{seed} in {seconds:.0f} s"


def _top_ids(scores: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :n]


def score_model(kind: str, seed: int, work: Path, train_docs, test_docs, test_labels) -> dict:
    from topicvae import TopicModel
    from topicvae.topics.analysis import transform_agreement
    from topicvae.topics.evaluation import evaluate

    directory = work / "models" / f"{kind}-s{seed}"
    model = TopicModel.load(directory)
    report = evaluate(
        model, test_docs, reference_docs=train_docs, corpus_name="20 Newsgroups bydate test (stripped)",
        reference_name="20 Newsgroups bydate train (stripped)", n_pairs=10, within_groups=len(model.groups_) == 1,
        labels=test_labels, max_documents=None, plots=work / "plots" / f"{kind}-s{seed}",
    )
    for matrix in ("partial", "null_quantile"):  # 50 x 50 per run: the strongest pairs carry what the tables need
        report["correlations"].pop(matrix)
    active_labels = set(report["information"]["active_topics"])
    columns = [k for k, label in enumerate(model.topic_labels()) if label in active_labels]
    train_counts = model.vectorizer_.transform(train_docs)
    train_counts = train_counts[train_counts.getnnz(axis=1) > 0]  # no representation without a vocabulary word
    agreement = transform_agreement(model.transform(train_counts), train_counts, _top_ids(model.topic_word_scores(), 10))
    return {
        "run": kind, "label": RUNS[kind]["label"], "seed": seed,
        "training_seconds": float((directory / "seconds.txt").read_text()) if (directory / "seconds.txt").is_file() else None,
        "test": report,
        "agreement": {
            "word_share": agreement.word_share.tolist(), "log_length": agreement.log_length.tolist(), "active_columns": columns,
        },
    }


def score_lda(seed: int, train_counts, test_counts, vocabulary, train_docs, test_labels, vectorizer) -> dict:
    """scikit-learn's LDA (batch variational Bayes, its default priors) on the same bag-of-words."""
    from sklearn.decomposition import LatentDirichletAllocation

    from topicvae.topics.analysis import label_alignment, transform_agreement
    from topicvae.topics.coherence import document_npmi, gensim_coherence, topic_diversity

    started = time.perf_counter()
    lda = LatentDirichletAllocation(n_components=50, learning_method="batch", max_iter=100, random_state=seed, n_jobs=1)
    lda.fit(train_counts)
    seconds = time.perf_counter() - started
    top = _top_ids(lda.components_, 25)
    words = [[vocabulary[w] for w in row] for row in top]
    tokenized = vectorizer.tokenize(train_docs)
    test_theta = lda.transform(test_counts)
    keep = np.asarray(test_counts.sum(1)).ravel() > 0
    alignment = label_alignment(test_theta[keep], [label for label, k in zip(test_labels, keep) if k])
    agreement = transform_agreement(lda.transform(train_counts), train_counts, top[:, :10])
    return {
        "run": "lda", "label": "scikit-learn LDA 50 (batch VB, 100 iterations)", "seed": seed, "training_seconds": seconds,
        "npmi_document": document_npmi([w[:10] for w in words], train_counts, vocabulary).mean,
        "npmi_window": gensim_coherence([w[:10] for w in words], tokenized, measure="c_npmi", window_size=10).mean,
        "diversity": topic_diversity(words),
        "perplexity": float(lda.perplexity(test_counts[keep])),
        "purity": alignment.purity, "nmi": alignment.nmi,
        "agreement": {"word_share": agreement.word_share.tolist(), "log_length": agreement.log_length.tolist()},
        "topics": [w[:10] for w in words],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="local copy of 20 Newsgroups bydate")
    parser.add_argument("--work", type=Path, required=True, help="directory for corpora, models and results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--nvdm-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=200, help="documents per step (the sample that estimates q(z))")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--fit", action="store_true", help="fit (and save) the models not saved yet")
    parser.add_argument("--score", action="store_true", help="score the saved models and LDA; write results.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    _corpus(args.work, args.source)
    jobs = [(kind, seed) for seed in args.seeds for kind in ("hfvae", "vae")]
    jobs += [(kind, seed) for seed in args.nvdm_seeds for kind in ("nvdm-hfvae", "nvdm-vae")]
    if args.fit:
        todo = [(kind, seed) for kind, seed in jobs if not (args.work / "models" / f"{kind}-s{seed}" / "weights.pt").is_file()]
        if args.jobs == 1:
            for kind, seed in todo:
                print("fitted", fit_one(kind, seed, args.work, args.epochs, args.device, args.batch_size), flush=True)
        else:
            import multiprocessing

            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(fit_one, kind, seed, args.work, args.epochs, args.device, args.batch_size) for kind, seed in todo]
                for future in as_completed(futures):
                    print("fitted", future.result(), flush=True)
    if args.score:
        from topicvae import __version__
        from topicvae.text.corpus import read_corpus
        from topicvae.text.vectorizer import TextVectorizer

        train_docs, test_docs = read_corpus(args.work / "train.txt"), read_corpus(args.work / "test.txt")
        test_labels = (args.work / "test.labels.txt").read_text().splitlines()
        runs = []
        for kind, seed in jobs:
            if (args.work / "models" / f"{kind}-s{seed}" / "weights.pt").is_file():
                print(f"scoring {kind}-s{seed}", flush=True)
                runs.append(score_model(kind, seed, args.work, train_docs, test_docs, test_labels))
        vectorizer = TextVectorizer()
        train_counts = vectorizer.fit_transform(train_docs)
        test_counts = vectorizer.transform(test_docs)
        for seed in args.seeds:
            print(f"fitting and scoring LDA seed {seed}", flush=True)
            runs.append(score_lda(seed, train_counts, test_counts, list(vectorizer.vocabulary_), train_docs, test_labels, vectorizer))
        results = {
            "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, torch threads {__import__('torch').get_num_threads()}",
            "topicvae": __version__, "commit": _commit(), "epochs": args.epochs, "batch_size": args.batch_size,
            "train_documents": len(train_docs), "test_documents": len(test_docs), "runs": runs,
        }
        (args.work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        print(markdown_tables(results))


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _mean_sd(values, digits: int) -> str:
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(values):
        return "—"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else f"{values[0]:.{digits}f}"


def _number(value, digits: int) -> str:
    """A figure of the table, or a dash where there is none (no active topic after a short fit)."""
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def _agreement(run: dict) -> tuple[float, float, float]:
    word_share = np.asarray(run["agreement"]["word_share"])
    log_length = np.abs(run["agreement"]["log_length"])
    columns = run["agreement"].get("active_columns", list(range(len(word_share))))
    if not columns:  # no active topic (a short fit): nothing to agree
        return float("nan"), float("nan"), float("nan")
    return float(np.median(word_share[columns])), float(word_share[columns].min()), float(log_length[columns].max())


def markdown_tables(results: dict) -> str:
    """Per run: the figures the issue asks for; then each HFVAE seed's ten strongest pairs."""
    lines = [
        "| run | seed | active (gap, largest step) | smallest active / largest pruned I, nats | NPMI doc all / active | NPMI window all / active "
        "| diversity all / active | perplexity corpus / per doc | agreement median / min, active | max \\|corr(theta, log len)\\| | purity / NMI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        median, least, length = _agreement(run)
        if run["run"] == "lda":
            lines.append(
                f"| lda | {run['seed']} | 50 (—) | — | {run['npmi_document']:.3f} | {run['npmi_window']:.3f} | {run['diversity']:.3f} "
                f"| {run['perplexity']:.0f} (sklearn bound) | {median:.2f} / {least:.2f} | {length:.2f} | {run['purity']:.3f} / {run['nmi']:.3f} |"
            )
            continue
        t = run["test"]
        info = t["information"]
        mi = info["per_topic"]
        active = [mi[label] for label in info["active_topics"]]
        pruned = [mi[label] for label in info["pruned_topics"]]
        gap = f"factor {info['gap']:.0f}" if info["gap"] else f"none, {info['largest_ratio']:.1f}"
        c = t["coherence"]
        lines.append(
            f"| {run['run']} | {run['seed']} | {len(active)} ({gap}) | {_number(min(active) if active else None, 4)} / {_number(max(pruned) if pruned else None, 4)} "
            f"| {c['npmi_document']['mean']:.3f} / {_number(c['npmi_document']['mean_active_topics'], 3)} "
            f"| {c['npmi_window']['mean']:.3f} / {_number(c['npmi_window']['mean_active_topics'], 3)} "
            f"| {t['diversity']['value']:.3f} / {_number(t['diversity']['active_topics'], 3)} "
            f"| {t['perplexity']['corpus_level']['value']:.0f} / {t['perplexity']['per_document']['value']:.0f} "
            f"| {_number(median, 2)} / {_number(least, 2)} | {_number(length, 2)} | {t['labels']['purity']:.3f} / {t['labels']['nmi']:.3f} |"
        )
    for run in results["runs"]:
        if run["run"] != "hfvae":
            continue
        lines += ["", f"HFVAE seed {run['seed']}: the ten strongest associations across groups on the test posts", "",
                  "| partial | null quantile | significant | kind | topic | top words | newsgroup | topic | top words | newsgroup |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        per_topic = run["test"]["labels"]["per_topic"]
        for pair in run["test"]["correlations"]["strongest"]:
            a, b = pair["topic_a"], pair["topic_b"]
            lines.append(
                f"| {pair['partial']:+.3f} | {pair['null_quantile']:.3f} | {'yes' if pair['significant'] else 'no'} | {pair['kind']} "
                f"| {a} | {' '.join(pair['words_a'][:7])} | {per_topic[a]['label']} ({per_topic[a]['share']:.0%}) "
                f"| {b} | {' '.join(pair['words_b'][:7])} | {per_topic[b]['label']} ({per_topic[b]['share']:.0%}) |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
