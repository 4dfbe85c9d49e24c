"""Information quantities of a trained encoder over a whole data set, and which variables it
prunes: pure functions of posteriors and samples (both domains call them).

The training objective estimates q(z), q(z_d) and q(z_de) from each minibatch. Here the batch IS
the evaluated data set (B = N), so the stratified estimator becomes the exact mixture
q(z) = (1/N) sum_n q(z | x_n) (objective.md, identity 2), evaluated at one sample
z^n ~ q(z | x_n) per item. The quantities are those of the paper's Figure 6 and of its pruning
analysis (Figure 4, right: a variable whose I(x; z_de) is near zero is not used by the encoder);
``prune_by_gap`` reads the pruned variables off the sorted curve (docs/analysis.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Distribution

from topicvae.latent.posteriors import posterior_parameters, posterior_with_parameters
from topicvae.objective.marginals import ClassConditioning, log_marginals
from topicvae.utils.random_state import seeded

__all__ = [
    "InformationReport", "information_report", "encoder_information", "sampled_information", "concatenate_posteriors",
    "subset_indices", "Pruning", "prune_by_gap", "PRUNING_GAP_FACTOR", "plot_information", "information_summary",
    "check_mi_threshold",
]


@dataclass(frozen=True)
class InformationReport:
    """Information quantities over a data set of N items, in nats.

    Attributes
    ----------
    dataset_size : int
        N. No mutual information estimate exceeds log N.
    mutual_information : float
        I(x; z) = E[log q(z|x) - log q(z)].
    per_group : numpy.ndarray
        I(x; z_d) for each group, shape [D].
    per_variable : numpy.ndarray
        I(x; z_de) for each latent variable (a Gaussian dimension or a Concrete group), shape
        [variables].
    tc_between : float
        E[log q(z) - sum_d log q(z_d)].
    tc_within : numpy.ndarray
        E[log q(z_d) - sum_e log q(z_de)] per group, shape [D].
    per_variable_se : numpy.ndarray or None
        The Monte-Carlo standard error of each ``per_variable`` estimate (the per-item terms'
        standard deviation over sqrt(N)), shape [variables]. Estimates of an unused variable
        scatter around 0 by about this much, and can come out slightly negative.
    """

    dataset_size: int
    mutual_information: float
    per_group: np.ndarray
    per_variable: np.ndarray
    tc_between: float
    tc_within: np.ndarray
    per_variable_se: np.ndarray | None = None

    def noise_level(self) -> np.ndarray:
        """The resolution of each per-variable estimate: twice its standard error, at least 1e-6 nats."""
        if self.per_variable_se is None:
            return np.full(self.per_variable.shape, 1e-6)
        return np.maximum(2.0 * self.per_variable_se, 1e-6)

    def pruning(self, threshold: float | None = None) -> Pruning:
        """The active and pruned variables: by the gap rule (:func:`prune_by_gap`), or, with
        ``threshold``, those whose I(x; z_de) reaches that many nats."""
        by_gap = prune_by_gap(self.per_variable, noise=self.noise_level())
        if threshold is None:
            return by_gap
        return Pruning(self.active(threshold), None, by_gap.largest_ratio, by_gap.noise, f"I(x; z_k) below {threshold:g} nats", threshold)

    def active(self, threshold: float) -> np.ndarray:
        """Boolean mask of the variables whose I(x; z_de) reaches ``threshold`` nats."""
        return self.per_variable >= threshold


def information_report(
    posteriors: Sequence[Distribution], samples: Sequence[torch.Tensor], conditionings: Sequence[ClassConditioning] = ()
) -> InformationReport:
    """Information quantities of a data set from its posteriors and one sample per item.

    Parameters
    ----------
    posteriors : sequence of Distribution
        q(z_d | x_n) for every item n of the data set (batch shape [N] or [N, E_d]).
    samples : sequence of Tensor
        z_d^n ~ q(z_d | x_n), one per item.
    conditionings : sequence of ClassConditioning
        Gaussian groups conditioned on a Concrete group's sample (their heads for every item);
        ``posteriors`` then hold those groups at each item's own sample.
    """
    dataset_size = int(samples[0].shape[0])
    if dataset_size < 2:
        raise ValueError(f"the data set has {dataset_size} item: information needs at least 2")
    with torch.no_grad():
        marginals = log_marginals(posteriors, samples, dataset_size, conditionings=conditionings)
        conditional = marginals.log_q_conditional
        per_item = conditional - marginals.log_q_variable
        per_variable = per_item.mean(0)
        per_variable_se = per_item.double().std(0) / math.sqrt(dataset_size)
        per_group = (marginals.sum_over_groups(conditional) - marginals.log_q_group).mean(0)
        mutual_information = (conditional.sum(1) - marginals.log_q_joint).mean()
        tc_between = (marginals.log_q_joint - marginals.log_q_group.sum(1)).mean()
        tc_within = (marginals.log_q_group - marginals.sum_over_groups(marginals.log_q_variable)).mean(0)
    as_array = lambda t: t.double().cpu().numpy()  # noqa: E731
    return InformationReport(
        dataset_size=dataset_size,
        mutual_information=float(mutual_information),
        per_group=as_array(per_group),
        per_variable=as_array(per_variable),
        tc_between=float(tc_between),
        tc_within=as_array(tc_within),
        per_variable_se=as_array(per_variable_se),
    )


def subset_indices(size: int, max_items: int | None, seed: int, *, name: str = "max_items") -> np.ndarray | None:
    """Sorted random indices of ``max_items`` of ``size`` items (drawn with ``seed``), or None to keep all.

    The information quantities cost O(N^2): a random subset stands for a large data set.
    """
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 2):
        raise ValueError(f"{name}={max_items!r} is invalid: give a whole number >= 2, or None for all items")
    if max_items is None or size <= max_items:
        return None
    return np.sort(np.random.default_rng(seed).choice(size, size=max_items, replace=False))


def concatenate_posteriors(parts: Sequence[Distribution]) -> Distribution:
    """One posterior over all items from the posteriors of consecutive batches (the families of
    :func:`~topicvae.latent.posteriors.posterior_parameters`; any other raises TypeError)."""
    per_part = [posterior_parameters(part, "concatenating posteriors") for part in parts]
    return posterior_with_parameters(parts[0], [torch.cat(tensors) for tensors in zip(*per_part)])


def encoder_information(encode: Callable[[torch.Tensor], list[Distribution]], batches: Iterable[torch.Tensor], *, seed: int) -> InformationReport:
    """:func:`information_report` of an encoder over a data set given in batches.

    Dropout and batch-norm must be in eval mode; one sample z^n ~ q(z | x_n) per item is drawn
    with ``seed`` without touching the global random state.
    """
    with torch.no_grad():
        per_batch = [encode(batch) for batch in batches]
        if not per_batch:
            raise ValueError("the data set is empty: information needs at least 2 items")
        posteriors = [concatenate_posteriors([b[d] for b in per_batch]) for d in range(len(per_batch[0]))]
        with seeded(seed):
            samples = [q.sample() for q in posteriors]
    return information_report(posteriors, samples)


def sampled_information(
    draw: Callable[[torch.Tensor], tuple[list[Distribution], list[torch.Tensor], Sequence[ClassConditioning]]],
    batches: Iterable[torch.Tensor],
    *,
    seed: int,
) -> InformationReport:
    """:func:`information_report` of an encoder that samples as it encodes, over a data set in batches.

    ``draw(batch)`` returns the posteriors, one sample per item and the conditionings, as a
    model whose style is conditioned on its class sample makes them (the style's posterior
    depends on the sample). The draws are made with ``seed`` without touching the global
    random state; dropout and batch-norm must be in eval mode.
    """
    with torch.no_grad(), seeded(seed):
        per_batch = [draw(batch) for batch in batches]
    if not per_batch:
        raise ValueError("the data set is empty: information needs at least 2 items")
    groups = range(len(per_batch[0][0]))
    posteriors = [concatenate_posteriors([part[0][d] for part in per_batch]) for d in groups]
    samples = [torch.cat([part[1][d] for part in per_batch]) for d in groups]
    conditionings = [ClassConditioning.concatenate([part[2][i] for part in per_batch]) for i in range(len(per_batch[0][2]))]
    return information_report(posteriors, samples, conditionings)


def plot_information(report: InformationReport, labels: Sequence[str], active, path, *, unit: str = "topic") -> None:
    """Sorted I(x; z_k) per ``unit`` (paper Fig. 4, right), on a log scale where a gap shows.

    ``active`` is a boolean mask of the kept variables (drawn in blue, pruned in grey), or a
    number of nats: the variables at or above it are kept and the threshold is drawn.
    Estimates below 1e-5 nats (or negative, by Monte-Carlo noise) are drawn at 1e-5.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threshold = None
    if np.ndim(active) == 0:
        threshold = float(active)
        active = report.per_variable >= threshold
    active = np.asarray(active, dtype=bool)
    order = np.argsort(-report.per_variable)
    values = np.maximum(report.per_variable[order], 1e-5)
    figure, axes = plt.subplots(figsize=(max(6, 0.22 * len(values)), 3.4))
    axes.bar(range(len(values)), values, color=["tab:blue" if active[i] else "tab:gray" for i in order])
    if report.per_variable_se is not None:
        axes.errorbar(range(len(values)), values, yerr=2 * report.per_variable_se[order], fmt="none", ecolor="black", linewidth=0.6)
    if threshold is not None:
        axes.axhline(max(threshold, 1e-5), color="tab:red", linewidth=1, linestyle="--", label=f"threshold {threshold:g} nats")
        axes.legend()
    axes.set_yscale("log")
    axes.set_xticks(range(len(values)), [labels[i] for i in order], rotation=90, fontsize=7)
    axes.set_ylabel("I(x; z_k) [nats]")
    axes.set_title(f"I(x; z) per {unit}: {int(active.sum())} kept (blue), {int((~active).sum())} pruned, N = {report.dataset_size}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


#: A gap must span this factor between the smallest active and the largest pruned topic's
#: I(x; z_k) (one decade): the paper's pruned topics sit orders of magnitude below its active ones.
PRUNING_GAP_FACTOR = 10.0


@dataclass(frozen=True)
class Pruning:
    """The active and pruned topics read off the sorted per-topic information (``prune_by_gap``).

    Attributes
    ----------
    active : numpy.ndarray
        Boolean mask over the variables, [K]: True for a topic the encoder uses.
    gap : float or None
        The ratio between the smallest active and the largest pruned topic's information
        (floored at ``noise``), or None when nothing is pruned.
    largest_ratio : float
        The largest ratio between consecutive sorted values, whether or not it makes a gap.
    noise : numpy.ndarray
        The Monte-Carlo resolution of each estimate, in nats, [K]: values below it count as 0.
    rule : str
        The rule, in words, for reports.
    threshold : float or None
        The fixed number of nats that decided instead of the gap rule, if one was given.
    """

    active: np.ndarray
    gap: float | None
    largest_ratio: float
    noise: np.ndarray
    rule: str
    threshold: float | None = None

    @property
    def n_active(self) -> int:
        return int(self.active.sum())


def prune_by_gap(information: np.ndarray, *, noise, factor: float = PRUNING_GAP_FACTOR) -> Pruning:
    """Split topics into active and pruned at the largest gap of their sorted I(x; z_k).

    Parameters
    ----------
    information : numpy.ndarray, [K]
        I(x; z_k) per topic, in nats (``InformationReport.per_variable``); Monte-Carlo estimates
        can be slightly negative.
    noise : float or numpy.ndarray [K]
        Each estimate's resolution in nats (``InformationReport.noise_level()``: twice its
        Monte-Carlo standard error): a value at or below it cannot be told from 0.
    factor : float
        How many times larger the smallest active topic's information must be than the
        largest pruned topic's for the split to count as a gap (default one decade).

    A topic whose estimate is within its noise of 0 carries no measurable information and is
    pruned. The others are sorted and compared on a log scale, with the noise level as one
    more step below the smallest: the split is at the largest ratio between consecutive
    values, and only when that ratio reaches ``factor``. A curve without such a gap (a
    continuum) prunes nothing beyond the noise: a fixed threshold would cut it anywhere.
    """
    values = np.asarray(information, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"information has shape {values.shape}: pass one value per topic")
    noise = np.broadcast_to(np.asarray(noise, dtype=np.float64), values.shape)
    if not (np.isfinite(noise).all() and (noise > 0).all()):
        raise ValueError("noise is invalid: give each estimate's resolution in nats, finite and > 0")
    if not (np.isfinite(factor) and factor > 1):
        raise ValueError(f"factor={factor!r} is invalid: give a ratio > 1")
    rule = (
        f"an estimate within two standard errors of 0 is pruned; the rest split at the largest ratio between "
        f"consecutive sorted I(x; z_k) (the noise level below the smallest), if it reaches {factor:g}"
    )
    significant = values > noise
    if not significant.any():  # every topic within noise of 0: nothing carries information
        return Pruning(significant, None, 1.0, noise, rule)
    order = np.flatnonzero(significant)[np.argsort(-values[significant], kind="stable")]
    ladder = values[order]
    if not significant.all():  # the pruned-by-noise topics sit, as one step, at their largest noise level
        ladder = np.append(ladder, noise[~significant].max())
    if ladder.size < 2:
        return Pruning(significant, None, 1.0, noise, rule)
    ratios = ladder[:-1] / ladder[1:]
    cut = int(np.argmax(ratios))
    largest = float(ratios[cut])
    if largest < factor:
        return Pruning(significant, None, largest, noise, rule)
    active = np.zeros(values.size, dtype=bool)
    active[order[: cut + 1]] = True
    return Pruning(active, largest, largest, noise, rule)


def check_mi_threshold(mi_threshold: float | None) -> None:
    """Raise a ValueError that names ``mi_threshold`` unless it is None or a finite number >= 0."""
    if mi_threshold is not None and (not np.isfinite(mi_threshold) or mi_threshold < 0):
        raise ValueError(f"mi_threshold={mi_threshold!r} is invalid: give a number of nats >= 0, or leave it out for the gap rule")


#: Said wherever the estimates are printed: an unused topic's estimate scatters around 0.
NEGATIVE_NOTE = (
    "I(x; z_k) is a Monte-Carlo estimate (one sample per document): an unused topic's value scatters "
    "around 0 by about its standard error and can be slightly negative"
)


def information_summary(model, information: InformationReport, mi_threshold: float | None = None, *, pruning=None) -> dict:
    """The information quantities as a JSON-ready dict, with the variables kept and pruned.

    A variable is a Gaussian topic or a whole Concrete group (its categories share one
    variable, so they are kept or pruned together). Without ``mi_threshold`` the pruned
    variables are those below the gap of the sorted I(x; z_de) (:func:`topicvae.objective.information.prune_by_gap`;
    none when the curve has no gap); with it, those below that many nats. ``pruning`` (a
    :class:`~topicvae.objective.information.Pruning` decided before, e.g. ``analysis_.pruning``) overrides both.
    """
    check_mi_threshold(mi_threshold)
    names = [group.name for group in model.groups_]
    labels = model.groups_.variable_labels()
    pruning = pruning if pruning is not None else information.pruning(mi_threshold)
    active, rule, gap = pruning.active, pruning.rule, pruning.gap
    se = information.per_variable_se
    return {
        "dataset_size": information.dataset_size,
        "mutual_information": information.mutual_information,
        "per_group": dict(zip(names, information.per_group.tolist())),
        "tc_between": information.tc_between,
        "tc_within": dict(zip(names, information.tc_within.tolist())),
        "per_topic": dict(zip(labels, information.per_variable.tolist())),
        "per_topic_standard_error": None if se is None else dict(zip(labels, se.tolist())),
        "rule": rule,
        "threshold": pruning.threshold,
        "gap": gap,
        "largest_ratio": None if pruning.threshold is not None else pruning.largest_ratio,
        "active_topics": [labels[i] for i in np.flatnonzero(active)],
        "pruned_topics": [labels[i] for i in np.flatnonzero(~active)],
        "note": NEGATIVE_NOTE,
    }
