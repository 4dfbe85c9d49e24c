"""Disentanglement and clustering metrics on a toy ground-truth dataset whose factors are known.

Scores of a perfect code (one code dimension per factor) must sit at the top of each metric's
range, scores of codes unrelated to or mixing the factors near chance; thresholds come from the
reasoning in each test and from measurements over several seeds (noted where they apply).
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import mutual_info_score

import topicvae.images.disentanglement as dis
from topicvae.images.disentanglement import (
    DEFAULTS,
    QUICK,
    REPRESENT_BATCH,
    dci,
    discrete_mutual_information,
    evaluate_disentanglement,
    factor_entropy,
    factor_vae_score,
    histogram_discretize,
    importance_scores,
    mutual_information_gap,
    sample_codes_and_factors,
    unsupervised_accuracy,
)

SIZES = (3, 5, 4)
FAST_GBT = {"n_estimators": 10}  # ten boosting stages: enough for these toy codes, ~0.2 s per fit


class ToyData:
    """Three independent uniform factors; an "image" is the factor values plus Gaussian noise channels.

    ``noise_stds`` sets the scale of each noise channel; the noise has its own generator because
    ``images`` takes no rng in the dataset interface.
    """

    def __init__(self, sizes=SIZES, noise_stds=(0.01, 0.1, 1.0), seed=0):
        self.factor_sizes = list(sizes)
        self.factor_names = [f"factor{k}" for k in range(len(sizes))]
        self.noise_stds = np.asarray(noise_stds, dtype=float)
        self._noise = np.random.default_rng(seed)

    def sample_factors(self, n, rng):
        return np.stack([rng.integers(size, size=n) for size in self.factor_sizes], axis=1).astype(np.int64)

    def images(self, factor_classes):
        noise = self._noise.normal(size=(factor_classes.shape[0], self.noise_stds.size)) * self.noise_stds
        return np.column_stack([factor_classes.astype(float), noise])


def perfect(x):
    """One dim per factor, each monotone (scaled, curved, reversed); a constant dim; the noise channels.

    The monotone maps keep each factor's values in distinct equal-width bins out of 20, so the
    20-bin discretization is a bijection of each factor. Dims: 0-2 factors, 3 constant,
    4-6 noise with std 0.01, 0.1, 1.
    """
    a, b, c = x[:, 0], x[:, 1], x[:, 2]
    return np.column_stack([100 * a, b + 0.1 * b**2, -c, np.full(len(x), 3.0), x[:, 3:]])


# A fixed orthogonal matrix (M M^T = I) that gives every code dim weights of magnitude
# (2, 2, 1)/3 on the three factors: each factor is spread over all dims, two of them equally.
MIXING = np.array([[2.0, 2.0, -1.0], [2.0, -1.0, 2.0], [-1.0, 2.0, 2.0]]) / 3


def mixed(x):
    """The standardized factors rotated by MIXING: as informative as ``perfect`` but entangled."""
    sizes = np.asarray(SIZES)
    mean, std = (sizes - 1) / 2, np.sqrt((sizes**2 - 1) / 12)
    return ((x[:, :3] - mean) / std) @ MIXING


def unrelated(seed):
    """A representation that ignores its input: codes independent of the factors."""
    noise = np.random.default_rng(seed)
    return lambda x: noise.normal(size=(len(x), 6))


def draw(represent, n, seed, data=None):
    return sample_codes_and_factors(data or ToyData(), represent, n, np.random.default_rng(seed))


# --------------------------------------------------------------------------- unsupervised_accuracy


def test_unsupervised_accuracy_hand_examples():
    # A relabelling of the truth is perfect whatever the ids.
    assert unsupervised_accuracy([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 9, 9]) == 1.0
    assert unsupervised_accuracy(["a", "a", "b"], [1, 1, 0]) == 1.0
    # Table (rows clusters 0, 1; columns labels 0, 1) = [[2, 0], [1, 3]]: best matching is the
    # diagonal, 5 of 6 right.
    assert unsupervised_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx(5 / 6)
    # More clusters than labels: label 0 split over clusters 0 and 1; only one of them can be
    # matched to it, so 2 of its 4 points count as errors: 4 / 6.
    assert unsupervised_accuracy([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(4 / 6)
    # Fewer clusters than labels: one cluster can take one label only.
    assert unsupervised_accuracy([0, 1, 2, 0, 1, 2], [7] * 6) == pytest.approx(2 / 6)


def test_unsupervised_accuracy_beats_greedy_matching():
    labels = [0, 0, 0, 1, 1, 0, 0]
    clusters = [0, 0, 0, 0, 0, 1, 1]
    # Table: cluster 0 -> {label 0: 3, label 1: 2}; cluster 1 -> {label 0: 2}. Greedy matching
    # gives cluster 0 its biggest label 0 (3) and leaves cluster 1 with label 1 (0): 3/7. The
    # optimum sends cluster 0 to label 1 (2) and cluster 1 to label 0 (2): 4/7.
    assert unsupervised_accuracy(labels, clusters) == pytest.approx(4 / 7)


# --------------------------------------------------------------------------- discretization and MI


def test_histogram_discretize_matches_explicit_loop():
    rng = np.random.default_rng(3)
    codes = np.column_stack([rng.normal(size=500), rng.exponential(size=500), np.linspace(-1, 1, 500)])
    bins = 20
    got = histogram_discretize(codes, bins)
    expected = np.empty_like(got)
    for d in range(codes.shape[1]):
        low, high = codes[:, d].min(), codes[:, d].max()
        width = (high - low) / bins
        for n, value in enumerate(codes[:, d]):
            # bin b (1-based) covers [low + (b-1) w, low + b w); the maximum goes to the last bin
            expected[n, d] = min(int((value - low) / width), bins - 1) + 1
    np.testing.assert_array_equal(got, expected)
    assert got.min() == 1 and got.max() == bins
    # Equally spaced codes fill equal-width bins equally: 500 / 20 = 25 each.
    np.testing.assert_array_equal(np.bincount(got[:, 2])[1:], np.full(bins, 25))
    # A constant dimension lands in a single bin (np.histogram widens its range to c +- 0.5).
    assert np.unique(histogram_discretize(np.full((7, 1), 2.5), bins)).size == 1


def test_discrete_mutual_information_hand_value():
    codes = np.array([[0.0], [0.0], [1.0], [1.0]])  # two bins: {0, 0} and {1, 1}
    factors = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 1]])
    mi = discrete_mutual_information(codes, factors, bins=2)
    assert mi.shape == (1, 3)
    # Column 0 equals the code: I = H = ln 2. Column 1 is independent of it: I = 0.
    # Column 2 = (0, 0, 0, 1): I = H(v) - H(v | z) = (2 ln 2 - 3/4 ln 3) - 1/2 ln 2.
    np.testing.assert_allclose(mi[0], [math.log(2), 0.0, 1.5 * math.log(2) - 0.75 * math.log(3)], atol=1e-12)
    np.testing.assert_allclose(factor_entropy(factors), [math.log(2), math.log(2), 2 * math.log(2) - 0.75 * math.log(3)])


# --------------------------------------------------------------------------- MIG


def test_mig_of_perfect_code_is_one_minus_the_plug_in_bias():
    codes, factors = draw(perfect, 2000, seed=0)
    result = mutual_information_gap(codes, factors)
    entropy = factor_entropy(factors)
    mi = np.asarray(result.mutual_information)
    # The 20-bin discretization is a bijection of each factor, so its own dim carries all of H.
    np.testing.assert_allclose(mi[[0, 1, 2], [0, 1, 2]], entropy, rtol=1e-12)
    assert result.top_code == (0, 1, 2)
    assert mi[3].max() == 0.0  # the constant dim
    # The runner-up is an unrelated dim whose plug-in MI is only bias, at most about
    # (A-1)(C-1)/(2N) = 19 * 4 / 4000 = 0.019 nats here, i.e. 1.2% of H for the 5-valued factor:
    # MIG measured 0.988; 0.97 leaves room for the bias' spread.
    assert 0.97 < result.mig < 1.0
    gaps = 1 - np.sort(mi, axis=0)[-2] / entropy
    np.testing.assert_allclose(result.gap_per_factor, gaps, rtol=1e-12)
    assert result.bins == 20 and result.num_samples == 2000 and result.units == "nats"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mig_near_zero_for_shuffled_and_small_for_mixed_codes(seed):
    codes, factors = draw(perfect, 2000, seed)
    shuffled = codes[np.random.default_rng(seed).permutation(len(codes))]  # codes no longer match factors
    # Every MI is plug-in bias (~0.01-0.02 nats) and the two largest nearly tie: measured <= 0.003.
    assert mutual_information_gap(shuffled, factors).mig < 0.02
    # MIXING gives two dims equal weight on each factor, so their MIs nearly tie: measured 0.08-0.10.
    codes, factors = draw(mixed, 2000, seed)
    assert mutual_information_gap(codes, factors).mig < 0.2


# --------------------------------------------------------------------------- FactorVAE


def test_factor_vae_perfect_code_scores_one_and_prunes_on_std():
    rng = np.random.default_rng(0)
    result = factor_vae_score(ToyData(), perfect, rng, num_train=300, num_eval=200, num_variance_estimate=1000)
    # Fixing factor k makes dim k constant in the batch (normalized variance 0), while every other
    # active dim varies: every vote is (k, k), so both accuracies are exactly 1.
    assert result.score == result.eval_accuracy == result.train_accuracy == 1.0
    assert result.classifier[:3] == (0, 1, 2)
    # Pruned: the constant dim 3 and the noise dim of std 0.01 (< 0.05). Kept: the noise dim of
    # std 0.1, whose variance 0.01 is below 0.05 - so the rule is on the std, as disentanglement_lib's.
    assert result.active_dims == (0, 1, 2, 5, 6)
    assert result.num_active_dims == 5 and result.num_code_dims == 7
    assert np.asarray(result.votes_train).sum() == 300
    assert result.global_std[0] == pytest.approx(100 * np.sqrt(2 / 3), rel=0.1)  # std of 100 * U{0,1,2}


def test_factor_vae_normalizes_by_the_global_std():
    # Each dim is its factor plus noise of std 0.2, at scales 1000, 1 and 0.1 (std 0.11, above
    # prune_std). Fixing factor k leaves dim k with normalized variance 0.04 / (var(v_k) + 0.04)
    # <= 0.06 against ~1 for the others, so every vote is right. Unnormalized, the 0.1-scaled dim
    # would have the smallest variance in every vote and the score would fall to 1/3.
    data = ToyData(noise_stds=(0.2, 0.2, 0.2))

    def scaled(x):
        return np.column_stack([1000 * (x[:, 0] + x[:, 3]), x[:, 1] + x[:, 4], 0.1 * (x[:, 2] + x[:, 5])])

    result = factor_vae_score(data, scaled, np.random.default_rng(0), num_train=300, num_eval=300, num_variance_estimate=1000)
    assert result.score == 1.0 and result.classifier == (0, 1, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_factor_vae_unrelated_code_is_at_chance(seed):
    rng = np.random.default_rng(seed)
    result = factor_vae_score(ToyData(), unrelated(seed), rng, num_train=500, num_eval=500, num_variance_estimate=500)
    # The argmin is independent of the fixed factor, so held-out votes are right with probability
    # 1/3; the standard error on 500 votes is 0.021, and 0.12 is over five of them. Measured 0.29-0.38.
    assert result.eval_accuracy < 1 / 3 + 0.12
    assert result.num_active_dims == 6


def test_factor_vae_mixed_code_is_below_perfect():
    # Fixing a factor lowers the variance of every dim by that factor's weight, so the argmin is
    # a consistent dim per factor and FactorVAE stays well above chance for rotations (measured
    # 0.55-0.64 for MIXING); it does drop below a perfect code's 1.0.
    result = factor_vae_score(ToyData(), mixed, np.random.default_rng(0), num_train=500, num_eval=500, num_variance_estimate=500)
    assert 1 / 3 < result.score < 0.85


def test_factor_vae_with_no_active_dimension_scores_zero():
    result = factor_vae_score(ToyData(), lambda x: np.zeros((len(x), 4)), np.random.default_rng(0), num_variance_estimate=100)
    assert (result.score, result.train_accuracy, result.eval_accuracy, result.num_active_dims) == (0.0, 0.0, 0.0, 0)


def test_represent_sees_bounded_batches():
    seen = []

    def recording(x):
        seen.append(len(x))
        return perfect(x)

    codes, factors = sample_codes_and_factors(ToyData(), recording, 2500, np.random.default_rng(0))
    assert seen == [1000, 1000, 500] and codes.shape == (2500, 7) and factors.shape == (2500, 3)
    seen.clear()
    factor_vae_score(ToyData(), recording, np.random.default_rng(0), num_train=40, num_eval=20, num_variance_estimate=1500)
    assert max(seen) <= REPRESENT_BATCH
    # 15 votes of 64 per call: 3 calls for 40 votes, 2 for 20, after 2 for the variance estimate.
    assert seen == [1000, 500, 960, 960, 640, 960, 320]


# --------------------------------------------------------------------------- DCI


def test_importance_scores_hand_matrix():
    r = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    s = importance_scores(r)
    # Rows: (1, 0) -> 1; (1/2, 1/2) -> 1 - H_2 = 0; zero row -> 0 with weight 0.
    np.testing.assert_allclose(s.disentanglement_per_code, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(s.code_weights, [0.5, 0.5, 0.0])
    assert s.disentanglement == pytest.approx(0.5)
    # Columns: (2/3, 1/3, 0) -> 1 - H_3 = (2/3) ln 2 / ln 3; (0, 1, 0) -> 1; weights 3/4, 1/4.
    c0 = (2 / 3) * math.log(2) / math.log(3)
    np.testing.assert_allclose(s.completeness_per_factor, [c0, 1.0])
    np.testing.assert_allclose(s.factor_weights, [0.75, 0.25])
    assert s.completeness == pytest.approx(0.75 * c0 + 0.25)  # 0.565; the plain mean would be 0.710


def test_importance_scores_extremes_and_reference_formula():
    assert importance_scores(np.eye(3)).disentanglement == pytest.approx(1.0)
    assert importance_scores(np.eye(3)).completeness == pytest.approx(1.0)
    assert importance_scores(np.ones((4, 3))).disentanglement == pytest.approx(0.0, abs=1e-12)
    assert importance_scores(np.ones((4, 3))).completeness == pytest.approx(0.0, abs=1e-12)
    zero = importance_scores(np.zeros((2, 2)))
    assert (zero.disentanglement, zero.completeness) == (0.0, 0.0)
    single = importance_scores(np.array([[0.7], [0.3]]))  # one factor: no code can mix factors
    assert single.disentanglement == 1.0
    # Against the entropy written with scipy, disentanglement_lib's way (1e-11 smoothing).
    r = np.random.default_rng(0).random((6, 4))
    s = importance_scores(r)
    per_code = 1 - scipy.stats.entropy(r.T + 1e-11, base=4)
    per_factor = 1 - scipy.stats.entropy(r + 1e-11, base=6)
    np.testing.assert_allclose(s.disentanglement_per_code, per_code, atol=1e-9)
    assert s.disentanglement == pytest.approx(per_code @ (r.sum(1) / r.sum()), abs=1e-9)
    assert s.completeness == pytest.approx(per_factor @ (r.sum(0) / r.sum()), abs=1e-9)


def test_dci_perfect_code():
    codes_train, factors_train = draw(perfect, 600, seed=0)
    codes_test, factors_test = draw(perfect, 300, seed=1)
    result = dci(codes_train, factors_train, codes_test, factors_test, regressor_params=FAST_GBT)
    # Each factor is a threshold function of its own dim, so the trees split on nothing else
    # (residuals stay functions of that dim): measured D = C = 1.000; tolerance 0.05.
    assert result.disentanglement > 0.95 and result.completeness > 0.95
    assert result.informativeness_test == result.informativeness_train == 1.0
    r = np.asarray(result.importance_matrix)
    assert r.shape == (7, 3) and (r.argmax(axis=0) == [0, 1, 2]).all()
    np.testing.assert_allclose(r.sum(axis=0), 1.0)  # tree importances: each column sums to 1
    assert result.regressor_params["n_estimators"] == 10 and result.num_train == 600 and result.num_test == 300


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dci_near_chance_for_unrelated_shuffled_and_mixed_codes(seed):
    codes_train, factors_train = draw(unrelated(seed), 600, seed)
    codes_test, factors_test = draw(unrelated(seed), 300, seed + 10)
    result = dci(codes_train, factors_train, codes_test, factors_test, regressor_params=FAST_GBT)
    # Gaussian codes unrelated to the factors: the trees fit noise with every dim alike, so each
    # row and each column of R is near uniform. Measured D, C in 0.01-0.05.
    assert result.disentanglement < 0.12 and result.completeness < 0.12
    # Chance accuracy is the mean of 1/3, 1/5, 1/4 = 0.26.
    assert result.informativeness_test < 0.36

    codes_train, factors_train = draw(perfect, 600, seed)
    codes_test, factors_test = draw(perfect, 300, seed + 10)
    shuffle = np.random.default_rng(seed).permutation(600)
    result = dci(codes_train[shuffle], factors_train, codes_test, factors_test, regressor_params=FAST_GBT)
    # Rows of the shuffled perfect code are still spread evenly over the factors (D ~ 0.01), but
    # columns are not: tree importances favour the many-valued noise dims over the 3-5-valued ones
    # and give the constant dim nothing, so completeness stays around 0.25 - no test on C here.
    assert result.disentanglement < 0.12
    assert result.informativeness_test < 0.36

    codes_train, factors_train = draw(mixed, 600, seed)
    codes_test, factors_test = draw(mixed, 300, seed + 10)
    result = dci(codes_train, factors_train, codes_test, factors_test, regressor_params=FAST_GBT)
    assert result.disentanglement < 0.25  # measured 0.10-0.14
    assert result.informativeness_test > 0.9  # the information is all there, only entangled
    # The lasso's importances are |MIXING| up to the standardization, so every row is
    # proportional to (2, 2, 1): D = 1 - H_3(2/5, 2/5, 1/5) = 0.040.
    lasso = dci(codes_train, factors_train, codes_test, factors_test, regressor="lasso")
    expected = 1 - scipy.stats.entropy([0.4, 0.4, 0.2], base=3)
    assert lasso.disentanglement == pytest.approx(expected, abs=0.01)


def test_dci_alternative_regressors_on_perfect_code():
    codes_train, factors_train = draw(perfect, 600, seed=0)
    codes_test, factors_test = draw(perfect, 300, seed=1)
    forest = dci(codes_train, factors_train, codes_test, factors_test, regressor="random_forest")
    # Every split may use the factor's own dim and leaves are pure after it: measured D = 1.000.
    assert forest.disentanglement > 0.95 and forest.informativeness_test == 1.0
    assert forest.regressor_params == {"n_estimators": 10, "max_depth": 10, "max_features": None}
    assert forest.predictor == "RandomForestRegressor"  # the DCI paper's and the HFVAE paper's predictor
    lasso = dci(codes_train, factors_train, codes_test, factors_test, regressor="lasso")
    assert lasso.disentanglement > 0.9 and lasso.completeness > 0.9
    assert lasso.regressor_params == {"cv": 5}


def test_dci_default_regressor_is_sklearns_default_gbt():
    assert inspect.signature(dci).parameters["regressor"].default == "gbt"
    codes_train, factors_train = draw(perfect, 150, seed=0)
    codes_test, factors_test = draw(perfect, 50, seed=1)
    result = dci(codes_train, factors_train, codes_test, factors_test)
    defaults = GradientBoostingClassifier().get_params()
    assert result.regressor == "gbt"
    assert result.regressor_params == {key: defaults[key] for key in ("n_estimators", "learning_rate", "max_depth", "subsample")}


# --------------------------------------------------------------------------- evaluate_disentanglement


def test_default_parameters_are_disentanglement_libs():
    fv = inspect.signature(factor_vae_score).parameters
    assert {k: fv[k].default for k in DEFAULTS["factor_vae"]} == {
        "batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000, "prune_std": 0.05,
    }
    assert inspect.signature(mutual_information_gap).parameters["bins"].default == 20
    assert DEFAULTS["dci"] == {"num_train": 10000, "num_test": 5000, "regressor": "gbt"}
    assert DEFAULTS["mig"] == {"num_samples": 10000, "bins": 20}


def test_evaluate_defaults_are_wired(monkeypatch):
    seen = {}

    def spy(codes_train, factors_train, codes_test, factors_test, regressor="gbt", **kwargs):
        seen.update(train=codes_train.shape, test=codes_test.shape, regressor=regressor, kwargs=kwargs)
        return dci(codes_train[:200], factors_train[:200], codes_test[:100], factors_test[:100], regressor_params=FAST_GBT)

    monkeypatch.setattr(dis, "dci", spy)  # the full-size GBT fit takes ~20 s; the samples are what is checked
    report = evaluate_disentanglement(ToyData(), perfect, np.random.default_rng(0))
    assert seen == {"train": (10000, 7), "test": (5000, 7), "regressor": "gbt", "kwargs": {}}
    assert report["metrics"] == ["factor_vae", "dci", "mig"] and report["quick"] is False
    fv = report["factor_vae"]
    assert {k: fv[k] for k in DEFAULTS["factor_vae"]} == DEFAULTS["factor_vae"]
    assert fv["score"] == 1.0 and fv["num_active_dims"] == 5
    assert report["mig"]["num_samples"] == 10000 and report["mig"]["bins"] == 20
    assert report["mig"]["mig"] > 0.99  # bias ~ 19 * 4 / 20000 nats at N = 10,000: measured 0.9975
    json.dumps(report)


def test_evaluate_quick_end_to_end():
    report = evaluate_disentanglement(ToyData(), perfect, np.random.default_rng(1), quick=True)
    assert report["quick"] is True and "reduced" in report["sample_counts"]
    assert report["factor_sizes"] == list(SIZES) and report["factor_names"] == ["factor0", "factor1", "factor2"]
    fv, d, mig = report["factor_vae"], report["dci"], report["mig"]
    assert {k: fv[k] for k in QUICK["factor_vae"]} == QUICK["factor_vae"]
    assert (d["num_train"], d["num_test"], d["regressor"]) == (1000, 500, "gbt")
    assert d["regressor_params"]["n_estimators"] == 100  # quick changes sample counts only
    assert mig["num_samples"] == 2000
    assert fv["score"] == 1.0 and d["disentanglement"] > 0.95 and d["completeness"] > 0.95 and mig["mig"] > 0.97
    assert all(report[m]["seconds"] >= 0 for m in report["metrics"])
    text = json.dumps(report)
    assert json.loads(text)["dci"]["importance_matrix"][0][0] == pytest.approx(d["importance_matrix"][0][0])


def test_evaluate_subset_of_metrics_runs_only_those():
    report = evaluate_disentanglement(ToyData(), perfect, np.random.default_rng(0), metrics=("mig",), quick=True)
    assert "mig" in report and "dci" not in report and "factor_vae" not in report


# --------------------------------------------------------------------------- errors


Z4, Y4 = np.zeros((4, 2)), np.array([[0], [1], [0], [1]])  # four training samples, two classes
Z2, Y2 = np.zeros((2, 2)), np.array([[0], [1]])


def evaluate(**kwargs):
    return evaluate_disentanglement(ToyData(), perfect, np.random.default_rng(0), **kwargs)


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: unsupervised_accuracy([0, 1, 1], [0, 1]), "labels has 3 samples but clusters has 2"),
        (lambda: unsupervised_accuracy([[0, 1]], [0]), "labels has shape"),
        (lambda: histogram_discretize(np.zeros((5, 2)), bins=1), "bins=1 is invalid"),
        (lambda: discrete_mutual_information(np.zeros(5), np.zeros((5, 1), int)), r"codes has shape \(5,\)"),
        (lambda: discrete_mutual_information(np.zeros((5, 1)), np.zeros((4, 1), int)), "codes has 5 samples but factors has 4"),
        (lambda: discrete_mutual_information(Z2, np.array([[0.5], [1.0]])), "factors has dtype float64 with non-int"),
        (lambda: discrete_mutual_information(np.array([[np.nan], [0]]), np.zeros((2, 1), int)), "codes contains NaN"),
        (lambda: mutual_information_gap(np.zeros((4, 1)), np.array([[0], [1], [0], [1]])), "codes has 1 dimension"),
        (lambda: mutual_information_gap(np.random.rand(4, 2), np.zeros((4, 1), int)), "factors column 0 is constant"),
        (lambda: mutual_information_gap(np.random.rand(4, 2), np.array([[0], [1], [0], [1]]), bins=0), "bins=0 is invalid"),
        (lambda: importance_scores(-np.eye(2)), "importance_matrix has negative"),
        (lambda: importance_scores(np.ones(3)), r"importance_matrix has shape \(3,\)"),
        (lambda: dci(Z4, Y4, Z2, Y2, regressor="svm"), "regressor='svm' is unknown"),
        (lambda: dci(Z4, Y4, np.zeros((2, 3)), Y2), "codes_test has 3 dims but codes_train has 2"),
        (lambda: dci(Z4, np.zeros((4, 1), int), Z2, Y2), "factors_train column 0 takes a single value"),
        (lambda: dci(Z4, Y4, Z2, Y2, seed=-1), "seed=-1 is invalid"),
        (lambda: factor_vae_score(ToyData(), perfect, np.random.default_rng(0), batch_size=1), "batch_size=1 is invalid"),
        (lambda: factor_vae_score(ToyData(), perfect, np.random.default_rng(0), num_train=0), "num_train=0 is invalid"),
        (lambda: factor_vae_score(ToyData(), perfect, np.random.default_rng(0), prune_std=-1.0), "prune_std=-1.0 is invalid"),
        (lambda: factor_vae_score(ToyData(), perfect, 0), "rng=0 is invalid"),
        (lambda: factor_vae_score(ToyData(), lambda x: np.zeros(len(x)), np.random.default_rng(0)), "represent returned shape"),
        (lambda: sample_codes_and_factors(ToyData(), perfect, 0, np.random.default_rng(0)), "n=0 is invalid"),
        (lambda: sample_codes_and_factors(ToyData(sizes=(3, 0)), perfect, 5, np.random.default_rng(0)), "data.factor_sizes"),
        (lambda: sample_codes_and_factors(object(), perfect, 5, np.random.default_rng(0)), "lacks factor_sizes"),
        (lambda: evaluate(metrics="mig"), "metrics='mig' is invalid"),
        (lambda: evaluate(metrics=("sap",)), "unknown 'sap'"),
        (lambda: evaluate(metrics=("mig", "mig")), "repeats"),
        (lambda: evaluate(quick=1), "quick=1 is invalid"),
        (lambda: evaluate(dci_regressor="svm"), "dci_regressor='svm' is unknown"),
    ],
)
def test_invalid_input_raises_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as excinfo:
        call()
    _one_line(excinfo)


def test_discrete_mutual_information_uses_sklearn_estimator():
    # The matrix is mutual_info_score between each factor and each discretized dim, nothing more.
    codes, factors = draw(perfect, 300, seed=4)
    mi = discrete_mutual_information(codes, factors)
    binned = histogram_discretize(codes)
    assert mi[6, 1] == pytest.approx(mutual_info_score(factors[:, 1], binned[:, 6]))
