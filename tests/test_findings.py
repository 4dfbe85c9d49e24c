"""The analysis behind `fit`'s findings, on planted data whose truth is known and on nulls.

Pure functions first (means and variances in, matrices out): the pruning rule, the topic
associations with their permutation null, the transform-agreement and label measures, each
checked against explicit loops. The end-to-end tests fit a model on a planted corpus.
"""

from __future__ import annotations

import numpy as np
import pytest

from topicvae.topics.analysis import label_alignment, topic_correlations, transform_agreement
from topicvae.objective.information import prune_by_gap


# ---------------------------------------------------------------------------------------------
# pruning: a gap, or nothing
# ---------------------------------------------------------------------------------------------
def test_a_gap_of_a_decade_splits_active_from_pruned():
    information = np.array([0.31, 0.002, 0.25, -0.0004, 0.12, 0.0009, 0.08])
    pruning = prune_by_gap(information, noise=1e-4)
    np.testing.assert_array_equal(pruning.active, [True, False, True, False, True, False, True])
    assert pruning.gap == pytest.approx(0.08 / 0.002)
    assert pruning.n_active == 4


def test_a_continuum_prunes_nothing_whatever_its_range():
    # from 0.3 down to 0.0003 in steps of a factor 1.5: three decades, no gap
    information = 0.3 / 1.5 ** np.arange(18)
    pruning = prune_by_gap(information, noise=1e-6)
    assert pruning.active.all() and pruning.gap is None
    assert pruning.largest_ratio == pytest.approx(1.5)


def test_noise_around_zero_makes_no_gap_of_its_own():
    # the pruned topics' estimates scatter around 0 (one negative): floored at their resolution,
    # they do not split among themselves, and the gap is to the smallest active topic
    information = np.array([0.2, 0.15, 3e-5, -2e-5, 1e-6, 0.09])
    noise = np.full(6, 1e-4)
    pruning = prune_by_gap(information, noise=noise)
    np.testing.assert_array_equal(pruning.active, [True, True, False, False, False, True])
    assert pruning.gap == pytest.approx(0.09 / 1e-4)


def test_every_topic_at_the_noise_floor_is_pruned():
    pruning = prune_by_gap(np.array([2e-5, -1e-5, 0.0]), noise=1e-4)
    assert not pruning.active.any()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: prune_by_gap(np.array([]), noise=1e-4), r"information has shape \(0,\)"),
        (lambda: prune_by_gap(np.array([0.1, 0.2]), noise=0.0), "noise is invalid"),
        (lambda: prune_by_gap(np.array([0.1, 0.2]), noise=1e-4, factor=1.0), "factor=1.0 is invalid"),
    ],
)
def test_pruning_refuses_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# associations between topics: planted pairs, a shared factor, document length, a null
# ---------------------------------------------------------------------------------------------
def planted_codes(n: int, k: int, pairs, *, length_loading: float, factor_loading: float, seed: int):
    """Posterior means [n, k] with planted pairwise associations, a factor shared by every topic,
    and a dependence on log length; posterior variances [n, k]."""
    rng = np.random.default_rng(seed)
    log_length = rng.normal(np.log(100), 1.0, size=n)
    independent = rng.normal(size=(n, k))
    for i, j, r in pairs:  # a direct link: j takes part of i
        independent[:, j] = r * independent[:, i] + np.sqrt(1 - r**2) * independent[:, j]
    shared = rng.normal(size=(n, 1))
    means = independent + factor_loading * shared + length_loading * (log_length[:, None] - np.log(100))
    variances = rng.uniform(0.05, 0.2, size=(n, k))
    return means, variances, log_length


