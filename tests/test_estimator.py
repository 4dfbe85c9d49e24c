"""TopicModel: validation, fitting on text or counts, transform, determinism, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from topicvae.topics.estimator import ModelFileError, TopicModel
from topicvae.latent.groups import GroupSpecError
from topicvae.text.vectorizer import TextVectorizer

from conftest import counts_to_documents, planted_corpus


@pytest.fixture(scope="module")
def small():
    counts, vocabulary, topics = planted_corpus(n_docs=300, seed=3)
    return counts, vocabulary, counts_to_documents(counts, vocabulary)


def quick(**kwargs):
    params = dict(groups="2x3", epochs=3, batch_size=50, seed=0)
    params.update(kwargs)
    return TopicModel(**params)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(epochs=0), r"epochs=0 is invalid"),
        (dict(epochs=2.5), r"epochs=2.5 is invalid"),
        (dict(batch_size=1), r"batch_size=1 is invalid"),
        (dict(lr=-1.0), r"lr=-1.0 is invalid"),
        (dict(lr=float("nan")), r"lr=nan is invalid"),
        (dict(model="lda"), r"model='lda' is unknown"),
        (dict(objective="info"), r"objective='info' is unknown"),
        (dict(beta=float("nan")), r"beta=nan is invalid"),
        (dict(gamma=-2.0), r"gamma=-2.0 is invalid"),
        (dict(objective="vae", beta=2.0), r"objective='vae' does not take beta"),
        (dict(dropout=1.0), r"dropout=1.0 is invalid"),
        (dict(topic_dropout=-0.1), r"topic_dropout=-0.1 is invalid"),
        (dict(topic_dropout=True), r"topic_dropout=True is invalid"),
        (dict(model="nvdm", topic_dropout=0.0), r"topic_dropout=0.0 applies to ProdLDA only"),
        (dict(temperature=0.0), r"temperature=0.0 is invalid"),
        (dict(hidden_sizes=()), r"hidden_sizes=\(\) is invalid"),
        (dict(device="tpu"), r"device='tpu' is invalid"),
        (dict(encoder_input="tfidf"), r"encoder_input='tfidf' is unknown"),
        (dict(posterior_norm="layer"), r"posterior_norm='layer' is unknown"),
        (dict(init="orthogonal"), r"init='orthogonal' is unknown"),
        (dict(word_shift="yes"), r"word_shift='yes' is invalid"),
        (dict(lr_schedule="step"), r"lr_schedule='step' is unknown"),
        (dict(model="nvdm", posterior_norm="affine"), r"posterior_norm='affine' applies to ProdLDA only"),
    ],
)
def test_fit_validates_parameters(small, params, match):
    counts, vocabulary, _ = small
    with pytest.raises(ValueError, match=match):
        quick(**params).fit(counts, vocabulary=vocabulary)


def test_bad_group_spec_is_reported_at_fit(small):
    model = quick(groups="2x")  # __init__ only stores it
    with pytest.raises(GroupSpecError, match=r"cannot read item '2x'"):
        model.fit(small[0])


def test_unfitted_model_refuses_transform_and_topics(small):
    model = quick()
    with pytest.raises(NotFittedError, match="not fitted"):
        model.transform(small[0])
    with pytest.raises(NotFittedError, match="not fitted"):
        model.topics()


def test_fit_on_text_builds_vocabulary_and_transform_gives_proportions(small):
    counts, vocabulary, docs = small
    model = quick(vectorizer=TextVectorizer(min_df=2, max_df=1.0, stop_words=None)).fit(docs)
    document_frequency = np.asarray((counts > 0).sum(0)).ravel()
    assert sorted(model.vocabulary_) == sorted(w for w, df in zip(vocabulary, document_frequency) if df >= 2)
    theta = model.transform(docs[:7])
    assert theta.shape == (7, 6)
    np.testing.assert_allclose(theta.sum(1), 1.0, rtol=1e-5)
    assert len(model.history_) == 3
    assert set(model.history_[0]) >= {"reconstruction", "mutual_information", "tc_between", "tc_within", "dimwise_kl"}
    table = model.topics(5)
    assert list(table.columns) == ["group", "topic", "words"]
    assert table.index.tolist() == ["g0:0", "g0:1", "g0:2", "g1:0", "g1:1", "g1:2"]
    assert all(len(words) == 5 for words in table["words"])


def test_fit_on_counts_with_vocabulary(small):
    counts, vocabulary, _ = small
    model = quick().fit(counts, vocabulary=vocabulary)
    assert model.vocabulary_ == vocabulary
    with pytest.raises(ValueError, match=r"X has 10 features, but TopicModel is expecting 80 features as input\. Pass counts over the model's 80-word vocabulary"):
        model.transform(counts[:, :10])
    with pytest.raises(ValueError, match="fitted on a count matrix"):
        model.transform(["some text"])


def test_empty_documents_are_counted_and_skipped(small):
    counts, vocabulary, _ = small
    counts = counts.tolil()
    counts[[0, 5], :] = 0
    model = quick().fit(counts.tocsr(), vocabulary=vocabulary)
    assert model.n_empty_documents_ == 2
    assert model.n_documents_ == counts.shape[0] - 2


def test_nvdm_transform_returns_posterior_means(small):
    counts, vocabulary, _ = small
    model = quick(model="nvdm").fit(counts, vocabulary=vocabulary)
    rep = model.transform(counts[:4])
    assert rep.shape == (4, 6)
    assert not np.allclose(rep.sum(1), 1.0)


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_gives_the_same_model(small, seed):
    counts, vocabulary, _ = small
    a = quick(seed=seed).fit(counts, vocabulary=vocabulary)
    b = quick(seed=seed).fit(counts, vocabulary=vocabulary)
    c = quick(seed=seed + 1).fit(counts, vocabulary=vocabulary)
    state_a, state_b, state_c = a.model_.state_dict(), b.model_.state_dict(), c.model_.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)
    assert a.history_ == b.history_


@pytest.mark.parametrize("groups", ["2x3", "3,4c"])
def test_save_load_round_trip_gives_identical_transform(tmp_path, small, groups):
    _, _, docs = small
    model = quick(groups=groups, vectorizer=TextVectorizer(min_df=2, stop_words=None, token_pattern=r"(?u)\b\w+\b"))
    model.fit(docs)
    model.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "vocabulary.txt", "weights.pt"]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["format_version"] == 1 and config["params"]["groups"] == str(model.groups_)
    loaded = TopicModel.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.transform(docs), model.transform(docs))
    assert loaded.topics(5).equals(model.topics(5))
    np.testing.assert_array_equal(loaded.topic_correlation(), model.topic_correlation())
    assert loaded.history_ == model.history_


def test_load_refuses_missing_files_and_newer_formats(tmp_path, small):
    counts, vocabulary, _ = small
    model = quick().fit(counts, vocabulary=vocabulary)
    with pytest.raises(ModelFileError, match="is not a saved topicvae model: missing config.json"):
        TopicModel.load(tmp_path / "nothing")
    path = model.save(tmp_path / "m")
    (path / "weights.pt").rename(tmp_path / "weights.pt")
    (path / "vocabulary.txt").unlink()
    with pytest.raises(ModelFileError, match="not a complete saved model: missing vocabulary.txt, weights.pt"):
        TopicModel.load(path)
    path = model.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="model format 99.*upgrade topicvae"):
        TopicModel.load(path)


def test_load_refuses_a_pickle_that_runs_code(tmp_path, small):
    counts, vocabulary, _ = small
    path = quick().fit(counts, vocabulary=vocabulary).save(tmp_path / "m")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, path / "weights.pt")
    with pytest.raises(ModelFileError, match=r"holds pickled Python objects \(UnpicklingError\), which topicvae never loads"):
        TopicModel.load(path)
    assert not marker.exists()


def test_load_refuses_weights_of_another_shape(tmp_path, small):
    counts, vocabulary, _ = small
    path = quick().fit(counts, vocabulary=vocabulary).save(tmp_path / "m")
    other = quick(groups="2x4").fit(counts, vocabulary=vocabulary).save(tmp_path / "other")
    (path / "weights.pt").write_bytes((other / "weights.pt").read_bytes())
    with pytest.raises(ModelFileError, match=r"weights.pt holds .* of shape .*, but config.json and vocabulary.txt \(\d+ words\) describe shape .*: the files come from different models"):
        TopicModel.load(path)


def test_correlated_topics_only_pairs_topics_of_different_groups(small):
    counts, vocabulary, _ = small
    model = quick().fit(counts, vocabulary=vocabulary)
    pairs = model.correlated_topics(5)
    active = len(model.analysis_.correlations.topics)
    groups = [model.topic_labels()[i].split(":")[0] for i in model.analysis_.correlations.topics]
    across = sum(1 for a in range(active) for b in range(a + 1, active) if groups[a] != groups[b])
    assert len(pairs) == min(5, across)
    assert all(a.split(":")[0] != b.split(":")[0] for a, b in zip(pairs.topic_a, pairs.topic_b))
    assert (pairs.partial.diff().dropna() <= 1e-12).all()  # largest partial correlation first
    within = model.correlated_topics(100, across_groups=False)
    assert len(within) == active * (active - 1) // 2


def test_a_model_saved_before_the_architecture_options_loads_as_it_was_trained(small, tmp_path):
    # config.json of earlier versions has no encoder_input, posterior_norm, word_shift, init or
    # lr_schedule: such a model was trained on raw counts with batch-norms without learned
    # parameters and no decoder shift, and must come back so, whatever today's defaults are
    counts, vocabulary, _ = small
    legacy = quick(encoder_input="counts", posterior_norm="none", word_shift=False, init="default").fit(counts, vocabulary=vocabulary)
    legacy.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    for name in ("encoder_input", "posterior_norm", "word_shift", "init", "lr_schedule", "topic_dropout"):
        del config["params"][name]
    del config["fitted"]["analysis"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = TopicModel.load(tmp_path / "old")
    assert (loaded.encoder_input, loaded.posterior_norm, loaded.word_shift) == ("counts", "none", False)
    np.testing.assert_allclose(loaded.transform(counts), legacy.transform(counts), atol=1e-6)
    assert loaded.topics(5)["words"].tolist() == legacy.topics(5)["words"].tolist()
    with pytest.raises(NotFittedError, match=r"no topic analysis .*: pass analysis=model.analyse\(X\)"):
        loaded.correlated_topics()
    loaded.analysis_ = loaded.analyse(counts)
    assert len(loaded.correlated_topics(3)) <= 3


def test_a_saved_model_keeps_its_resolved_architecture_and_analysis(small, tmp_path):
    counts, vocabulary, _ = small
    model = quick().fit(counts, vocabulary=vocabulary)
    model.save(tmp_path / "m")
    params = json.loads((tmp_path / "m" / "config.json").read_text())["params"]
    assert (params["encoder_input"], params["posterior_norm"], params["word_shift"], params["init"]) == ("log1p", "shift", True, "default")
    assert params["topic_dropout"] == params["dropout"] or (params["dropout"] is None and params["topic_dropout"] == 0.2)
    loaded = TopicModel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.analysis_.pruning.active, model.analysis_.pruning.active)
    np.testing.assert_allclose(loaded.analysis_.correlations.partial, model.analysis_.correlations.partial)
    assert loaded.correlated_topics(4).equals(model.correlated_topics(4))


def test_topic_dropout_is_its_own_switch_and_is_saved_as_trained(small, tmp_path):
    counts, vocabulary, _ = small
    model = quick(dropout=0.3, topic_dropout=0.0).fit(counts, vocabulary=vocabulary)
    assert (model.model_.encoder_dropout.p, model.model_.topic_dropout.p) == (0.3, 0.0)
    assert quick(dropout=0.3).fit(counts, vocabulary=vocabulary).model_.topic_dropout.p == 0.3
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["params"]["topic_dropout"] == 0.0
    loaded = TopicModel.load(tmp_path / "m")
    assert (loaded.model_.encoder_dropout.p, loaded.model_.topic_dropout.p) == (0.3, 0.0)


def test_two_documents_are_refused_before_training_not_after():
    # the analysis at the end of fit needs three documents: two must fail at once, not after
    # every epoch has run and the model is lost
    counts = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="only 2 of 3 documents have any word of the vocabulary"):
        quick(epochs=50).fit(counts)


# ------------------------------------------------------------------------------------------
# the caller's random numbers and a fit stopped early (issue 15)
# ------------------------------------------------------------------------------------------
def test_the_callers_random_numbers_between_steps_change_nothing_and_are_left_alone(small):
    import random

    counts, vocabulary, _ = small
    alone = quick().fit(counts, vocabulary=vocabulary)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    interleaved = quick()
    draws = []
    for _ in interleaved.fit_iter(counts, vocabulary=vocabulary):
        # the caller's own code between steps (dropout and samples must not come from its stream)
        draws.append((torch.rand(1).item(), np.random.random(), random.random()))
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    expected = [(torch.rand(1).item(), np.random.random(), random.random()) for _ in draws]
    assert draws == expected  # the caller's streams went on as if no model were fitted
    state, other = alone.model_.state_dict(), interleaved.model_.state_dict()
    assert all(torch.equal(state[name], other[name]) for name in state)
    assert alone.history_ == interleaved.history_


def test_a_fit_stopped_early_is_usable_and_says_what_it_lacks(small, tmp_path):
    counts, vocabulary, _ = small
    model = quick(epochs=50).fit(counts, vocabulary=vocabulary)
    assert model.analysis_ is not None
    for progress in model.fit_iter(counts, vocabulary=vocabulary):
        if progress.epoch == 2:
            break
    assert len(model.history_) == 1 and not model.model_.training
    assert model.analysis_ is None and model.topic_correlation_ is None  # nothing left from the complete fit
    with pytest.raises(NotFittedError, match=r"training stopped before its end, .*: pass the documents, topic_correlation\(X\)"):
        model.topic_correlation()
    assert model.topic_correlation(counts).shape == (6, 6)
    loaded = TopicModel.load(model.save(tmp_path / "stopped"))
    assert loaded.analysis_ is None and loaded.topic_correlation_ is None and loaded.history_ == model.history_
    np.testing.assert_array_equal(loaded.transform(counts[:5]), model.transform(counts[:5]))
    model.analysis_ = model.analyse(counts)  # the remedy the error names
    assert list(model.correlated_topics(3).columns[:3]) == ["topic_a", "topic_b", "partial"]


@pytest.fixture
def gammas(monkeypatch):
    """The gamma of every training step's objective, in order."""
    import topicvae.training.loop as loop

    real, seen = loop.hfvae_objective, []

    def recording(*args, **kwargs):
        seen.append(args[5].gamma)  # the weights, passed sixth
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "hfvae_objective", recording)
    return seen


