"""TopicModel and ImageModel as scikit-learn estimators: clone, set_params, pipelines, model selection.

``check_estimator`` runs every one of scikit-learn's API checks on TopicModel (a model of
counts: its tags say non-negative, sparse or string input). ImageModel reads images
[N, H, W] or [N, C, H, W], not the 2-D feature tables those checks generate, so it gets the
protocol's tests here instead (clone, params, fit_transform, score, feature names).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.validation import check_is_fitted

from topicvae import TopicModel
from topicvae.images.estimator import ImageModel
from topicvae.text.vectorizer import TextVectorizer

pytestmark = pytest.mark.filterwarnings("ignore::topicvae.EmptyDocumentWarning")

SAMPLE = Path(__file__).resolve().parents[1] / "corpora" / "20newsgroups-sample.txt.gz"


@pytest.fixture(scope="module")
def sample_docs() -> list[str]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle][:400]


def _small(**params) -> TopicModel:
    return TopicModel(groups="2x3", epochs=3, batch_size=32, device="cpu", **params)


def test_every_scikit_learn_check_passes_for_the_topic_model():
    """scikit-learn's own API checks (fit/transform contracts, errors, pickling, dtypes, idempotence)."""
    results = []
    for model in (TopicModel(groups="3", epochs=2, batch_size=16, device="cpu"), TopicModel("nvdm", groups="2x2", epochs=2, device="cpu")):
        results += check_estimator(model, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed, failed
    passed = [r["check_name"] for r in results if r["status"] == "passed"]
    # the checks of the fit/transform contract ran, rather than being skipped
    for name in ("check_transformer_general", "check_fit_idempotent", "check_n_features_in_after_fitting",
                 "check_estimators_pickle", "check_positive_only_tag_during_fit", "check_fit2d_1sample"):
        assert name in passed


def test_clone_gives_an_unfitted_equal_estimator(sample_docs):
    model = _small(beta=0.5, vectorizer=TextVectorizer(min_df=2, max_features=300)).fit(sample_docs)
    copy = clone(model)
    assert copy.get_params(deep=False).keys() == model.get_params(deep=False).keys()
    assert copy.beta == 0.5 and copy.vectorizer is not model.vectorizer
    assert copy.vectorizer.get_params() == model.vectorizer.get_params()
    with pytest.raises(NotFittedError, match="not fitted"):
        check_is_fitted(copy)
    check_is_fitted(model)
    images = clone(ImageModel(groups="2,3c", epochs=1, temperature=0.5))
    assert images.temperature == 0.5
    with pytest.raises(NotFittedError, match="not fitted"):
        check_is_fitted(images)


def test_set_params_reaches_the_vectorizer_and_names_a_wrong_parameter():
    model = TopicModel(vectorizer=TextVectorizer())
    assert model.set_params(beta=0.3, vectorizer__min_df=2) is model
    assert model.beta == 0.3 and model.vectorizer.min_df == 2
    assert model.get_params()["vectorizer__min_df"] == 2
    with pytest.raises(ValueError, match="Invalid parameter 'betta'"):
        model.set_params(betta=1.0)


def test_a_pipeline_fits_and_transforms_raw_text(sample_docs):
    pipeline = make_pipeline(CountVectorizer(min_df=3, max_df=0.5, stop_words="english", max_features=500), _small())
    theta = pipeline.fit_transform(sample_docs)
    assert theta.shape == (len(sample_docs), 6)
    rows = ~np.isnan(theta).any(axis=1)
    np.testing.assert_allclose(theta[rows].sum(axis=1), 1.0, rtol=1e-5)
    assert list(pipeline.get_feature_names_out()) == [f"g{g}:{k}" for g in range(2) for k in range(3)]
    np.testing.assert_allclose(pipeline.transform(sample_docs[:50]), theta[:50], rtol=1e-5)
    assert pipeline[-1].n_features_in_ == len(pipeline[0].vocabulary_)


def test_fit_transform_is_fit_then_transform(sample_docs):
    a = _small().fit_transform(sample_docs)
    b = _small().fit(sample_docs).transform(sample_docs)
    np.testing.assert_array_equal(a, b)


def test_score_is_the_per_word_elbo_and_minus_log_perplexity(sample_docs):
    model = _small().fit(sample_docs)
    elbo, lengths = model.document_elbo(sample_docs[:100])
    keep = lengths > 0
    assert model.score(sample_docs[:100]) == pytest.approx(elbo[keep].sum() / lengths[keep].sum(), rel=1e-12)
    assert -model.score(sample_docs[:100]) == pytest.approx(math.log(model.perplexity(sample_docs[:100])), rel=1e-9)
    with pytest.raises(ValueError, match="no document of X has a word of the model's vocabulary"):
        model.score(["qqqq zzzz", ""])


def test_grid_search_over_beta_picks_by_held_out_elbo(sample_docs):
    search = GridSearchCV(_small(), {"beta": [0.1, 1.0]}, cv=2).fit(sample_docs)
    assert search.best_params_["beta"] in (0.1, 1.0)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and (scores < 0).all()  # a per-word ELBO: minus a log-perplexity
    assert search.best_score_ == scores.max()
    assert search.best_estimator_.beta == search.best_params_["beta"]


def test_a_dataframe_of_counts_gives_its_columns_as_vocabulary(sample_docs):
    vectorizer = CountVectorizer(min_df=3, stop_words="english", max_features=300)
    counts = vectorizer.fit_transform(sample_docs)
    words = vectorizer.get_feature_names_out()
    frame = pd.DataFrame(counts.toarray(), columns=words)
    model = _small().fit(frame)
    assert list(model.feature_names_in_) == list(words) == model.vocabulary_
    assert model.n_features_in_ == len(words)
    with pytest.raises(ValueError, match="feature names"):  # scikit-learn's check of the column names
        model.transform(frame[list(words[::-1])])
    # a matrix fit leaves no stale names behind
    model.fit(sp.csr_matrix(counts))
    assert not hasattr(model, "feature_names_in_")


def test_transform_can_give_a_dataframe_named_by_topic(sample_docs):
    model = _small().fit(sample_docs).set_output(transform="pandas")
    frame = model.transform(sample_docs[:20])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(model.get_feature_names_out())


def test_a_matrix_of_the_wrong_width_names_both_widths(sample_docs):
    model = _small().fit(sample_docs)
    width = model.n_features_in_
    with pytest.raises(ValueError, match=f"X has {width - 1} features, but TopicModel is expecting {width} features"):
        model.transform(np.ones((2, width - 1)))
    with pytest.raises(ValueError, match="input_features has 2 names"):
        model.get_feature_names_out(["a", "b"])


def test_the_image_model_keeps_the_protocol():
    rng = np.random.default_rng(0)
    images = (rng.random((64, 8, 8)) < 0.3).astype(np.float32)
    model = ImageModel(groups="2,3c", epochs=2, batch_size=32, device="cpu")
    code = model.fit_transform(images)
    assert code.shape == (64, 5)
    np.testing.assert_array_equal(code, ImageModel(groups="2,3c", epochs=2, batch_size=32, device="cpu").fit(images).transform(images))
    assert list(model.get_feature_names_out()) == model.code_labels()
    elbo = model.image_elbo(images)
    assert elbo.shape == (64,) and model.score(images) == pytest.approx(elbo.mean(), rel=1e-12)
    assert model.score(images) < 0
    search = GridSearchCV(ImageModel(groups="2,3c", epochs=1, batch_size=32, device="cpu"), {"beta": [1.0, 4.0]}, cv=2)
    assert search.fit(images).best_params_["beta"] in (1.0, 4.0)


def test_numpy_numbers_are_parameters_like_python_ones(sample_docs, tmp_path):
    search = GridSearchCV(_small(), {"epochs": np.arange(1, 3)}, cv=2).fit(sample_docs[:200])
    assert search.best_params_["epochs"] in (1, 2)
    model = TopicModel(groups="2x3", epochs=np.int64(2), batch_size=np.int64(32), beta=np.float32(0.5), lr=np.float32(1e-3),
                       dropout=np.float32(0.1), hidden_sizes=np.array([20, 20]), word_shift=np.True_, seed=np.int64(3),
                       device="cpu").fit(sample_docs[:200])
    model.save(tmp_path / "run")  # JSON and weights_only-loadable values
    assert TopicModel.load(tmp_path / "run").get_params()["dropout"] == pytest.approx(0.1)
    ImageModel(groups="2,3c", epochs=np.int64(1), batch_size=np.int64(16), device="cpu").fit(np.zeros((32, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match=r"seed=None is invalid: give one whole number >= 0"):
        TopicModel(seed=None).fit(sample_docs[:50])


def test_inputs_users_try_get_an_answer_or_a_remedy(sample_docs):
    model = _small().fit(sample_docs[:200])
    assert model.transform([]).shape == (0, 6)
    with pytest.raises(ValueError, match="no document of X has a word of the model's vocabulary"):
        model.score([])
    with pytest.raises(ValueError, match=r"X is a table with text in column\(s\) text: pass the documents as one column, e\.g\. X\['text'\]"):
        _small().fit(pd.DataFrame({"text": sample_docs[:50]}))
    with pytest.raises(ValueError, match=r"X is a 2-D array of text: pass the documents as a list"):
        _small().fit(np.array(sample_docs[:50])[:, None])
    with pytest.raises(ValueError, match=r"X holds lists of tokens .*' '\.join\(tokens\)"):
        _small().fit([doc.split() for doc in sample_docs[:50]])
    with pytest.raises(ValueError, match=r"vectorizer=CountVectorizer\(\.\.\.\) is not a topicvae TextVectorizer: .*make_pipeline"):
        TopicModel(vectorizer=CountVectorizer()).fit(sample_docs[:50])
    default = TopicModel().set_params(vectorizer__min_df=3)
    assert isinstance(default.vectorizer, TextVectorizer) and default.vectorizer.min_df == 3


def test_images_may_be_booleans_and_channels_last_is_named():
    with pytest.raises(ValueError, match=r"channels last \[N, H, W, C\]: pass \[N, C, H, W\], e\.g\. np\.moveaxis\(X, -1, 1\)"):
        ImageModel(groups="2,3c", epochs=1).fit(np.zeros((8, 8, 8, 3), dtype=np.float32))
