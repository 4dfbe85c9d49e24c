"""Build the shipped 20 Newsgroups sample corpus.

Usage (from the repository root, with topicvae installed)::

    python corpora/build_sample.py --source PATH/TO/20newsgroups

``--source`` is any local copy that :func:`topicvae.text.newsgroups.load_20newsgroups`
reads. The output is deterministic: rerunning it gives byte-identical files.

Steps: load the bydate *train* split with headers, footers and quotes stripped;
fold whitespace; keep posts of ``--min-words`` to ``--max-words`` words (the upper
bound drops FAQs, source listings and uuencoded binaries, which would take most of
the file size); draw ``--per-group`` posts per newsgroup with
``numpy.random.default_rng(--seed)``, newsgroups in sorted order; write them in
(newsgroup, file name) order, one per line, plus a labels file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from topicvae.text.newsgroups import load_20newsgroups
from topicvae.text.corpus import write_corpus_lines

HERE = Path(__file__).resolve().parent


def build_sample(
    source: Path,
    corpus_path: Path,
    labels_path: Path,
    *,
    per_group: int = 100,
    min_words: int = 20,
    max_words: int = 2000,
    seed: int = 0,
) -> int:
    """Write the sample corpus and its labels; return the number of posts."""
    train = load_20newsgroups("train", source=source)
    posts = [" ".join(text.split()) for text in train.texts]
    word_counts = np.array([len(post.split()) for post in posts])
    eligible = (word_counts >= min_words) & (word_counts <= max_words)

    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label_id, name in enumerate(train.label_names):
        candidates = np.flatnonzero(eligible & (train.labels == label_id))
        if len(candidates) < per_group:
            raise ValueError(
                f"{name} has only {len(candidates)} eligible posts; lower --per-group."
            )
        chosen.extend(sorted(rng.choice(candidates, size=per_group, replace=False).tolist()))

    write_corpus_lines((posts[i] for i in chosen), corpus_path)
    write_corpus_lines((train.label_names[train.labels[i]] for i in chosen), labels_path)
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="local 20 Newsgroups copy")
    parser.add_argument("--out", type=Path, default=HERE / "20newsgroups-sample.txt.gz")
    parser.add_argument("--labels", type=Path, default=HERE / "20newsgroups-sample.labels.txt")
    parser.add_argument("--per-group", type=int, default=100)
    parser.add_argument("--min-words", type=int, default=20)
    parser.add_argument("--max-words", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_posts = build_sample(
        args.source,
        args.out,
        args.labels,
        per_group=args.per_group,
        min_words=args.min_words,
        max_words=args.max_words,
        seed=args.seed,
    )
    print(f"wrote {n_posts} posts to {args.out} and their newsgroups to {args.labels}")


if __name__ == "__main__":
    main()
