"""Shuffled mini-batches for the training loop: a bag-of-words count matrix in memory
(``BagOfWordsBatches``) or images (``ImageBatches``), a fresh order each epoch drawn from the
run's own generator, and the number of steps every rank takes in data-parallel training."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["ShuffledBatches", "BagOfWordsBatches", "ImageBatches", "data_parallel_steps", "DENSE_LIMIT_BYTES"]


#: Below this many bytes the whole bag-of-words is made dense once, which removes the
#: per-step sparse-to-dense conversion; above it, each batch is densified on its own.
DENSE_LIMIT_BYTES = 512 * 2**20


class ShuffledBatches:
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
        for _, batch in self.indexed_epoch(generator):
            yield batch

    def indexed_epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Like :meth:`epoch` (the same order from the same generator), each batch with its items' indices."""
        order = torch.randperm(self.num_items, generator=generator)
        for index in self._split(order):
            yield index, self._take(index)


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


class BagOfWordsBatches(ShuffledBatches):
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


class ImageBatches(ShuffledBatches):
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
