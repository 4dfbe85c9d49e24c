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

The pairwise tensor log q(z^b_{d,e} | x^b') is B x B x (variables). Above a size budget it is
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

import functools
import math
import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch.distributions import Distribution, kl_divergence, Independent, MultivariateNormal, Normal, OneHotCategorical, RelaxedOneHotCategorical
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical
from torch.utils.checkpoint import checkpoint

Tensor = torch.Tensor
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

__all__ = [
    "ObjectiveWeights",
    "LossTerms",
    "LogMarginals",
    "hfvae_objective",
    "item_elbo",
    "log_marginals",
    "ClassConditioning",
    "weighted_objective",
    "worth_compiling",
    "PRESETS",
]

#: Elements of one block of rows of the pairwise tensor [rows, B, variables]: 2**20 floats is
#: 4 MiB in float32. Blocks of this size keep the temporaries near the CPU's caches while
#: keeping the number of (Python-dispatched) block operations small.
DEFAULT_BLOCK_ELEMENTS = 2**20
#: Above this many elements in the whole pairwise tensor (2**25 floats: 128 MiB in float32),
#: blocks are recomputed in the backward pass instead of kept.
DEFAULT_MEMORY_ELEMENTS = 2**25


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


@dataclass(frozen=True)
class LogMarginals:
    """Per-item log densities under the inference model, for a batch of B items.

    Attributes
    ----------
    log_q_conditional : Tensor
        log q(z^b_{d,e} | x^b), shape [B, variables].
    log_q_variable : Tensor
        log q^(z^b_{d,e}), shape [B, variables].
    log_q_group : Tensor
        log q^(z^b_d), shape [B, D].
    log_q_joint : Tensor
        log q^(z^b), shape [B].
    group_index : Tensor
        The group d of each variable, shape [variables].
    """

    log_q_conditional: Tensor
    log_q_variable: Tensor
    log_q_group: Tensor
    log_q_joint: Tensor
    group_index: Tensor

    def sum_over_groups(self, per_variable: Tensor) -> Tensor:
        """Sum a [B, variables] tensor within each group, giving [B, D]."""
        num_groups = self.log_q_group.shape[1]
        return per_variable.new_zeros(per_variable.shape[0], num_groups).index_add_(1, self.group_index, per_variable)


# ---------------------------------------------------------------------------------------------
# A Gaussian group conditioned on a Concrete group's sample: q(z_d | x, c)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassConditioning:
    """q(z_d | x, c) for a Gaussian group d whose mean and log-scale are affine in a Concrete sample c.

    The authors' MNIST model conditions the style code on the class, q(z, c | x) =
    q(c | x) q(z | x, c). With heads affine in the relaxed one-hot c (a point of the simplex,
    ``exp`` of the ExpRelaxedCategorical sample),

        loc(x_n, c)       = loc_base[n] + loc_weight[n] @ c
        log_scale(x_n, c) = log_scale_base[n] + log_scale_weight[n] @ c,

    the density of item b's style under item b''s encoder, at item b's own class sample,
    q(z^b | x^b', c^b), is in closed form for every pair from the B x E x K weights. The
    joint marginal log q(z^b, c^b) = log mean_n q(c^b | x_n) q(z^b | x_n, c^b) needs exactly
    these cross densities. The group's and its variables' marginals, q(z^b) = mean_n
    E_{c ~ q(c | x_n)} q(z^b | x_n, c), are estimated with each column's own sample c^b'
    (one draw of the inner expectation per n), which is the posterior passed for the group:
    Normal(loc(x_n, c_n), scale(x_n, c_n)). Terms (2), (A) and the conditional log q(z|x) use
    the joint; (i) and (ii) the group's and variables' marginals.

    Attributes
    ----------
    group, on : int
        Indices of the conditioned Gaussian group and of the Concrete group it is conditioned on.
    loc_base, log_scale_base : Tensor
        [B, E]: the heads at c = 0, one row per item of the batch (the columns b').
    loc_weight, log_scale_weight : Tensor
        [B, E, K]: how each head moves with c.
    """

    group: int
    on: int
    loc_base: Tensor
    loc_weight: Tensor
    log_scale_base: Tensor
    log_scale_weight: Tensor

    #: The per-item tensors, in the order the constructor takes them after ``group`` and ``on``.
    HEADS = ("loc_base", "loc_weight", "log_scale_base", "log_scale_weight")

    def _heads_at(self, log_c: Tensor, *, every_pair: bool) -> tuple[Tensor, Tensor]:
        """loc and log_scale at c = exp(log_c): each item at its own c ([B, E]), or every column at every row's c ([R, B, E])."""
        c = log_c.exp()
        if every_pair:
            return (self.loc_base.unsqueeze(0) + torch.einsum("nek,rk->rne", self.loc_weight, c),
                    self.log_scale_base.unsqueeze(0) + torch.einsum("nek,rk->rne", self.log_scale_weight, c))
        return (self.loc_base + torch.einsum("nek,nk->ne", self.loc_weight, c),
                self.log_scale_base + torch.einsum("nek,nk->ne", self.log_scale_weight, c))

    def cross_log_density(self, z_rows: Tensor, log_c_rows: Tensor) -> Tensor:
        """sum_e log q(z^b_e | x^b', c^b) for the rows b (samples z [R, E], log c [R, K]) and all columns b': [R, B]."""
        loc, log_scale = self._heads_at(log_c_rows, every_pair=True)
        standardized = (z_rows.unsqueeze(1) - loc) * torch.exp(-log_scale)
        return (-0.5 * standardized.square() - log_scale - _HALF_LOG_2PI).sum(-1)

    def own(self, log_c: Tensor) -> Normal:
        """Normal(loc(x_n, c_n), scale(x_n, c_n)) at each item's own sample: the group's posterior."""
        loc, log_scale = self._heads_at(log_c, every_pair=False)
        return Normal(loc, log_scale.exp(), validate_args=False)

    def map(self, function) -> ClassConditioning:
        """The same conditioning with ``function`` applied to each head tensor (e.g. a cast)."""
        return replace(self, **{name: function(getattr(self, name)) for name in self.HEADS})

    @classmethod
    def concatenate(cls, parts: Sequence[ClassConditioning]) -> ClassConditioning:
        """One conditioning over the items of ``parts`` (the same groups), in order."""
        return replace(parts[0], **{name: torch.cat([getattr(part, name) for part in parts]) for name in cls.HEADS})


# ---------------------------------------------------------------------------------------------
# The estimator of the inference marginals
# ---------------------------------------------------------------------------------------------
#: Families whose whole event is ONE variable of its group: a Concrete group is one relaxed
#: categorical variable over its K categories (the paper's discrete groups), not K variables.
ONE_VARIABLE_FAMILIES = (ExpRelaxedCategorical, RelaxedOneHotCategorical, OneHotCategorical)


def _variablewise(distribution: Distribution, role: str, group: int) -> Distribution:
    """The same density with one batch element per variable z_de (what every term needs).

    ``Independent`` only reinterprets batch dimensions as an event, so its base distribution
    is the same density with the variables as batch dimensions; a ``MultivariateNormal`` with
    a diagonal covariance is the product of its dimensions' Normals. Any other event shape
    joins several variables in one density that does not factorize over them, so the
    dimension-wise terms (ii) and the TC within the group (i) are undefined: refused.
    """
    while isinstance(distribution, Independent):
        distribution = distribution.base_dist
    if isinstance(distribution, MultivariateNormal):
        tril = distribution.scale_tril
        diagonal = torch.diagonal(tril, dim1=-2, dim2=-1)
        if torch.count_nonzero(tril - torch.diag_embed(diagonal)) == 0:
            return Normal(distribution.loc, diagonal, validate_args=False)
        raise ValueError(
            f"{role} of group {group} is a MultivariateNormal with correlated dimensions: its density does not "
            "factorize over the group's variables, so the TC within the group and the dimension-wise KL are undefined; "
            "pass a factorized distribution (Normal with one batch element per variable, or Independent(Normal, 1))"
        )
    if distribution.event_shape and not isinstance(distribution, ONE_VARIABLE_FAMILIES):
        raise ValueError(
            f"{role} of group {group} is a {type(distribution).__name__} with event shape {tuple(distribution.event_shape)}: "
            "the objective needs each variable's density, and this one joins them; pass a factorized distribution "
            "(one batch element per variable; Independent(...) of one is unwrapped) or a relaxed one-hot categorical "
            "for a group that is one discrete variable"
        )
    return distribution


def _variablewise_all(distributions: Sequence[Distribution], role: str) -> list[Distribution]:
    return [_variablewise(distribution, role, d) for d, distribution in enumerate(distributions)]


def _per_variable(log_prob: Tensor, batch: int) -> Tensor:
    """[B] (one Concrete variable) or [B, E] (E Gaussian variables) -> [B, variables]."""
    return log_prob.reshape(batch, -1)


def _stratified_log_weight_values(batch: int, dataset_size: int) -> tuple[float, float]:
    """log w[b, b] = -log N and log w[b, b'] = log((N - 1) / (N (B - 1))) for b' != b."""
    if batch > 1:
        off_diagonal = math.log(dataset_size - 1) - math.log(dataset_size) - math.log(batch - 1)
    else:  # a batch of one has no other item: q^ is the diagonal term alone
        off_diagonal = -math.inf
    return -math.log(dataset_size), off_diagonal


def _stratified_log_weights(rows: slice, batch: int, dataset_size: int, like: Tensor) -> Tensor:
    """log w[b, b'] of the stratified estimator for the given rows b, shape [rows, B]."""
    n_rows = rows.stop - rows.start
    on_diagonal, off_diagonal = _stratified_log_weight_values(batch, dataset_size)
    log_w = torch.full((n_rows, batch), off_diagonal, dtype=like.dtype, device=like.device)
    diagonal = torch.arange(n_rows, device=like.device)
    log_w[diagonal, diagonal + rows.start] = on_diagonal
    return log_w


def _pairwise_log_density(
    rows: slice, batch_posteriors: Sequence[Distribution], samples: Sequence[Tensor], batch: int
) -> Tensor:
    """pairwise[b, b', v] = log q(z^b_v | x^b') for the sample rows b, shape [rows, B, variables]."""
    n_rows = rows.stop - rows.start
    parts = []
    for post, z in zip(batch_posteriors, samples):
        # z[rows] as [rows, 1, ...] broadcasts against the posterior's batch of B items.
        parts.append(post.log_prob(z[rows].unsqueeze(1)).reshape(n_rows, batch, -1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _marginal_block(
    rows: slice,
    batch_posteriors: Sequence[Distribution],
    samples: Sequence[Tensor],
    group_sizes: Sequence[int],
    dataset_size: int,
    batch: int,
    batch_offset: int,
    conditionings: Sequence[ClassConditioning] = (),
) -> tuple[Tensor, Tensor, Tensor]:
    """log q^ of the variables, groups and joint code for the items ``rows``."""
    pairwise = _pairwise_log_density(rows, batch_posteriors, samples, batch)
    # Sample row b is item batch_offset + b of the batch: that column holds its own posterior.
    diagonal = slice(rows.start + batch_offset, rows.stop + batch_offset)
    log_w = _stratified_log_weights(diagonal, batch, dataset_size, pairwise)
    grouped = _group_sums(pairwise, group_sizes)
    joint_terms = grouped
    if conditionings:
        # the joint takes each conditioned group's density at the row's own class sample c^b
        # under every column's encoder, in place of the column's own-sample posterior
        joint_terms = grouped.clone()
        for conditioning in conditionings:
            joint_terms[..., conditioning.group] = conditioning.cross_log_density(
                samples[conditioning.group][rows], samples[conditioning.on][rows]
            )
    return _stratified_log_sum_exps(pairwise, grouped, log_w, joint_terms)


def _group_sums(pairwise: Tensor, group_sizes: Sequence[int]) -> Tensor:
    """Mean-field q(z|x): a group's conditional log density is the sum of its variables'."""
    return torch.stack([part.sum(-1) for part in pairwise.split(list(group_sizes), dim=-1)], dim=-1)


def _stratified_log_sum_exps(
    pairwise: Tensor, grouped: Tensor, log_w: Tensor, joint_terms: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """log q^(z_de), log q^(z_d), log q^(z) from [rows, B, ...] conditional log densities.

    ``joint_terms`` are the groups' densities the joint sums (default: ``grouped``; they differ
    for a group conditioned on another's sample).
    """
    joint_terms = grouped if joint_terms is None else joint_terms
    return (
        torch.logsumexp(pairwise + log_w.unsqueeze(-1), dim=1),
        torch.logsumexp(grouped + log_w.unsqueeze(-1), dim=1),
        torch.logsumexp(joint_terms.sum(-1) + log_w, dim=1),
    )


def _gaussian_block_terms(z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes):
    """r, log q(z^b_v | x^b'), log w and the group sums for one block of sample rows b.

    ``first_row`` and the two log weights are 0-d tensors rather than Python numbers, so a
    compiled kernel serves every block, batch and data-set size without being specialized
    (and recompiled) for each value.
    """
    standardized = (z_rows.unsqueeze(1) - loc.unsqueeze(0)) * inv_scale.unsqueeze(0)  # r, [R, B, V]
    pairwise = torch.addcmul(log_norm.unsqueeze(0), standardized, standardized, value=-0.5)
    rows = torch.arange(z_rows.shape[0], device=z_rows.device) + first_row
    on_diagonal = rows.unsqueeze(1) == torch.arange(loc.shape[0], device=loc.device).unsqueeze(0)
    log_w = torch.where(on_diagonal, log_w_diagonal, log_w_off_diagonal).to(pairwise.dtype)
    return standardized, pairwise, log_w, _group_sums(pairwise, group_sizes)


def _gaussian_block_forward(z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes):
    """log q^(z_de), log q^(z_d), log q^(z) of one block of rows."""
    _, pairwise, log_w, grouped = _gaussian_block_terms(
        z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes
    )
    return _stratified_log_sum_exps(pairwise, grouped, log_w)


def _gaussian_block_backward(
    z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes,
    log_q_variable, log_q_group, log_q_joint, grad_variable, grad_group, grad_joint,
):
    """Gradients of one block of rows: d/dz for those rows, and their share of d/dloc, d/dscale.

    The derivative of each log-sum-exp with respect to its terms is its softmax over b'; the
    three softmaxes are weighted by the incoming gradients and summed per element of the
    pairwise tensor, then pushed through log q = -r^2 / 2 - log s - log(2 pi) / 2 with
    d/dz = -r / s, d/dmu = r / s, d/ds = (r^2 - 1) / s.
    """
    standardized, pairwise, log_w, grouped = _gaussian_block_terms(
        z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes
    )
    log_w = log_w.unsqueeze(-1)
    # In-place updates of fresh temporaries: run eagerly, each saves a B x B x variables
    # allocation; compiled, they fuse all the same.
    grad_pairwise = pairwise.add_(log_w).sub_(log_q_variable.unsqueeze(1)).exp_().mul_(grad_variable.unsqueeze(1))
    per_group = torch.exp(grouped + log_w - log_q_group.unsqueeze(1)) * grad_group.unsqueeze(1)
    per_group += torch.exp(grouped.sum(-1, keepdim=True) + log_w - log_q_joint.view(-1, 1, 1)) * grad_joint.view(-1, 1, 1)
    # Each group's weight reaches its variables (contiguous columns). One concatenation rather
    # than in-place adds to column slices, which torch.compile turns into copies of the tensor.
    grad_pairwise += torch.cat(
        [per_group[..., group : group + 1].expand(-1, -1, size) for group, size in enumerate(group_sizes)], dim=-1
    )
    weighted = grad_pairwise * standardized
    weighted *= inv_scale.unsqueeze(0)  # dL/dlog q * r / s
    grad_z_rows = -weighted.sum(1)
    grad_loc = weighted.sum(0)
    grad_scale = weighted.mul_(standardized).sum(0) - grad_pairwise.sum(0) * inv_scale
    return grad_z_rows, grad_loc, grad_scale


#: ``torch.compile`` pays for itself only on large problems: compiling the kernels takes some
#: 10 to 30 seconds once per process, and the compiled kernels save about two thirds of the
#: estimator's time. Training compiles when one step's pairwise tensor has at least
#: COMPILE_MIN_ELEMENTS elements (B = 103 with 50 variables, or 100 items of a process against a
#: whole batch of 200 in data-parallel training) and the whole run at least
#: COMPILE_MIN_TOTAL_ELEMENTS (e.g. 40 epochs of 20 Newsgroups at B = 200, 50 variables).
COMPILE_MIN_ELEMENTS = 2**19
COMPILE_MIN_TOTAL_ELEMENTS = 2**32
#: "0" never compiles (for example where the C++ toolchain misbehaves), "1" always compiles
#: fused Gaussian kernels in training; unset, training decides by the sizes above.
COMPILE_ENVIRONMENT_VARIABLE = "TOPICVAE_COMPILE"


def worth_compiling(
    posteriors: Sequence[Distribution], samples: Sequence[Tensor], steps: int, *, batch_items: int | None = None
) -> bool:
    """Whether ``steps`` training steps like this one should run the compiled Gaussian kernels.

    ``batch_items`` is the whole batch's size B when this process holds only part of it (its
    samples are the rows of the pairwise tensor, the whole batch its columns).
    """
    if not _all_gaussian(posteriors, samples) or not _COMPILED_KERNELS.available():
        return False
    if os.environ.get(COMPILE_ENVIRONMENT_VARIABLE) == "1":
        return True
    rows = samples[0].shape[0]
    per_step = rows * (batch_items or rows) * sum(z.shape[1] for z in samples)
    return per_step >= COMPILE_MIN_ELEMENTS and per_step * steps >= COMPILE_MIN_TOTAL_ELEMENTS


class _CompiledKernels:
    """The block kernels compiled once per process with ``torch.compile``, or an eager fallback.

    Compiling fuses each kernel's element-wise chain and its reductions into one loop nest,
    so the B x B x variables tensor is streamed through a few times instead of being written
    and re-read by some twenty separate operations. Where compiling is impossible (no C++
    compiler, an unsupported platform) the first failure is reported once as a warning and
    the eager kernels are used from then on; the two agree to float32 rounding.
    """

    def __init__(self) -> None:
        self._compiled = None
        self.failure: str | None = None

    def available(self) -> bool:
        return self.failure is None and os.environ.get(COMPILE_ENVIRONMENT_VARIABLE) != "0"

    def run(self, name: str, *args):
        eager = _EAGER_KERNELS[name]
        if not self.available():
            return eager(*args)
        if self._compiled is None:
            self._compiled = {kernel: torch.compile(function) for kernel, function in _EAGER_KERNELS.items()}
        try:
            return self._compiled[name](*args)
        except Exception as error:  # noqa: BLE001 -- any compiler failure falls back to the same math, eagerly
            self.failure = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            warnings.warn(
                f"torch.compile failed ({self.failure}); the HFVAE estimator runs its eager kernels instead, "
                f"which give the same values more slowly (set {COMPILE_ENVIRONMENT_VARIABLE}=0 to skip compiling)",
                RuntimeWarning,
                stacklevel=2,
            )
            return eager(*args)


_EAGER_KERNELS = {"forward": _gaussian_block_forward, "backward": _gaussian_block_backward}
_COMPILED_KERNELS = _CompiledKernels()


def _run_kernel(name: str, compiled: bool, *args):
    return _COMPILED_KERNELS.run(name, *args) if compiled else _EAGER_KERNELS[name](*args)


class _GaussianLogMarginals(torch.autograd.Function):
    """The stratified log-marginals of mean-field Gaussian posteriors, fused.

    The generic path lets autograd keep every intermediate of the B x B x variables tensor
    (or recompute it with checkpointing). Here the backward pass is written out: it
    recomputes each block of rows and applies the softmax weights of the three
    log-sum-exps directly, so nothing of size B x B is kept between the passes. The block
    kernels run eagerly or compiled (see ``_CompiledKernels``).
    """

    @staticmethod
    def forward(ctx, z, loc, scale, group_sizes, dataset_size, rows_per_block, compiled, batch_offset):
        # z holds this process's samples (rows); loc and scale the whole batch's posteriors (columns).
        constants = _gaussian_constants(scale, loc.shape[0], dataset_size)
        outputs = []
        for start in range(0, z.shape[0], rows_per_block):
            rows = slice(start, min(z.shape[0], start + rows_per_block))
            first_row = torch.tensor(batch_offset + start, device=z.device)
            outputs.append(_run_kernel("forward", compiled, z[rows], loc, *constants[:2], first_row, *constants[2:], group_sizes))
        log_q_variable, log_q_group, log_q_joint = (torch.cat(parts) for parts in zip(*outputs))
        ctx.save_for_backward(z, loc, scale, log_q_variable, log_q_group, log_q_joint)
        ctx.group_sizes, ctx.dataset_size, ctx.rows_per_block, ctx.compiled = group_sizes, dataset_size, rows_per_block, compiled
        ctx.batch_offset = batch_offset
        return log_q_variable, log_q_group, log_q_joint

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_variable, grad_group, grad_joint):
        z, loc, scale, log_q_variable, log_q_group, log_q_joint = ctx.saved_tensors
        constants = _gaussian_constants(scale, loc.shape[0], ctx.dataset_size)
        grad_z, grad_loc, grad_scale = torch.zeros_like(z), torch.zeros_like(loc), torch.zeros_like(scale)
        for start in range(0, z.shape[0], ctx.rows_per_block):
            rows = slice(start, min(z.shape[0], start + ctx.rows_per_block))
            first_row = torch.tensor(ctx.batch_offset + start, device=z.device)
            block_z, block_loc, block_scale = _run_kernel(
                "backward", ctx.compiled, z[rows], loc, *constants[:2], first_row, *constants[2:], ctx.group_sizes,
                log_q_variable[rows], log_q_group[rows], log_q_joint[rows],
                grad_variable[rows], grad_group[rows], grad_joint[rows],
            )
            grad_z[rows] = block_z
            grad_loc += block_loc
            grad_scale += block_scale
        return grad_z, grad_loc, grad_scale, None, None, None, None, None


def _gaussian_constants(scale: Tensor, batch: int, dataset_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """1 / s, -log s - log(2 pi) / 2, and the stratified log weights (diagonal, off-diagonal) as 0-d tensors."""
    on_diagonal, off_diagonal = _stratified_log_weight_values(batch, dataset_size)
    as_tensor = functools.partial(torch.tensor, dtype=scale.dtype, device=scale.device)
    return scale.reciprocal(), -scale.log() - _HALF_LOG_2PI, as_tensor(on_diagonal), as_tensor(off_diagonal)


def _all_gaussian(posteriors: Sequence[Distribution], samples: Sequence[Tensor] | None) -> bool:
    """Mean-field Gaussian groups of shape [items, variables] (and samples of that shape, when given)."""
    return all(
        type(post) is Normal and post.loc.dim() == 2 and post.loc.shape == post.scale.shape
        and (samples is None or post.loc.shape == samples[d].shape)
        for d, post in enumerate(posteriors)
    )


def _batch_items(posterior: Distribution) -> int:
    """The number of items B in a posterior of batch shape [B] or [B, E]."""
    return posterior.batch_shape[0] if posterior.batch_shape else -1


def log_marginals(
    posteriors: Sequence[Distribution],
    samples: Sequence[Tensor],
    dataset_size: int,
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    memory_elements: int = DEFAULT_MEMORY_ELEMENTS,
    fused: bool = True,
    compile: bool = False,
    batch_posteriors: Sequence[Distribution] | None = None,
    batch_offset: int = 0,
    conditionings: Sequence[ClassConditioning] = (),
) -> LogMarginals:
    """Stratified estimates of log q(z), log q(z_d), log q(z_de) at the batch's own samples.

    Parameters
    ----------
    posteriors : sequence of Distribution
        q(z_d | x^b) for each group d; batch shape [B] or [B, E_d].
    samples : sequence of Tensor
        z_d^b for each group, shape [B, ...] as ``posteriors[d].log_prob`` takes it.
    dataset_size : int
        N, the number of items in the data set the batch is drawn from (N >= B).
    batch_posteriors : sequence of Distribution, optional
        In data-parallel training: the posteriors of the whole batch of B items, of which
        ``posteriors`` and ``samples`` are this process's R items. The estimates are then
        made at this process's samples (shape [R, ...]) over the whole batch, exactly as one
        process holding the whole batch would make them for these items. Defaults to
        ``posteriors`` (R = B).
    batch_offset : int
        The position of this process's first item in the whole batch.
    block_elements : int
        Elements of one block of rows of the pairwise tensor. Blocks that fit in the CPU's
        caches make the memory-bound element-wise work several times faster than one pass
        over the whole B x B x variables tensor.
    memory_elements : int
        Above this many elements in the whole pairwise tensor, blocks keep nothing for the
        backward pass and are recomputed there (activation checkpointing), so memory stays
        bounded for any batch size.
    fused : bool
        Use the hand-written forward and backward passes for mean-field Gaussian groups
        (other families always take the generic autograd path).
    compile : bool
        Run the fused Gaussian kernels through ``torch.compile`` (see :func:`worth_compiling`
        for when training does). Compiled and eager kernels agree to rounding; where
        compiling fails, a warning says so once and the eager kernels run.
    conditionings : sequence of ClassConditioning
        Gaussian groups conditioned on a Concrete group's sample, q(z_d | x, c) (one process
        only: their heads are the whole batch's). See :class:`ClassConditioning`.
    """
    if len(posteriors) != len(samples) or not posteriors:
        raise ValueError(f"got {len(posteriors)} posteriors and {len(samples)} samples: give one of each per group")
    posteriors = _variablewise_all(posteriors, "the posterior")
    local_items = samples[0].shape[0]
    batch_posteriors = posteriors if batch_posteriors is None else _variablewise_all(batch_posteriors, "the batch posterior")
    batch = _batch_items(batch_posteriors[0]) if len(batch_posteriors) == len(posteriors) else -1
    if batch < 0 or isinstance(batch_offset, bool) or not isinstance(batch_offset, int) or not (
        0 <= batch_offset <= batch - local_items
    ):
        raise ValueError(
            f"batch_posteriors and batch_offset={batch_offset!r} do not place {local_items} items in the batch: "
            "give one posterior per group for the whole batch and the position of this process's first item"
        )
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < batch:
        raise ValueError(
            f"dataset_size={dataset_size!r} is invalid for a batch of {batch}: pass N, the size of the "
            "whole data set the batch is drawn from (N >= batch size)"
        )
    conditional = [_per_variable(post.log_prob(z), local_items) for post, z in zip(posteriors, samples)]
    group_sizes = [c.shape[1] for c in conditional]
    num_variables = sum(group_sizes)
    group_index = torch.repeat_interleave(
        torch.arange(len(group_sizes), device=samples[0].device), torch.tensor(group_sizes, device=samples[0].device)
    )

    rows_per_block = max(1, block_elements // max(1, batch * num_variables))
    _check_conditionings(conditionings, batch_posteriors, samples, batch)
    if fused and not conditionings and _all_gaussian(posteriors, samples) and _all_gaussian(batch_posteriors, None):
        log_q_variable, log_q_group, log_q_joint = _GaussianLogMarginals.apply(
            torch.cat(list(samples), dim=1),
            torch.cat([post.loc for post in batch_posteriors], dim=1),
            torch.cat([post.scale for post in batch_posteriors], dim=1),
            tuple(group_sizes),
            dataset_size,
            rows_per_block,
            bool(compile),
            batch_offset,
        )
    else:
        log_q_variable, log_q_group, log_q_joint = _generic_log_marginals(
            batch_posteriors, samples, group_sizes, dataset_size, rows_per_block, memory_elements, batch, batch_offset,
            conditionings,
        )
    return LogMarginals(
        log_q_conditional=torch.cat(conditional, dim=1),
        log_q_variable=log_q_variable,
        log_q_group=log_q_group,
        log_q_joint=log_q_joint,
        group_index=group_index,
    )


def _check_conditionings(
    conditionings: Sequence[ClassConditioning], posteriors: Sequence[Distribution], samples: Sequence[Tensor], batch: int
) -> None:
    """Each conditioning names a Gaussian group and a Concrete group, with heads for the whole batch."""
    for conditioning in conditionings:
        d, on = conditioning.group, conditioning.on
        if not (0 <= d < len(posteriors) and 0 <= on < len(posteriors)) or d == on:
            raise ValueError(f"a conditioning names groups {d} and {on}: give two different groups of the {len(posteriors)}")
        if not isinstance(posteriors[d], Normal) or not isinstance(posteriors[on], (ExpRelaxedCategorical, RelaxedOneHotCategorical)):
            raise ValueError(
                f"group {d} is conditioned on group {on}: the first must be a Normal group and the second a Concrete group "
                "(ExpRelaxedCategorical)"
            )
        width, classes = samples[d].shape[-1], samples[on].shape[-1]
        if conditioning.loc_weight.shape != (batch, width, classes) or conditioning.loc_base.shape != (batch, width):
            raise ValueError(
                f"the conditioning of group {d} on group {on} has heads of shape {tuple(conditioning.loc_base.shape)} and "
                f"{tuple(conditioning.loc_weight.shape)}: give ({batch}, {width}) and ({batch}, {width}, {classes})"
            )


def _generic_log_marginals(
    batch_posteriors: Sequence[Distribution],
    samples: Sequence[Tensor],
    group_sizes: Sequence[int],
    dataset_size: int,
    rows_per_block: int,
    memory_elements: int,
    batch: int,
    batch_offset: int,
    conditionings: Sequence[ClassConditioning] = (),
) -> tuple[Tensor, Tensor, Tensor]:
    """Autograd over blocks of rows, for any posterior family."""
    local_items = samples[0].shape[0]
    recompute = (
        local_items * batch * sum(group_sizes) > memory_elements
        and torch.is_grad_enabled()
        and any(z.requires_grad for z in samples)
    )
    blocks = []
    for start in range(0, local_items, rows_per_block):
        rows = slice(start, min(local_items, start + rows_per_block))
        args = (rows, batch_posteriors, samples, group_sizes, dataset_size, batch, batch_offset, tuple(conditionings))
        if recompute:
            # Keep only this block's [rows, variables] outputs for backward; the block's
            # [rows, B, variables] intermediates are recomputed there.
            blocks.append(checkpoint(_marginal_block, *args, use_reentrant=False))
        else:
            blocks.append(_marginal_block(*args))
    return tuple(torch.cat(parts) for parts in zip(*blocks))


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
    compile: bool = False,
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
    block_elements, memory_elements, fused, compile
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
    posteriors, priors = _variablewise_all(posteriors, "the posterior"), _variablewise_all(priors, "the prior")
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
            fused=fused, compile=compile, batch_posteriors=batch_posteriors, batch_offset=batch_offset,
            conditionings=conditionings,
        )
    log_prior_parts = [_per_variable(p.log_prob(z), batch) for p, z in zip(priors, samples)]
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
        log_q_conditional = sum(_per_variable(q.log_prob(z), batch).sum(1) for q, z in zip(posteriors, samples))
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
