"""ProdLDA's architecture, measured: which of the original's choices help, and which let HFVAE prune.

Each variant is fitted with HFVAE (2x25, beta 0.1, gamma 4) and the plain VAE (50 topics) for
every seed on one bag-of-words, and scored on the same figures: the sorted per-topic
I(x; z_k) on held-out documents, NPMI of the top 10 words (whole documents, the training
documents as reference) over all topics, diversity of the top 25, held-out perplexity (the
ELBO bound, corpus-level and per document), and whether ``transform`` agrees with the topics
(``analysis.transform_agreement`` on the training documents).

    python recipes/prodlda_ablation.py --data DIR --out runs/ablation [--device cuda --jobs 12]

``DIR`` holds ``train.npz`` and ``test.npz`` (scipy sparse count matrices) and
``vocabulary.txt``, one word per line (build them with ``TextVectorizer``). Every fit writes
its model to ``OUT/models/NAME`` and its figures to ``OUT/runs/NAME.json``; a finished fit is
not redone, so an interrupted sweep continues where it stopped. ``OUT/summary.json`` and the
printed table collect them. The recorded seed-0 sweep is recipes/results/prodlda_ablation-seed0.json
(docs/analysis.md, "ProdLDA's architecture").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

#: The variants: the architecture options of ``TopicModel`` that each one sets.
VARIANTS: dict[str, dict] = {
    "legacy": {"encoder_input": "counts", "posterior_norm": "none", "word_shift": False, "init": "default", "dropout": 0.2},
    "original": {"encoder_input": "counts", "posterior_norm": "shift", "word_shift": True, "init": "xavier", "dropout": 0.6},
    "affine": {"encoder_input": "counts", "posterior_norm": "affine", "word_shift": True, "init": "xavier", "dropout": 0.2},
    "affine-log1p": {"encoder_input": "log1p", "posterior_norm": "affine", "word_shift": True, "init": "xavier", "dropout": 0.2},
    "affine-log1p-d06": {"encoder_input": "log1p", "posterior_norm": "affine", "word_shift": True, "init": "xavier", "dropout": 0.6},
    "affine-freq": {"encoder_input": "frequencies", "posterior_norm": "affine", "word_shift": True, "init": "xavier", "dropout": 0.2},
    "shift-log1p": {"encoder_input": "log1p", "posterior_norm": "shift", "word_shift": True, "init": "xavier", "dropout": 0.2},
    "affine-log1p-noshift": {"encoder_input": "log1p", "posterior_norm": "affine", "word_shift": False, "init": "default", "dropout": 0.2},
    "affine-log1p-cosine": {"encoder_input": "log1p", "posterior_norm": "affine", "word_shift": True, "init": "xavier", "dropout": 0.2, "lr_schedule": "cosine"},
    "proportions-affine-cosine": {"encoder_input": "proportions", "posterior_norm": "affine", "word_shift": True, "init": "xavier", "dropout": 0.2, "lr_schedule": "cosine"},
    "proportions-shift": {"encoder_input": "proportions", "posterior_norm": "shift", "word_shift": True, "init": "xavier", "dropout": 0.2},
    "nvdm-counts": {"model": "nvdm", "encoder_input": "counts"},
    "nvdm-log1p": {"model": "nvdm", "encoder_input": "log1p"},
}
OBJECTIVES = {
    "hfvae": {"objective": "hfvae", "groups": "2x25", "beta": 0.1, "gamma": 4.0},
    "vae": {"objective": "vae", "groups": "50"},
}


def load_data(folder: Path):
    import scipy.sparse as sp

    train = sp.load_npz(folder / "train.npz").tocsr().astype(np.float32)
    test = sp.load_npz(folder / "test.npz").tocsr().astype(np.float32)
    vocabulary = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    return train, test, vocabulary


def lift_scores(model) -> np.ndarray:
    """ProdLDA's topic-word scores without the decoder's per-word shift (what the topic changes)."""
    import torch
    import torch.nn.functional as F

    net = model.model_
    with torch.no_grad():
        one_hot = torch.eye(net.groups.num_columns, device=net.prior_loc.device)
        logits = net.topic_words(one_hot)
        normed = F.batch_norm(logits, net.word_norm.running_mean, net.word_norm.running_var, training=False, eps=net.word_norm.eps)
    return normed.cpu().numpy()


def score(model, train, test, vocabulary) -> dict:
    from topicvae.topics.analysis import transform_agreement
    from topicvae.topics.coherence import document_npmi, topic_diversity

    info = model.information(test, seed=0)
    result = {
        "mi_test": info.per_variable.tolist(),
        "mi_total_test": info.mutual_information,
        "tc_between_test": info.tc_between,
        "tc_within_test": info.tc_within.tolist(),
        "perplexity_test": model.perplexity(test),
        "perplexity_test_per_document": model.perplexity(test, per_document=True),
    }
    rules = {"output": model.topic_word_scores()}
    if model.model == "prodlda" and model.model_.word_shift is not None:
        rules["lift"] = lift_scores(model)
    theta = model.transform(train)
    for rule, scores in rules.items():
        top = np.argsort(-scores, axis=1, kind="stable")
        words = [[vocabulary[w] for w in row[:25]] for row in top]
        agreement = transform_agreement(theta, train, [row[:10] for row in top])
        result[rule] = {
            "words": [w[:10] for w in words],
            "npmi": document_npmi(words, train, vocabulary).per_topic.tolist(),
            "diversity": topic_diversity(words),
            "agreement_word_share": agreement.word_share.tolist(),
            "agreement_log_length": agreement.log_length.tolist(),
        }
    return result


def run_one(name: str, variant: dict, objective: dict, seed: int, epochs: int, device: str, data: Path, out: Path) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("ABLATION_THREADS", "1")))
    from topicvae import TopicModel

    train, test, vocabulary = load_data(data)
    options = dict(variant)
    kind = options.pop("model", "prodlda")
    model = TopicModel(kind, **objective, **options, epochs=epochs, seed=seed, device=device)
    start = time.perf_counter()
    model.fit(train, vocabulary=vocabulary)
    seconds = time.perf_counter() - start
    model.save(out / "models" / name)
    result = {"name": name, "seed": seed, "seconds": seconds, "final_epoch": model.history_[-1], **score(model, train, test, vocabulary)}
    (out / "runs" / f"{name}.json").write_text(json.dumps(result) + "\n")
    return result


def summary_rows(results: list[dict], threshold: float = 0.01) -> list[str]:
    rows = ["| run | s | active (I >= 0.01) | sorted MI (top, 10th, 20th, min) | NPMI out / lift | diversity out / lift | perplexity corpus / doc | agree median / min / max abs len |",
            "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["name"]):
        mi = np.sort(r["mi_test"])[::-1]
        npmi = f"{np.mean(r['output']['npmi']):.3f}" + (f" / {np.mean(r['lift']['npmi']):.3f}" if "lift" in r else "")
        div = f"{r['output']['diversity']:.2f}" + (f" / {r['lift']['diversity']:.2f}" if "lift" in r else "")
        ag = np.asarray(r["output"]["agreement_word_share"])
        length = np.abs(r["output"]["agreement_log_length"]).max()
        rows.append(
            f"| {r['name']} | {r['seconds']:.0f} | {(mi >= threshold).sum()} | {mi[0]:.3f}, {mi[9]:.3f}, {mi[19]:.3f}, {mi[-1]:.4f} | {npmi} | {div} | "
            f"{r['perplexity_test']:.0f} / {r['perplexity_test_per_document']:.0f} | {np.median(ag):.2f} / {ag.min():.2f} / {length:.2f} |"
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    todo, results = [], []
    for seed in args.seeds:  # seed-major: a sweep cut short still has every variant's first seed
        for variant in args.variants:
            for objective in args.objectives:
                name = f"{variant}.{objective}.s{seed}"
                done = args.out / "runs" / f"{name}.json"
                if done.is_file():
                    results.append(json.loads(done.read_text()))
                else:
                    todo.append((name, VARIANTS[variant], OBJECTIVES[objective], seed))
    import multiprocessing

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, *job, args.epochs, args.device, args.data, args.out): job[0] for job in todo}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as error:  # one failed fit must not lose the others
                print(f"{futures[future]} failed: {error!r}", flush=True)
                continue
            results.append(result)
            print(f"done {result['name']} in {result['seconds']:.0f} s", flush=True)
    (args.out / "summary.json").write_text(json.dumps(results) + "\n")
    print("\n".join(summary_rows(results)))


if __name__ == "__main__":
    main()
