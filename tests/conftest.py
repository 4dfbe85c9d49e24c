"""Shared fixtures: small corpora with planted topics, made here so the core tests need no data."""

from __future__ import annotations

import gzip
import os
import struct

# The README's test command runs one pytest-xdist worker per core. Each worker keeps to one
# thread (numpy's BLAS, torch's OpenMP, and the CLI subprocesses a test starts, which inherit
# the environment): two workers that each spin two OpenMP threads on two cores slow each other
# many-fold, and the suite's small models gain little from a second thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = "1"

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import settings

# Locally, every run of the property tests draws new examples and may find a new bug; in CI
# (CI=true) the examples are derived from each test's name, so that a run is reproducible and
# a red CI always means a change, not a lucky draw.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
    settings.load_profile("ci")


def planted_corpus(
    n_docs: int = 1200,
    n_topics: int = 6,
    words_per_topic: int = 10,
    n_noise_words: int = 20,
    doc_length: int = 60,
    seed: int = 0,
    concentration: float = 0.3,
) -> tuple[sp.csr_matrix, list[str], list[list[str]]]:
    """Documents drawn from known topics with disjoint word sets.

    Word ``topic<k>word<i>`` (indices spelled with letters, so that the default token pattern
    reads them) belongs to topic k; ``noise<j>`` are background words shared by all topics.
    ``concentration`` is the Dirichlet parameter of the topic proportions (small: documents
    dominated by one topic). Returns the count matrix, the vocabulary and the planted topics' word lists.
    """
    rng = np.random.default_rng(seed)
    vocabulary, topic_word = _planted_topics(rng, n_topics, words_per_topic, n_noise_words)
    rows = []
    for _ in range(n_docs):
        proportions = rng.dirichlet(np.full(n_topics, concentration))
        rows.append(rng.multinomial(doc_length, proportions @ topic_word))
    topics = [vocabulary[k * words_per_topic : (k + 1) * words_per_topic] for k in range(n_topics)]
    return sp.csr_matrix(np.asarray(rows, dtype=np.float32)), vocabulary, topics


def _planted_topics(rng, n_topics: int, words_per_topic: int, n_noise_words: int) -> tuple[list[str], np.ndarray]:
    """The vocabulary and topic-word distributions: each topic owns its own words, plus a trace of all."""
    vocabulary = [f"topic{_letters(k)}word{_letters(i)}" for k in range(n_topics) for i in range(words_per_topic)]
    vocabulary += [f"noise{_letters(j)}" for j in range(n_noise_words)]
    topic_word = np.full((n_topics, len(vocabulary)), 0.01 / len(vocabulary))
    for k in range(n_topics):
        topic_word[k, k * words_per_topic : (k + 1) * words_per_topic] = rng.dirichlet(np.full(words_per_topic, 5.0))
    return vocabulary, topic_word / topic_word.sum(1, keepdims=True)


def _letters(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'ba', ...: numbers as letters-only word parts."""
    text = ""
    while True:
        index, digit = divmod(index, 26)
        text = chr(ord("a") + digit) + text
        if index == 0:
            return text


def counts_to_documents(counts: sp.csr_matrix, vocabulary: list[str], seed: int = 0) -> list[str]:
    """Write each row of a count matrix out as a shuffled text document."""
    rng = np.random.default_rng(seed)
    docs = []
    for row in counts.toarray().astype(int):
        words = [w for w, c in zip(vocabulary, row) for _ in range(c)]
        rng.shuffle(words)
        docs.append(" ".join(words))
    return docs


@pytest.fixture
def planted_docs_file(tmp_path):
    counts, vocabulary, topics = planted_corpus(n_docs=400)
    path = tmp_path / "planted.txt"
    path.write_text("\n".join(counts_to_documents(counts, vocabulary)) + "\n", encoding="utf-8")
    return path, topics


def sklearn_newsgroup_helpers():
    """scikit-learn's private strip helpers (header, footer, quoting); skip where they are gone."""
    try:
        from sklearn.datasets._twenty_newsgroups import (
            strip_newsgroup_footer,
            strip_newsgroup_header,
            strip_newsgroup_quoting,
        )
    except ImportError as exc:
        pytest.skip(f"scikit-learn's private 20 Newsgroups helpers are not importable: {exc}")
    return strip_newsgroup_header, strip_newsgroup_footer, strip_newsgroup_quoting


def correlated_corpus(
    seed: int = 0, n_docs: int = 1500, words_per_topic: int = 10, n_noise_words: int = 20, doc_length: int = 80
) -> tuple[sp.csr_matrix, list[str], list[tuple[int, int]]]:
    """Six planted topics in two families, A = (0, 1, 2) and B = (3, 4, 5), with known correlations.

    Every document mixes one A topic with one B topic (a Beta(2, 2) share each). With
    probability 0.8 the B topic is the A topic's partner (k, k + 3), otherwise any B topic, so
    the partners co-occur far more often than chance while each topic also appears without its
    partner. Words ``topic<k>word<i>`` belong to topic k. Returns the counts, the vocabulary and
    the planted partner pairs.
    """
    rng = np.random.default_rng(seed)
    n_topics = 6
    vocabulary, topic_word = _planted_topics(rng, n_topics, words_per_topic, n_noise_words)
    rows = []
    for _ in range(n_docs):
        first = rng.integers(3)
        second = first if rng.random() < 0.8 else rng.integers(3)
        proportions = np.zeros(n_topics)
        share = rng.beta(2, 2)
        proportions[first], proportions[3 + second] = share, 1 - share
        rows.append(rng.multinomial(doc_length, proportions @ topic_word))
    return sp.csr_matrix(np.asarray(rows, dtype=np.float32)), vocabulary, [(0, 3), (1, 4), (2, 5)]


def write_idx_split(folder, prefix: str, n: int, seed: int) -> None:
    """A tiny MNIST look-alike: class k lights a 4-pixel-high band at row 2k, with a random stroke width."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        width = rng.integers(6, 20)
        images[i, 2 * label: 2 * label + 4, 4: 4 + width] = 255
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">II", 0x801, n) + labels.tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx_split(folder, "train", 300, 0)
    write_idx_split(folder, "t10k", 120, 1)
    return folder
