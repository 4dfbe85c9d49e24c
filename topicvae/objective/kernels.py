"""The numeric kernels of the stratified estimator for mean-field Gaussian groups.

For one block of sample rows b, the kernels build the pairwise log-densities
log q(z^b_v | x^b') of every variable v under every item b' of the batch, weigh them with the
stratified weights (objective.md, identity 2) and reduce them with three log-sum-exps into
log q^(z_de), log q^(z_d) and log q^(z); the backward kernel recomputes the block and applies
the three softmaxes directly, so nothing of size B x B is kept between the passes
(``GaussianLogMarginals``). The kernels run eagerly or through ``torch.compile``, which fuses
each one into a few passes over the block (``run_kernel``). :mod:`topicvae.objective.marginals`
calls them; benchmarks/objective_speed.py measures them.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence

import torch

from topicvae.objective.native import NEGATIVE_LARGE, native_kernels_applicable, native_module

Tensor = torch.Tensor
#: log(2 pi) / 2, the Gaussian log-density's constant.
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: The exps of the estimator's log-sum-exps and softmaxes take max(t, -60) for a term t <= 0
#: relative to the largest: a term below e^-60 = 9e-27 of a sum that is at least 1 is under
#: the resolution of float32 and of float64 (2e-16) alike, so raising it to e^-60 leaves the
#: estimates and their gradients unchanged. The floor keeps the CPU's exp off its slow path:
#: where exp's result would be subnormal (arguments from about -87 to -103 in float32) the
#: vectorized exp, eager or compiled, runs on microcode assists, measured 6 to 250 times slower
#: per element, and the off-diagonal pairs of well-separated posteriors land exactly there
#: (docs/objective.md, "No subnormal exps"; docs/benchmarks.md, "The subnormal exps").
EXP_FLOOR = -60.0

__all__ = [
    "EXP_FLOOR", "HALF_LOG_2PI", "COMPILE_ENVIRONMENT_VARIABLE", "GaussianLogMarginals", "KERNELS",
    "compiled_kernels_available", "floored_exp", "group_sums", "log_sum_exp", "run_kernel", "stratified_log_sum_exps",
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
    """exp(max(log_ratio, EXP_FLOOR)) for terms log_ratio <= 0 relative to the largest (see ``EXP_FLOOR``)."""
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
    return standardized, pairwise, log_w, group_sums(pairwise, group_sizes)


def _gaussian_block_forward(z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes):
    """log q^(z_de), log q^(z_d), log q^(z) of one block of rows."""
    _, pairwise, log_w, grouped = _gaussian_block_terms(
        z_rows, loc, inv_scale, log_norm, first_row, log_w_diagonal, log_w_off_diagonal, group_sizes
    )
    return stratified_log_sum_exps(pairwise, grouped, log_w)


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
    grad_pairwise = pairwise.add_(log_w).sub_(log_q_variable.unsqueeze(1)).clamp_min_(EXP_FLOOR).exp_().mul_(grad_variable.unsqueeze(1))
    per_group = floored_exp(grouped + log_w - log_q_group.unsqueeze(1)) * grad_group.unsqueeze(1)
    per_group += floored_exp(grouped.sum(-1, keepdim=True) + log_w - log_q_joint.view(-1, 1, 1)) * grad_joint.view(-1, 1, 1)
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


_EAGER_KERNELS = {"forward": _gaussian_block_forward, "backward": _gaussian_block_backward}


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
    log-sum-exps directly, so nothing of size B x B is kept between the passes. The kernels
    (``KERNELS``) run eagerly, compiled (see ``_CompiledKernels``) or natively
    (:mod:`topicvae.objective.native`, all rows in one call).
    """

    @staticmethod
    def forward(ctx, z, loc, scale, group_sizes, dataset_size, rows_per_block, kernels, batch_offset):
        # z holds this process's samples (rows); loc and scale the whole batch's posteriors (columns).
        kernels = _runnable(kernels, z, loc, scale)
        constants = _gaussian_constants(scale, loc.shape[0], dataset_size)
        if kernels == "native":
            log_q_variable, log_q_group, log_q_joint = native_module().forward(
                z.contiguous(), *_transposed_columns(loc, constants), batch_offset, *_native_log_weights(constants),
                list(group_sizes),
            )
        else:
            outputs = []
            for start in range(0, z.shape[0], rows_per_block):
                rows = slice(start, min(z.shape[0], start + rows_per_block))
                first_row = torch.tensor(batch_offset + start, device=z.device)
                outputs.append(run_kernel("forward", kernels == "compiled", z[rows], loc, *constants[:2], first_row,
                                          *constants[2:], group_sizes))
            log_q_variable, log_q_group, log_q_joint = (torch.cat(parts) for parts in zip(*outputs))
        ctx.save_for_backward(z, loc, scale, log_q_variable, log_q_group, log_q_joint)
        ctx.group_sizes, ctx.dataset_size, ctx.rows_per_block, ctx.kernels = group_sizes, dataset_size, rows_per_block, kernels
        ctx.batch_offset = batch_offset
        return log_q_variable, log_q_group, log_q_joint

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_variable, grad_group, grad_joint):
        z, loc, scale, log_q_variable, log_q_group, log_q_joint = ctx.saved_tensors
        constants = _gaussian_constants(scale, loc.shape[0], ctx.dataset_size)
        if ctx.kernels == "native":
            grad_z, grad_loc_t, grad_scale_t = native_module().backward(
                z.contiguous(), *_transposed_columns(loc, constants), ctx.batch_offset, *_native_log_weights(constants),
                list(ctx.group_sizes), log_q_variable, log_q_group, log_q_joint,
                *(g.contiguous() for g in (grad_variable, grad_group, grad_joint)),
            )
            return grad_z, grad_loc_t.t(), grad_scale_t.t(), None, None, None, None, None
        grad_z, grad_loc, grad_scale = torch.zeros_like(z), torch.zeros_like(loc), torch.zeros_like(scale)
        for start in range(0, z.shape[0], ctx.rows_per_block):
            rows = slice(start, min(z.shape[0], start + ctx.rows_per_block))
            first_row = torch.tensor(ctx.batch_offset + start, device=z.device)
            block_z, block_loc, block_scale = run_kernel(
                "backward", ctx.kernels == "compiled", z[rows], loc, *constants[:2], first_row, *constants[2:],
                ctx.group_sizes, log_q_variable[rows], log_q_group[rows], log_q_joint[rows],
                grad_variable[rows], grad_group[rows], grad_joint[rows],
            )
            grad_z[rows] = block_z
            grad_loc += block_loc
            grad_scale += block_scale
        return grad_z, grad_loc, grad_scale, None, None, None, None, None


