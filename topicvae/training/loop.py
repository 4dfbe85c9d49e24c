"""The training loop: a generator that yields progress, so the caller owns logging and bars."""

from __future__ import annotations

import math
import numbers
from contextlib import nullcontext
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from topicvae.latent.posteriors import ModelOutput, posterior_parameters, posterior_with_parameters
from topicvae.objective.marginals import training_kernels
from topicvae.objective.terms import ObjectiveWeights, hfvae_objective
from topicvae.training.batches import BagOfWordsBatches, ImageBatches
from topicvae.training.distributed import ProcessGroup, gather_batch, weighted_mean_over_ranks

__all__ = ["check_training_options", "check_seed", "TrainingProgress", "LR_SCHEDULES", "train"]


TERM_NAMES = ("loss", "reconstruction", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo")


def _whole(value) -> bool:
    """A whole number: int or a NumPy integer (``numbers.Integral``), never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _real(value) -> bool:
    """A finite real number: int, float or a NumPy scalar (``numbers.Real``), never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def check_training_options(*, epochs, batch_size, lr, temperature, hidden_sizes, items: str, lr_example: str) -> None:
    """The options every estimator trains with, each checked with an error that names it.

    NumPy numbers are accepted like Python ones (a ``GridSearchCV`` over ``np.arange`` gives them).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not _whole(value) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: give a whole number >= 1")
    if batch_size < 2:
        raise ValueError(f"batch_size={batch_size} is invalid: the batch estimate of q(z) needs at least 2 {items}")
    if not (_real(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} is invalid: give a positive learning rate such as {lr_example}")
    if not (_real(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} is invalid: give a positive number such as 0.66")
    if hidden_sizes is not None and (
        isinstance(hidden_sizes, (str, bytes)) or not hasattr(hidden_sizes, "__len__") or len(hidden_sizes) == 0
        or any(not _whole(h) or h < 1 for h in hidden_sizes)
    ):
        raise ValueError(f"hidden_sizes={hidden_sizes!r} is invalid: give one or more whole numbers >= 1")


def check_seed(seed) -> int:
    """``seed`` as a Python int, or an error that names it (a seed is one whole number >= 0)."""
    if not _whole(seed) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: give one whole number >= 0 (the run draws all its random numbers from it)")
    return int(seed)


@dataclass(frozen=True)
class TrainingProgress:
    """One optimizer step. ``epoch_terms`` is set on the last step of each epoch."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based, within the epoch
    steps_per_epoch: int
    terms: dict[str, float]
    epoch_terms: dict[str, float] | None = None

    @property
    def epoch_done(self) -> bool:
        return self.epoch_terms is not None


def _check_finite(values: Mapping[str, float], epoch: int, step: int) -> None:
    for name in TERM_NAMES:
        if not np.isfinite(values[name]):
            raise FloatingPointError(
                f"training diverged at epoch {epoch}, step {step}: the {name} term is {values[name]}; "
                "lower the learning rate (--lr) or the weights"
            )


def _check_parameters_finite(model: torch.nn.Module, epoch: int, step: int) -> None:
    # A finite loss with a non-finite gradient leaves non-finite weights that the next step's
    # loss would reveal, but nothing follows the last step, and a checkpoint must never hold them.
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise FloatingPointError(
                f"training diverged at epoch {epoch}, step {step}: the parameter {name} is no longer finite "
                "after the optimizer step; lower the learning rate (--lr) or the weights"
            )


#: Learning-rate schedules: the factor on the learning rate at the share t in [0, 1) of training done.
#: "cosine" decays to 0 over the run (Loshchilov & Hutter, 2017): late steps make Adam's noise
#: small, so that topics the objective switches off settle at the prior instead of hovering.
LR_SCHEDULES = {
    "constant": lambda t: 1.0,
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
}


def train(
    model: torch.nn.Module,
    batches: BagOfWordsBatches | ImageBatches,
    weights: ObjectiveWeights,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    start_epoch: int = 0,
    dataset_size: int | None = None,
    process_group: ProcessGroup | None = None,
    autocast_dtype: torch.dtype | None = None,
    lr_schedule: str = "constant",
    regularizer: Callable[[Any, torch.Tensor, float, torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
    weights_at: Callable[[float], ObjectiveWeights] | None = None,
) -> Iterator[TrainingProgress]:
    """Maximize the HFVAE objective, yielding after every step.

    ``model(batch)`` returns a :class:`~topicvae.latent.posteriors.ModelOutput`. The caller makes the
    ``optimizer`` (Adam over ``model.parameters()``) so that it can save and restore its state.
    Training runs epochs ``start_epoch + 1`` to ``epochs``: a resumed run passes the epoch its
    checkpoint reached, after restoring the model, the optimizer and the random states.
    Nothing draws random numbers between the yield of an epoch's last step and the next
    epoch's shuffle, so the state seen at that yield is the epoch boundary. ``dataset_size``
    is N in the stratified estimator of q(z); it defaults to the number of items in ``batches``.
    ``generator`` orders the batches; dropout masks and samples come from torch's global
    generator, so a caller that keeps its own random numbers apart advances this generator
    inside :meth:`RandomStreams.active <topicvae.utils.random_state.RandomStreams.active>`.

    Data-parallel training (``process_group``): ``model`` is wrapped in DistributedDataParallel,
    ``batches`` holds this rank's items and takes as many steps per epoch as every other
    rank's, and ``dataset_size`` is the size of the whole data set. Each step gathers the whole
    batch's posteriors (see :mod:`topicvae.training.distributed`); the terms yielded are the whole
    batch's, the same on every rank.

    ``autocast_dtype`` (e.g. ``torch.bfloat16`` on GPUs) runs the model's forward pass in mixed
    precision. The objective never does: the posteriors' parameters, the samples and the
    log-likelihood are cast to float32 first, so the B x B pairwise log-densities, their
    log-sum-exps and their gradients are computed in float32 (objective.md, "Numerics").

    ``lr_schedule`` (see ``LR_SCHEDULES``) scales each parameter group's learning rate at every
    step by a function of the share of training done, a pure function of the step, so that a
    resumed run follows the same schedule.

    ``weights_at(progress)`` (optional) gives the objective's weights for a step from the share
    of training done before it, e.g. a warm-up of gamma (``TopicModel(gamma_warmup=...)``);
    without it every step uses ``weights``.

    ``regularizer(out, batch, progress, index)`` (optional; single process, ``batches`` a
    :class:`~topicvae.training.batches.ShuffledBatches`) returns named terms after each forward
    pass, ``progress`` being the share of training done before the step and ``index`` the
    batch's item indices in the data set (for per-item constants such as IMSAT's radii): its
    ``penalty`` is added to the loss, and every term is reported with the objective's (e.g.
    :class:`~topicvae.images.class_levers.ClassLevers`).
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={lr_schedule!r} is unknown: choose one of {', '.join(LR_SCHEDULES)}")
    dataset_size = dataset_size or batches.num_items
    steps_per_epoch = len(batches)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    device_type = batches.device.type
    # Which kernels the estimator runs is decided at the first step, when the size of the
    # latent code is known, from the whole run's length: a resumed run decides as the
    # uninterrupted one did, so that both do the same arithmetic and end with the same bits.
    kernels = None
    for epoch in range(start_epoch + 1, epochs + 1):
        model.train()
        sums: dict[str, float] = dict.fromkeys(TERM_NAMES, 0.0)
        # the same order either way; the regularizer is also told which items the batch holds
        epoch_batches = batches.indexed_epoch(generator) if regularizer is not None else ((None, b) for b in batches.epoch(generator))
        for step, (index, batch) in enumerate(epoch_batches, start=1):
            with torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext():
                out = model(batch)
            if autocast_dtype is not None:
                out = _in_float32(out)
            whole_batch, loss_scale, batch_items = {}, 1.0, batch.shape[0]
            if process_group is not None and out.conditionings:
                raise ValueError("a style conditioned on the class trains in one process: its heads are not gathered across processes")
            if process_group is not None:
                gathered = gather_batch(out.posteriors)
                whole_batch = {"batch_posteriors": gathered.posteriors, "batch_offset": gathered.offset}
                # The terms are means over this rank's B_r items; DDP averages the R ranks'
                # gradients. Scaling by R B_r / B makes that average the gradient of the mean
                # over all B items, also when the ranks' shares differ.
                loss_scale = process_group.world_size * batch.shape[0] / gathered.size
                batch_items = gathered.size
            if kernels is None:
                kernels = training_kernels(out.posteriors, out.samples, epochs * steps_per_epoch, batch_items=batch_items)
            # the share of training done before this step: the clock of the weights, the regularizer
            # and the learning-rate schedule (a function of the step, so a resumed run follows it)
            progress = ((epoch - 1) * steps_per_epoch + step - 1) / (epochs * steps_per_epoch)
            terms = hfvae_objective(
                out.log_likelihood, out.posteriors, out.priors, out.samples, dataset_size,
                weights if weights_at is None else weights_at(progress),
                kernels=kernels, conditionings=out.conditionings, **whole_batch,
            )
            values = terms.scalars()
            loss = terms.loss
            if regularizer is not None:
                if process_group is not None:
                    raise ValueError("the class levers train in one process: their batch terms are not gathered across processes")
                extra = regularizer(out, batch, progress, index)
                loss = loss + extra["penalty"]
                values.update({name: float(value.detach()) for name, value in extra.items()})
            if process_group is not None:
                values = weighted_mean_over_ranks(values, batch.shape[0], batches.device)
            _check_finite(values, epoch, step)  # on the whole batch's terms: every rank stops alike
            optimizer.zero_grad(set_to_none=True)
            (loss * loss_scale if loss_scale != 1.0 else loss).backward()
            if lr_schedule != "constant":
                factor = LR_SCHEDULES[lr_schedule](progress)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
            optimizer.step()
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            epoch_terms = None
            if step == steps_per_epoch:
                _check_parameters_finite(model, epoch, step)
                epoch_terms = {name: total / step for name, total in sums.items()}
            yield TrainingProgress(epoch, epochs, step, steps_per_epoch, values, epoch_terms)


def _in_float32(out: ModelOutput) -> ModelOutput:
    """The model's output with the posteriors, samples and log-likelihood cast to float32."""
    posteriors = [
        posterior_with_parameters(post, [p.float() for p in posterior_parameters(post, "mixed precision")])
        for post in out.posteriors
    ]
    conditionings = tuple(conditioning.map(torch.Tensor.float) for conditioning in out.conditionings)
    return ModelOutput(out.log_likelihood.float(), posteriors, out.priors, [z.float() for z in out.samples], conditionings)


