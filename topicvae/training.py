"""The training loop: a generator that yields progress, so the caller owns logging and bars."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from topicvae.objective import LossTerms, ObjectiveWeights, hfvae_objective

__all__ = ["check_training_options", "seed_everything", "BagOfWordsBatches", "ImageBatches", "TrainingProgress", "train"]

#: Below this many bytes the whole bag-of-words is made dense once, which removes the
#: per-step sparse-to-dense conversion; above it, each batch is densified on its own.
DENSE_LIMIT_BYTES = 512 * 2**20

TERM_NAMES = ("loss", "reconstruction", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a torch generator for shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class _ShuffledBatches:
    """Mini-batches over a fresh random order each epoch; subclasses turn indices into a tensor."""

    batch_size: int

    @property
    def num_items(self) -> int:
        raise NotImplementedError

    def _take(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(_split_order(torch.arange(self.num_items), self.batch_size))

    def epoch(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.num_items, generator=generator)
        for index in _split_order(order, self.batch_size):
            yield self._take(index)


def _split_order(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    batches = list(order.split(batch_size))
    # Batch-norm and the batch estimate of q(z) need two items: fold a lone last item into the batch before.
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    return batches


class BagOfWordsBatches(_ShuffledBatches):
    """Shuffled mini-batches of a document-term matrix as dense float tensors."""

    def __init__(self, counts: sp.csr_matrix, batch_size: int, *, device: torch.device | str = "cpu"):
        self.counts = sp.csr_matrix(counts, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
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


def check_training_options(*, epochs, batch_size, lr, temperature, hidden_sizes, items: str, lr_example: str) -> None:
    """The options every estimator trains with, each checked with an error that names it."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: give a whole number >= 1")
    if batch_size < 2:
        raise ValueError(f"batch_size={batch_size} is invalid: the batch estimate of q(z) needs at least 2 {items}")
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} is invalid: give a positive learning rate such as {lr_example}")
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} is invalid: give a positive number such as 0.66")
    if hidden_sizes is not None and (
        not hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden_sizes)
    ):
        raise ValueError(f"hidden_sizes={hidden_sizes!r} is invalid: give one or more whole numbers >= 1")


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


def _check_finite(terms: LossTerms, epoch: int, step: int) -> None:
    values = terms.scalars()
    for name in TERM_NAMES:
        if not np.isfinite(values[name]):
            raise FloatingPointError(
                f"training diverged at epoch {epoch}, step {step}: the {name} term is {values[name]}; "
                "lower the learning rate (--lr) or the weights"
            )


def train(
    model: torch.nn.Module,
    batches: BagOfWordsBatches | ImageBatches,
    weights: ObjectiveWeights,
    *,
    epochs: int,
    lr: float,
    adam_betas: Sequence[float],
    generator: torch.Generator,
    dataset_size: int | None = None,
) -> Iterator[TrainingProgress]:
    """Maximize the HFVAE objective with Adam, yielding after every step.

    ``model(batch)`` returns a :class:`~topicvae.models.ModelOutput`. ``dataset_size`` is N in
    the stratified estimator of q(z); it defaults to the number of items in ``batches``.
    """
    dataset_size = dataset_size or batches.num_items
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=tuple(adam_betas))
    steps_per_epoch = len(batches)
    for epoch in range(1, epochs + 1):
        model.train()
        sums = dict.fromkeys(TERM_NAMES, 0.0)
        for step, batch in enumerate(batches.epoch(generator), start=1):
            out = model(batch)
            terms = hfvae_objective(out.log_likelihood, out.posteriors, out.priors, out.samples, dataset_size, weights)
            _check_finite(terms, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            optimizer.step()
            values = terms.scalars()
            for name in TERM_NAMES:
                sums[name] += values[name]
            epoch_terms = {name: total / step for name, total in sums.items()} if step == steps_per_epoch else None
            yield TrainingProgress(epoch, epochs, step, steps_per_epoch, values, epoch_terms)
