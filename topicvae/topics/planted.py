"""Synthetic corpora whose truth is known: the topics, which topics co-occur, which are absent.

A planted corpus is drawn from a logistic-normal topic model (Blei & Lafferty's correlated topic
model): each document draws eta ~ N(mu, Sigma) over the planted topics, theta = softmax(eta),
a length from a log-normal clipped to [min_length, max_length], and its words from the mixture
of the topics' word distributions. ``Sigma`` carries the planted correlations; everything else
is independent. Each topic owns its own block of words (with a little mass on the other
topics' words), so a learned topic can be matched to the planted one by its top words.

Length-dependent filler words make document length a factor of its own: a document of length
L gives a share ``filler_share * log(L) / log(max_length)`` of its words to a block of filler
words, so long documents hold more of them whatever their topics, as boilerplate, signatures
and quoted text do in real posts. An analysis that does not remove length sees every topic
that shares words with the filler move with length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["PlantedCorpus", "planted_corpus", "match_topics"]


@dataclass(frozen=True)
class PlantedCorpus:
    """A corpus and its truth.

    Attributes
    ----------
    counts : scipy.sparse.csr_matrix, [documents, V]
    vocabulary : list of str
        ``t{k}w{j}`` for topic k's j-th word, ``filler{j}`` for filler words.
    topic_words : numpy.ndarray, [topics, V]
        Each planted topic's word distribution.
    correlation : numpy.ndarray, [topics, topics]
        The correlation of eta (the planted associations; 0 off the planted pairs).
    theta : numpy.ndarray, [documents, topics]
    lengths : numpy.ndarray, [documents]
    absent : tuple of int
        Planted topics that no document uses (their mean is -inf in effect): a model should
        prune the topics it would give them.
    """

    counts: sp.csr_matrix
    vocabulary: list
    topic_words: np.ndarray
    correlation: np.ndarray
    theta: np.ndarray
    lengths: np.ndarray
    absent: tuple


def planted_corpus(
    n_documents: int,
    *,
    n_topics: int = 8,
    words_per_topic: int = 20,
    n_filler: int = 20,
    pairs: Sequence[tuple[int, int, float]] = (),
    absent: Sequence[int] = (),
    scale: float = 1.5,
    length_mean: float = np.log(80.0),
    length_sigma: float = 1.0,
    min_length: int = 5,
    max_length: int = 1000,
    filler_share: float = 0.3,
    leak: float = 0.05,
    seed: int = 0,
) -> PlantedCorpus:
    """Draw a planted corpus (see the module docstring).

    Parameters
    ----------
    pairs : sequence of (i, j, r)
        Planted correlations of eta between topics i and j (r in (-1, 1)); all other pairs are
        independent. The matrix must stay positive definite.
    absent : sequence of int
        Topics that no document uses.
    scale : float
        The standard deviation of each eta_k: larger makes documents purer.
    length_mean, length_sigma, min_length, max_length
        Lengths are exp(N(length_mean, length_sigma^2)), rounded and clipped.
    filler_share : float
        The share of filler words in a document of ``max_length`` words (see above).
    leak : float
        The mass each topic puts on other topics' words, spread evenly.
    """
    for name, value, least in (("n_documents", n_documents, 1), ("n_topics", n_topics, 2), ("words_per_topic", words_per_topic, 1), ("n_filler", n_filler, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name}={value!r} is invalid: give a whole number >= {least}")
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(length_sigma) and length_sigma >= 0):
        raise ValueError(f"scale={scale!r} or length_sigma={length_sigma!r} is invalid: give scale > 0 and length_sigma >= 0")
    if not (1 <= min_length <= max_length) or not (0 <= filler_share < 1) or not (0 <= leak < 1):
        raise ValueError(
            f"min_length={min_length!r}, max_length={max_length!r}, filler_share={filler_share!r} or leak={leak!r} is invalid: "
            "give 1 <= min_length <= max_length, 0 <= filler_share < 1 and 0 <= leak < 1"
        )
    absent = sorted(set(int(k) for k in absent))
    if any(not 0 <= k < n_topics for k in absent) or len(absent) >= n_topics:
        raise ValueError(f"absent={absent!r} is invalid: name topics in 0..{n_topics - 1}, and leave at least one present")
    rng = np.random.default_rng(seed)
    correlation = np.eye(n_topics)
    for i, j, r in pairs:
        if not (0 <= i < n_topics and 0 <= j < n_topics and i != j and -1 < r < 1):
            raise ValueError(f"pairs holds ({i}, {j}, {r}): give two different topics in 0..{n_topics - 1} and -1 < r < 1")
        correlation[i, j] = correlation[j, i] = r
    if np.linalg.eigvalsh(correlation).min() <= 0:
        raise ValueError("pairs give a correlation matrix that is not positive definite: plant weaker or fewer pairs")
    topical = n_topics * words_per_topic
    vocab_size = topical + n_filler
    topic_words = np.full((n_topics, vocab_size), 0.0)
    for k in range(n_topics):
        weights = rng.dirichlet(np.full(words_per_topic, 1.0))
        topic_words[k, k * words_per_topic : (k + 1) * words_per_topic] = (1 - leak) * weights
        others = [w for w in range(topical) if not (k * words_per_topic <= w < (k + 1) * words_per_topic)]
        topic_words[k, others] = leak / len(others)
    filler = rng.dirichlet(np.full(n_filler, 1.0)) if n_filler else np.zeros(0)
    eta = rng.multivariate_normal(np.zeros(n_topics), scale**2 * correlation, size=n_documents)
    if absent:
        eta[:, list(absent)] = -np.inf
    theta = np.exp(eta - eta.max(1, keepdims=True))
    theta /= theta.sum(1, keepdims=True)
    lengths = np.clip(np.round(np.exp(rng.normal(length_mean, length_sigma, size=n_documents))), min_length, max_length).astype(int)
    rows = []
    for d in range(n_documents):
        share = filler_share * np.log(lengths[d]) / np.log(max_length) if n_filler and max_length > 1 else 0.0
        words = np.zeros(vocab_size)
        words[:] = (1 - share) * theta[d] @ topic_words
        words[topical:] += share * filler
        rows.append(rng.multinomial(lengths[d], words / words.sum()))
    vocabulary = [f"t{k}w{j}" for k in range(n_topics) for j in range(words_per_topic)] + [f"filler{j}" for j in range(n_filler)]
    return PlantedCorpus(
        counts=sp.csr_matrix(np.asarray(rows, dtype=np.float32)),
        vocabulary=vocabulary,
        topic_words=topic_words,
        correlation=correlation,
        theta=theta,
        lengths=lengths,
        absent=tuple(absent),
    )


def match_topics(top_words: Sequence[Sequence[str]], *, n_words: int = 10) -> list[int | None]:
    """The planted topic each learned topic stands for: the one owning most of its top words
    (a strict majority of the ``n_words``), or None (a mixed or filler topic)."""
    matches: list[int | None] = []
    for words in top_words:
        owners = [int(w[1 : w.index("w")]) for w in list(words)[:n_words] if w.startswith("t") and "w" in w]
        if not owners:
            matches.append(None)
            continue
        values, counts = np.unique(owners, return_counts=True)
        best = int(np.argmax(counts))
        matches.append(int(values[best]) if counts[best] > n_words / 2 else None)
    return matches
