"""Coherence and diversity: hand-computed NPMI, agreement with gensim, error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer

from topicvae.topics.coherence import document_npmi, gensim_coherence, topic_diversity

DOCS = ["a b c", "a b", "c d", "a"]


def counts_of(docs):
    vectorizer = CountVectorizer(token_pattern=r"\S+")
    return vectorizer.fit_transform(docs), list(vectorizer.get_feature_names_out())


def test_document_npmi_equals_the_hand_computed_value():
    counts, vocabulary = counts_of(DOCS)
    # P(a) = 3/4, P(b) = P(c) = 1/2; P(a,b) = 1/2, P(a,c) = P(b,c) = 1/4
    npmi_ab = math.log((1 / 2) / (3 / 4 * 1 / 2)) / -math.log(1 / 2)
    npmi_ac = math.log((1 / 4) / (3 / 4 * 1 / 2)) / -math.log(1 / 4)
    npmi_bc = math.log((1 / 4) / (1 / 2 * 1 / 2)) / -math.log(1 / 4)  # independent: 0
    result = document_npmi([["a", "b", "c"], ["b", "d"]], counts, vocabulary, top_n=3)
    assert result.per_topic[0] == pytest.approx((npmi_ab + npmi_ac + npmi_bc) / 3, abs=1e-12)
    assert result.per_topic[1] == -1.0  # b and d never share a document
    assert result.mean == pytest.approx((result.per_topic[0] - 1) / 2)
    assert result.settings == {"co-occurrence": "whole document", "top_n": 3, "reference": "reference corpus", "documents": 4}


def test_top_n_limits_the_pairs():
    counts, vocabulary = counts_of(DOCS)
    two = document_npmi([["a", "b", "c"]], counts, vocabulary, top_n=2)
    assert two.per_topic[0] == pytest.approx(math.log(4 / 3) / math.log(2), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_document_npmi_equals_gensim_c_npmi_with_a_window_longer_than_every_document(seed):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(8)]
    docs = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(60)]
    counts, vocabulary = counts_of(docs)
    topics = [list(rng.permutation(vocabulary)[:5]) for _ in range(3)]
    ours = document_npmi(topics, counts, vocabulary, top_n=5)
    # gensim treats a document shorter than the window as one window: whole-document counts
    theirs = gensim_coherence(topics, [d.split() for d in docs], measure="c_npmi", top_n=5, window_size=1000)
    np.testing.assert_allclose(ours.per_topic, theirs.per_topic, atol=1e-6)
    assert theirs.settings["window"] == 1000


def test_gensim_measures_report_their_settings():
    texts = [d.split() for d in DOCS * 5]
    npmi = gensim_coherence([["a", "b", "c"]], texts, top_n=3)
    assert npmi.settings["window"] == 10 and npmi.measure == "c_npmi"
    assert -1.0 <= npmi.per_topic[0] <= 1.0
    umass = gensim_coherence([["a", "b", "c"]], texts, measure="u_mass", top_n=3)
    assert umass.settings["window"] == "whole document"
    cv = gensim_coherence([["a", "b", "c"]], texts, measure="c_v", top_n=3)
    assert cv.settings["window"] == 110


def test_umass_equals_the_hand_computed_value():
    texts = [d.split() for d in DOCS]
    # UMass (Mimno et al. 2011, gensim's 'one preceding' segmentation): for each word w_i and
    # each word w_j ranked above it, log((D(w_i, w_j) / D + eps) / (D(w_j) / D)), averaged.
    # D(a) = 3, D(b) = 2, D(c) = 2; D(a,b) = 2, D(a,c) = 1, D(b,c) = 1; D = 4 documents.
    eps = 1e-12
    pairs = [(2 / 4, 3 / 4), (1 / 4, 3 / 4), (1 / 4, 2 / 4)]  # (b|a), (c|a), (c|b)
    expected = sum(math.log((joint + eps) / given) for joint, given in pairs) / 3
    result = gensim_coherence([["a", "b", "c"]], texts, measure="u_mass", top_n=3)
    assert result.per_topic[0] == pytest.approx(expected, abs=1e-9)


def test_topic_diversity():
    assert topic_diversity([["a", "b"], ["b", "c"]], top_n=2) == 0.75
    assert topic_diversity([["a", "b", "x"], ["c", "d", "y"]], top_n=2) == 1.0


def test_errors_name_what_is_wrong():
    counts, vocabulary = counts_of(DOCS)
    with pytest.raises(ValueError, match="not in the reference vocabulary: zebra"):
        document_npmi([["a", "zebra"]], counts, vocabulary)
    with pytest.raises(ValueError, match="measure='c_uci' is invalid"):
        gensim_coherence([["a", "b"]], [d.split() for d in DOCS], measure="c_uci")
    with pytest.raises(ValueError, match="at least 2 top words"):
        document_npmi([["a"]], counts, vocabulary)


# ------------------------------------------------------------------------------------------
# top words that never occur in the reference (gensim#2711, Palmetto#33): left out and named
# ------------------------------------------------------------------------------------------
HELD_OUT = ["a b c", "a b", "c a", "b c", "a"]  # d never occurs


def test_an_absent_word_leaves_its_pairs_out_and_is_named_in_every_measure():
    counts, vocabulary = counts_of(DOCS)  # the model's vocabulary: a b c d
    held_out = CountVectorizer(token_pattern=r"\S+", vocabulary=vocabulary).fit_transform(HELD_OUT)
    texts = [d.split() for d in HELD_OUT]
    topics = [["a", "b", "d"], ["c", "d"], ["a", "c"]]
    whole = document_npmi(topics, held_out, vocabulary, top_n=3)
    # topic 0 is scored on its one pair of present words, exactly as the topic [a, b] is
    np.testing.assert_allclose(whole.per_topic[0], document_npmi([["a", "b"]], held_out, vocabulary).per_topic[0], atol=1e-12)
    assert np.isnan(whole.per_topic[1])  # one present word: no pair, no score (not -1, not 0)
    assert whole.absent_words == [["d"], ["d"], []]
    assert whole.scored.tolist() == [True, False, True]
    assert whole.mean == pytest.approx(np.mean(whole.per_topic[[0, 2]]))
    assert whole.mean_over([1]) is None and whole.mean_over([1, 2]) == pytest.approx(whole.per_topic[2])
    for measure in ("c_npmi", "c_v", "u_mass"):
        result = gensim_coherence(topics, texts, measure=measure, top_n=3)
        alone = gensim_coherence([["a", "b"], ["a", "c"]], texts, measure=measure, top_n=3)
        np.testing.assert_allclose(result.per_topic[[0, 2]], alone.per_topic, atol=1e-9)
        assert np.isnan(result.per_topic[1]) and result.absent_words == [["d"], ["d"], []]


def test_a_reference_without_any_top_word_scores_nothing_and_says_so():
    counts, vocabulary = counts_of(DOCS)
    held_out = CountVectorizer(token_pattern=r"\S+", vocabulary=vocabulary).fit_transform(["d", "d"])
    result = document_npmi([["a", "b"]], held_out, vocabulary)
    assert np.isnan(result.mean) and result.absent_words == [["a", "b"]]
    assert np.isnan(gensim_coherence([["a", "b"]], [["d"], ["d"]]).mean)
