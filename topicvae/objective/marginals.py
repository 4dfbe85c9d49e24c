"""The stratified estimator of the inference marginals q(z), q(z_d) and q(z_de) at a batch's own
samples (Esmaeili et al., 2019, Appendix; objective.md, identity 2), for any posterior family,
with Gaussian groups conditioned on a Concrete group's sample (``ClassConditioning``), blocks
of rows that stay near the CPU's caches, and activation checkpointing above a memory bound.
Mean-field Gaussian groups take the fused kernels of :mod:`topicvae.objective.kernels`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, OneHotCategorical, RelaxedOneHotCategorical
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical
from torch.utils.checkpoint import checkpoint

from topicvae.objective.kernels import (
    COMPILE_ENVIRONMENT_VARIABLE, HALF_LOG_2PI, KERNELS, GaussianLogMarginals,
    compiled_kernels_available, group_sums, stratified_log_sum_exps, stratified_log_weight_values,
)
from topicvae.objective.native import native_kernels_available

Tensor = torch.Tensor

__all__ = [
    "COMPILE_MIN_ELEMENTS", "COMPILE_MIN_TOTAL_ELEMENTS", "DEFAULT_BLOCK_ELEMENTS", "DEFAULT_MEMORY_ELEMENTS", "ClassConditioning", "LogMarginals", "log_marginals", "per_variable", "variablewise_all",
    "training_kernels", "worth_compiling",
]


#: Elements of one block of rows of the pairwise tensor [rows, B, variables]: 2**20 floats is
#: 4 MiB in float32. Blocks of this size keep the temporaries near the CPU's caches while
#: keeping the number of (Python-dispatched) block operations small.
DEFAULT_BLOCK_ELEMENTS = 2**20


#: Above this many elements in the whole pairwise tensor (2**25 floats: 128 MiB in float32),
#: blocks are recomputed in the backward pass instead of kept.
DEFAULT_MEMORY_ELEMENTS = 2**25


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
        return (-0.5 * standardized.square() - log_scale - HALF_LOG_2PI).sum(-1)

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


def variablewise_all(distributions: Sequence[Distribution], role: str) -> list[Distribution]:
    return [_variablewise(distribution, role, d) for d, distribution in enumerate(distributions)]


def per_variable(log_prob: Tensor, batch: int) -> Tensor:
    """[B] (one Concrete variable) or [B, E] (E Gaussian variables) -> [B, variables]."""
    return log_prob.reshape(batch, -1)


def _stratified_log_weights(rows: slice, batch: int, dataset_size: int, like: Tensor) -> Tensor:
    """log w[b, b'] of the stratified estimator for the given rows b, shape [rows, B]."""
    n_rows = rows.stop - rows.start
    on_diagonal, off_diagonal = stratified_log_weight_values(batch, dataset_size)
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
    grouped = group_sums(pairwise, group_sizes)
    joint_terms = grouped
    if conditionings:
        # the joint takes each conditioned group's density at the row's own class sample c^b
        # under every column's encoder, in place of the column's own-sample posterior
        joint_terms = grouped.clone()
        for conditioning in conditionings:
            joint_terms[..., conditioning.group] = conditioning.cross_log_density(
                samples[conditioning.group][rows], samples[conditioning.on][rows]
            )
    return stratified_log_sum_exps(pairwise, grouped, log_w, joint_terms)


#: ``torch.compile`` pays for itself only on large problems: compiling the kernels takes some
#: 10 to 30 seconds once per process, and the compiled kernels save about two thirds of the
#: estimator's time. Training compiles when one step's pairwise tensor has at least
#: COMPILE_MIN_ELEMENTS elements (B = 103 with 50 variables, or 100 items of a process against a
#: whole batch of 200 in data-parallel training) and the whole run at least
#: COMPILE_MIN_TOTAL_ELEMENTS (e.g. 40 epochs of 20 Newsgroups at B = 200, 50 variables).
COMPILE_MIN_ELEMENTS = 2**19


COMPILE_MIN_TOTAL_ELEMENTS = 2**32


def worth_compiling(
    posteriors: Sequence[Distribution], samples: Sequence[Tensor], steps: int, *, batch_items: int | None = None
) -> bool:
    """Whether ``steps`` training steps like this one should run the compiled Gaussian kernels.

    ``batch_items`` is the whole batch's size B when this process holds only part of it (its
    samples are the rows of the pairwise tensor, the whole batch its columns).
    """
    if not _all_gaussian(posteriors, samples) or not compiled_kernels_available():
        return False
    return _large_enough(samples, steps, batch_items)


def _large_enough(samples: Sequence[Tensor], steps: int, batch_items: int | None) -> bool:
    """The run is long enough to win back a build (COMPILE_MIN_*), or TOPICVAE_COMPILE=1 says to build."""
    if os.environ.get(COMPILE_ENVIRONMENT_VARIABLE) == "1":
        return True
    rows = samples[0].shape[0]
    per_step = rows * (batch_items or rows) * sum(z.shape[1] for z in samples)
    return per_step >= COMPILE_MIN_ELEMENTS and per_step * steps >= COMPILE_MIN_TOTAL_ELEMENTS


def training_kernels(
    posteriors: Sequence[Distribution], samples: Sequence[Tensor], steps: int, *, batch_items: int | None = None
) -> str:
    """The fused kernels ``steps`` training steps like this one should run: "native", "compiled" or "eager".

    Runs long enough to win back a build (:func:`worth_compiling`'s sizes) take the native
    kernels on a CPU in float32 (built on this first call, about 35 s once per machine, then
    cached), else the compiled ones; shorter runs, and groups that are not mean-field
    Gaussian, run eagerly. ``TOPICVAE_NATIVE=0`` and ``TOPICVAE_COMPILE=0`` rule out the
    native and the compiled kernels.
    """
    if not _all_gaussian(posteriors, samples) or not _large_enough(samples, steps, batch_items):
        return "eager"
    on_cpu_in_float32 = all(z.device.type == "cpu" and z.dtype == torch.float32 for z in samples)
    if on_cpu_in_float32 and native_kernels_available():
        return "native"
    return "compiled" if compiled_kernels_available() else "eager"


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
    kernels: str = "eager",
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
    kernels : {"eager", "compiled", "native"}
        How the fused Gaussian kernels run: torch operations, the same through ``torch.compile``,
        or one C++ pass per direction (:mod:`topicvae.objective.native`; float32 on a CPU,
        finite inputs, else eager). See :func:`training_kernels` for what training chooses.
        All three agree to rounding; where compiling or building fails, a warning says so once
        and the eager kernels run.
    conditionings : sequence of ClassConditioning
        Gaussian groups conditioned on a Concrete group's sample, q(z_d | x, c) (one process
        only: their heads are the whole batch's). See :class:`ClassConditioning`.
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r} is unknown: choose one of {', '.join(map(repr, KERNELS))}")
    if len(posteriors) != len(samples) or not posteriors:
        raise ValueError(f"got {len(posteriors)} posteriors and {len(samples)} samples: give one of each per group")
    posteriors = variablewise_all(posteriors, "the posterior")
    local_items = samples[0].shape[0]
    batch_posteriors = posteriors if batch_posteriors is None else variablewise_all(batch_posteriors, "the batch posterior")
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
    conditional = [per_variable(post.log_prob(z), local_items) for post, z in zip(posteriors, samples)]
    group_sizes = [c.shape[1] for c in conditional]
    num_variables = sum(group_sizes)
    group_index = torch.repeat_interleave(
        torch.arange(len(group_sizes), device=samples[0].device), torch.tensor(group_sizes, device=samples[0].device)
    )

    rows_per_block = max(1, block_elements // max(1, batch * num_variables))
    _check_conditionings(conditionings, batch_posteriors, samples, batch)
    if fused and not conditionings and _all_gaussian(posteriors, samples) and _all_gaussian(batch_posteriors, None):
        log_q_variable, log_q_group, log_q_joint = GaussianLogMarginals.apply(
            torch.cat(list(samples), dim=1),
            torch.cat([post.loc for post in batch_posteriors], dim=1),
            torch.cat([post.scale for post in batch_posteriors], dim=1),
            tuple(group_sizes),
            dataset_size,
            rows_per_block,
            kernels,
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
