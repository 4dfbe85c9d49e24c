"""The numeric kernels of the stratified estimator for mean-field Gaussian groups.

For one block of sample rows b, the kernels weigh the pairwise log-densities
log q(z^b_v | x^b') of every variable v under every item b' of the batch with the stratified
weights (objective.md, identity 2) and reduce them with log-sum-exps over b' into
log q^(z_de), log q^(z_d) and log q^(z). Only the variables' log-sum-exps need the
[rows, B, variables] tensor element by element (shifted by each row's own term, so that no
pass looks for the largest); the groups' and the joint's densities, [rows, B, groups], come from
float64 matrix products of the expanded squares, forward and backward. The backward kernel
recomputes the block and applies the softmaxes directly, so nothing of size B x B is kept
between the passes (``GaussianLogMarginals``). Posteriors too narrow for the expansion's
float64 rounding (``expansion_error_bound``) take element-wise kernels instead. The kernels
run eagerly or through ``torch.compile`` (``run_kernel``). :mod:`topicvae.objective.marginals`
calls them; benchmarks/objective_speed.py measures them.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence

import torch

Tensor = torch.Tensor
#: log(2 pi) / 2, the Gaussian log-density's constant.
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: The exps of the estimator's log-sum-exps and softmaxes take max(t, -60) for a term t
#: relative to the largest, or to another term of the same sum (the row's own, in the variables'
#: one-pass log-sum-exps): either way the sum is at least 1, and a term below e^-60 = 9e-27 of it is under
#: the resolution of float32 and of float64 (2e-16) alike, so raising it to e^-60 leaves the
#: estimates and their gradients unchanged. The floor keeps the CPU's exp off its slow path:
#: where exp's result would be subnormal (arguments from about -87 to -103 in float32) the
#: vectorized exp, eager or compiled, runs on microcode assists, measured 6 to 250 times slower
#: per element, and the off-diagonal pairs of well-separated posteriors land exactly there
#: (docs/objective.md, "No subnormal exps"; docs/benchmarks.md, "The subnormal exps").
EXP_FLOOR = -60.0

__all__ = [
    "EXPANSION_TOLERANCE", "EXP_FLOOR", "HALF_LOG_2PI", "COMPILE_ENVIRONMENT_VARIABLE", "GaussianLogMarginals",
    "compiled_kernels_available", "expansion_error_bound", "floored_exp", "group_sums", "log_sum_exp", "run_kernel",
    "stratified_log_sum_exps",
    "stratified_log_weight_values",
]


def stratified_log_weight_values(batch: int, dataset_size: int) -> tuple[float, float]:
    """log w[b, b] = -log N and log w[b, b'] = log((N - 1) / (N (B - 1))) for b' != b."""
    if batch > 1:
        off_diagonal = math.log(dataset_size - 1) - math.log(dataset_size) - math.log(batch - 1)
    else:  # a batch of one has no other item: q^ is the diagonal term alone
        off_diagonal = -math.inf
    return -math.log(dataset_size), off_diagonal


def group_sums(pairwise: Tensor, group_sizes: Sequence[int]) -> Tensor:
    """Mean-field q(z|x): a group's conditional log density is the sum of its variables'."""
    return torch.stack([part.sum(-1) for part in pairwise.split(list(group_sizes), dim=-1)], dim=-1)


def floored_exp(log_ratio: Tensor) -> Tensor:
    """exp(max(log_ratio, EXP_FLOOR)) for terms relative to one of the summed terms (see ``EXP_FLOOR``)."""
    return torch.exp(torch.clamp_min(log_ratio, EXP_FLOOR))


def log_sum_exp(values: Tensor, dim: int) -> Tensor:
    """``torch.logsumexp(values, dim)`` through :func:`floored_exp`: equal to the dtype's resolution, never subnormal.

    A slice whose entries are all -inf gives -inf, as torch's does.
    """
    # the shift is a constant, as in torch.logsumexp: the gradient is then the softmax itself
    top = values.detach().amax(dim, keepdim=True)
    finite = torch.isfinite(top)
    shifted = values - torch.where(finite, top, 0.0)
    # in place where nothing differentiates through it (the fused kernels): one pass fewer run eagerly
    terms = floored_exp(shifted) if shifted.requires_grad else shifted.clamp_min_(EXP_FLOOR).exp_()
    result = torch.log(terms.sum(dim)) + top.squeeze(dim)
    return torch.where(finite.squeeze(dim), result, top.squeeze(dim))  # all -inf (or an inf): the max says it


def stratified_log_sum_exps(
    pairwise: Tensor, grouped: Tensor, log_w: Tensor, joint_terms: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """log q^(z_de), log q^(z_d), log q^(z) from [rows, B, ...] conditional log densities.

    ``joint_terms`` are the groups' densities the joint sums (default: ``grouped``; they differ
    for a group conditioned on another's sample).
    """
    joint_terms = grouped if joint_terms is None else joint_terms
    return (
        log_sum_exp(pairwise + log_w.unsqueeze(-1), dim=1),
        log_sum_exp(grouped + log_w.unsqueeze(-1), dim=1),
        log_sum_exp(joint_terms.sum(-1) + log_w, dim=1),
    )


def _block_log_weights(z_rows, loc, first_row, log_w_diagonal, log_w_off_diagonal):
    """log w[b, b'] of sample rows first_row, first_row + 1, ... against the B items, [rows, B].

    ``first_row`` and the two log weights are 0-d tensors rather than Python numbers, so a
    compiled kernel serves every block, batch and data-set size without being specialized
    (and recompiled) for each value.
    """
    rows = torch.arange(z_rows.shape[0], device=z_rows.device) + first_row
    on_diagonal = rows.unsqueeze(1) == torch.arange(loc.shape[0], device=loc.device).unsqueeze(0)
    return torch.where(on_diagonal, log_w_diagonal, log_w_off_diagonal).to(z_rows.dtype)


def _pairwise_log_densities(z_rows, loc, inv_scale, log_norm):
    """r[b, b', v] = (z^b_v - mu^b'_v) / s^b'_v and log q(z^b_v | x^b') = log_norm - r^2 / 2, [rows, B, variables]."""
    standardized = (z_rows.unsqueeze(1) - loc.unsqueeze(0)) * inv_scale.unsqueeze(0)
    return standardized, torch.addcmul(log_norm.unsqueeze(0), standardized, standardized, value=-0.5)


def _own_log_densities(z_rows, loc, inv_scale, log_norm, first_row):
    """log q(z^b_v | x^b): each sample row under its own item's posterior (the diagonal b' = b), [rows, variables]."""
    own = torch.arange(z_rows.shape[0], device=z_rows.device) + first_row
    standardized = (z_rows - loc.index_select(0, own)) * inv_scale.index_select(0, own)
    return torch.addcmul(log_norm.index_select(0, own), standardized, standardized, value=-0.5)


#: The dtype of the group densities' matrix products (``_group_log_densities``).
WIDE = torch.float64


def _centred(z_rows, loc):
    """z and mu in float64 around the batch's mean location (the expansion's error grows with their size)."""
    centre = loc.detach().to(WIDE).mean(0, keepdim=True)
    return z_rows.to(WIDE) - centre, loc.to(WIDE) - centre


#: The largest rounding error, in nats, allowed to the groups' and joint's log densities through
#: the expanded squares (``_group_log_densities``), as bounded by ``expansion_error_bound``, per
#: dtype of the posteriors: about float32's resolution of a log density of 10 nats, and a
#: float64 result kept to 1e-12. Beyond it (in float32, posteriors narrower than about 1e-4 at
#: distances of a few units) the element-wise kernels run.
EXPANSION_TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


def expansion_error_bound(z: Tensor, loc: Tensor, scale: Tensor, group_sizes: Sequence[int]) -> float:
    """An upper bound, in nats, on the float64 rounding error of ``_group_log_densities``.

    Each of a group's terms z^2 / s^2 - 2 z mu / s^2 + mu^2 / s^2 (z and mu about the centre c)
    is rounded to float64's 2^-52 of the magnitudes summed, at most 2 (z^2 + mu^2) / s^2 for
    each variable; the bound takes twice that, summed over all variables (the joint's density
    sums every group's), with the largest z^2 and mu^2 and the smallest s of each variable.
    z: [rows, variables]; loc, scale: [B, variables]. NaN where an input is infinite or NaN.
    """
    with torch.no_grad():
        z, mu = _centred(z, loc)
        largest = (z.square().amax(0) + mu.square().amax(0)) * scale.to(WIDE).square().reciprocal().amax(0)
        return float(4 * 2.0**-52 * largest.sum())


def _group_log_densities(z_rows, loc, inv_scale, log_norm, group_sizes):
    """log q(z^b_d | x^b') of every group d, [rows, B, groups], in float64, through matrix products.

    A group's log density sums its variables' -(z - mu)^2 / (2 s^2) + log_norm. The square
    expands into z^2 / s^2 - 2 z mu / s^2 + mu^2 / s^2, so the sum over a group's variables is
    one matrix product of [z^2, z] with [-1 / (2 s^2), mu / s^2], not a pass over the
    [rows, B, variables] tensor. The expansion cancels: its absolute error is the dtype's
    resolution times (z - c)^2 / s^2 around the centre c. In float32 that reaches whole nats
    with narrow posteriors (objective.md, "Numerics"), so the products run in float64 around
    the batch's mean location: 1e-16 relative, 1e-10 nats for scales of 0.02 at distance 3.
    """
    z, mu = _centred(z_rows, loc)
    precision = inv_scale.to(WIDE).square()
    constant = log_norm.to(WIDE) - 0.5 * mu.square() * precision  # what does not depend on z, [B, variables]
    groups = []
    for z_d, mu_d, precision_d, constant_d in zip(
        z.split(group_sizes, 1), mu.split(group_sizes, 1), precision.split(group_sizes, 1), constant.split(group_sizes, 1)
    ):
        features = torch.cat([z_d.square(), z_d], dim=1)  # [rows, 2 width]
        coefficients = torch.cat([-0.5 * precision_d, mu_d * precision_d], dim=1)  # [B, 2 width]
        groups.append(features @ coefficients.T + constant_d.sum(1))
    return torch.stack(groups, dim=-1)


def _group_gradients(z_rows, loc, inv_scale, group_sizes, weights):
    """d/dz, d/dmu, d/ds of sum over b, b', d of weights[b, b', d] log q(z^b_d | x^b'), in float64.

    With P = weights[..., d] and each variable v of group d: d/dz^b_v = -sum_b' P[b, b'] (z^b_v - mu^b'_v) / s^2,
    d/dmu^b'_v = sum_b P[b, b'] (z^b_v - mu^b'_v) / s^2 and
    d/ds^b'_v = sum_b P[b, b'] ((z^b_v - mu^b'_v)^2 / s^2 - 1) / s: matrix products of P or its
    transpose with z, z^2, 1/s^2 and mu/s^2 (float64 for the reason in ``_group_log_densities``).
    """
    z, mu = _centred(z_rows, loc)
    inverse = inv_scale.to(WIDE)
    precision = inverse.square()
    grad_z, grad_loc, grad_scale = [], [], []
    for d, (z_d, mu_d, inverse_d, precision_d) in enumerate(
        zip(z.split(group_sizes, 1), mu.split(group_sizes, 1), inverse.split(group_sizes, 1), precision.split(group_sizes, 1))
    ):
        p = weights[..., d]  # [rows, B]
        column_total = p.sum(0).unsqueeze(1)  # sum_b P[b, b'], [B, 1]
        grad_z.append(p @ (mu_d * precision_d) - z_d * (p @ precision_d))
        weighted_z = p.T @ z_d  # sum_b P[b, b'] z^b, [B, width]
        grad_loc.append(precision_d * (weighted_z - mu_d * column_total))
        squares = p.T @ z_d.square() - 2 * mu_d * weighted_z + mu_d.square() * column_total  # sum_b P (z^b - mu^b')^2
        grad_scale.append(inverse_d * (precision_d * squares - column_total))
    return torch.cat(grad_z, 1), torch.cat(grad_loc, 1), torch.cat(grad_scale, 1)


def _group_and_joint_marginals(z_rows, loc, inv_scale, log_norm, group_sizes, log_w):
    """log q^(z_d) [rows, groups] and log q^(z) [rows] from the float64 group densities."""
    grouped = _group_log_densities(z_rows, loc, inv_scale, log_norm, group_sizes)
    log_w = log_w.to(WIDE)
    return (
        log_sum_exp(grouped + log_w.unsqueeze(-1), dim=1).to(z_rows.dtype),
        log_sum_exp(grouped.sum(-1) + log_w, dim=1).to(z_rows.dtype),
    )


def _gaussian_block_forward(z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes):
    """log q^(z_de), log q^(z_d), log q^(z) of one block of rows; each variable's log-sum-exp in one pass.

    A log-sum-exp shifts its terms by one of them before the exps. The largest costs a pass of
    its own over the [rows, B, variables] tensor; the row's own term (b' = b, a sample under
    the posterior it was drawn from) is known beforehand, [rows, variables]. Shifted by it, the
    sum is at least 1, so a term floored at EXP_FLOOR is as far below the dtype's resolution as
    with the largest. A term above it by more than exp's range (88 nats in float32: another
    item's density e^88 times the row's own) overflows to inf; ``GaussianLogMarginals`` then
    reruns the block with ``_gaussian_block_forward_two_pass``.
    """
    log_w = _block_log_weights(z_rows, loc, first_row, log_w_diagonal, log_w_off_diagonal)
    shift = _own_log_densities(z_rows, loc, inv_scale, log_norm, first_row) + log_w_diagonal
    _, terms = _pairwise_log_densities(z_rows, loc, inv_scale, log_norm)
    terms += log_w.unsqueeze(-1)
    terms -= shift.unsqueeze(1)
    log_q_variable = torch.log(terms.clamp_min_(EXP_FLOOR).exp_().sum(1)) + shift
    return (log_q_variable, *_group_and_joint_marginals(z_rows, loc, inv_scale, log_norm, group_sizes, log_w))


def _gaussian_block_forward_two_pass(z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes):
    """``_gaussian_block_forward`` with each variable's log-sum-exp shifted by its largest term (a pass more)."""
    log_w = _block_log_weights(z_rows, loc, first_row, log_w_diagonal, log_w_off_diagonal)
    _, terms = _pairwise_log_densities(z_rows, loc, inv_scale, log_norm)
    log_q_variable = log_sum_exp(terms.add_(log_w.unsqueeze(-1)), dim=1)
    return (log_q_variable, *_group_and_joint_marginals(z_rows, loc, inv_scale, log_norm, group_sizes, log_w))


def _gaussian_block_forward_elementwise(
    z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes
):
    """``_gaussian_block_forward`` with every density summed element-wise and each log-sum-exp
    shifted by its largest term: a pass more each, exact however narrow the posteriors."""
    log_w = _block_log_weights(z_rows, loc, first_row, log_w_diagonal, log_w_off_diagonal)
    _, pairwise = _pairwise_log_densities(z_rows, loc, inv_scale, log_norm)
    return stratified_log_sum_exps(pairwise, group_sums(pairwise, group_sizes), log_w)


def _variable_softmax_weights(pairwise, log_w, log_q_variable, grad_variable):
    """dL/dlog q(z^b_v | x^b') through the variables' log-sum-exps (their softmax weights), [rows, B, variables].

    Overwrites ``pairwise``: run eagerly, in-place updates of the fresh temporary each save a
    B x B x variables allocation; compiled, they fuse all the same.
    """
    pairwise.add_(log_w.unsqueeze(-1)).sub_(log_q_variable.unsqueeze(1)).clamp_min_(EXP_FLOOR).exp_()
    return pairwise.mul_(grad_variable.unsqueeze(1))


def _through_the_densities(grad_pairwise, standardized, inv_scale):
    """dL/dz^b, dL/dmu^b', dL/ds^b' from dL/dlog q(z^b_v | x^b'), with log q = -r^2 / 2 - log s - log(2 pi) / 2:
    d/dz = -r / s, d/dmu = r / s, d/ds = (r^2 - 1) / s."""
    weighted = grad_pairwise * standardized
    weighted *= inv_scale.unsqueeze(0)  # dL/dlog q * r / s
    grad_z_rows = -weighted.sum(1)
    grad_loc = weighted.sum(0)
    grad_scale = weighted.mul_(standardized).sum(0) - grad_pairwise.sum(0) * inv_scale
    return grad_z_rows, grad_loc, grad_scale


def _group_softmax_weights(grouped, log_w, log_q_group, log_q_joint, grad_group, grad_joint):
    """dL/dlog q(z^b_d | x^b') through the groups' and the joint's log-sum-exps, [rows, B, groups].

    ``log_q_group`` and ``log_q_joint`` must be the log-sum-exps of these very ``grouped`` terms
    in their dtype: a rounding delta in them scales every softmax weight by e^delta.
    """
    log_w = log_w.to(grouped.dtype).unsqueeze(-1)
    weights = floored_exp(grouped + log_w - log_q_group.unsqueeze(1)) * grad_group.to(grouped.dtype).unsqueeze(1)
    joint = floored_exp(grouped.sum(-1, keepdim=True) + log_w - log_q_joint.view(-1, 1, 1))
    return weights + joint * grad_joint.to(grouped.dtype).view(-1, 1, 1)


def _gaussian_block_backward(
    z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes,
    log_q_variable, log_q_group, log_q_joint, grad_variable, grad_group, grad_joint,
):
    """Gradients of one block of rows: d/dz for those rows, and their share of d/dloc, d/dscale.

    The derivative of each log-sum-exp with respect to its terms is its softmax over b'. The
    variables' softmax weights are applied element-wise; the groups' and the joint's,
    [rows, B, groups], through the matrix products of ``_group_gradients``.
    """
    log_w = _block_log_weights(z_rows, loc, first_row, log_w_diagonal, log_w_off_diagonal)
    standardized, pairwise = _pairwise_log_densities(z_rows, loc, inv_scale, log_norm)
    grad_pairwise = _variable_softmax_weights(pairwise, log_w, log_q_variable, grad_variable)
    grad_z_rows, grad_loc, grad_scale = _through_the_densities(grad_pairwise, standardized, inv_scale)
    # the groups' log-sum-exps again, in float64: the saved float32 ones would be off by their
    # rounding, |log q^| 6e-8, which scales the softmax weights by as much (1e-4 at 1,000 nats)
    grouped = _group_log_densities(z_rows, loc, inv_scale, log_norm, group_sizes)
    wide_log_w = log_w.to(WIDE)
    log_q_group = log_sum_exp(grouped + wide_log_w.unsqueeze(-1), dim=1)
    log_q_joint = log_sum_exp(grouped.sum(-1) + wide_log_w, dim=1)
    weights = _group_softmax_weights(grouped, log_w, log_q_group, log_q_joint, grad_group, grad_joint)
    group_z, group_loc, group_scale = _group_gradients(z_rows, loc, inv_scale, group_sizes, weights)
    dtype = z_rows.dtype
    return grad_z_rows + group_z.to(dtype), grad_loc + group_loc.to(dtype), grad_scale + group_scale.to(dtype)


def _gaussian_block_backward_elementwise(
    z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes,
    log_q_variable, log_q_group, log_q_joint, grad_variable, grad_group, grad_joint,
):
    """``_gaussian_block_backward`` with the groups' weights added to each of their variables' element-wise."""
    log_w = _block_log_weights(z_rows, loc, first_row, log_w_diagonal, log_w_off_diagonal)
    standardized, pairwise = _pairwise_log_densities(z_rows, loc, inv_scale, log_norm)
    grouped = group_sums(pairwise, group_sizes)
    grad_pairwise = _variable_softmax_weights(pairwise, log_w, log_q_variable, grad_variable)
    per_group = _group_softmax_weights(grouped, log_w, log_q_group, log_q_joint, grad_group, grad_joint)
    # Each group's weight reaches its variables (contiguous columns). One concatenation rather
    # than in-place adds to column slices, which torch.compile turns into copies of the tensor.
    grad_pairwise += torch.cat(
        [per_group[..., group : group + 1].expand(-1, -1, size) for group, size in enumerate(group_sizes)], dim=-1
    )
    return _through_the_densities(grad_pairwise, standardized, inv_scale)


#: "0" never compiles (for example where the C++ toolchain misbehaves), "1" always compiles
#: fused Gaussian kernels in training; unset, training decides by the sizes above.
COMPILE_ENVIRONMENT_VARIABLE = "TOPICVAE_COMPILE"


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


_EAGER_KERNELS = {
    "forward": _gaussian_block_forward,
    "forward_two_pass": _gaussian_block_forward_two_pass,
    "backward": _gaussian_block_backward,
    "forward_elementwise": _gaussian_block_forward_elementwise,
    "backward_elementwise": _gaussian_block_backward_elementwise,
}


_COMPILED_KERNELS = _CompiledKernels()


def compiled_kernels_available() -> bool:
    """Whether the compiled kernels can run in this process (no earlier compiler failure, not switched off)."""
    return _COMPILED_KERNELS.available()


def run_kernel(name: str, compiled: bool, *args):
    return _COMPILED_KERNELS.run(name, *args) if compiled else _EAGER_KERNELS[name](*args)


class GaussianLogMarginals(torch.autograd.Function):
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
        # The groups through float64 matrix products unless posteriors this narrow make them
        # inexact (or an input is not finite: the bound is NaN). Each process of data-parallel
        # training decides from its own samples; the two paths agree to the tolerance.
        bound = expansion_error_bound(z, loc, scale, group_sizes)
        elementwise = not bound <= EXPANSION_TOLERANCE.get(z.dtype, 0.0)
        outputs = []
        for start in range(0, z.shape[0], rows_per_block):
            rows = slice(start, min(z.shape[0], start + rows_per_block))
            first_row = torch.tensor(batch_offset + start, device=z.device)
            arguments = (z[rows], loc, *constants[:2], first_row, *constants[2:], group_sizes)
            block = run_kernel("forward_elementwise" if elementwise else "forward", compiled, *arguments)
            if not elementwise and not torch.isfinite(block[0]).all():
                # a term beyond exp's range above the row's own (see _gaussian_block_forward)
                block = run_kernel("forward_two_pass", compiled, *arguments)
            outputs.append(block)
        log_q_variable, log_q_group, log_q_joint = (torch.cat(parts) for parts in zip(*outputs))
        ctx.save_for_backward(z, loc, scale, log_q_variable, log_q_group, log_q_joint)
        ctx.group_sizes, ctx.dataset_size, ctx.rows_per_block, ctx.compiled = group_sizes, dataset_size, rows_per_block, compiled
        ctx.batch_offset, ctx.elementwise = batch_offset, elementwise
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
            block_z, block_loc, block_scale = run_kernel(
                "backward_elementwise" if ctx.elementwise else "backward", ctx.compiled,
                z[rows], loc, *constants[:2], first_row, *constants[2:], ctx.group_sizes,
                log_q_variable[rows], log_q_group[rows], log_q_joint[rows],
                grad_variable[rows], grad_group[rows], grad_joint[rows],
            )
            grad_z[rows] = block_z
            grad_loc += block_loc
            grad_scale += block_scale
        return grad_z, grad_loc, grad_scale, None, None, None, None, None


def _gaussian_constants(scale: Tensor, batch: int, dataset_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """1 / s, -log s - log(2 pi) / 2, and the stratified log weights (diagonal, off-diagonal) as 0-d tensors."""
    on_diagonal, off_diagonal = stratified_log_weight_values(batch, dataset_size)
    as_tensor = functools.partial(torch.tensor, dtype=scale.dtype, device=scale.device)
    return scale.reciprocal(), -scale.log() - HALF_LOG_2PI, as_tensor(on_diagonal), as_tensor(off_diagonal)
