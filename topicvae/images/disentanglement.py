"""Disentanglement and clustering metrics for the image recipes.

The three disentanglement scores follow the protocol of disentanglement_lib, the library of
Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations" (ICML 2019), with the sample counts of its unsupervised study:

* the FactorVAE score of Kim & Mnih, "Disentangling by Factorising" (ICML 2018):
  :func:`factor_vae_score`;
* DCI disentanglement, completeness and informativeness of Eastwood & Williams, "A Framework for
  the Quantitative Evaluation of Disentangled Representations" (ICLR 2018): :func:`dci`;
* the mutual information gap (MIG) of Chen et al., "Isolating Sources of Disentanglement in
  Variational Autoencoders" (NeurIPS 2018), the score of Figure 6 of Esmaeili et al., "Structured
  Disentangled Representations" (AISTATS 2019): :func:`mutual_information_gap`.

:func:`unsupervised_accuracy` scores a clustering (the argmax of a Concrete group) against labels
(the digit classes) under the best one-to-one matching of clusters to labels.

:func:`evaluate_disentanglement` runs the chosen metrics and returns one JSON-ready dict that
records every parameter. Every result type is a small frozen dataclass with an ``as_dict()``.

Ground-truth data are any object with this interface (the recipes' datasets provide it):

* ``factor_sizes: list[int]`` - the number of values of each factor of variation;
* ``factor_names: list[str]``;
* ``sample_factors(n, rng) -> int64 array [n, F]`` - factor classes drawn from the data distribution;
* ``images(factor_classes) -> array [n, ...]`` - one observation per row of factor classes.

``represent`` maps observations ``[n, ...]`` to codes ``[n, dims]`` (the encoder's posterior
means); it is called on at most :data:`REPRESENT_BATCH` observations at a time, so memory stays
bounded whatever the sample counts.

Facts about disentanglement_lib that this module reproduces (and the few places it departs) are
stated where they apply; its code is not copied.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import mutual_info_score

__all__ = [
    "DCIResult",
    "DEFAULTS",
    "FactorVAEResult",
    "GroundTruthData",
    "ImportanceScores",
    "MIGResult",
    "QUICK",
    "REGRESSORS",
    "REPRESENT_BATCH",
    "dci",
    "discrete_mutual_information",
    "evaluate_disentanglement",
    "factor_entropy",
    "factor_vae_score",
    "histogram_discretize",
    "importance_scores",
    "mutual_information_gap",
    "sample_codes_and_factors",
    "unsupervised_accuracy",
]

#: Observations passed to ``represent`` per call. disentanglement_lib encodes 16 or 64 at a time;
#: the batch size changes no score, only speed and memory.
REPRESENT_BATCH = 1000

#: Sample counts and settings of disentanglement_lib's unsupervised study
#: (config/unsupervised_study_v1/metric_configs: factor_vae_metric.gin, dci.gin, mig.gin).
DEFAULTS: dict[str, dict[str, Any]] = {
    "factor_vae": {"batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000, "prune_std": 0.05},
    "dci": {"num_train": 10000, "num_test": 5000, "regressor": "gbt"},
    "mig": {"num_samples": 10000, "bins": 20},
}

#: ``quick=True`` in :func:`evaluate_disentanglement`: the same estimators and settings with ten
#: times fewer samples (twenty times fewer FactorVAE votes), for tests and for CPU budgets where
#: encoding the ~970,000 images of the full FactorVAE protocol is too slow. Scores are noisier
#: (FactorVAE accuracy on 250 votes has a standard error up to ~0.03) and MIG's plug-in bias is
#: about five times larger; results say which counts were used.
QUICK: dict[str, dict[str, Any]] = {
    "factor_vae": {"batch_size": 64, "num_train": 500, "num_eval": 250, "num_variance_estimate": 1000, "prune_std": 0.05},
    "dci": {"num_train": 1000, "num_test": 500, "regressor": "gbt"},
    "mig": {"num_samples": 2000, "bins": 20},
}

#: DCI predictors. "gbt" is disentanglement_lib's (and the default, so that scores compare with
#: Locatello et al.); "lasso" and "random_forest" are the two predictor families of the DCI paper.
REGRESSORS = ("gbt", "lasso", "random_forest")

METRICS = ("factor_vae", "dci", "mig")


class GroundTruthData(Protocol):
    """A dataset with known factors of variation (see the module docstring)."""

    factor_sizes: list[int]
    factor_names: list[str]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def images(self, factor_classes: np.ndarray) -> np.ndarray: ...


Represent = Callable[[Any], Any]


# --------------------------------------------------------------------------- result types


def _plain(value: Any) -> Any:
    """Tuples, numpy scalars and arrays as JSON-ready lists, floats and ints."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


