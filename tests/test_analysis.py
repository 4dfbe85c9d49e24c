"""Information quantities over a whole data set (B = N), against explicit float64 loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from torch.distributions import Normal

from topicvae.objective.information import information_report
from topicvae.topics.estimator import TopicModel

from conftest import correlated_corpus, planted_corpus


def gaussian_set(n, sizes, *, seed, spread=1.0, scale=0.5):
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(n, sum(sizes), dtype=torch.float64, generator=generator) * spread
    scale = torch.full((n, sum(sizes)), scale, dtype=torch.float64)
    z = loc + scale * torch.randn(n, sum(sizes), dtype=torch.float64, generator=generator)
    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    return posteriors, list(z.split(sizes, 1)), loc.numpy(), scale.numpy(), z.numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_information_matches_the_exact_mixture_computed_by_loops(seed):
    n, sizes = 13, [2, 3]
    posteriors, samples, loc, scale, z = gaussian_set(n, sizes, seed=seed)
    report = information_report(posteriors, samples)
    # log q(z_v^n | x_m) for every pair, then the exact mixture (1/N) sum_m.
    pairwise = np.array([[norm.logpdf(z[i], loc[m], scale[m]) for m in range(n)] for i in range(n)])
    own = np.array([pairwise[i, i] for i in range(n)])  # log q(z^n | x_n), [N, V]
    log_q_var = logsumexp(pairwise, axis=1) - math.log(n)
    bounds = [0, 2, 5]
    group_pair = np.stack([pairwise[:, :, a:b].sum(-1) for a, b in zip(bounds[:-1], bounds[1:])], -1)
    log_q_group = logsumexp(group_pair, axis=1) - math.log(n)
    log_q_joint = logsumexp(pairwise.sum(-1), axis=1) - math.log(n)
    np.testing.assert_allclose(report.per_variable, (own - log_q_var).mean(0), atol=1e-10)
    own_group = np.stack([own[:, a:b].sum(-1) for a, b in zip(bounds[:-1], bounds[1:])], -1)
    np.testing.assert_allclose(report.per_group, (own_group - log_q_group).mean(0), atol=1e-10)
    assert report.mutual_information == pytest.approx((own.sum(1) - log_q_joint).mean(), abs=1e-10)
    assert report.tc_between == pytest.approx((log_q_joint - log_q_group.sum(1)).mean(), abs=1e-10)
    sum_var = np.stack([log_q_var[:, a:b].sum(-1) for a, b in zip(bounds[:-1], bounds[1:])], -1)
    np.testing.assert_allclose(report.tc_within, (log_q_group - sum_var).mean(0), atol=1e-10)


def test_posteriors_that_do_not_overlap_give_log_n():
    n = 20
    posteriors, samples, *_ = gaussian_set(n, [2, 2], seed=0, spread=1e4, scale=1e-3)
    report = information_report(posteriors, samples)
    assert report.mutual_information == pytest.approx(math.log(n), abs=1e-9)
    np.testing.assert_allclose(report.per_variable, math.log(n), atol=1e-9)
    np.testing.assert_allclose(report.per_group, math.log(n), atol=1e-9)
    assert report.tc_between == pytest.approx(math.log(n), abs=1e-9)  # (D - 1) log N with D = 2
    np.testing.assert_allclose(report.tc_within, math.log(n), atol=1e-9)  # (E_d - 1) log N


def test_posteriors_that_ignore_x_give_zero_information():
    n, sizes = 15, [3, 2]
    loc = torch.zeros(n, 5, dtype=torch.float64) + torch.tensor([0.3, -1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    scale = torch.ones(n, 5, dtype=torch.float64) * 0.7
    z = loc + scale * torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    report = information_report(posteriors, list(z.split(sizes, 1)))
    assert abs(report.mutual_information) < 1e-12
    assert np.abs(report.per_variable).max() < 1e-12
    assert report.active(0.01).sum() == 0


def test_a_fitted_model_reports_information_within_log_n():
    counts, vocabulary, _ = planted_corpus(n_docs=300, seed=1)
    model = TopicModel("prodlda", "2x3", epochs=5, batch_size=50, seed=0).fit(counts, vocabulary=vocabulary)
    report = model.information(counts)
    assert report.dataset_size == 300
    assert report.per_variable.shape == (6,) and report.per_group.shape == (2,)
    assert 0 < report.mutual_information <= math.log(300) + 1e-6
    assert (report.per_variable <= math.log(300) + 1e-6).all()
    again = model.information(counts)
    assert again.mutual_information == report.mutual_information  # same seed, same samples


def test_information_leaves_out_empty_documents_and_can_subsample():
    counts, vocabulary, _ = planted_corpus(n_docs=300, seed=2)
    model = TopicModel("prodlda", "2x3", epochs=3, batch_size=50, seed=0).fit(counts, vocabulary=vocabulary)
    with_empty = np.vstack([counts.toarray(), np.zeros((7, counts.shape[1]))])
    assert model.information(with_empty).dataset_size == 300
    assert model.information(with_empty).mutual_information == model.information(counts).mutual_information
    subset = model.information(counts, max_documents=120, seed=3)
    assert subset.dataset_size == 120
    assert subset.mutual_information <= math.log(120) + 1e-6
    assert model.information(counts, max_documents=120, seed=3).mutual_information == subset.mutual_information
    with pytest.raises(ValueError, match="max_documents=1 is invalid"):
        model.information(counts, max_documents=1)
    with pytest.raises(ValueError, match="information needs at least 2"):
        model.information(np.zeros((5, counts.shape[1])))


def _uninformative_nvdm():
    """An NVDM whose posterior is its N(0, I) prior and whose decoder is uniform."""
    counts, vocabulary, _ = planted_corpus(n_docs=60, n_topics=2, words_per_topic=2, n_noise_words=3, seed=0)
    model = TopicModel("nvdm", "3", epochs=1, batch_size=20, seed=0).fit(counts, vocabulary=vocabulary)
    with torch.no_grad():
        for layer in (model.model_.posterior.loc, model.model_.posterior.log_var, model.model_.decoder):
            layer.weight.zero_()
            layer.bias.zero_()
    return model, counts


def test_perplexity_of_a_uniform_decoder_with_posterior_equal_to_prior_is_the_vocabulary_size():
    model, counts = _uninformative_nvdm()
    elbo, lengths = model.document_elbo(counts)
    vocab_size = counts.shape[1]
    np.testing.assert_allclose(elbo, -lengths * math.log(vocab_size), rtol=1e-6)
    assert model.perplexity(counts) == pytest.approx(vocab_size, rel=1e-6)
    assert model.perplexity(counts, per_document=True) == pytest.approx(vocab_size, rel=1e-6)


def test_perplexity_variants_follow_their_formulas():
    counts, vocabulary, _ = planted_corpus(n_docs=200, seed=2)
    model = TopicModel("prodlda", "2x3", epochs=3, batch_size=50, seed=0).fit(counts, vocabulary=vocabulary)
    elbo, lengths = model.document_elbo(counts[:50])
    assert model.perplexity(counts[:50]) == pytest.approx(math.exp(-elbo.sum() / lengths.sum()), rel=1e-12)
    per_doc = math.exp(np.mean(-elbo / lengths))
    assert model.perplexity(counts[:50], per_document=True) == pytest.approx(per_doc, rel=1e-12)
    assert 1 < model.perplexity(counts[:50]) < counts.shape[1] * 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_topic_correlations_are_the_strongest(seed):
    counts, vocabulary, partners = correlated_corpus(seed=seed)
    model = TopicModel("prodlda", "2x4", epochs=80, batch_size=100, seed=seed).fit(counts, vocabulary=vocabulary)
    # each learned topic stands for the planted topic that owns most of its top words
    owner = [
        max(range(6), key=lambda k: sum(w.startswith(f"topic{chr(ord('a') + k)}word") for w in words))
        for words in model.topics(10)["words"]
    ]
    correlation = model.topic_correlation()
    partner_pairs = {frozenset(pair) for pair in partners}
    best_for_pair: dict[frozenset, float] = {}
    strongest_other = -1.0
    for i in range(len(owner)):
        for j in range(i + 1, len(owner)):
            pair = frozenset((owner[i], owner[j]))
            if len(pair) < 2:
                continue  # two learned copies of one planted topic
            if pair in partner_pairs:
                best_for_pair[pair] = max(best_for_pair.get(pair, -1.0), correlation[i, j])
            else:
                strongest_other = max(strongest_other, correlation[i, j])
    assert set(best_for_pair) == partner_pairs, owner
    assert min(best_for_pair.values()) > strongest_other, (best_for_pair, strongest_other)


def test_correlation_under_q_matches_a_float64_loop_and_adds_over_parts():
    from topicvae.topics.analysis import CodeMoments, correlation_under_q

    rng = np.random.default_rng(3)
    means = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    variances = rng.uniform(0.1, 2.0, size=(40, 5))
    # law of total covariance, written out: Cov_n(mu) (unbiased) + mean_n diag(sigma^2)
    expected = np.zeros((5, 5))
    mu = means.mean(0)
    for n in range(40):
        expected += np.outer(means[n] - mu, means[n] - mu) / 39
    for k in range(5):
        expected[k, k] += variances[:, k].mean()
    expected /= np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    whole = CodeMoments.of(means, variances)
    parts = CodeMoments.zero(5) + CodeMoments.of(means[:13], variances[:13]) + CodeMoments.of(means[13:], variances[13:])
    np.testing.assert_allclose(correlation_under_q(whole), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(correlation_under_q(parts), expected, rtol=1e-12, atol=1e-12)
    summed_over_ranks = CodeMoments.from_vector(CodeMoments.of(means[:7], variances[:7]).as_vector() + CodeMoments.of(means[7:], variances[7:]).as_vector(), 5)
    np.testing.assert_allclose(correlation_under_q(summed_over_ranks), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="holds 1 document with words"):
        correlation_under_q(CodeMoments.of(means[:1], variances[:1]))