PAIRS = [(0, 5, 0.5), (2, 7, -0.45), (3, 9, 0.4)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_associations_rank_first_despite_length_and_a_shared_factor(seed):
    means, variances, log_length = planted_codes(3000, 12, PAIRS, length_loading=0.8, factor_loading=0.7, seed=seed)
    result = topic_correlations(means, variances, log_length=log_length, n_permutations=100, seed=seed)
    strength = np.abs(np.triu(result.partial, 1))
    ranked = np.dstack(np.unravel_index(np.argsort(-strength, axis=None), strength.shape))[0][:3]
    assert {tuple(sorted(p)) for p in ranked.tolist()} == {(i, j) for i, j, _ in PAIRS}
    signs = {(i, j): np.sign(r) for i, j, r in PAIRS}
    for (i, j), sign in signs.items():
        assert np.sign(result.partial[i, j]) == sign
    significant = result.significant()
    assert all(significant[i, j] for i, j, _ in PAIRS)
    # (a factor shared by all 12 topics leaves every pair a small partial correlation of its
    # own, about loading^2 / (1 + 12 loading^2) = 0.07 and more beside a negative link: the
    # planted links still come first, as checked above)
    # without removing length, the marginal correlations of unrelated topics are large
    plain = topic_correlations(means, variances, n_permutations=10, seed=seed)
    unrelated = [(1, 4), (6, 8), (10, 11)]
    assert min(plain.correlation[i, j] for i, j in unrelated) > 0.4
    assert max(abs(result.partial[i, j]) for i, j in unrelated) < 0.15


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_null_without_planted_associations_has_no_significant_pair(seed):
    # every topic moves with document length, and nothing else links them
    means, variances, log_length = planted_codes(2000, 10, [], length_loading=0.8, factor_loading=0.0, seed=seed)
    result = topic_correlations(means, variances, log_length=log_length, n_permutations=200, seed=seed)
    assert not result.significant().any()
    assert result.threshold < 0.1


def test_repeating_every_document_leaves_the_associations_unchanged():
    means, variances, log_length = planted_codes(800, 8, PAIRS[:1], length_loading=0.5, factor_loading=0.3, seed=4)
    once = topic_correlations(means, variances, log_length=log_length, n_permutations=20, seed=0)
    thrice = topic_correlations(
        np.vstack([means] * 3), np.vstack([variances] * 3), log_length=np.tile(log_length, 3), n_permutations=20, seed=0
    )
    np.testing.assert_allclose(thrice.correlation, once.correlation, atol=1e-12)
    np.testing.assert_allclose(thrice.partial, once.partial, atol=1e-8)


def test_correlation_under_q_matches_an_explicit_float64_computation():
    rng = np.random.default_rng(5)
    means, variances = rng.normal(size=(50, 4)), rng.uniform(0.1, 1.0, size=(50, 4))
    log_length = rng.normal(size=50)
    result = topic_correlations(means, variances, log_length=log_length, topics=[0, 2, 3], n_permutations=5, shrinkage=0.0)
    # explicit: residuals of each column on [1, log length], ML covariance, plus mean variance
    design = np.column_stack([np.ones(50), log_length])
    residuals = np.column_stack([m - design @ np.linalg.solve(design.T @ design, design.T @ m) for m in means[:, [0, 2, 3]].T])
    covariance = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            covariance[a, b] = sum(residuals[n, a] * residuals[n, b] for n in range(50)) / 50
        covariance[a, a] += variances[:, [0, 2, 3]][:, a].mean()
    expected = covariance / np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
    np.testing.assert_allclose(result.correlation, expected, atol=1e-12)
    precision = np.linalg.inv(expected)
    partial = -precision / np.sqrt(np.outer(np.diag(precision), np.diag(precision)))
    np.fill_diagonal(partial, 1.0)
    np.testing.assert_allclose(result.partial, partial, atol=1e-10)
    np.testing.assert_array_equal(result.topics, [0, 2, 3])


def test_topic_correlations_refuses_bad_input():
    with pytest.raises(ValueError, match=r"means \(5, 3\) and variances \(5, 2\)"):
        topic_correlations(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="2 documents are too few"):
        topic_correlations(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="level=1.5"):
        topic_correlations(np.zeros((5, 3)), np.zeros((5, 3)), level=1.5)


# ---------------------------------------------------------------------------------------------
# transform against the topics' words; topics against labels
# ---------------------------------------------------------------------------------------------
def test_transform_agreement_matches_explicit_correlations():
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, size=(40, 12)).astype(float)
    counts[3] = 0  # a document without words is left out
    theta = rng.dirichlet(np.ones(3), size=40)
    top = [[0, 1, 2], [5, 6], [9, 10, 11]]
    result = transform_agreement(theta, counts, top)
    keep = counts.sum(1) > 0
    for k, ids in enumerate(top):
        share = counts[keep][:, ids].sum(1) / counts[keep].sum(1)
        assert result.word_share[k] == pytest.approx(np.corrcoef(theta[keep, k], share)[0, 1], abs=1e-12)
        assert result.log_length[k] == pytest.approx(np.corrcoef(theta[keep, k], np.log(counts[keep].sum(1)))[0, 1], abs=1e-12)
    assert result.documents == 39


def test_label_alignment_against_explicit_counts():
    from sklearn.metrics import normalized_mutual_info_score

    theta = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0]])
    labels = ["space", "space", "hockey", "hockey", "hockey"]
    result = label_alignment(theta, labels, topics=[0, 1])
    # topic 0's weight: space 1.7, hockey 1.0; topic 1: space 0.3, hockey 2.0
    assert result.dominant_label[:2] == ["space", "hockey"]
    assert result.dominant_share[0] == pytest.approx(1.7 / 2.7)
    assert result.dominant_share[1] == pytest.approx(2.0 / 2.3)
    # top topics 0, 0, 1, 1, 0: topic 0 holds space, space, hockey -> 2 right; topic 1 -> 2 right
    assert result.purity == pytest.approx(4 / 5)
    assert result.nmi == pytest.approx(normalized_mutual_info_score(labels, [0, 0, 1, 1, 0]))
    with pytest.raises(ValueError, match="theta has shape \\(5, 3\\) but 4 labels"):
        label_alignment(theta, labels[:4])