class _AsDict:
    def as_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready Python values (nested tuples become nested lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class MIGResult(_AsDict):
    """Mutual information gap (Chen et al. 2018) as computed by disentanglement_lib.

    ``mig`` = mean over factors k of ``gap_per_factor[k]`` =
    (I(z_a; v_k) - I(z_b; v_k)) / H(v_k), where z_a and z_b are the code dimensions with the
    largest and second-largest discrete mutual information with factor v_k.
    ``mutual_information`` is the [code_dims][factors] matrix in nats, ``factor_entropy`` H(v_k)
    in nats, ``top_code`` the index a of the most informative code dimension per factor.
    """

    mig: float
    gap_per_factor: tuple[float, ...]
    top_code: tuple[int, ...]
    mutual_information: tuple[tuple[float, ...], ...]
    factor_entropy: tuple[float, ...]
    bins: int
    num_samples: int
    discretization: str = "equal-width histogram per code dimension (np.histogram edges, np.digitize)"
    units: str = "nats"


@dataclass(frozen=True)
class FactorVAEResult(_AsDict):
    """FactorVAE score (Kim & Mnih 2018) as computed by disentanglement_lib.

    ``score`` is ``eval_accuracy``: the accuracy of the majority-vote classifier on ``num_eval``
    fresh votes. ``votes_train[k][d]`` counts training votes in which factor k was fixed and code
    dimension d had the smallest normalized variance; ``classifier[d]`` is the factor predicted for
    dimension d. ``global_std`` is the per-dimension standard deviation (ddof=1) over
    ``num_variance_estimate`` samples; ``active_dims`` the dimensions with
    ``global_std >= prune_std``.
    """

    score: float
    train_accuracy: float
    eval_accuracy: float
    num_active_dims: int
    active_dims: tuple[int, ...]
    num_code_dims: int
    global_std: tuple[float, ...]
    votes_train: tuple[tuple[int, ...], ...]
    classifier: tuple[int, ...]
    batch_size: int
    num_train: int
    num_eval: int
    num_variance_estimate: int
    prune_std: float
    prune_rule: str = "dimension active iff its global std (ddof=1) >= prune_std"


@dataclass(frozen=True)
class ImportanceScores(_AsDict):
    """DCI disentanglement and completeness of an importance matrix R [code_dims, factors].

    ``disentanglement_per_code[i]`` = 1 - H_F(R_i. / sum_k R_ik), ``completeness_per_factor[k]``
    = 1 - H_D(R_.k / sum_i R_ik), with entropies in base F (factors) and D (code dims), so each lies
    in [0, 1]. ``disentanglement`` = sum_i code_weights[i] * disentanglement_per_code[i] with
    code_weights = row sums / total (Eastwood & Williams 2018, Eq. 2); ``completeness`` =
    sum_k factor_weights[k] * completeness_per_factor[k] with factor_weights = column sums / total,
    as disentanglement_lib computes it. The DCI paper averages completeness plainly; the two agree
    whenever every column of R has the same sum, which holds for tree importances (each column
    sums to 1).
    """

    disentanglement: float
    completeness: float
    disentanglement_per_code: tuple[float, ...]
    completeness_per_factor: tuple[float, ...]
    code_weights: tuple[float, ...]
    factor_weights: tuple[float, ...]


@dataclass(frozen=True)
class DCIResult(_AsDict):
    """DCI (Eastwood & Williams 2018) with disentanglement_lib's protocol.

    ``importance_matrix[i][k]`` is the importance of code dimension i for predicting factor k
    (``feature_importances_`` of the tree ensembles, ``|coef|`` of the lasso).
    ``informativeness_train`` / ``informativeness_test`` are mean classification accuracies over
    factors (disentanglement_lib's convention; the DCI paper reports prediction error instead).
    """

    disentanglement: float
    completeness: float
    informativeness_train: float
    informativeness_test: float
    informativeness_train_per_factor: tuple[float, ...]
    informativeness_test_per_factor: tuple[float, ...]
    disentanglement_per_code: tuple[float, ...]
    completeness_per_factor: tuple[float, ...]
    code_weights: tuple[float, ...]
    factor_weights: tuple[float, ...]
    importance_matrix: tuple[tuple[float, ...], ...]
    regressor: str
    regressor_params: dict[str, Any]
    #: the scikit-learn class fitted per factor (e.g. "RandomForestRegressor")
    predictor: str
    num_train: int
    num_test: int
    seed: int
    informativeness_measure: str = "accuracy"


# --------------------------------------------------------------------------- validation


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: give a whole number >= {minimum}")
    return int(value)


def _codes(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has shape {array.shape}: give a 2-D array [samples, code_dims] with at least one of each")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values: remove or fix those samples")
    return array


def _factors(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has shape {array.shape}: give a 2-D array [samples, factors] of class indices")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all() or (array != np.round(array)).any():
            raise ValueError(f"{name} has dtype {array.dtype} with non-integer values: give integer class indices per factor")
    return array.astype(np.int64)


def _same_rows(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} has {a.shape[0]} samples but {name_b} has {b.shape[0]}: pass the same samples to both")


def _bins(bins: Any) -> int:
    return _whole("bins", bins, 2)


def _rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r} is invalid: pass a numpy Generator, e.g. np.random.default_rng(0)")
    return rng


def _factor_sizes(data: Any) -> list[int]:
    try:
        sizes = list(data.factor_sizes)
        names = list(data.factor_names)
    except AttributeError as error:
        raise ValueError(
            f"data={data!r} lacks {error.name}:"
            " give a dataset with factor_sizes, factor_names, sample_factors and images"
        ) from None
    if not sizes or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes):
        raise ValueError(f"data.factor_sizes={sizes!r} is invalid: give one whole number >= 1 per factor")
    if len(names) != len(sizes):
        raise ValueError(
            f"data.factor_names has {len(names)} names but data.factor_sizes has {len(sizes)} factors:"
            " give one name per factor"
        )
    return [int(s) for s in sizes]


