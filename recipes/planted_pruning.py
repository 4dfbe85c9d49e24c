"""What keeps every topic on: ProdLDA's encoder options on a planted corpus with spare topics.

The corpus of ``tests/test_findings.py``: 2,500 documents from 8 planted logistic-normal topics
of which 2 are used by no document, log-normal lengths with length-dependent filler words. The
model has 20 topics (HFVAE 2x10, beta 0.1, gamma 4, 150 epochs), so at least 14 are spare. For
each configuration and seed it records the sorted I(x; z_k) on the training documents, the gap
rule's active topics and largest step, and how well the active topics carry the planted
themes (each present theme's best correlation, over documents, with an active topic's
``transform``).

    python recipes/planted_pruning.py --seeds 0 1 2 3 --out recipes/results/planted_pruning.jsonl

Recorded run: docs/analysis.md, "What keeps every topic on".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

#: name -> TopicModel options over HFVAE 2x10 (beta 0.1, gamma 4, 150 epochs)
CONFIGURATIONS = {
    "default (shift, dropout 0.2)": {},
    "shift, no dropout on theta": {"topic_dropout": 0.0},
    "affine, dropout 0": {"posterior_norm": "affine", "dropout": 0.0},
    "off, dropout 0.2": {"posterior_norm": "off"},
    "off, no dropout on theta": {"posterior_norm": "off", "topic_dropout": 0.0},
    "off, dropout 0": {"posterior_norm": "off", "dropout": 0.0},
}


def run(name: str, options: dict, seed: int) -> dict:
    from topicvae import TopicModel
    from topicvae.topics.planted import planted_corpus

    corpus = planted_corpus(2500, n_topics=8, absent=(3, 6), pairs=[(0, 4, 0.5), (1, 5, -0.5)], scale=3.0, seed=seed)
    model = TopicModel("prodlda", "2x10", beta=0.1, gamma=4.0, epochs=150, seed=seed, device="cpu", **options)
    started = time.perf_counter()
    model.fit(corpus.counts, vocabulary=corpus.vocabulary)
    seconds = time.perf_counter() - started
    pruning, information = model.analysis_.pruning, model.analysis_.information.per_variable
    theta = model.transform(corpus.counts)
    present = [k for k in range(corpus.theta.shape[1]) if k not in corpus.absent]
    match = np.corrcoef(theta.T, corpus.theta[:, present].T)[: theta.shape[1], theta.shape[1]:]
    return {
        "name": name, "options": options, "seed": seed, "training_seconds": round(seconds, 1),
        "active": int(pruning.n_active), "gap": pruning.gap, "largest_ratio": float(pruning.largest_ratio),
        "information_sorted": sorted((float(v) for v in information), reverse=True),
        "largest_pruned": float(information[~pruning.active].max()) if (~pruning.active).any() else None,
        "theme_best_match": [float(v) for v in match[pruning.active].max(0)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--only", nargs="*", help="configuration names (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args()
    for name, options in CONFIGURATIONS.items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            record = run(name, options, seed)
            with args.out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"{name:32s} seed {seed}: active {record['active']:2d}, largest step {record['largest_ratio']:.1f}, "
                  f"largest pruned {record['largest_pruned']}, weakest theme match {min(record['theme_best_match']):.2f}")


if __name__ == "__main__":
    main()