# ---------------------------------------------------------------------------------------------
# end to end: a fitted model on a planted corpus
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fit_learns_the_present_planted_topics_and_none_of_the_absent_ones(seed):
    from topicvae import TopicModel
    from topicvae.topics.planted import match_topics, planted_corpus

    # 8 planted topics, 2 of them used by no document; log-normal lengths from 5 to 1,000
    # words with length-dependent filler words; 12 model topics in two groups
    corpus = planted_corpus(2500, n_topics=8, absent=(3, 6), pairs=[(0, 4, 0.5), (1, 5, -0.5)], scale=3.0, seed=seed)
    model = TopicModel("prodlda", "2x6", beta=0.1, gamma=4.0, epochs=60, seed=seed, device="cpu")
    model.fit(corpus.counts, vocabulary=corpus.vocabulary)
    matches = match_topics(model.topics(10)["words"].tolist())
    learned = {m for m, active in zip(matches, model.analysis_.pruning.active) if m is not None and active}
    assert learned == {0, 1, 2, 4, 5, 7}, matches
    # the analysis covers every active topic, and its associations are symmetric
    partial = model.analysis_.correlations.partial
    np.testing.assert_allclose(partial, partial.T, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_spare_topics_are_pruned_behind_a_gap_when_the_encoder_lets_them_collapse(seed):
    from topicvae import TopicModel
    from topicvae.topics.planted import planted_corpus

    # 6 planted topics in use (2 of 8 absent) and 20 model topics: most model topics are spare.
    # With a posterior that can collapse and no dropout on theta, the spare ones fall to the
    # prior: the sorted I(x; z_k) has a gap of more than a decade and every planted theme is
    # carried by an active topic. (Themes are matched through transform, whose truth is known:
    # the length topic gamma makes ranks rare words first, so top words would mislead.)
    corpus = planted_corpus(2500, n_topics=8, absent=(3, 6), pairs=[(0, 4, 0.5), (1, 5, -0.5)], scale=3.0, seed=seed)
    options = dict(beta=0.1, gamma=4.0, epochs=150, seed=seed, device="cpu")
    model = TopicModel("prodlda", "2x10", posterior_norm="off", dropout=0.0, **options)
    model.fit(corpus.counts, vocabulary=corpus.vocabulary)
    pruning, information = model.analysis_.pruning, model.analysis_.information.per_variable
    assert pruning.gap is not None and pruning.gap > 10, np.sort(information)
    assert pruning.n_active <= 13, np.sort(information)
    theta = model.transform(corpus.counts)
    present = [k for k in range(8) if k not in corpus.absent]
    match = np.corrcoef(theta.T, corpus.theta[:, present].T)[:20, 20:]  # [model topic, planted theme]
    # (a theme learned twice splits its documents, so its best copy can fall to about 0.75)
    assert (match[pruning.active].max(0) > 0.6).all(), np.round(match[pruning.active], 2)
    # the default encoder (a batch-norm that fixes each topic's spread, dropout 0.2 on theta
    # too) keeps every spare topic on: no gap, nothing pruned (docs/analysis.md, "What keeps
    # every topic on")
    default = TopicModel("prodlda", "2x10", **options).fit(corpus.counts, vocabulary=corpus.vocabulary)
    assert default.analysis_.pruning.gap is None
    assert default.analysis_.information.per_variable.min() > 0.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_topics=1), "n_topics=1 is invalid"),
        (dict(absent=(99,)), r"absent=\[99\] is invalid"),
        (dict(n_topics=3, absent=(0, 1, 2)), "leave at least one present"),
        (dict(pairs=[(0, 0, 0.5)]), r"pairs holds \(0, 0, 0.5\)"),
        (dict(scale=-1.0), "scale=-1.0"),
        (dict(pairs=[(0, 1, 0.9), (1, 2, 0.9), (0, 2, -0.9)]), "not positive definite"),
    ],
)
def test_planted_corpus_refuses_bad_input(kwargs, message):
    from topicvae.topics.planted import planted_corpus

    with pytest.raises(ValueError, match=message):
        planted_corpus(10, **kwargs)


def test_planted_corpus_has_the_planted_lengths_and_absent_topics():
    from topicvae.topics.planted import planted_corpus

    corpus = planted_corpus(400, n_topics=5, absent=(2,), length_sigma=1.5, seed=3)
    lengths = np.asarray(corpus.counts.sum(1)).ravel()
    np.testing.assert_array_equal(lengths, corpus.lengths)
    assert lengths.min() >= 5 and lengths.max() <= 1000 and lengths.max() > 10 * lengths.min()
    assert (corpus.theta[:, 2] == 0).all()
    own_words = corpus.counts[:, 2 * 20 : 3 * 20].sum() / corpus.counts.sum()
    assert own_words < 0.05  # only the other topics' leak reaches an absent topic's words