def _sample_factors(data: Any, n: int, rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    factors = np.asarray(data.sample_factors(n, rng))
    if factors.shape != (n, len(sizes)):
        raise ValueError(
            f"data.sample_factors({n}, rng) returned shape {factors.shape}:"
            f" it must return [n, {len(sizes)}] class indices"
        )
    factors = _factors("data.sample_factors(...)", factors)
    if (factors < 0).any() or (factors >= np.asarray(sizes)).any():
        raise ValueError(
            f"data.sample_factors returned classes outside [0, factor_sizes) for factor_sizes={sizes}:"
            " fix the dataset"
        )
    return factors


def _represent(represent: Represent, observations: Any, n: int, dims: int | None) -> np.ndarray:
    codes = represent(observations)
    if hasattr(codes, "detach"):  # a torch tensor: leave autograd and the device before numpy
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] != n:
        raise ValueError(f"represent returned shape {codes.shape} for {n} observations: it must return codes [n, dims]")
    if dims is not None and codes.shape[1] != dims:
        raise ValueError(
            f"represent returned {codes.shape[1]} code dims after returning {dims}:"
            " it must return the same number every call"
        )
    if not np.isfinite(codes).all():
        raise ValueError("represent returned NaN or infinite codes: check the encoder")
    return codes


def _encode(data: Any, represent: Represent, factors: np.ndarray, dims: int | None = None) -> np.ndarray:
    """Codes of the observations of ``factors``, REPRESENT_BATCH rows per call."""
    parts = []
    for start in range(0, factors.shape[0], REPRESENT_BATCH):
        chunk = factors[start : start + REPRESENT_BATCH]
        parts.append(_represent(represent, data.images(chunk), chunk.shape[0], dims))
        dims = parts[-1].shape[1]
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- clustering


def unsupervised_accuracy(labels: Any, clusters: Any) -> float:
    """Accuracy of ``clusters`` against ``labels`` under the best one-to-one matching.

    accuracy = max over injective maps m from cluster ids to labels of
    (1/N) * #{n : m(clusters_n) = labels_n}, found with the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``, maximizing) on the contingency table
    C[c, l] = #{n : clusters_n = c, labels_n = l}. With more clusters than labels the unmatched
    clusters count as errors; with fewer, the unmatched labels do. This is the clustering accuracy
    used for the argmax of a discrete (Concrete) latent against digit classes, e.g. by Dupont,
    "Learning Disentangled Joint Continuous and Discrete Representations" (NeurIPS 2018).
    Labels and cluster ids may be any values ``np.unique`` can sort (ints, strings).
    """
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels has shape {labels.shape}: give a non-empty 1-D array")
    if clusters.ndim != 1 or clusters.size == 0:
        raise ValueError(f"clusters has shape {clusters.shape}: give a non-empty 1-D array")
    _same_rows("labels", labels, "clusters", clusters)
    _, label_index = np.unique(labels, return_inverse=True)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    table = np.zeros((cluster_index.max() + 1, label_index.max() + 1), dtype=np.int64)
    np.add.at(table, (cluster_index, label_index), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)  # rectangular tables are fine
    return float(table[rows, cols].sum() / labels.size)


# --------------------------------------------------------------------------- MIG


def histogram_discretize(codes: Any, bins: int = 20) -> np.ndarray:
    """Each code dimension mapped to ``bins`` equal-width bins, as disentanglement_lib does.

    For dimension d the edges are ``np.histogram(codes[:, d], bins)[1]`` (``bins`` + 1 equally
    spaced points from the minimum to the maximum), and the value is
    ``np.digitize(codes[:, d], edges[:-1])`` in 1..bins: the last edge is dropped so the maximum
    falls in bin ``bins`` rather than a bin of its own. A constant dimension gets a single bin.
    Returns int64 [samples, code_dims].
    """
    codes = _codes("codes", codes)
    bins = _bins(bins)
    out = np.empty(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], bins)[1]
        out[:, d] = np.digitize(codes[:, d], edges[:-1])
    return out


