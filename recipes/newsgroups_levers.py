"""One ProdLDA configuration on 20 Newsgroups, fitted and scored on the figures issue 14 targets.

A quick screen for one lever at a time (the full three-seed table is
``newsgroups_hfvae_vs_vae.py``): fit ``TopicModel("prodlda", **OPTIONS)`` (HFVAE 2x25, beta 0.1,
gamma 4 unless OPTIONS says otherwise; every other option at its default) on the stripped
bydate training posts, and score it: the sorted per-topic I(x; z_k) on the test posts and the
gap rule's pruning, NPMI (whole documents, top 10, against the training posts) over all and
over active topics, diversity of the top 25, corpus-level test perplexity, the agreement of
``transform`` with the topics' top-10 words and its correlation with log length (training
posts, active topics), and purity / NMI of the test posts' top active topic against their
newsgroup.

    python recipes/newsgroups_levers.py --work runs/b64 --name gamma1 --options '{"gamma": 1.0}' --seed 0

``--work`` holds ``train.txt``, ``test.txt`` and ``test.labels.txt`` (``topicvae data
20newsgroups``, as ``newsgroups_hfvae_vs_vae.py`` writes them). The model is saved to
``WORK/levers/NAME-sSEED`` (a saved one is scored again, not refitted) and one JSON line is
appended to ``WORK/levers/results.jsonl``. FIT_THREADS sets torch's threads (1 for two screens
side by side on 2 cores). The recorded screen is recipes/results/newsgroups_levers-batch64.jsonl
(docs/analysis.md, "Levers screened at batch 64").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

#: The objective of the paper's Section 5.6; OPTIONS may override any of it.
HFVAE = {"groups": "2x25", "objective": "hfvae", "beta": 0.1, "gamma": 4.0}


def screen(work: Path, name: str, options: dict, seed: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("FIT_THREADS", torch.get_num_threads())))
    from topicvae import TopicModel
    from topicvae.topics.analysis import label_alignment, transform_agreement
    from topicvae.topics.coherence import document_npmi, topic_diversity
    from topicvae.text.corpus import read_corpus

    train, test = read_corpus(work / "train.txt"), read_corpus(work / "test.txt")
    labels = (work / "test.labels.txt").read_text(encoding="utf-8").splitlines()
    directory = work / "levers" / f"{name}-s{seed}"
    seconds = None
    if (directory / "weights.pt").is_file():
        model = TopicModel.load(directory)
    else:
        model = TopicModel("prodlda", **{**HFVAE, **options}, seed=seed, device="cpu")
        started = time.perf_counter()
        model.fit(train)
        seconds = time.perf_counter() - started
        model.save(directory)
    train_counts = model.vectorizer_.transform(train)
    train_counts = train_counts[train_counts.getnnz(axis=1) > 0]
    test_counts = model.vectorizer_.transform(test)
    kept = test_counts.getnnz(axis=1) > 0
    test_counts, test_labels = test_counts[kept], [label for label, k in zip(labels, kept) if k]

    information = model.information(test_counts)
    pruning = information.pruning()
    active = np.flatnonzero(pruning.active)
    mi = np.sort(information.per_variable)[::-1]
    vocabulary = list(model.vectorizer_.vocabulary_)
    top = np.argsort(-model.topic_word_scores(), axis=1, kind="stable")
    words = [[vocabulary[w] for w in row[:25]] for row in top]
    npmi = document_npmi([w[:10] for w in words], train_counts, vocabulary).per_topic
    agreement = transform_agreement(model.transform(train_counts), train_counts, top[:, :10])
    alignment = label_alignment(model.transform(test_counts), test_labels, topics=active)
    return {
        "name": name, "seed": seed, "options": options, "training_seconds": seconds,
        "active": int(pruning.n_active), "largest_ratio": float(pruning.largest_ratio), "gap": pruning.gap,
        "mi_sorted": [round(float(v), 5) for v in mi],
        "npmi_document": float(np.nanmean(npmi)), "npmi_document_active": float(np.nanmean(npmi[active])),
        "diversity": topic_diversity(words), "diversity_active": topic_diversity([words[k] for k in active]),
        "perplexity_test": model.perplexity(test_counts),
        "agreement_median": float(np.median(agreement.word_share[active])), "agreement_min": float(agreement.word_share[active].min()),
        "max_abs_corr_log_length": float(np.abs(agreement.log_length[active]).max()),
        "purity": alignment.purity, "nmi": alignment.nmi,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder with train.txt, test.txt, test.labels.txt")
    parser.add_argument("--name", required=True, help="the lever's name (the model folder and the JSON line)")
    parser.add_argument("--options", default="{}", help="TopicModel options as JSON, over HFVAE 2x25 beta 0.1 gamma 4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = screen(args.work, args.name, json.loads(args.options), args.seed)
    (args.work / "levers").mkdir(parents=True, exist_ok=True)
    with open(args.work / "levers" / "results.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "mi_sorted"}))


if __name__ == "__main__":
    main()
