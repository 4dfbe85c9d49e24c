"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

Each process (rank) holds its own share of the corpus and draws its own items of every batch.
Most of the objective is a mean over items, which plain data parallelism handles: each rank
computes its items' terms and DistributedDataParallel averages the gradients. The inference
marginals q(z), q(z_d), q(z_de) are not: they are estimated from the whole batch (the paper's
stratified estimator, objective.md), and a rank that estimated them from its own items alone
would use a batch R times smaller, with a worse estimate. So every step each rank gathers the
encoders' distribution parameters (loc and scale of Gaussian groups, logits of Concrete ones)
from all ranks, with their gradients (the backward pass of the gather sums each rank's
gradients back to the rank that owns the items), and evaluates its own samples against the
whole batch. With N the size of the whole data set, the result equals, to rounding, the
objective of one process holding the concatenated batch (tests/test_distributed.py).

Batches of unequal size across ranks are allowed: the loss each rank differentiates is scaled
by R B_r / B, so that DDP's average of the ranks' gradients is the gradient of the whole
batch's mean.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributions import Distribution

from topicvae.latent.posteriors import posterior_parameters, posterior_with_parameters

__all__ = [
    "ProcessGroup",
    "GatheredBatch",
    "current_process_group",
    "launched_with_torchrun",
    "start_process_group",
    "gather_batch",
    "gather_objects",
    "weighted_mean_over_ranks",
    "sum_over_ranks",
]

#: The variables torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the default process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints and writes outputs."""
        return self.rank == 0

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (any picklable object), in rank order (:func:`gather_objects`)."""
        return gather_objects(value, self)


def current_process_group() -> ProcessGroup | None:
    """The initialized default process group with two or more ranks, or None (a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return ProcessGroup(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        backend=str(dist.get_backend()),
    )


def launched_with_torchrun() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process as one of several."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def start_process_group(device: torch.device, *, timeout_minutes: float = 30.0) -> tuple[ProcessGroup, torch.device]:
    """Join the process group torchrun describes: gloo on the CPU, nccl on GPUs (one per process).

    Returns the group and the device this process trains on (``cuda:LOCAL_RANK`` on GPUs).
    An already initialized group is used as it is.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this host has {torch.cuda.device_count()} GPU(s): start at most "
                "one process per GPU (torchrun --nproc_per_node), or train with --device cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    group = current_process_group()
    if group is None:
        raise ValueError("the process group has a single process: start two or more with torchrun --nproc_per_node")
    return group, device


@dataclass(frozen=True)
class GatheredBatch:
    """The whole batch's posteriors, and where this rank's items sit in it."""

    posteriors: list[Distribution]
    offset: int  # the position of this rank's first item
    sizes: list[int]  # items per rank

    @property
    def size(self) -> int:
        return sum(self.sizes)


def _all_gather_with_gradient(tensor: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` (first dimensions ``sizes``), differentiably.

    The gather needs equal shapes, so each rank pads to the largest size and the padding is
    cut out again. ``all_gather_single`` is the differentiable gather that torch recommends in
    place of the deprecated ``torch.distributed.nn.functional.all_gather``; its backward pass
    sums, for each rank, the gradients all ranks computed for that rank's rows.
    """
    from torch.distributed._functional_collectives import all_gather_single

    largest = max(sizes)
    padded = tensor
    if tensor.shape[0] < largest:
        padded = torch.cat([tensor, tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))])
    gathered = all_gather_single(padded.contiguous(), 0, dist.group.WORLD)
    parts = gathered.split(largest)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def gather_batch(posteriors: Sequence[Distribution]) -> GatheredBatch:
    """Gather the posteriors of every rank's items into the whole batch's, keeping gradients.

    Every group's parameters travel in one tensor [items, all parameters' columns]: one
    differentiable gather per step (and one reduction in the backward pass), not one per tensor.
    """
    items = posteriors[0].batch_shape[0]
    parameters = [posterior_parameters(post, "data-parallel training") for post in posteriors]
    device = parameters[0][0].device
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([items], dtype=torch.int64, device=device))
    sizes = [int(count.item()) for count in counts]
    flat = [parameter.reshape(items, -1) for group in parameters for parameter in group]
    columns = _all_gather_with_gradient(torch.cat(flat, dim=1), sizes).split([part.shape[1] for part in flat], dim=1)
    columns = iter(columns)
    gathered = [
        posterior_with_parameters(post, [next(columns).reshape(-1, *parameter.shape[1:]) for parameter in group])
        for post, group in zip(posteriors, parameters)
    ]
    return GatheredBatch(gathered, offset=sum(sizes[: dist.get_rank()]), sizes=sizes)


def gather_objects(value: Any, group: ProcessGroup | None) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order; in one process, ``[value]``."""
    if group is None:
        return [value]
    gathered: list[Any] = [None] * group.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def sum_over_ranks(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sums of numbers over all ranks (float64)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def weighted_mean_over_ranks(values: Mapping[str, float], weight: float, device: torch.device | str = "cpu") -> dict[str, float]:
    """sum_r weight_r values_r / sum_r weight_r for each named number (e.g. per-item means of B_r items)."""
    names = list(values)
    sums = sum_over_ranks([weight * values[name] for name in names] + [weight], device)
    return {name: total / sums[-1] for name, total in zip(names, sums[:-1])}


def resolve_device(device: str, process_group: ProcessGroup | None = None) -> torch.device:
    """The torch device for 'auto', 'cpu', 'cuda' or 'cuda:K'; in data-parallel training on GPUs, this rank's GPU."""
    if not isinstance(device, str):
        raise ValueError(f"device={device!r} is invalid: use 'auto', 'cpu' or 'cuda'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device={device!r} is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:K'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} is not available on this machine: use 'cpu'")
    if process_group is not None and device.startswith("cuda"):
        return torch.device("cuda", process_group.local_rank)  # one GPU per process
    return torch.device(device)