def factor_entropy(factors: Any) -> np.ndarray:
    """Plug-in entropy H(v_k) = -sum_c p_c log p_c of each factor column, in nats. Returns [factors]."""
    factors = _factors("factors", factors)
    out = np.empty(factors.shape[1])
    for k in range(factors.shape[1]):
        p = np.unique(factors[:, k], return_counts=True)[1] / factors.shape[0]
        out[k] = float(-(p * np.log(p)).sum())
    return out


def discrete_mutual_information(codes: Any, factors: Any, bins: int = 20) -> np.ndarray:
    """Plug-in mutual information I(z_d; v_k) in nats between discretized codes and factors.

    Codes are discretized by :func:`histogram_discretize` (``bins`` equal-width bins per
    dimension, disentanglement_lib's choice of 20 for MIG), then
    I = sum_{a,c} p(a, c) log(p(a, c) / (p(a) p(c))) from the joint histogram
    (``sklearn.metrics.mutual_info_score``). The plug-in estimate is biased upwards by about
    (A - 1)(C - 1) / (2N) nats for independent variables with A and C occupied values.
    Returns [code_dims, factors].
    """
    codes = _codes("codes", codes)
    factors = _factors("factors", factors)
    _same_rows("codes", codes, "factors", factors)
    discrete = histogram_discretize(codes, bins)
    out = np.empty((codes.shape[1], factors.shape[1]))
    for d in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            out[d, k] = mutual_info_score(factors[:, k], discrete[:, d])
    return out


def mutual_information_gap(codes: Any, factors: Any, bins: int = 20) -> MIGResult:
    """Mutual information gap (Chen et al. 2018) with disentanglement_lib's estimator.

    MIG = (1/F) sum_k (I(z_a(k); v_k) - I(z_b(k); v_k)) / H(v_k), where I is
    :func:`discrete_mutual_information` with ``bins`` equal-width bins (default 20, as
    disentanglement_lib's mig.gin), H is :func:`factor_entropy`, and a(k), b(k) are the code
    dimensions with the largest and second-largest I with factor k. A code whose dimension a(k)
    is an injective function of v_k (distinct values in distinct bins) has I(z_a; v_k) = H(v_k),
    so its gap is 1 - I(z_b; v_k) / H(v_k), just under 1 by the plug-in bias.
    disentanglement_lib draws 10,000 samples (see :data:`DEFAULTS`).
    """
    codes = _codes("codes", codes)
    factors = _factors("factors", factors)
    _same_rows("codes", codes, "factors", factors)
    bins = _bins(bins)
    if codes.shape[1] < 2:
        raise ValueError(f"codes has {codes.shape[1]} dimension: MIG compares the two most informative dims, so give at least 2")
    entropy = factor_entropy(factors)
    constant = np.flatnonzero(entropy == 0)
    if constant.size:
        raise ValueError(
            f"factors column {int(constant[0])} is constant in these samples (entropy 0): "
            "MIG divides by it; drop the column or sample more"
        )
    mi = discrete_mutual_information(codes, factors, bins)
    order = np.argsort(-mi, axis=0, kind="stable")
    top = np.take_along_axis(mi, order[:2], axis=0)
    gaps = (top[0] - top[1]) / entropy
    return MIGResult(
        mig=float(gaps.mean()),
        gap_per_factor=tuple(float(g) for g in gaps),
        top_code=tuple(int(i) for i in order[0]),
        mutual_information=tuple(tuple(float(v) for v in row) for row in mi),
        factor_entropy=tuple(float(h) for h in entropy),
        bins=bins,
        num_samples=int(codes.shape[0]),
    )


# --------------------------------------------------------------------------- FactorVAE


