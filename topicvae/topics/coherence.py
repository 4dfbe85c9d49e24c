"""Topic quality: NPMI coherence (whole-document and sliding-window), C_V, UMass, diversity.

Published coherence numbers disagree because of hidden choices: the co-occurrence unit (whole
document or a sliding window), the window size, the number of top words N and the reference
corpus. Every result here carries those choices with it (``CoherenceResult.settings``).

* ``document_npmi`` counts co-occurrence in whole documents, written out here (numpy over a
  binary document-term matrix): P(w) = D(w) / D, P(w_i, w_j) = D(w_i, w_j) / D and
  NPMI = log(P(w_i, w_j) / (P(w_i) P(w_j))) / -log P(w_i, w_j), with NPMI = -1 for a pair that
  never co-occurs (its limit), averaged over the N(N-1)/2 pairs of a topic's top N words.
* A top word that never occurs in the reference has no statistics at all (NPMI is 0/0 for its
  pairs; gensim raises a KeyError, Palmetto counts 0): its pairs are left out, the word is
  named in ``CoherenceResult.absent_words``, and a topic with fewer than two words left is
  not scored (NaN) rather than scored by a convention.
* ``gensim_coherence`` delegates to gensim's ``CoherenceModel``: ``c_npmi`` with a boolean
  sliding window (10 by default), ``c_v`` (window 110) and ``u_mass`` (whole documents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["CoherenceResult", "document_npmi", "gensim_coherence", "topic_diversity"]


@dataclass(frozen=True)
class CoherenceResult:
    """Per-topic coherence, its mean, and the settings that produced it.

    ``absent_words`` lists, per topic, its top words that never occur in the reference corpus.
    Their pairs have no co-occurrence statistics (NPMI is 0/0 there), so a topic is scored on
    the pairs of its present words only, and a topic with fewer than two present words is not
    scored (NaN in ``per_topic``). ``mean`` is over the scored topics.
    """

    measure: str
    per_topic: np.ndarray
    settings: dict = field(default_factory=dict)
    absent_words: list[list[str]] = field(default_factory=list)

    @property
    def scored(self) -> np.ndarray:
        """Boolean mask of the topics that have a score."""
        return np.isfinite(self.per_topic)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_topic[self.scored])) if self.scored.any() else float("nan")

    def mean_over(self, topics) -> float | None:
        """The mean over the scored topics among ``topics`` (indices); None when none is scored."""
        values = self.per_topic[np.asarray(list(topics), dtype=int)]
        values = values[np.isfinite(values)]
        return float(np.mean(values)) if len(values) else None


def _present(words: Sequence[str], occurs) -> tuple[list[str], list[str]]:
    """Split a topic's words into those the reference holds and those it never contains."""
    present = [w for w in words if occurs(w)]
    return present, [w for w in words if not occurs(w)]


def _top_word_ids(topics: Sequence[Sequence[str]], vocabulary: Sequence[str], top_n: int) -> list[list[int]]:
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = []
    for k, words in enumerate(topics):
        words = list(words)[:top_n]
        missing = [w for w in words if w not in index]
        if missing:
            raise ValueError(
                f"topic {k} has words that are not in the reference vocabulary: {', '.join(missing[:5])}; "
                "use a reference corpus vectorized with the model's vocabulary"
            )
        if len(words) < 2:
            raise ValueError(f"topic {k} has {len(words)} word: coherence needs at least 2 top words")
        ids.append([index[w] for w in words])
    return ids


