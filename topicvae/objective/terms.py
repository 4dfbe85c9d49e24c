"""The HFVAE objective (Esmaeili et al., 2019) as pure functions of distributions and samples.

This module knows nothing about models. It takes, for a minibatch of B items,

* ``log_likelihood``: log p(x^b | z^b), shape [B];
* one posterior q(z_d | x) per latent group d, a ``torch.distributions`` object whose batch
  shape is [B] (a Concrete group: ONE variable) or [B, E_d] (a Gaussian group: E_d variables);
* the matching priors p(z_d), factorized over the same variables;
* the reparameterized samples z_d^b, in the form the posterior's ``log_prob`` takes;

and returns the named terms of the objective stated in ``objective.md`` (the project's
reference; the paper's Eq. 4 is garbled). In the notation used there, with
I = mutual information, TC = total correlation and KL a Kullback-Leibler divergence:

    L = LL + alpha * (2) + beta * (A) + gamma * sum_d (i)_d + delta * sum_{d,e} (ii)_{d,e}

    (2)        = -I(x; z)                = -E[log q(z|x) - log q(z)]
    (A)        = -TC between groups      = -E[log q(z) - sum_d log q(z_d)]       (+ prior's TC)
    (i)_d      = -TC within group d      = -E[log q(z_d) - sum_e log q(z_de)]    (+ prior's TC)
    (ii)_{d,e} = -KL(q(z_de) || p(z_de)) = -E[log q(z_de) - log p(z_de)]

The priors this package uses factorize over variables, so the prior's own total correlations
(the first half of (A) and (i)) are identically zero and are not computed.

The inference marginals q(z), q(z_d), q(z_de) are mixtures over the whole data set of N items;
they are estimated on the batch with the partially stratified estimator of the paper's Sec. 3.1:

    log q^(z^b) = logsumexp_b' ( log w[b, b'] + log q(z^b | x^b') ),
    log w[b, b] = -log N,   log w[b, b'] = log((N - 1) / (N (B - 1)))   for b' != b.

The estimator is :mod:`topicvae.objective.marginals` (its fused Gaussian kernels
:mod:`topicvae.objective.kernels`). The pairwise tensor log q(z^b_{d,e} | x^b') is
B x B x (variables). Above a size budget it is
processed in blocks of rows, each block recomputed in the backward pass (activation
checkpointing), so memory stays bounded for B = 4096 and beyond. Densities are evaluated
element by element, never expanded into matrix products (objective.md, "Numerics").

Data-parallel training splits a batch of B items over several processes. Each process then
passes its own items' posteriors and samples (the rows b of the estimator) together with
``batch_posteriors``, the posteriors of all B items (the columns b'), and ``batch_offset``,
the position of its first item among them; its terms are means over its own items, and the
objective of the whole batch is their mean weighted by the processes' item counts. How the
columns are gathered from the processes is the caller's business (``topicvae.training.distributed``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.distributions import Distribution, Normal, kl_divergence

from topicvae.objective.marginals import (
    DEFAULT_BLOCK_ELEMENTS, DEFAULT_MEMORY_ELEMENTS, ClassConditioning, log_marginals, per_variable, variablewise_all,
)

Tensor = torch.Tensor
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

__all__ = ["ObjectiveWeights", "LossTerms", "PRESETS", "hfvae_objective", "item_elbo", "weighted_objective"]


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectiveWeights:
    """Named weights of the HFVAE objective (never a positional tuple).

    Parameters
    ----------
    alpha : float
        Weight of the mutual information I(x; z), term (2).
    beta : float
        Weight of the total correlation between groups, term (A).
    gamma : float
        Weight of the total correlation within groups, terms (i).
    delta : float
        Weight of the dimension-wise KL divergences, terms (ii). The paper fixes it to 1.
    """

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    delta: float = 1.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            self._check_weight(field.name, value)
            object.__setattr__(self, field.name, float(value))

    @staticmethod
    def _check_weight(name: str, value: object) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name}={value!r} is invalid: weights are numbers")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r} is invalid: weights must be finite and >= 0")

    @classmethod
    def preset(
        cls,
        name: str,
        *,
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        delta: float | None = None,
    ) -> ObjectiveWeights:
        """Weights of a named objective (objective.md, "Special cases").

        ``vae``        alpha = beta = gamma = delta = 1 (no weight may be set).
        ``beta-vae``   all four weights equal ``beta`` (default 4).
        ``beta-tcvae`` alpha = delta = 1 and beta = gamma = ``beta`` (default 4); one-level TC.
        ``hfvae``      ``alpha`` (default 1), ``beta`` (default 0.1), ``gamma`` (default 4),
                       ``delta`` (default 1): the paper's 20 Newsgroups setting.
        """
        given = {k: v for k, v in dict(alpha=alpha, beta=beta, gamma=gamma, delta=delta).items() if v is not None}
        if name not in PRESETS:
            raise ValueError(f"objective={name!r} is unknown: choose one of {', '.join(PRESETS)}")
        allowed = PRESETS[name]
        extra = sorted(set(given) - set(allowed))
        if extra:
            settable = ", ".join(allowed) if allowed else "none"
            raise ValueError(
                f"objective={name!r} does not take {', '.join(extra)} (it can set: {settable}); "
                "use objective='hfvae' to set each weight"
            )
        for weight_name, value in given.items():
            cls._check_weight(weight_name, value)  # name the weight the caller gave, not a derived one
        if name == "vae":
            return cls()
        if name == "beta-vae":
            b = given.get("beta", 4.0)
            return cls(alpha=b, beta=b, gamma=b, delta=b)
        if name == "beta-tcvae":
            b = given.get("beta", 4.0)
            return cls(alpha=1.0, beta=b, gamma=b, delta=1.0)
        return cls(
            alpha=given.get("alpha", 1.0),
            beta=given.get("beta", 0.1),
            gamma=given.get("gamma", 4.0),
            delta=given.get("delta", 1.0),
        )

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Which weights each preset lets the caller set.
PRESETS: dict[str, tuple[str, ...]] = {
    "vae": (),
    "beta-vae": ("beta",),
    "beta-tcvae": ("beta",),
    "hfvae": ("alpha", "beta", "gamma", "delta"),
}


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossTerms:
    """The objective's named parts, each a mean over the batch (nats per item).

    Information quantities are stored as the positive quantities the paper discusses; the
    objective subtracts them with their weights::

        objective = reconstruction - alpha * mutual_information - beta * tc_between
                    - gamma * tc_within.sum() - delta * dimwise_kl.sum()

    Attributes
    ----------
    objective : Tensor
        L, the weighted objective to maximize (scalar). ``loss`` is its negative.
    reconstruction : Tensor
        LL = E[log p(x|z)] (scalar).
    mutual_information : Tensor
        I(x; z) = E[log q(z|x) - log q(z)], minus term (2) (scalar). Never exceeds log N.
    tc_between : Tensor
        Total correlation between groups, minus term (A) (scalar).
    tc_within : Tensor
        Total correlation within each group, minus terms (i) (shape [D]; 0 for Concrete groups).
    dimwise_kl : Tensor
        KL(q(z_de) || p(z_de)) for each latent variable, minus terms (ii) (shape [variables]).
    elbo : Tensor
        The ordinary ELBO, LL - E[log q(z|x) - log p(z)] (scalar); equals ``objective``
        when all weights are 1.
    """

    objective: Tensor
    reconstruction: Tensor
    mutual_information: Tensor
    tc_between: Tensor
    tc_within: Tensor
    dimwise_kl: Tensor
    elbo: Tensor

    @property
    def loss(self) -> Tensor:
        """What an optimizer minimizes: -objective."""
        return -self.objective

    def scalars(self) -> dict[str, float]:
        """Plain floats for logging and reports (group and dimension terms summed)."""
        return {
            "loss": float(-self.objective.detach()),
            "reconstruction": float(self.reconstruction.detach()),
            "mutual_information": float(self.mutual_information.detach()),
            "tc_between": float(self.tc_between.detach()),
            "tc_within": float(self.tc_within.detach().sum()),
            "dimwise_kl": float(self.dimwise_kl.detach().sum()),
            "elbo": float(self.elbo.detach()),
        }


# ---------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------
def hfvae_objective(
    log_likelihood: Tensor,
    posteriors: Sequence[Distribution],
    priors: Sequence[Distribution],
    samples: Sequence[Tensor],
    dataset_size: int,
    weights: ObjectiveWeights | None = None,
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    memory_elements: int = DEFAULT_MEMORY_ELEMENTS,
    fused: bool = True,
    kernels: str = "eager",
    batch_posteriors: Sequence[Distribution] | None = None,
    batch_offset: int = 0,
    conditionings: Sequence[ClassConditioning] = (),
) -> LossTerms:
    """The HFVAE objective and its named terms on one minibatch.

    Parameters
    ----------
    log_likelihood : Tensor
        log p(x^b | z^b) for each item, shape [B].
    posteriors, priors : sequence of Distribution
        q(z_d | x) and p(z_d) per group. Posterior batch shapes are [B] or [B, E_d]; each prior
        broadcasts against its group's samples and factorizes over the same variables.
        ``Independent`` wrappers and diagonal ``MultivariateNormal`` distributions are read
        variable by variable (the same densities); other event shapes are refused with a
        ValueError, except the one-hot relaxed categoricals of a group that is one variable.
    samples : sequence of Tensor
        Reparameterized samples z_d ~ q(z_d | x), one tensor per group.
    dataset_size : int
        N, the size of the data set (training set in training, test set in evaluation).
    weights : ObjectiveWeights, optional
        Defaults to all ones, the ordinary ELBO.
    block_elements, memory_elements, fused, kernels
        How the pairwise tensor is processed; see :func:`log_marginals`.
    batch_posteriors, batch_offset
        Data-parallel training: the whole batch's posteriors and where this process's items
        start among them (see :func:`log_marginals`). The terms are then means over this
        process's items; the whole batch's terms are their means weighted by each process's
        number of items.
    conditionings : sequence of ClassConditioning
        Gaussian groups whose posterior is conditioned on a Concrete group's sample,
        q(z_d | x, c); ``posteriors[d]`` is then that posterior at each item's own sample.
        Mean-field no longer holds across the two groups, so log q(z | x) is the sum of
        q(c | x) and q(z_d | x, c), as for any posterior, and the joint marginal takes the
        cross densities of :class:`ClassConditioning`.
    """
    weights = weights or ObjectiveWeights()
    if len(priors) != len(posteriors):
        raise ValueError(f"got {len(posteriors)} posteriors and {len(priors)} priors: give one of each per group")
    posteriors, priors = variablewise_all(posteriors, "the posterior"), variablewise_all(priors, "the prior")
    batch = samples[0].shape[0] if samples else 0
    if log_likelihood.shape != (batch,):
        raise ValueError(
            f"log_likelihood has shape {tuple(log_likelihood.shape)}: pass log p(x^b | z^b) per item, shape ({batch},)"
        )
    # L = LL - alpha E[log q(z|x)] + (alpha - beta) E[log q(z)] + (beta - gamma) sum_d E[log q(z_d)]
    #     + (gamma - delta) sum_de E[log q(z_de)] + delta E[log p(z)]: with all four weights
    # equal (the VAE and beta-VAE) no batch marginal reaches the gradient, so they are
    # estimated for the reported terms only, without the backward pass through B x B x variables.
    marginals_reach_gradient = len({weights.alpha, weights.beta, weights.gamma, weights.delta}) > 1
    with torch.set_grad_enabled(torch.is_grad_enabled() and marginals_reach_gradient):
        marginals = log_marginals(
            posteriors, samples, dataset_size, block_elements=block_elements, memory_elements=memory_elements,
            fused=fused, kernels=kernels, batch_posteriors=batch_posteriors, batch_offset=batch_offset,
            conditionings=conditionings,
        )
    log_prior_parts = [per_variable(p.log_prob(z), batch) for p, z in zip(priors, samples)]
    group_sizes = [math.prod(post.batch_shape[1:]) for post in posteriors]  # [B] -> 1 variable, [B, E] -> E
    for d, (part, size) in enumerate(zip(log_prior_parts, group_sizes)):
        if part.shape[1] != size:
            raise ValueError(
                f"the prior of group {d} gives {part.shape[1]} log-densities per item but its posterior has {size} "
                "variables: pass a prior over the same variables (batch shape of one variable each)"
            )
    log_prior = torch.cat(log_prior_parts, dim=1)
    if marginals_reach_gradient:
        log_q_conditional = marginals.log_q_conditional.sum(1)  # log q(z|x), mean-field
    else:  # the marginals were estimated without gradients; log q(z|x) needs its own
        log_q_conditional = sum(per_variable(q.log_prob(z), batch).sum(1) for q, z in zip(posteriors, samples))
    sum_of_variable_marginals = marginals.sum_over_groups(marginals.log_q_variable)  # sum_e log q(z_de)

    reconstruction = log_likelihood.mean()
    mutual_information = (log_q_conditional - marginals.log_q_joint).mean()
    tc_between = (marginals.log_q_joint - marginals.log_q_group.sum(1)).mean()
    tc_within = (marginals.log_q_group - sum_of_variable_marginals).mean(0)
    dimwise_kl = (marginals.log_q_variable - log_prior).mean(0)
    elbo = (log_likelihood - log_q_conditional + log_prior.sum(1)).mean()

    objective = weighted_objective(
        weights,
        reconstruction=reconstruction,
        mutual_information=mutual_information,
        tc_between=tc_between,
        tc_within=tc_within,
        dimwise_kl=dimwise_kl,
    )
    return LossTerms(
        objective=objective,
        reconstruction=reconstruction,
        mutual_information=mutual_information,
        tc_between=tc_between,
        tc_within=tc_within,
        dimwise_kl=dimwise_kl,
        elbo=elbo,
    )


def item_elbo(
    log_likelihood: torch.Tensor,
    posteriors: Sequence[Distribution],
    priors: Sequence[Distribution],
    samples: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Each item's plain ELBO, log p(x | z) - KL(q(z | x) || p(z)), from one sample: shape [B], nats.

    The bound behind perplexity and ``score``, whatever weights the model was trained with
    (objective.md, identity 1: the HFVAE terms with all weights 1). The KL of a Gaussian group
    is in closed form (given the sample of the groups it is conditioned on, which keeps it an
    unbiased estimate); a Concrete group's has no closed form and is taken at its sample,
    log q(z_d | x) - log p(z_d). ``log_likelihood`` [B] is log p(x | z) at the samples.
    """
    elbo = log_likelihood.clone()
    for q, p, z in zip(posteriors, priors, samples):
        if isinstance(q, Normal) and isinstance(p, Normal):
            elbo -= kl_divergence(q, p).sum(-1)
        else:
            elbo -= q.log_prob(z) - p.log_prob(z)
    return elbo


def weighted_objective(
    weights: ObjectiveWeights,
    *,
    reconstruction: Tensor,
    mutual_information: Tensor,
    tc_between: Tensor,
    tc_within: Tensor,
    dimwise_kl: Tensor,
) -> Tensor:
    """L = LL - alpha I(x;z) - beta TC_between - gamma sum_d TC_within_d - delta sum_de KL_de."""
    return (
        reconstruction
        - weights.alpha * mutual_information
        - weights.beta * tc_between
        - weights.gamma * tc_within.sum()
        - weights.delta * dimwise_kl.sum()
    )