def factor_vae_score(
    data: GroundTruthData,
    represent: Represent,
    rng: np.random.Generator,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_std: float = 0.05,
) -> FactorVAEResult:
    """FactorVAE disentanglement score (Kim & Mnih 2018) as in disentanglement_lib.

    1. Global scale: s_d = std (ddof=1) of code dimension d over ``num_variance_estimate``
       observations drawn from the data distribution (default 10,000).
    2. Pruning: dimension d is active iff s_d >= ``prune_std`` (default 0.05). disentanglement_lib
       prunes on the standard deviation, not the variance (``sqrt(variance) >= threshold``, with
       threshold 0.05 in its factor_vae_metric.gin, 0 in the code). A dimension with s_d = 0 is
       never active here, whatever ``prune_std``, since dividing by it is undefined.
    3. A vote: draw a factor k uniformly, draw ``batch_size`` (default 64) factor vectors from the
       data, set factor k in all of them to its value in the first, encode, and take
       argmin over active d of var_batch(z_d) / s_d^2 - the variance of the codes normalized by
       the global std. The vote is the pair (k, d).
    4. Classifier: each dimension d predicts the factor with most training votes for it
       (``num_train`` votes, default 10,000; ties go to the lowest factor index, unvoted
       dimensions predict factor 0). ``train_accuracy`` and ``eval_accuracy`` are the fractions
       of training and of ``num_eval`` fresh votes (default 5,000) that it gets right;
       ``score`` = ``eval_accuracy``. Chance is about 1/F for a code unrelated to the factors.
    5. If no dimension is active, every accuracy is 0, as in disentanglement_lib.

    disentanglement_lib returns ``len(mask)`` - the total number of dimensions - as
    ``num_active_dims``; here ``num_active_dims`` is the number of active ones and
    ``num_code_dims`` the total. Votes are drawn in chunks so that each call to ``represent``
    sees at most max(REPRESENT_BATCH, batch_size) observations.
    """
    sizes = _factor_sizes(data)
    rng = _rng(rng)
    batch_size = _whole("batch_size", batch_size, 2)  # a variance needs two points
    num_train = _whole("num_train", num_train, 1)
    num_eval = _whole("num_eval", num_eval, 1)
    num_variance_estimate = _whole("num_variance_estimate", num_variance_estimate, 2)
    if isinstance(prune_std, bool) or not isinstance(prune_std, numbers.Real) or not math.isfinite(prune_std) or prune_std < 0:
        raise ValueError(
            f"prune_std={prune_std!r} is invalid:"
            " give a finite standard deviation >= 0 (disentanglement_lib uses 0.05)"
        )
    prune_std = float(prune_std)

    codes = _encode(data, represent, _sample_factors(data, num_variance_estimate, rng, sizes))
    dims = codes.shape[1]
    global_std = codes.std(axis=0, ddof=1)
    active = np.flatnonzero((global_std >= prune_std) & (global_std > 0))
    common = dict(
        active_dims=tuple(int(d) for d in active),
        num_code_dims=int(dims),
        global_std=tuple(float(s) for s in global_std),
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_eval,
        num_variance_estimate=num_variance_estimate,
        prune_std=prune_std,
    )
    if active.size == 0:
        return FactorVAEResult(
            score=0.0, train_accuracy=0.0, eval_accuracy=0.0, num_active_dims=0,
            votes_train=tuple(tuple(0 for _ in range(dims)) for _ in sizes), classifier=tuple(0 for _ in range(dims)), **common,
        )

    variance = global_std**2
    train_votes = _votes(data, represent, rng, sizes, batch_size, num_train, variance, active, dims)
    classifier = np.argmax(train_votes, axis=0)
    eval_votes = _votes(data, represent, rng, sizes, batch_size, num_eval, variance, active, dims)
    columns = np.arange(dims)
    train_accuracy = float(train_votes[classifier, columns].sum() / num_train)
    eval_accuracy = float(eval_votes[classifier, columns].sum() / num_eval)
    return FactorVAEResult(
        score=eval_accuracy,
        train_accuracy=train_accuracy,
        eval_accuracy=eval_accuracy,
        num_active_dims=int(active.size),
        votes_train=tuple(tuple(int(v) for v in row) for row in train_votes),
        classifier=tuple(int(k) for k in classifier),
        **common,
    )


def _votes(
    data: Any,
    represent: Represent,
    rng: np.random.Generator,
    sizes: list[int],
    batch_size: int,
    num_votes: int,
    variance: np.ndarray,
    active: np.ndarray,
    dims: int,
) -> np.ndarray:
    """Vote counts [factors, code_dims] of ``num_votes`` FactorVAE votes (step 3 of factor_vae_score)."""
    n_factors = len(sizes)
    votes = np.zeros((n_factors, dims), dtype=np.int64)
    per_call = max(1, REPRESENT_BATCH // batch_size)  # whole votes per represent call
    done = 0
    while done < num_votes:
        m = min(per_call, num_votes - done)
        fixed = rng.integers(n_factors, size=m)
        factors = _sample_factors(data, m * batch_size, rng, sizes).reshape(m, batch_size, n_factors)
        rows = np.arange(m)
        factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]
        codes = _represent(represent, data.images(factors.reshape(m * batch_size, n_factors)), m * batch_size, dims)
        local = codes.reshape(m, batch_size, dims)[:, :, active].var(axis=1, ddof=1)
        chosen = active[np.argmin(local / variance[active], axis=1)]
        np.add.at(votes, (fixed, chosen), 1)
        done += m
    return votes


# --------------------------------------------------------------------------- DCI


def _normalized_entropy(p: np.ndarray, base: int) -> float:
    """Entropy of the distribution proportional to ``p`` in base ``base`` (0 log 0 = 0)."""
    total = p.sum()
    if total == 0:  # no importance at all: read as uniform, entropy 1 (disentanglement_lib's reading)
        return 1.0
    q = p[p > 0] / total
    return float(-(q * np.log(q)).sum() / math.log(base))


