"""The training loop: a generator that yields progress, so the caller owns logging and bars."""

from __future__ import annotations

import math
import numbers
import os
import shutil
from contextlib import nullcontext
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from topicvae.training.distributed import ProcessGroup, gather_batch, gather_objects, weighted_mean_over_ranks
from topicvae.latent.posteriors import ModelOutput, posterior_parameters, posterior_with_parameters
from topicvae.objective.terms import ObjectiveWeights, hfvae_objective
from topicvae.objective.marginals import worth_compiling
from topicvae.io.model_files import CHECKPOINT_FILE, ModelFileError, read_checkpoint, write_checkpoint
from topicvae.utils.random_state import RandomStreams

__all__ = [
    "check_training_options", "check_checkpoint_options",
    "BagOfWordsBatches", "ImageBatches", "TrainingProgress", "TrainingCheckpoints", "train",
]

#: Below this many bytes the whole bag-of-words is made dense once, which removes the
#: per-step sparse-to-dense conversion; above it, each batch is densified on its own.
DENSE_LIMIT_BYTES = 512 * 2**20

TERM_NAMES = ("loss", "reconstruction", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo")


class _ShuffledBatches:
    """Mini-batches over a fresh random order each epoch; subclasses turn indices into a tensor.

    By default the order is cut into batches of ``batch_size``. With ``steps_per_epoch`` set
    (data-parallel training, where every rank must take the same number of steps) it is cut
    into that many batches of near-equal size instead.
    """

    batch_size: int
    steps_per_epoch: int | None = None

    @property
    def num_items(self) -> int:
        raise NotImplementedError

    def _take(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._split(torch.arange(self.num_items)))

    def _split(self, order: torch.Tensor) -> list[torch.Tensor]:
        if self.steps_per_epoch is not None:
            return list(order.tensor_split(self.steps_per_epoch))
        return _split_order(order, self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.num_items, generator=generator)
        for index in self._split(order):
            yield self._take(index)


def data_parallel_steps(rank_items: Sequence[int], batch_size: int) -> int:
    """Steps per epoch when the ranks hold ``rank_items`` items and a whole batch has ``batch_size``.

    ceil(N / B) as in one process, but at most min_r(items_r) / 2: every rank's share of a
    batch needs two items (batch-norm, and the batch estimate of q(z) in one process).
    """
    if min(rank_items) < 2:
        raise ValueError(
            f"a rank holds {min(rank_items)} item(s): data-parallel training needs at least 2 per rank; "
            "start fewer processes or train on more data"
        )
    return max(1, min(math.ceil(sum(rank_items) / batch_size), min(rank_items) // 2))


def _split_order(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    batches = list(order.split(batch_size))
    # Batch-norm and the batch estimate of q(z) need two items: fold a lone last item into the batch before.
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


class BagOfWordsBatches(_ShuffledBatches):
    """Shuffled mini-batches of a document-term matrix as dense float tensors."""

    def __init__(
        self, counts: sp.csr_matrix, batch_size: int, *, device: torch.device | str = "cpu", steps_per_epoch: int | None = None
    ):
        self.counts = sp.csr_matrix(counts, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.steps_per_epoch = steps_per_epoch
        n_docs, vocab = self.counts.shape
        self._dense = (
            torch.from_numpy(self.counts.toarray()).to(self.device)
            if n_docs * vocab * 4 <= DENSE_LIMIT_BYTES
            else None
        )

    @property
    def num_items(self) -> int:
        return self.counts.shape[0]

    def _take(self, index: torch.Tensor) -> torch.Tensor:
        if self._dense is not None:
            return self._dense[index.to(self.device)]
        return torch.from_numpy(self.counts[index.numpy()].toarray()).to(self.device)


class ImageBatches(_ShuffledBatches):
    """Shuffled mini-batches of images as float tensors [B, C, H, W] in [0, 1].

    The images stay in memory as uint8 (a quarter of float32's size: 100,000 dSprites images
    take 410 MB) and each batch is converted on its own.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, *, scale: float, device: torch.device | str = "cpu"):
        self.images = images
        self.scale = float(scale)  # 1/255 for grey levels, 1 for {0, 1} images
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

    @property
    def num_items(self) -> int:
        return self.images.shape[0]

    def _take(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index].to(self.device, torch.float32) * self.scale


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


def check_checkpoint_options(checkpoint_dir, checkpoint_every, resume) -> None:
    """The checkpointing arguments of ``fit``, each checked with an error that names it."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} is invalid: give a whole number of epochs >= 1")
    if not isinstance(resume, bool):
        raise ValueError(f"resume={resume!r} is invalid: give True or False")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir: the directory the checkpoint was written to")


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
    regularizer: Callable[[Any, torch.Tensor, float], Mapping[str, torch.Tensor]] | None = None,
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

    ``regularizer(out, batch, progress)`` (optional; single process) returns named terms after
    each forward pass, ``progress`` being the share of training done before the step: its
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
    # Whether the estimator's kernels are compiled is decided at the first step, when the size
    # of the latent code is known, from the whole run's length: a resumed run decides as the
    # uninterrupted one did, so that both do the same arithmetic and end with the same bits.
    compile = None
    for epoch in range(start_epoch + 1, epochs + 1):
        model.train()
        sums: dict[str, float] = dict.fromkeys(TERM_NAMES, 0.0)
        for step, batch in enumerate(batches.epoch(generator), start=1):
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
            if compile is None:
                compile = worth_compiling(out.posteriors, out.samples, epochs * steps_per_epoch, batch_items=batch_items)
            terms = hfvae_objective(
                out.log_likelihood, out.posteriors, out.priors, out.samples, dataset_size, weights,
                compile=compile, conditionings=out.conditionings, **whole_batch,
            )
            values = terms.scalars()
            loss = terms.loss
            # the share of training done before this step: the regularizer's and the schedule's clock
            progress = ((epoch - 1) * steps_per_epoch + step - 1) / (epochs * steps_per_epoch)
            if regularizer is not None:
                if process_group is not None:
                    raise ValueError("the class levers train in one process: their batch terms are not gathered across processes")
                extra = regularizer(out, batch, progress)
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


def _snapshot(value: Any) -> Any:
    """A copy on the CPU of tensors nested in dicts, lists and tuples (state dicts alias live tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _snapshot(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(item) for item in value)
    return value


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    # in the current run's order, which puts the options before the data they shape
    for key in [*current, *(key for key in saved if key not in current)]:
        old, new = saved.get(key), current.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            yield from _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            yield f"{prefix}{key} is {old!r} in the checkpoint and {new!r} now"


class TrainingCheckpoints:
    """The checkpoint of one training run in ``directory/checkpoint.pt``.

    At every epoch boundary :meth:`epoch_done` copies the model's state dict, the optimizer's
    state, the random states and the history; every ``every`` epochs, and after the last one,
    the copy is written (atomically, see :func:`~topicvae.io.model_files.write_file_atomically`).
    When training stops early, :meth:`write_pending` writes the last copy not yet on disk, so
    an interruption loses at most the epoch in progress. Only epoch boundaries are ever
    written: a resumed run starts a fresh epoch with the restored shuffle generator and
    therefore repeats exactly what the uninterrupted run would have done.

    ``run`` describes the run (options and a fingerprint of the data, plain JSON-like values):
    a checkpoint is only resumed by a run that describes itself identically. ``extra`` (e.g.
    the vocabulary) is stored alongside, so that the checkpoint alone can rebuild the model.

    In data-parallel training (``process_group``) every rank calls every method. Rank 0 alone
    reads and writes the file; the checkpoint holds each rank's random states (gathered at
    every epoch boundary), and on resuming rank 0 sends the checkpoint, or the reason it was
    refused, to the other ranks, so that all ranks resume, or stop, alike.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        every: int,
        run: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
        process_group: ProcessGroup | None = None,
    ):
        self.directory = Path(directory)
        self.path = self.directory / CHECKPOINT_FILE
        self.every = every
        self.run = dict(run)
        self.extra = dict(extra or {})
        self.process_group = process_group
        self._written_epoch: int | None = None  # the epoch of the checkpoint on disk
        self._pending: dict[str, Any] | None = None

    @property
    def _writes(self) -> bool:
        return self.process_group is None or self.process_group.is_main

    def start(
        self, *, resume: bool, model: torch.nn.Module, optimizer: torch.optim.Optimizer, streams: RandomStreams
    ) -> tuple[int, list[dict[str, float]]]:
        """A fresh start (0, []) or, with ``resume``, the checkpoint's epoch and history, its state restored.

        A fresh start refuses to run over an existing checkpoint, which would be overwritten by
        the first epoch: that checkpoint may be all that is left of a long run.
        """
        checkpoint, error = None, None
        if self._writes:
            try:
                checkpoint = self._checkpoint_to_resume(resume)
            except (OSError, ValueError) as refused:
                error = refused
        if self.process_group is not None:
            # one message from rank 0: the checkpoint, or the error every rank then raises
            import torch.distributed as dist

            message = [(checkpoint, None if error is None else (type(error), str(error)))]
            dist.broadcast_object_list(message, src=0)
            checkpoint, failure = message[0]
            if failure is not None and error is None:
                error = failure[0](failure[1])
        if error is not None:
            raise error
        if checkpoint is None:
            return 0, []
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rank = 0 if self.process_group is None else self.process_group.rank
        streams.set_state(checkpoint["rng"] if rank == 0 else checkpoint["rng_of_other_ranks"][rank - 1])
        self._written_epoch = int(checkpoint["epoch"])
        return self._written_epoch, list(checkpoint["history"])

    def _checkpoint_to_resume(self, resume: bool) -> dict[str, Any] | None:
        if not resume:
            if self.path.exists():
                try:
                    read_checkpoint(self.directory)
                except ModelFileError as error:  # resuming it cannot work: say so, not "resume it"
                    raise FileExistsError(
                        f"{self.path} holds an unreadable checkpoint of an earlier run ({error}); delete {self.directory} "
                        "to start again"
                    ) from None
                raise FileExistsError(
                    f"{self.path} holds the checkpoint of an earlier run: resume it (--resume, or resume=True) "
                    f"or delete {self.directory} to start again"
                )
            return None
        checkpoint = read_checkpoint(self.directory)
        differences = list(_differences(checkpoint["run"], self.run))
        if differences:
            more = len(differences) - 1
            more = f" (and {more} more difference{'s' if more > 1 else ''})" if more else ""
            raise ValueError(
                f"the checkpoint in {self.directory} was written for another run: {differences[0]}{more}; "
                f"resume with the same corpus and options, or delete {self.directory} to start again"
            )
        return checkpoint

    def epoch_done(
        self,
        epoch: int,
        epochs: int,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        streams: RandomStreams,
        history: list[dict[str, float]],
    ) -> None:
        """Copy the state at the end of ``epoch``; write it when it is due."""
        rng_of_other_ranks = []
        if self.process_group is not None:
            rng_of_other_ranks = gather_objects(streams.state(), self.process_group)[1:]
            if not self._writes:
                return
        self._pending = {
            "run": self.run,
            **self.extra,
            "epoch": epoch,
            "epochs": epochs,
            "history": [dict(row) for row in history],
            "model": _snapshot(model.state_dict()),
            "optimizer": _snapshot(optimizer.state_dict()),
            "rng": streams.state(),
            **({"rng_of_other_ranks": rng_of_other_ranks} if self.process_group is not None else {}),
        }
        if epoch % self.every == 0 or epoch == epochs:
            self.write_pending()

    def write_pending(self) -> None:
        """Write the last epoch boundary's state if it is not on disk yet."""
        if self._pending is None or not self._writes:
            return
        epoch = self._pending["epoch"]
        try:
            write_checkpoint(self.directory, self._pending)
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            free = shutil.disk_usage(self.directory).free / 2**20
            kept = f"the checkpoint of epoch {self._written_epoch} there is intact" if self._written_epoch else "there is no earlier checkpoint"
            raise OSError(
                f"could not write the checkpoint of epoch {epoch} to {self.directory} ({reason}; {free:.1f} MiB free on "
                f"that disk); {kept}: free some space, then resume the run"
            ) from error
        self._written_epoch, self._pending = epoch, None
