"""Analysis of a trained model: information quantities over a whole data set.

The training objective estimates q(z), q(z_d) and q(z_de) from each minibatch. Here the batch IS
the evaluated data set (B = N), so the stratified estimator becomes the exact mixture
q(z) = (1/N) sum_n q(z | x_n) (objective.md, identity 2), evaluated at one sample
z^n ~ q(z | x_n) per document. The quantities are those of the paper's Figure 6 and of its
pruning analysis (a topic whose I(x; z_de) is near zero is not used by the encoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Distribution, Normal
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from topicvae.objective import log_marginals

__all__ = ["InformationReport", "information_report", "encoder_information", "concatenate_posteriors", "subset_indices"]


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
    """

    dataset_size: int
    mutual_information: float
    per_group: np.ndarray
    per_variable: np.ndarray
    tc_between: float
    tc_within: np.ndarray

    def active(self, threshold: float) -> np.ndarray:
        """Boolean mask of the variables whose I(x; z_de) reaches ``threshold`` nats."""
        return self.per_variable >= threshold


def information_report(posteriors: Sequence[Distribution], samples: Sequence[torch.Tensor]) -> InformationReport:
    """Information quantities of a data set from its posteriors and one sample per item.

    Parameters
    ----------
    posteriors : sequence of Distribution
        q(z_d | x_n) for every item n of the data set (batch shape [N] or [N, E_d]).
    samples : sequence of Tensor
        z_d^n ~ q(z_d | x_n), one per item.
    """
    dataset_size = int(samples[0].shape[0])
    if dataset_size < 2:
        raise ValueError(f"the data set has {dataset_size} item: information needs at least 2")
    with torch.no_grad():
        marginals = log_marginals(posteriors, samples, dataset_size)
        conditional = marginals.log_q_conditional
        per_variable = (conditional - marginals.log_q_variable).mean(0)
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
    """One posterior over all items from the posteriors of consecutive batches."""
    first = parts[0]
    if isinstance(first, Normal):
        return Normal(torch.cat([p.loc for p in parts]), torch.cat([p.scale for p in parts]), validate_args=False)
    if isinstance(first, ExpRelaxedCategorical):
        return ExpRelaxedCategorical(first.temperature, logits=torch.cat([p.logits for p in parts]), validate_args=False)
    raise TypeError(f"cannot concatenate posteriors of type {type(first).__name__}")


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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            samples = [q.sample() for q in posteriors]
    return information_report(posteriors, samples)


def correlation_p_values(correlation: np.ndarray, n_documents: int, pairs: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Fisher z-test of r = 0 for the given topic pairs, with Benjamini–Hochberg adjustment.

    z = atanh(r) sqrt(n - 3) is approximately standard normal under r = 0 for n independent
    documents. Returns the raw two-sided p-values and the BH-adjusted ones (over ``pairs``).
    The test treats the q(z) correlation like a sample correlation of n documents, an
    approximation: read the adjusted p-values as a screen, not as exact error rates.
    """
    from scipy.stats import false_discovery_control, norm

    if n_documents < 4:
        raise ValueError(f"n_documents={n_documents} is too small for the Fisher z-test: it needs at least 4")
    r = np.clip(np.array([correlation[i, j] for i, j in pairs], dtype=np.float64), -0.999999, 0.999999)
    z = np.arctanh(r) * np.sqrt(n_documents - 3)
    p_values = 2 * norm.sf(np.abs(z))
    return p_values, (false_discovery_control(p_values) if len(p_values) else p_values)


def plot_information(report: InformationReport, labels: Sequence[str], threshold: float, path, *, unit: str = "topic") -> None:
    """Bar plot of I(x; z_k) per ``unit`` (topic, latent variable), sorted, with the pruning threshold (paper Fig. 4, right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-report.per_variable)
    values = report.per_variable[order]
    figure, axes = plt.subplots(figsize=(max(6, 0.22 * len(values)), 3.2))
    axes.bar(range(len(values)), values, color=["tab:blue" if v >= threshold else "tab:gray" for v in values])
    axes.axhline(threshold, color="tab:red", linewidth=1, linestyle="--", label=f"threshold {threshold:g} nats")
    axes.set_xticks(range(len(values)), [labels[i] for i in order], rotation=90, fontsize=7)
    axes.set_ylabel("I(x; z_k) [nats]")
    axes.set_title(f"Mutual information per {unit} (N = {report.dataset_size})")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_correlation(correlation: np.ndarray, labels: Sequence[str], path) -> None:
    """Heatmap of the topic-by-topic correlation under q(z)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(5, 0.2 * len(labels))
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(correlation, cmap="RdBu_r", vmin=-1, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axes.set_yticks(range(len(labels)), labels, fontsize=6)
    axes.set_title("Topic correlation under q(z)")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