def importance_scores(importance_matrix: Any) -> ImportanceScores:
    """DCI disentanglement and completeness of an importance matrix R [code_dims, factors].

    With D code dims and F factors (Eastwood & Williams 2018, Sec. 2-3):

    * P_ik = R_ik / sum_k' R_ik'; disentanglement of code i: D_i = 1 - H_F(P_i.) with
      H_F(P) = -sum_k P_k log_F P_k; D = sum_i rho_i D_i with rho_i = sum_k R_ik / sum_jk R_jk.
    * P~_ik = R_ik / sum_i' R_i'k; completeness of factor k: C_k = 1 - H_D(P~_.k);
      C = sum_k w_k C_k with w_k = sum_i R_ik / sum_jk R_jk (disentanglement_lib's weighting;
      the DCI paper takes the plain mean, equal when columns have equal sums).

    Conventions: 0 log 0 = 0; an all-zero row or column counts as uniform (score 0), which is what
    disentanglement_lib's +1e-11 smoothing amounts to; an all-zero matrix gives uniform weights
    and D = C = 0. With a single factor (F = 1) every non-zero row scores D_i = 1 and with a single
    code dimension every non-zero column scores C_k = 1 (one outcome cannot be spread), where
    disentanglement_lib's base-1 logarithm would give NaN.
    """
    r = np.asarray(importance_matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise ValueError(f"importance_matrix has shape {r.shape}: give a 2-D array [code_dims, factors]")
    if not np.isfinite(r).all() or (r < 0).any():
        raise ValueError(
            "importance_matrix has negative, NaN or infinite entries:"
            " give non-negative importances (e.g. absolute values)"
        )
    n_codes, n_factors = r.shape

    def score(p: np.ndarray, base: int) -> float:
        if base == 1:
            return 1.0 if p.sum() > 0 else 0.0
        return 1.0 - _normalized_entropy(p, base)

    per_code = np.array([score(r[i], n_factors) for i in range(n_codes)])
    per_factor = np.array([score(r[:, k], n_codes) for k in range(n_factors)])
    total = r.sum()
    weights_source = r if total > 0 else np.ones_like(r)
    code_weights = weights_source.sum(axis=1) / weights_source.sum()
    factor_weights = weights_source.sum(axis=0) / weights_source.sum()
    return ImportanceScores(
        disentanglement=float(per_code @ code_weights),
        completeness=float(per_factor @ factor_weights),
        disentanglement_per_code=tuple(float(v) for v in per_code),
        completeness_per_factor=tuple(float(v) for v in per_factor),
        code_weights=tuple(float(v) for v in code_weights),
        factor_weights=tuple(float(v) for v in factor_weights),
    )


def _regressor_params(regressor: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The settings each DCI predictor is built with (reported in DCIResult.regressor_params)."""
    if regressor == "gbt":
        # sklearn's GradientBoostingClassifier() defaults, which disentanglement_lib uses unchanged.
        params: dict[str, Any] = {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0}
    elif regressor == "random_forest":
        # The DCI paper's code (cianeastwood/qedr) fitted RandomForestRegressor with 10 trees, a
        # depth tuned per factor on validation data, and every feature a split candidate (the
        # regressor default); the HFVAE paper's Table 3 also regresses with a random forest. We
        # keep 10 trees and all features, with one fixed depth. With max_features=sqrt(dims),
        # splits land on noise dims whenever the informative one is not drawn, and a perfect code
        # scores D ~ 0.6 instead of 1.
        params = {"n_estimators": 10, "max_depth": 10, "max_features": None}
    else:
        params = {"cv": 5}  # alpha by 5-fold cross-validation over sklearn's default grid of 100
    if overrides:
        params.update(overrides)
    return params


#: The scikit-learn class behind each DCI predictor name.
PREDICTORS = {"gbt": "GradientBoostingClassifier", "random_forest": "RandomForestRegressor", "lasso": "LassoCV"}


def _nearest_class(raw: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """A regressor's prediction read as the nearest class index within the training range."""
    return np.clip(np.rint(raw), y_train.min(), y_train.max()).astype(np.int64)


def _fit_predictor(regressor: str, params: dict[str, Any], seed: int, x: np.ndarray, y: np.ndarray):
    """Fit one predictor of factor ``y`` from codes ``x``; returns (importance [dims], predict).

    The regressors treat the class index as an ordinal value (as the DCI paper does with its
    factor values), and their accuracy reads predictions as the nearest class index."""
    if regressor == "gbt":
        from sklearn.ensemble import GradientBoostingClassifier

        model = GradientBoostingClassifier(random_state=seed, **params).fit(x, y)
        return np.abs(model.feature_importances_), model.predict
    if regressor == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        model = RandomForestRegressor(random_state=seed, **params).fit(x, y)
        return np.abs(model.feature_importances_), lambda x_new: _nearest_class(model.predict(x_new), y)
    # Lasso as in the DCI paper: codes and factor standardized on the training set, importance =
    # |coefficient|.
    from sklearn.linear_model import LassoCV

    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant code gets coefficient 0 anyway
    y_mean, y_std = y.mean(), y.std()
    model = LassoCV(random_state=seed, **params).fit((x - mean) / std, (y - y_mean) / y_std)
    return np.abs(model.coef_), lambda x_new: _nearest_class(model.predict((x_new - mean) / std) * y_std + y_mean, y)


def dci(
    codes_train: Any,
    factors_train: Any,
    codes_test: Any,
    factors_test: Any,
    regressor: str = "gbt",
    *,
    regressor_params: dict[str, Any] | None = None,
    seed: int = 0,
) -> DCIResult:
    """DCI scores (Eastwood & Williams 2018) with disentanglement_lib's protocol.

    For each factor k a predictor of v_k from the codes is fitted on the training samples; its
    importances form column k of R [code_dims, factors], from which :func:`importance_scores`
    gives disentanglement and completeness. Informativeness is the mean accuracy over factors on
    the training and the test samples (disentanglement_lib draws 10,000 and 5,000).

    ``regressor``:

    * ``"gbt"`` (default): ``sklearn.ensemble.GradientBoostingClassifier`` with default
      parameters (100 depth-3 trees per class, learning rate 0.1), importance =
      ``feature_importances_`` - disentanglement_lib's choice, so scores compare with Locatello
      et al. 2019. It is the slowest (about 7 s per factor for 10,000 samples of 10 dims on one
      busy core) because multi-class boosting fits one tree per class per stage.
    * ``"random_forest"``: ``RandomForestRegressor(n_estimators=10, max_depth=10,
      max_features=None)`` on the class index, importance = ``feature_importances_``, accuracy
      of the prediction rounded to the nearest class. The DCI paper regressed with random
      forests of 10 trees with every code dimension a split candidate and a depth tuned per
      factor (the depth is fixed here), and the HFVAE paper's Table 3 regresses with a random
      forest. Much cheaper than "gbt" (about 0.2 s per factor for 10,000 samples of 10 dims).
      A classifier on the 32 positions or 40 orientations overfits 1,000-10,000 samples and
      spreads its importances over uninformative dimensions; on a 1-epoch dSprites HFVAE the
      regressor gave D = 0.48 where a classifier of the same size gave 0.16.
    * ``"lasso"``: ``LassoCV(cv=5)`` on codes and factor standardized with training statistics,
      importance = |coefficients| (the DCI paper's linear predictor). It only sees linear
      relations; accuracy rounds the prediction to the nearest class index, which is meaningful
      for ordinal factors only.

    ``regressor_params`` overrides the settings above (e.g. ``{"n_estimators": 10}`` for a fast
    test); the settings used are returned in ``regressor_params``. ``seed`` is the predictors'
    ``random_state``: disentanglement_lib leaves it unset, which makes GBT's tie-breaking between
    equally good splits vary from run to run. Factors are class indices; each must take at least
    two values in the training samples.
    """
    codes_train = _codes("codes_train", codes_train)
    factors_train = _factors("factors_train", factors_train)
    codes_test = _codes("codes_test", codes_test)
    factors_test = _factors("factors_test", factors_test)
    _same_rows("codes_train", codes_train, "factors_train", factors_train)
    _same_rows("codes_test", codes_test, "factors_test", factors_test)
    if codes_test.shape[1] != codes_train.shape[1]:
        raise ValueError(
            f"codes_test has {codes_test.shape[1]} dims but codes_train has {codes_train.shape[1]}:"
            " give codes of one representation"
        )
    if factors_test.shape[1] != factors_train.shape[1]:
        raise ValueError(
            f"factors_test has {factors_test.shape[1]} factors but factors_train has {factors_train.shape[1]}:"
            " give the same factors"
        )
    if regressor not in REGRESSORS:
        raise ValueError(f"regressor={regressor!r} is unknown: choose one of {', '.join(REGRESSORS)}")
    if regressor_params is not None and not isinstance(regressor_params, dict):
        raise ValueError(f"regressor_params={regressor_params!r} is invalid: give a dict of estimator settings or None")
    seed = _whole("seed", seed, 0)
    for k in range(factors_train.shape[1]):
        if np.unique(factors_train[:, k]).size < 2:
            raise ValueError(
                f"factors_train column {k} takes a single value:"
                " a predictor needs two classes; sample more points or drop it"
            )
    params = _regressor_params(regressor, regressor_params)

    importance = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    train_accuracy, test_accuracy = [], []
    for k in range(factors_train.shape[1]):
        importance[:, k], predict = _fit_predictor(regressor, params, seed, codes_train, factors_train[:, k])
        train_accuracy.append(float(np.mean(predict(codes_train) == factors_train[:, k])))
        test_accuracy.append(float(np.mean(predict(codes_test) == factors_test[:, k])))
    scores = importance_scores(importance)
    return DCIResult(
        disentanglement=scores.disentanglement,
        completeness=scores.completeness,
        informativeness_train=float(np.mean(train_accuracy)),
        informativeness_test=float(np.mean(test_accuracy)),
        informativeness_train_per_factor=tuple(train_accuracy),
        informativeness_test_per_factor=tuple(test_accuracy),
        disentanglement_per_code=scores.disentanglement_per_code,
        completeness_per_factor=scores.completeness_per_factor,
        code_weights=scores.code_weights,
        factor_weights=scores.factor_weights,
        importance_matrix=tuple(tuple(float(v) for v in row) for row in importance),
        regressor=regressor,
        regressor_params=dict(params),
        predictor=PREDICTORS[regressor],
        num_train=int(codes_train.shape[0]),
        num_test=int(codes_test.shape[0]),
        seed=seed,
    )


# --------------------------------------------------------------------------- sampling and driver


def sample_codes_and_factors(
    data: GroundTruthData, represent: Represent, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` factor vectors drawn by ``data.sample_factors`` and the codes of their observations.

    Returns (codes float64 [n, dims], factors int64 [n, F]); ``represent`` sees at most
    :data:`REPRESENT_BATCH` observations per call. disentanglement_lib samples MIG's and DCI's
    points this way (10,000 for MIG; 10,000 train and 5,000 test for DCI).
    """
    sizes = _factor_sizes(data)
    n = _whole("n", n, 1)
    rng = _rng(rng)
    factors = _sample_factors(data, n, rng, sizes)
    return _encode(data, represent, factors), factors


def evaluate_disentanglement(
    data: GroundTruthData,
    represent: Represent,
    rng: np.random.Generator,
    *,
    metrics: Sequence[str] = METRICS,
    quick: bool = False,
    dci_regressor: str = "gbt",
) -> dict[str, Any]:
    """The chosen disentanglement metrics of ``represent`` on ``data``, as one JSON-ready dict.

    ``metrics`` is any of "factor_vae", "dci", "mig" (run in the order given, each on fresh
    samples from ``rng`` as disentanglement_lib evaluates each metric separately). Sample counts
    are those of disentanglement_lib's unsupervised study (:data:`DEFAULTS`): FactorVAE
    batch_size=64, num_train=10,000 votes, num_eval=5,000 votes, num_variance_estimate=10,000,
    prune_std=0.05; DCI num_train=10,000, num_test=5,000 with GBT; MIG 10,000 samples, 20 bins.
    ``quick=True`` uses :data:`QUICK`: the same estimators and settings with FactorVAE
    num_train=500, num_eval=250, num_variance_estimate=1,000; DCI num_train=1,000, num_test=500;
    MIG 2,000 samples (noisier; see :data:`QUICK`).
    ``dci_regressor`` picks DCI's predictor (see :func:`dci`).

    The dict holds ``protocol``, ``quick``, ``metrics``, ``factor_names``, ``factor_sizes``, and
    per metric its result's ``as_dict()`` plus ``seconds`` (wall time); DCI also records the
    ``num_train``/``num_test`` drawn and MIG ``num_samples``.
    """
    sizes = _factor_sizes(data)
    rng = _rng(rng)
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise ValueError(f"metrics={metrics!r} is invalid: give a non-empty sequence of names from {', '.join(METRICS)}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics={list(metrics)!r} has unknown {unknown[0]!r}: choose from {', '.join(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics={list(metrics)!r} repeats a metric: name each once")
    if not isinstance(quick, (bool, np.bool_)):
        raise ValueError(f"quick={quick!r} is invalid: give True or False")
    if dci_regressor not in REGRESSORS:
        raise ValueError(f"dci_regressor={dci_regressor!r} is unknown: choose one of {', '.join(REGRESSORS)}")
    settings = QUICK if quick else DEFAULTS

    report: dict[str, Any] = {
        "protocol": "disentanglement_lib (Locatello et al., ICML 2019), unsupervised_study_v1 metric settings",
        "quick": bool(quick),
        "sample_counts": "reduced (QUICK): FactorVAE 500/250 votes, DCI 1,000/500 codes, MIG 2,000 codes" if quick else "disentanglement_lib defaults",
        "metrics": list(metrics),
        "factor_names": [str(name) for name in data.factor_names],
        "factor_sizes": sizes,
    }
    for metric in metrics:
        start = time.perf_counter()
        if metric == "factor_vae":
            entry = factor_vae_score(data, represent, rng, **settings["factor_vae"]).as_dict()
        elif metric == "dci":
            s = settings["dci"]
            codes_train, factors_train = sample_codes_and_factors(data, represent, s["num_train"], rng)
            codes_test, factors_test = sample_codes_and_factors(data, represent, s["num_test"], rng)
            entry = dci(codes_train, factors_train, codes_test, factors_test, regressor=dci_regressor).as_dict()
        else:
            s = settings["mig"]
            codes, factors = sample_codes_and_factors(data, represent, s["num_samples"], rng)
            entry = mutual_information_gap(codes, factors, bins=s["bins"]).as_dict()
        entry["seconds"] = round(time.perf_counter() - start, 3)
        report[metric] = entry
    return report
