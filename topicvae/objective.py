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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch.distributions import Distribution, Normal
from torch.utils.checkpoint import checkpoint

Tensor = torch.Tensor
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

__all__ = [
    "ObjectiveWeights",
    "LossTerms",
    "LogMarginals",
    "hfvae_objective",
    "log_marginals",
    "weighted_objective",
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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
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
# The estimator of the inference marginals
# ---------------------------------------------------------------------------------------------
def _per_variable(log_prob: Tensor, batch: int) -> Tensor:
    """[B] (one Concrete variable) or [B, E] (E Gaussian variables) -> [B, variables]."""
    return log_prob.reshape(batch, -1)


def _stratified_log_weights(rows: slice, batch: int, dataset_size: int, like: Tensor) -> Tensor:
    """log w[b, b'] of the stratified estimator for the given rows b, shape [rows, B]."""
    n_rows = rows.stop - rows.start
    if batch > 1:
        off_diagonal = math.log(dataset_size - 1) - math.log(dataset_size) - math.log(batch - 1)
    else:  # a batch of one has no other item: q^ is the diagonal term alone
        off_diagonal = -math.inf
    log_w = torch.full((n_rows, batch), off_diagonal, dtype=like.dtype, device=like.device)
    diagonal = torch.arange(n_rows, device=like.device)
    log_w[diagonal, diagonal + rows.start] = -math.log(dataset_size)
    return log_w


def _pairwise_log_density(rows: slice, posteriors: Sequence[Distribution], samples: Sequence[Tensor]) -> Tensor:
    """pairwise[b, b', v] = log q(z^b_v | x^b') for the sample rows b, shape [rows, B, variables]."""
    batch = samples[0].shape[0]
    n_rows = rows.stop - rows.start
    parts = []
    for post, z in zip(posteriors, samples):
        # z[rows] as [rows, 1, ...] broadcasts against the posterior's batch of B items.
        parts.append(post.log_prob(z[rows].unsqueeze(1)).reshape(n_rows, batch, -1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _marginal_block(
    rows: slice,
    posteriors: Sequence[Distribution],
    samples: Sequence[Tensor],
    group_sizes: Sequence[int],
    dataset_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """log q^ of the variables, groups and joint code for the items ``rows``."""
    pairwise = _pairwise_log_density(rows, posteriors, samples)
    log_w = _stratified_log_weights(rows, pairwise.shape[1], dataset_size, pairwise)
    return _stratified_log_sum_exps(pairwise, _group_sums(pairwise, group_sizes), log_w)


def _group_sums(pairwise: Tensor, group_sizes: Sequence[int]) -> Tensor:
    """Mean-field q(z|x): a group's conditional log density is the sum of its variables'."""
    return torch.stack([part.sum(-1) for part in pairwise.split(list(group_sizes), dim=-1)], dim=-1)


def _stratified_log_sum_exps(pairwise: Tensor, grouped: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """log q^(z_de), log q^(z_d), log q^(z) from [rows, B, ...] conditional log densities."""
    return (
        torch.logsumexp(pairwise + log_w.unsqueeze(-1), dim=1),
        torch.logsumexp(grouped + log_w.unsqueeze(-1), dim=1),
        torch.logsumexp(grouped.sum(-1) + log_w, dim=1),
    )


class _GaussianLogMarginals(torch.autograd.Function):
    """The stratified log-marginals of mean-field Gaussian posteriors, fused.

    The generic path lets autograd keep every intermediate of the B x B x variables tensor
    (or recompute it with checkpointing). Here the backward pass is written out: it
    recomputes each block of rows and applies the softmax weights of the three
    log-sum-exps directly, so nothing of size B x B is kept between the passes and the
    number of passes over the pairwise tensor is roughly halved. With r = (z - mu) / s and
    log q = -r^2 / 2 - log s - log(2 pi) / 2:
    d log q / dz = -r / s,  d log q / dmu = r / s,  d log q / ds = (r^2 - 1) / s.
    """

    @staticmethod
    def _block(z, loc, inv_scale, log_norm, rows: slice, dataset_size: int, group_sizes: tuple[int, ...]):
        standardized = (z[rows].unsqueeze(1) - loc.unsqueeze(0)) * inv_scale.unsqueeze(0)  # r, [R, B, V]
        pairwise = torch.addcmul(log_norm.unsqueeze(0), standardized, standardized, value=-0.5)
        log_w = _stratified_log_weights(rows, z.shape[0], dataset_size, pairwise)
        return standardized, pairwise, log_w, _group_sums(pairwise, group_sizes)

    @staticmethod
    def forward(ctx, z, loc, scale, group_sizes, dataset_size, rows_per_block):
        inv_scale = scale.reciprocal()
        log_norm = -scale.log() - _HALF_LOG_2PI
        outputs = []
        for start in range(0, z.shape[0], rows_per_block):
            rows = slice(start, min(z.shape[0], start + rows_per_block))
            _, pairwise, log_w, grouped = _GaussianLogMarginals._block(
                z, loc, inv_scale, log_norm, rows, dataset_size, group_sizes
            )
            outputs.append(_stratified_log_sum_exps(pairwise, grouped, log_w))
        log_q_variable, log_q_group, log_q_joint = (torch.cat(parts) for parts in zip(*outputs))
        ctx.save_for_backward(z, loc, scale, log_q_variable, log_q_group, log_q_joint)
        ctx.group_sizes, ctx.dataset_size, ctx.rows_per_block = group_sizes, dataset_size, rows_per_block
        return log_q_variable, log_q_group, log_q_joint

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_variable, grad_group, grad_joint):
        z, loc, scale, log_q_variable, log_q_group, log_q_joint = ctx.saved_tensors
        group_sizes = ctx.group_sizes
        inv_scale = scale.reciprocal()
        log_norm = -scale.log() - _HALF_LOG_2PI
        bounds = [0, *itertools.accumulate(group_sizes)]
        column_slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        grad_z, grad_loc, grad_scale = torch.zeros_like(z), torch.zeros_like(loc), torch.zeros_like(scale)
        for start in range(0, z.shape[0], ctx.rows_per_block):
            rows = slice(start, min(z.shape[0], start + ctx.rows_per_block))
            standardized, pairwise, log_w, grouped = _GaussianLogMarginals._block(
                z, loc, inv_scale, log_norm, rows, ctx.dataset_size, group_sizes
            )
            log_w = log_w.unsqueeze(-1)
            # d(output)/d(pairwise) of each log-sum-exp is its softmax over b'.
            grad_pairwise = torch.exp(pairwise + log_w - log_q_variable[rows].unsqueeze(1)) * grad_variable[rows].unsqueeze(1)
            per_group = torch.exp(grouped + log_w - log_q_group[rows].unsqueeze(1)) * grad_group[rows].unsqueeze(1)
            per_group += (
                torch.exp(grouped.sum(-1, keepdim=True) + log_w - log_q_joint[rows].view(-1, 1, 1))
                * grad_joint[rows].view(-1, 1, 1)
            )
            for group, columns in enumerate(column_slices):  # broadcast each group's weight to its variables
                grad_pairwise[..., columns] += per_group[..., group : group + 1]
            weighted = grad_pairwise * standardized * inv_scale.unsqueeze(0)  # dL/dlogq * r / s
            grad_z[rows] -= weighted.sum(1)
            grad_loc += weighted.sum(0)
            grad_scale += (weighted * standardized).sum(0) - grad_pairwise.sum(0) * inv_scale
        return grad_z, grad_loc, grad_scale, None, None, None


def _all_gaussian(posteriors: Sequence[Distribution], samples: Sequence[Tensor]) -> bool:
    return all(
        type(post) is Normal and post.loc.dim() == 2 and post.loc.shape == z.shape == post.scale.shape
        for post, z in zip(posteriors, samples)
    )


def log_marginals(
    posteriors: Sequence[Distribution],
    samples: Sequence[Tensor],
    dataset_size: int,
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    memory_elements: int = DEFAULT_MEMORY_ELEMENTS,
    fused: bool = True,
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
    block_elements : int
        Elements of one block of rows of the pairwise tensor. Blocks that fit in the CPU's
        caches make the memory-bound element-wise work several times faster than one pass
        over the whole B x B x variables tensor.
    memory_elements : int
        Above this many elements in the whole pairwise tensor, blocks keep nothing for the
        backward pass and are recomputed there (activation checkpointing), so memory stays
        bounded for any batch size.
    """
    if len(posteriors) != len(samples) or not posteriors:
        raise ValueError(f"got {len(posteriors)} posteriors and {len(samples)} samples: give one of each per group")
    batch = samples[0].shape[0]
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < batch:
        raise ValueError(
            f"dataset_size={dataset_size!r} is invalid for a batch of {batch}: pass N, the size of the "
            "whole data set the batch is drawn from (N >= batch size)"
        )
    conditional = [_per_variable(post.log_prob(z), batch) for post, z in zip(posteriors, samples)]
    group_sizes = [c.shape[1] for c in conditional]
    num_variables = sum(group_sizes)
    group_index = torch.repeat_interleave(
        torch.arange(len(group_sizes), device=samples[0].device), torch.tensor(group_sizes, device=samples[0].device)
    )

    rows_per_block = max(1, block_elements // max(1, batch * num_variables))
    if fused and _all_gaussian(posteriors, samples):
        log_q_variable, log_q_group, log_q_joint = _GaussianLogMarginals.apply(
            torch.cat(list(samples), dim=1),
            torch.cat([post.loc for post in posteriors], dim=1),
            torch.cat([post.scale for post in posteriors], dim=1),
            tuple(group_sizes),
            dataset_size,
            rows_per_block,
        )
    else:
        log_q_variable, log_q_group, log_q_joint = _generic_log_marginals(
            posteriors, samples, group_sizes, dataset_size, rows_per_block, memory_elements
        )
    return LogMarginals(
        log_q_conditional=torch.cat(conditional, dim=1),
        log_q_variable=log_q_variable,
        log_q_group=log_q_group,
        log_q_joint=log_q_joint,
        group_index=group_index,
    )


def _generic_log_marginals(
    posteriors: Sequence[Distribution],
    samples: Sequence[Tensor],
    group_sizes: Sequence[int],
    dataset_size: int,
    rows_per_block: int,
    memory_elements: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Autograd over blocks of rows, for any posterior family."""
    batch = samples[0].shape[0]
    recompute = (
        batch * batch * sum(group_sizes) > memory_elements
        and torch.is_grad_enabled()
        and any(z.requires_grad for z in samples)
    )
    blocks = []
    for start in range(0, batch, rows_per_block):
        args = (slice(start, min(batch, start + rows_per_block)), posteriors, samples, group_sizes, dataset_size)
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
) -> LossTerms:
    """The HFVAE objective and its named terms on one minibatch.

    Parameters
    ----------
    log_likelihood : Tensor
        log p(x^b | z^b) for each item, shape [B].
    posteriors, priors : sequence of Distribution
        q(z_d | x) and p(z_d) per group. Posterior batch shapes are [B] or [B, E_d]; each prior
        broadcasts against its group's samples and factorizes over the same variables.
    samples : sequence of Tensor
        Reparameterized samples z_d ~ q(z_d | x), one tensor per group.
    dataset_size : int
        N, the size of the data set (training set in training, test set in evaluation).
    weights : ObjectiveWeights, optional
        Defaults to all ones, the ordinary ELBO.
    block_elements, memory_elements, fused
        How the pairwise tensor is processed; see :func:`log_marginals`.
    """
    weights = weights or ObjectiveWeights()
    if len(priors) != len(posteriors):
        raise ValueError(f"got {len(posteriors)} posteriors and {len(priors)} priors: give one of each per group")
    batch = samples[0].shape[0] if samples else 0
    if log_likelihood.shape != (batch,):
        raise ValueError(
            f"log_likelihood has shape {tuple(log_likelihood.shape)}: pass log p(x^b | z^b) per item, shape ({batch},)"
        )
    marginals = log_marginals(
        posteriors, samples, dataset_size, block_elements=block_elements, memory_elements=memory_elements, fused=fused
    )
    log_prior = torch.cat([_per_variable(p.log_prob(z), batch) for p, z in zip(priors, samples)], dim=1)

    log_q_conditional = marginals.log_q_conditional.sum(1)  # log q(z|x), mean-field
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
