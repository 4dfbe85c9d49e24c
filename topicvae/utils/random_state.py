"""Random numbers that belong to topicvae's own computations, never to the caller.

Fitting a model draws batch orders, dropout masks and samples z ~ q(z | x). Dropout and
``rsample`` take no generator argument: they draw from torch's global generators, which the
caller's own code shares. Seeding those globally (``torch.manual_seed``, ``np.random.seed``)
would make a caller's later numbers depend on whether a model was fitted in between, as
scikit-learn's estimators never do. So a run keeps its own state of torch's global generators
and installs it only while its code runs (:class:`RandomStreams`); one-off draws (an
information estimate, an ELBO) run under :func:`seeded`. NumPy's and Python's global
generators are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_DONE = object()  # the end of a generator of steps (None could be a step)

__all__ = ["RandomStreams", "seeded"]


def _cuda_devices() -> list[int]:
    """The CUDA devices whose generators exist (asking never starts CUDA)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside: torch's global generators (CPU, and CUDA once started) seeded with ``seed``; after: the caller's states.

    ``torch.manual_seed`` would also queue a seed for CUDA generators not started yet, which
    then reseeds the caller's generator when CUDA starts later; this seeds only what exists.
    """
    devices = _cuda_devices()
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for device in devices:
            torch.cuda.default_generators[device].manual_seed(seed)
        yield


class RandomStreams:
    """The random numbers of one training run, kept apart from the caller's.

    ``shuffle`` orders the batches. The run's own state of torch's global generator (CPU, and
    CUDA when ``cuda``), from which dropout masks and samples are drawn, is installed only
    inside :meth:`active`; outside it the caller's state is back, as the caller left it.

    Parameters
    ----------
    seed : int
        Seeds both streams.
    cuda : bool
        The run computes on CUDA devices (their generators are started now).
    """

    def __init__(self, seed: int, *, cuda: bool = False) -> None:
        self.seed = seed
        self.shuffle = torch.Generator().manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)  # the global CPU generator's state after seeding
        self._cpu = generator.get_state()
        self._cuda: list[torch.Tensor] | None = None
        if cuda:
            torch.cuda.init()
            with torch.random.fork_rng(devices=_cuda_devices()):
                torch.cuda.manual_seed_all(seed)
                self._cuda = torch.cuda.get_rng_state_all()
        self._depth = 0

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside: torch's global generators hold the run's state; after: the caller's again."""
        if self._depth:  # already installed by an enclosing block
            yield
            return
        caller_cpu = torch.get_rng_state()
        caller_cuda = torch.cuda.get_rng_state_all() if self._cuda is not None else None
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._cpu = torch.get_rng_state()
            torch.set_rng_state(caller_cpu)
            if self._cuda is not None:
                self._cuda = torch.cuda.get_rng_state_all()
                torch.cuda.set_rng_state_all(caller_cuda)

    def drawing(self, steps: Iterator[T]) -> Iterator[T]:
        """The items of ``steps`` (a training loop's generator), each computed inside :meth:`active`.

        Between two items, the caller's code runs with its own generators installed.
        """
        while True:
            with self.active():
                item = next(steps, _DONE)
            if item is _DONE:
                return
            yield item

    def state(self) -> dict[str, Any]:
        """Both streams' states as tensors (no pickled objects), for a checkpoint."""
        live = self._depth > 0
        states: dict[str, Any] = {
            "shuffle": self.shuffle.get_state(),
            "torch": torch.get_rng_state() if live else self._cpu.clone(),
        }
        if self._cuda is not None:
            states["cuda"] = torch.cuda.get_rng_state_all() if live else [s.clone() for s in self._cuda]
        return states

    def set_state(self, states: dict[str, Any]) -> None:
        """Put back what :meth:`state` returned (checkpoints of older versions hold more: it is ignored)."""
        self.shuffle.set_state(states["shuffle"])
        if self._depth:
            torch.set_rng_state(states["torch"])
        else:
            self._cpu = states["torch"].clone()
        if self._cuda is not None and "cuda" in states:
            if self._depth:
                torch.cuda.set_rng_state_all(states["cuda"])
            else:
                self._cuda = list(states["cuda"])
