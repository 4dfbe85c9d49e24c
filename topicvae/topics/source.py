"""Where a topic model's training documents come from: one interface over a count matrix in
memory and a sharded bag-of-words on disk, local or data-parallel.

The data flow is read (``topicvae.text.corpus``) -> vectorize (``topicvae.text.vectorizer``)
-> a bag-of-words source (here) -> train (``topicvae.training.loop``) -> analyse -> report.
A :class:`BagOfWordsSource` gives the estimator what it needs whatever holds the counts: the
corpus's size, this process's share of it, a fingerprint that a resumed run must match, and
mini-batches as dense tensors (:class:`~topicvae.training.loop.BagOfWordsBatches` over a
matrix in memory, :class:`ShardBatches` over shards read lazily, at most two at a time).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from topicvae.objective.information import subset_indices
from topicvae.text.shards import ShardedBagOfWords
from topicvae.training.distributed import ProcessGroup
from topicvae.training.batches import BagOfWordsBatches, data_parallel_steps

__all__ = ["BagOfWordsSource", "ShardBatches"]


class ShardBatches:
    """Shuffled mini-batches of a sharded bag-of-words, read lazily: at most two shards in memory.

    Each epoch visits the shards in a random order and each shard's documents in a random
    order, cutting the stream into ``steps_per_epoch`` batches of near-equal size (a batch
    may span two shards). Every shard is a uniform random sample of the corpus, so the
    batches are as mixed as those of a global shuffle.
    """

    def __init__(self, bag_of_words: ShardedBagOfWords, steps_per_epoch: int, *, device: torch.device | str = "cpu"):
        self.bag_of_words = bag_of_words
        self.steps_per_epoch = int(steps_per_epoch)
        self.device = torch.device(device)

    @property
    def num_items(self) -> int:
        return self.bag_of_words.local_documents

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _sizes(self) -> list[int]:
        base, extra = divmod(self.num_items, self.steps_per_epoch)
        return [base + 1] * extra + [base] * (self.steps_per_epoch - extra)

    def epoch(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        sizes = iter(self._sizes())
        wanted = next(sizes)
        parts: list[sp.csr_matrix] = []
        held = 0
        for shard in torch.randperm(len(self.bag_of_words.shards), generator=generator).tolist():
            matrix = self.bag_of_words.read_shard(shard)
            matrix = matrix[torch.randperm(matrix.shape[0], generator=generator).numpy()]
            start = 0
            while start < matrix.shape[0]:
                if wanted == 0:
                    raise ValueError(f"{self.bag_of_words.directory} holds more documents than its manifest says: build it again")
                take = min(wanted - held, matrix.shape[0] - start)
                parts.append(matrix[start : start + take])
                held += take
                start += take
                if held == wanted:
                    batch = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
                    yield torch.from_numpy(batch.toarray()).to(self.device)
                    parts, held = [], 0
                    wanted = next(sizes, 0)


class BagOfWordsSource:
    """The documents as this process holds them: a count matrix in memory, or a sharded
    bag-of-words on disk. Every document in it has a vocabulary word.

    Build one with :meth:`in_memory` or :meth:`sharded`. The estimator reads ``vocab_size``,
    ``n_documents`` (N over all processes), ``rank_documents`` (each process's share),
    ``local_documents`` (this process's), ``fingerprint()`` (what a resumed run must match) and
    ``matrices()`` (this process's count matrices, given afresh on each call); it trains on
    ``batches(batch_size, device)`` and evaluates ``subset(max_documents, seed)``, without
    asking where the counts live.
    """

    def __init__(
        self, *, vocab_size: int, n_documents: int, rank_documents: list[int], local_documents: int, fingerprint,
        make_batches, matrices, rows,
    ):
        self.vocab_size = vocab_size
        self.n_documents = n_documents
        self.rank_documents = rank_documents
        self.local_documents = local_documents
        self.fingerprint = fingerprint
        self._make_batches = make_batches
        self.matrices = matrices
        self._rows = rows  # sorted local indices -> those documents, one matrix

    def batches(self, batch_size: int, device: torch.device):
        """Shuffled mini-batches of ``batch_size`` documents as dense tensors on ``device`` (in
        data-parallel training, this process's share of every batch)."""
        return self._make_batches(batch_size, device)

    def subset(self, max_documents: int | None, seed: int) -> sp.csr_matrix:
        """This process's documents as one matrix, or ``max_documents`` of them drawn at random
        with ``seed``, in their order: what the information and the analysis evaluate, whose
        cost grows as N^2. Memory holds the subset and, for shards, one shard at a time."""
        chosen = subset_indices(self.local_documents, max_documents, seed, name="max_documents")
        if chosen is None:
            matrices = list(self.matrices())
            return matrices[0] if len(matrices) == 1 else sp.vstack(matrices, format="csr")
        return self._rows(chosen)

    @classmethod
    def in_memory(cls, counts: sp.csr_matrix, vocabulary: Sequence[str], process_group: ProcessGroup | None = None) -> BagOfWordsSource:
        """Counts [N, V] whose rows all hold a vocabulary word. In data-parallel training every
        rank holds the whole matrix and takes the rows rank, rank + R, ..."""
        n_documents = counts.shape[0]
        if process_group is None:
            local, rank_documents = counts, [n_documents]
        else:
            rank, world_size = process_group.rank, process_group.world_size
            local = counts[rank::world_size]
            rank_documents = [len(range(r, n_documents, world_size)) for r in range(world_size)]

        def make_batches(batch_size: int, device: torch.device) -> BagOfWordsBatches:
            steps = None if process_group is None else data_parallel_steps(rank_documents, batch_size)
            return BagOfWordsBatches(local, min(batch_size, local.shape[0]), device=device, steps_per_epoch=steps)

        return cls(
            vocab_size=counts.shape[1], n_documents=n_documents, rank_documents=rank_documents, local_documents=local.shape[0],
            # hashed once, when a checkpoint first asks: evaluation never does
            fingerprint=functools.cache(lambda: _corpus_fingerprint(local, vocabulary)),
            make_batches=make_batches, matrices=lambda: [local], rows=lambda chosen: local[chosen],
        )

    @classmethod
    def sharded(cls, bag_of_words: ShardedBagOfWords) -> BagOfWordsSource:
        """A sharded bag-of-words (this process's shards), read lazily."""

        def make_batches(batch_size: int, device: torch.device) -> ShardBatches:
            return ShardBatches(bag_of_words, data_parallel_steps(bag_of_words.rank_documents, batch_size), device=device)

        return cls(
            vocab_size=len(bag_of_words.vocabulary), n_documents=bag_of_words.n_documents,
            rank_documents=bag_of_words.rank_documents, local_documents=bag_of_words.local_documents,
            fingerprint=bag_of_words.fingerprint, make_batches=make_batches, matrices=bag_of_words.matrices,
            rows=bag_of_words.rows,
        )


def _corpus_fingerprint(counts: sp.csr_matrix, vocabulary: Sequence[str]) -> dict[str, Any]:
    """The training matrix's size and a SHA-256 of its exact content, row order and vocabulary."""
    counts = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    counts.sum_duplicates()  # a canonical CSR form: sorted column indices, no repeated entries
    digest = hashlib.sha256()
    for part in (np.asarray(counts.shape, np.int64), counts.indptr.astype(np.int64), counts.indices.astype(np.int64), counts.data):
        digest.update(part.tobytes())
    digest.update("\n".join(vocabulary).encode("utf-8"))
    return {"documents": int(counts.shape[0]), "words": int(counts.shape[1]), "sha256": digest.hexdigest()}
