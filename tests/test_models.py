"""Models: the ProdLDA prior, the word-ranking rule, Concrete groups, and planted-topic recovery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from topicvae.topics.estimator import TopicModel
from topicvae.latent.groups import GroupSpec
from topicvae.topics.models import NVDM, ProdLDA, build_model, dirichlet_laplace_prior
from topicvae.objective.terms import ObjectiveWeights, hfvae_objective

from conftest import planted_corpus


def test_dirichlet_laplace_prior_matches_the_formula_term_by_term():
    a = np.array([0.3, 1.0, 2.5, 7.0], dtype=np.float64)
    K = len(a)
    mean, variance = dirichlet_laplace_prior(torch.tensor(a))
    for k in range(K):
        expected_mean = np.log(a[k]) - sum(np.log(a[j]) for j in range(K)) / K
        expected_var = (1 / a[k]) * (1 - 2 / K) + sum(1 / a[j] for j in range(K)) / K**2
        assert mean[k].item() == pytest.approx(expected_mean, rel=1e-12)
        assert variance[k].item() == pytest.approx(expected_var, rel=1e-12)


def test_prodlda_prior_is_shared_by_all_gaussian_groups():
    # theta is a softmax over all K topics of all groups, so the prior is built for K = 50,
    # not for each group of 25: variance 1 - 1/K with a = 1.
    model = ProdLDA(30, GroupSpec.parse("2x25"))
    priors = model.priors()
    assert len(priors) == 2
    for prior in priors:
        assert torch.allclose(prior.loc, torch.zeros(25))
        assert torch.allclose(prior.scale**2, torch.full((25,), 1 - 1 / 50))


@pytest.mark.parametrize("kind", ["prodlda", "nvdm"])
def test_forward_with_gaussian_and_concrete_groups_gives_finite_objective(kind):
    torch.manual_seed(0)
    groups = GroupSpec.parse("4,3c,5")
    model = build_model(kind, 40, groups)
    bow = torch.poisson(torch.full((16, 40), 0.5))
    out = model(bow)
    assert [tuple(z.shape) for z in out.samples] == [(16, 4), (16, 3), (16, 5)]
    code = model.code(out.samples)
    assert code.shape == (16, groups.num_columns)
    # the Concrete columns are points on the simplex
    assert torch.allclose(code[:, 4:7].sum(1), torch.ones(16), atol=1e-5)
    terms = hfvae_objective(out.log_likelihood, out.posteriors, out.priors, out.samples, 100, ObjectiveWeights())
    assert torch.isfinite(terms.objective)
    assert terms.tc_within[1].item() == 0.0  # a Concrete group is one variable
    terms.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_prodlda_proportions_share_one_simplex_across_groups():
    model = ProdLDA(20, GroupSpec.parse("3,4"))
    samples = [torch.randn(5, 3), torch.randn(5, 4)]
    theta = model.code(samples)
    assert torch.allclose(theta.sum(1), torch.ones(5), atol=1e-6)
    assert torch.allclose(theta, F.softmax(torch.cat(samples, 1), 1))


@pytest.mark.parametrize("norm, collapsible", [("shift", False), ("none", False), ("affine", True), ("off", True)])
def test_only_the_collapsible_posterior_norms_let_a_topic_mean_stop_depending_on_x(norm, collapsible):
    # Topic 0's mean map is made nearly constant (weights 3% of their size): "shift" and
    # "none" divide by its batch standard deviation and blow it back up to unit variance, so
    # the topic cannot reach the prior; "off" passes it through, and "affine" can learn a
    # scale of 0 for it.
    torch.manual_seed(0)
    model = ProdLDA(30, GroupSpec.parse("2x3"), posterior_norm=norm).train()
    with torch.no_grad():
        model.posterior.loc.weight[0] *= 3e-2
        model.posterior.loc.bias[0] = 0.5
        if norm == "affine":
            model.posterior.loc_norm.weight[0] = 0.0
    bow = torch.poisson(torch.full((16, 30), 2.0))
    loc, _ = model.posterior.gaussian_parameters(model.features(bow))
    spread = loc.std(0)
    if collapsible:
        assert spread[0] < 0.05
    else:
        assert spread[0] > 0.5
    assert (model.posterior.loc_norm is None) == (norm == "off")


def test_prodlda_top_words_follow_the_decoder_output_through_batch_norm():
    # Raw weights rank word 0 first for topic 0, but the batch-norm's running statistics
    # (what the decoder applies at inference) put word 2 on top: the rule must follow the
    # decoder's actual output, softmax(BN(e_k W)).
    model = ProdLDA(3, GroupSpec.parse("2"), dropout=0.0)
    with torch.no_grad():
        model.topic_words.weight.copy_(torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0]]))
        model.word_norm.running_mean.copy_(torch.tensor([4.0, 2.5, 0.0]))
        model.word_norm.running_var.copy_(torch.tensor([1.0, 1.0, 0.25]))
    scores = model.topic_word_scores()
    expected = F.log_softmax(
        (torch.tensor([[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]) - model.word_norm.running_mean)
        / torch.sqrt(model.word_norm.running_var + model.word_norm.eps),
        dim=-1,
    )
    assert torch.allclose(scores, expected, atol=1e-6)
    assert scores[0].argmax().item() == 2
    assert model.topic_words.weight[:, 0].argmax().item() == 0


def test_nvdm_top_words_are_the_decoder_lift_over_the_empty_code():
    model = NVDM(4, GroupSpec.parse("2"))
    with torch.no_grad():
        model.decoder.weight.copy_(torch.tensor([[0.5, 0.0], [-1.0, 2.0], [2.0, 0.0], [0.0, -1.0]]))
        model.decoder.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))  # word 0 is frequent everywhere
    scores = model.topic_word_scores()
    # The lift of word w under topic k is R[w, k] minus a constant shared by all words.
    for k in range(2):
        shift = scores[k] - model.decoder.weight[:, k]
        assert torch.allclose(shift, shift[0].expand(4), atol=1e-6)
    assert scores[0].argmax().item() == 2  # not the background word 0


def _recovered(topics_table, planted_topics, min_overlap):
    found = [set(words) for words in topics_table["words"]]
    return [max(len(found_words & set(planted)) for found_words in found) >= min_overlap for planted in planted_topics]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prodlda_recovers_planted_topics(seed):
    counts, vocabulary, planted = planted_corpus(seed=seed)
    model = TopicModel("prodlda", "2x4", epochs=80, batch_size=100, seed=seed)
    model.fit(counts, vocabulary=vocabulary)
    table = model.topics(10)
    assert all(_recovered(table, planted, min_overlap=8)), table["words"].tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_nvdm_captures_planted_topics(seed):
    # NVDM's Gaussian code has no preferred axes (its prior is rotation invariant), so its
    # single dimensions need not be the planted topics. What it must learn is the planted
    # structure itself: documents of one topic map to one region of the code, and the decoder
    # produces that topic's words from there.
    counts, vocabulary, planted = planted_corpus(seed=seed, concentration=0.05)
    dominant = counts_dominant_topic(counts, len(planted))
    model = TopicModel("nvdm", "2x4", epochs=40, batch_size=100, lr=2e-3, seed=seed)
    model.fit(counts, vocabulary=vocabulary)
    codes = model.transform(counts)
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), codes, dominant, cv=3).mean()
    assert accuracy > 0.9
    with torch.no_grad():
        for k, words in enumerate(planted):
            centre = torch.as_tensor(codes[dominant == k].mean(0), dtype=torch.float32).unsqueeze(0)
            produced = model.model_.decode(centre)[0]
            top = {vocabulary[i] for i in produced.argsort(descending=True)[:10].tolist()}
            assert len(top & set(words)) >= 8, (k, sorted(top))


def counts_dominant_topic(counts, n_topics, words_per_topic=10):
    """The planted topic with the most words in each document."""
    dense = counts.toarray()
    per_topic = dense[:, : n_topics * words_per_topic].reshape(len(dense), n_topics, words_per_topic).sum(-1)
    return per_topic.argmax(1)


def test_nvdm_posterior_variance_has_a_floor_that_keeps_the_objective_finite():
    # One enormous document can drive NVDM's log-variance towards -100 (seen on 20 Newsgroups:
    # a post with 11,151 counts of one word). Without the floor, 1 / sigma overflows float32 in
    # the estimator's pairwise densities and the gradient turns NaN.
    torch.manual_seed(0)
    model = NVDM(30, GroupSpec.coerce("2x3"), hidden_sizes=(16,))
    with torch.no_grad():
        model.posterior.log_var.bias.fill_(-200.0)
    bow = torch.poisson(torch.full((8, 30), 2.0))
    out = model(bow)
    floor = torch.tensor(1e-4)  # float32, as the model computes it
    assert all(float(q.scale.detach().min()) >= float(floor.sqrt()) for q in out.posteriors)
    assert all(float(variance.min()) >= float(floor) for _, variance in model.posterior_moments(bow))
    terms = hfvae_objective(out.log_likelihood, out.posteriors, out.priors, out.samples, 100, ObjectiveWeights.preset("hfvae"))
    terms.loss.backward()
    assert torch.isfinite(terms.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