def test_gamma_warmup_weighs_the_tc_within_groups_by_1_for_its_share_of_the_steps(small, gammas, tmp_path):
    counts, vocabulary, _ = small
    model = quick(groups="2x3", gamma=4.0, epochs=4, batch_size=100, gamma_warmup=0.5).fit(counts, vocabulary=vocabulary)
    assert gammas == [1.0] * 6 + [4.0] * 6  # 3 steps an epoch: epochs 1-2 warm up, 3-4 weigh by gamma
    assert model.weights_.gamma == 4.0
    assert TopicModel.load(model.save(tmp_path / "m")).gamma_warmup == 0.5
    gammas.clear()
    quick(groups="2x3", gamma=4.0, epochs=2, batch_size=100, gamma_warmup=0.0).fit(counts, vocabulary=vocabulary)
    assert gammas == [4.0] * 6
    gammas.clear()  # ProdLDA's default: half of training
    default = quick(groups="2x3", gamma=4.0, epochs=2, batch_size=100).fit(counts, vocabulary=vocabulary)
    assert gammas == [1.0] * 3 + [4.0] * 3
    assert default._params_config()["gamma_warmup"] == 0.5


@pytest.mark.parametrize("share", [1.0, -0.1, True, "half"])
def test_gamma_warmup_out_of_range_is_refused(small, share):
    counts, vocabulary, _ = small
    with pytest.raises(ValueError, match=r"gamma_warmup=.* is invalid: give the share of training in \[0, 1\)"):
        quick(gamma_warmup=share).fit(counts, vocabulary=vocabulary)


@pytest.mark.parametrize("objective", ["beta-vae", "beta-tcvae"])
def test_the_presets_that_tie_gamma_to_beta_train_without_warmup(small, gammas, objective):
    counts, vocabulary, _ = small
    model = quick(objective=objective, beta=3.0, epochs=2, batch_size=100).fit(counts, vocabulary=vocabulary)
    assert gammas == [3.0] * 6 and model._params_config()["gamma_warmup"] == 0.0
    with pytest.raises(ValueError, match=rf"gamma_warmup=0.5 needs objective='hfvae': objective='{objective}' ties gamma"):
        quick(objective=objective, gamma_warmup=0.5).fit(counts, vocabulary=vocabulary)