#: The fused Gaussian kernels: "eager" (torch operations), "compiled" (the same through
#: ``torch.compile``), "native" (``topicvae.objective.native``: one C++ pass per direction).
KERNELS = ("eager", "compiled", "native")


def _runnable(kernels: str, z: Tensor, loc: Tensor, scale: Tensor) -> str:
    """The kernels asked for, or the eager ones where the native kernels cannot take these inputs.

    A non-finite input (an infinite location, say) runs eagerly, where the package's own
    handling of infinities applies; so does float64 or a GPU tensor, and a failed build
    (warned about once, in ``native``).
    """
    if kernels == "native" and not (native_kernels_applicable(z, loc, scale) and native_module() is not None):
        return "eager"
    return kernels


def _transposed_columns(loc: Tensor, constants) -> tuple[Tensor, Tensor, Tensor]:
    """mu, 1 / sigma and -log sigma - log(2 pi) / 2 of the columns as [V, B]: the native loops run over b'."""
    return tuple(t.detach().t().contiguous() for t in (loc, constants[0], constants[1]))


def _native_log_weights(constants) -> tuple[float, float]:
    """The stratified log weights as finite floats (a batch of one's -inf off-diagonal weight made finite)."""
    return float(constants[2]), max(float(constants[3]), NEGATIVE_LARGE)


def _gaussian_constants(scale: Tensor, batch: int, dataset_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """1 / s, -log s - log(2 pi) / 2, and the stratified log weights (diagonal, off-diagonal) as 0-d tensors."""
    on_diagonal, off_diagonal = stratified_log_weight_values(batch, dataset_size)
    as_tensor = functools.partial(torch.tensor, dtype=scale.dtype, device=scale.device)
    return scale.reciprocal(), -scale.log() - HALF_LOG_2PI, as_tensor(on_diagonal), as_tensor(off_diagonal)