def document_npmi(
    topics: Sequence[Sequence[str]],
    reference_counts: sp.spmatrix | np.ndarray,
    vocabulary: Sequence[str],
    *,
    top_n: int = 10,
    reference_name: str = "reference corpus",
) -> CoherenceResult:
    """NPMI of each topic's top words with whole-document co-occurrence in a reference corpus.

    Parameters
    ----------
    topics : sequence of sequences of str
        Each topic's words, best first (e.g. ``TopicModel.topics(n)["words"]``).
    reference_counts : sparse or dense matrix, [documents, vocabulary]
        The reference corpus as counts (only presence matters).
    vocabulary : sequence of str
        Column names of ``reference_counts``.
    top_n : int
        How many top words of each topic enter the pairs.
    """
    present = sp.csc_matrix(reference_counts, dtype=np.float64)
    present.data = np.ones_like(present.data)
    n_docs = present.shape[0]
    if n_docs == 0:
        raise ValueError("the reference corpus is empty: pass documents to count co-occurrences in")
    document_frequency = np.asarray(present.sum(axis=0)).ravel()
    scores, absent_words = [], []
    for topic_ids in _top_word_ids(topics, vocabulary, top_n):
        ids = [i for i in topic_ids if document_frequency[i] > 0]
        absent_words.append([vocabulary[i] for i in topic_ids if document_frequency[i] == 0])
        if len(ids) < 2:
            scores.append(np.nan)  # no pair of words the reference can speak about
            continue
        columns = present[:, ids]
        joint = (columns.T @ columns).toarray() / n_docs  # P(w_i, w_j); the diagonal is P(w_i)
        single = np.diag(joint).copy()
        pairs = []
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                p_ij = joint[i, j]
                if p_ij == 0.0:
                    pairs.append(-1.0)  # never together: the limit of NPMI as P(w_i, w_j) -> 0
                elif p_ij == 1.0:
                    pairs.append(1.0)  # together in every document: NPMI's limit, 0/0 otherwise
                else:
                    pairs.append(np.log(p_ij / (single[i] * single[j])) / -np.log(p_ij))
        scores.append(float(np.mean(pairs)))
    return CoherenceResult(
        "npmi",
        np.asarray(scores, dtype=np.float64),
        {"co-occurrence": "whole document", "top_n": top_n, "reference": reference_name, "documents": n_docs},
        absent_words,
    )


def gensim_coherence(
    topics: Sequence[Sequence[str]],
    reference_texts: Sequence[Sequence[str]],
    *,
    measure: str = "c_npmi",
    top_n: int = 10,
    window_size: int | None = None,
    reference_name: str = "reference corpus",
) -> CoherenceResult:
    """Coherence from gensim's ``CoherenceModel`` on tokenized reference texts.

    ``measure`` is ``"c_npmi"`` (sliding window, default 10), ``"c_v"`` (window 110) or
    ``"u_mass"`` (whole documents). ``reference_texts`` are token lists; pass the model's own
    tokenization restricted to its vocabulary so that the counts match the model's view.
    Top words that never occur in the reference are left out of their topic (gensim raises a
    KeyError on them; see :class:`CoherenceResult`) and named in ``absent_words``.
    """
    from gensim.corpora import Dictionary
    from gensim.models.coherencemodel import CoherenceModel

    if measure not in ("c_npmi", "c_v", "u_mass"):
        raise ValueError(f"measure={measure!r} is invalid: use 'c_npmi', 'c_v' or 'u_mass'")
    topics = [list(words)[:top_n] for words in topics]
    dictionary = Dictionary(reference_texts)
    split = [_present(words, lambda w: w in dictionary.token2id) for words in topics]
    scoreable = [k for k, (present, _) in enumerate(split) if len(present) >= 2]
    per_topic = np.full(len(topics), np.nan)
    window = window_size if window_size is not None else {"c_npmi": 10, "c_v": 110}.get(measure)
    if scoreable:
        kwargs = {"corpus": [dictionary.doc2bow(t) for t in reference_texts]} if measure == "u_mass" else {"texts": reference_texts}
        model = CoherenceModel(
            topics=[split[k][0] for k in scoreable], dictionary=dictionary, coherence=measure, topn=top_n,
            window_size=window_size, processes=1, **kwargs,
        )
        per_topic[scoreable] = np.asarray(model.get_coherence_per_topic(), dtype=np.float64)
        window = model.window_size
    return CoherenceResult(
        measure,
        per_topic,
        {
            "co-occurrence": "gensim", "window": window if measure != "u_mass" else "whole document", "top_n": top_n,
            "reference": reference_name, "documents": len(reference_texts),
        },
        [absent for _, absent in split],
    )


def topic_diversity(topics: Sequence[Sequence[str]], top_n: int = 25) -> float:
    """Share of unique words among the top ``top_n`` words of all topics (Dieng et al., 2020)."""
    words = [w for topic in topics for w in list(topic)[:top_n]]
    if not words:
        raise ValueError("no topic words given: pass each topic's top words")
    return len(set(words)) / len(words)
