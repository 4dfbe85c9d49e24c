"""Training checkpoints: what a run writes every few epochs and how a resumed run checks that it
continues the same run (same options, same data, same random streams), so that resuming gives
the same bits as never stopping (tests/test_checkpoints.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from topicvae.io.model_files import CHECKPOINT_FILE, ModelFileError, read_checkpoint, write_checkpoint
from topicvae.training.distributed import ProcessGroup, gather_objects
from topicvae.utils.random_state import RandomStreams

__all__ = ["TrainingCheckpoints", "check_checkpoint_options"]


def check_checkpoint_options(checkpoint_dir, checkpoint_every, resume) -> None:
    """The checkpointing arguments of ``fit``, each checked with an error that names it."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} is invalid: give a whole number of epochs >= 1")
    if not isinstance(resume, bool):
        raise ValueError(f"resume={resume!r} is invalid: give True or False")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir: the directory the checkpoint was written to")


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
        elif key not in saved:  # an option that did not exist, or was left at its neutral value, when the checkpoint was written
            yield f"{prefix}{key} is not set in the checkpoint and is {new!r} now"
        elif key not in current:
            yield f"{prefix}{key} is {old!r} in the checkpoint and not set now"
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
