"""Analysis of a trained model: information quantities over a whole data set.

The training objective estimates q(z), q(z_d) and q(z_de) from each minibatch. Here the batch IS
the evaluated data set (B = N), so the stratified estimator becomes the exact mixture
q(z) = (1/N) sum_n q(z | x_n) (objective.md, identity 2), evaluated at one sample
z^n ~ q(z | x_n) per document. The quantities are those of the paper's Figure 6 and of its
pruning analysis (a topic whose I(x; z_de) is near zero is not used by the encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Distribution

from topicvae.objective import log_marginals

__all__ = ["InformationReport", "information_report"]


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
