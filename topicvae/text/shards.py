"""Corpora larger than memory: a bag-of-words built in one streaming pass and kept on disk in shards.

:func:`build_bag_of_words` reads the documents once, one at a time. Each document is
tokenized by the vectorizer's own analyzer and its counts are written to disk at once, under
provisional word ids, while the document and corpus frequencies of every token are tallied.
At the end of the pass the vocabulary is chosen from those tallies by CountVectorizer's own
rule (so it is the vocabulary :class:`~topicvae.text.vectorizer.TextVectorizer` would choose with the
whole corpus in memory), and the provisional counts are rewritten under the final ids into
shards. Each document goes to a shard drawn at random, so every shard is a uniform random
sample of the corpus: reading shards in a random order and shuffling within each gives
mini-batches as mixed as a global shuffle, even when the corpus file is sorted (by newsgroup,
say), while only one shard is ever in memory.

Peak memory is set by the shard size and the number of distinct tokens, not by the number of
documents: what is held is the token tallies, one chunk of provisional counts and one shard.

In data-parallel training each rank (see :mod:`topicvae.training.distributed`) reads the documents
``rank, rank + R, rank + 2R, ...`` of the same corpus into its own directory; the ranks
exchange their token tallies once, so that all choose the same vocabulary, and their
document counts, so that all know N.

A directory holds ``manifest.json``, ``vocabulary.txt`` and ``shard-NNNNN.bin`` files. A shard
file is a sequence of records, each: the number of documents n and of non-zero counts m
(two little-endian int64), then n int32 lengths (non-zeros per document), m int32 word ids
and m float32 counts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from topicvae.io.atomic import write_json_atomically
from topicvae.text.vectorizer import PATTERN_CHECK_DOCUMENTS, TextVectorizer, load_vocabulary

__all__ = ["ShardedBagOfWords", "ProcessRanks", "build_bag_of_words", "file_source", "MANIFEST_FILE"]


class ProcessRanks(Protocol):
    """What building a sharded bag-of-words needs of a process group
    (:class:`topicvae.training.distributed.ProcessRanks` is one): this process's rank, the
    number of processes, and a way to gather one picklable value from every rank, in rank order.
    Text processing needs no torch, so it asks for no more than this."""

    rank: int
    world_size: int

    def gather(self, value: Any) -> list[Any]: ...


def _gather(value: Any, group: ProcessRanks | None) -> list[Any]:
    return [value] if group is None else group.gather(value)

MANIFEST_FILE = "manifest.json"
VOCABULARY_FILE = "vocabulary.txt"
FORMAT_NAME = "topicvae sharded bag-of-words"
FORMAT_VERSION = 1
#: Documents per shard (about 6 MiB of counts for 100 distinct words per document).
DEFAULT_DOCUMENTS_PER_SHARD = 8192
#: At most this many shards (open files while they are written); larger corpora get larger shards.
MAX_SHARDS = 256
#: Documents per chunk of provisional counts written during the streaming pass.
CHUNK_DOCUMENTS = 4096

_HEADER = np.dtype("<i8")
_INDEX = np.dtype("<i4")
_COUNT = np.dtype("<f4")


def _write_record(handle, lengths: np.ndarray, indices: np.ndarray, counts: np.ndarray) -> None:
    np.asarray([lengths.size, indices.size], dtype=_HEADER).tofile(handle)
    lengths.astype(_INDEX).tofile(handle)
    indices.astype(_INDEX).tofile(handle)
    counts.astype(_COUNT).tofile(handle)


def _read_records(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    with open(path, "rb") as handle:
        while True:
            header = np.fromfile(handle, dtype=_HEADER, count=2)
            if header.size == 0:
                return
            if header.size != 2:
                raise ValueError(f"{path} ends inside a record: the shard is truncated; build the bag-of-words again")
            n_docs, nonzeros = (int(v) for v in header)
            lengths = np.fromfile(handle, dtype=_INDEX, count=n_docs)
            indices = np.fromfile(handle, dtype=_INDEX, count=nonzeros)
            counts = np.fromfile(handle, dtype=_COUNT, count=nonzeros)
            if lengths.size != n_docs or counts.size != nonzeros:
                raise ValueError(f"{path} ends inside a record: the shard is truncated; build the bag-of-words again")
            yield lengths, indices, counts


def _csr(lengths: np.ndarray, indices: np.ndarray, counts: np.ndarray, n_words: int) -> sp.csr_matrix:
    indptr = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return sp.csr_matrix((counts.astype(np.float32), indices.astype(np.int32), indptr), shape=(lengths.size, n_words))


def file_source(path: str | os.PathLike) -> dict[str, Any]:
    """A corpus file's path, size and modification time: the ``source`` that tells a bag-of-words is still its."""
    path = Path(path)
    status = path.stat()
    return {"path": str(path.resolve()), "bytes": status.st_size, "modified_ns": status.st_mtime_ns}


class _TokenTally:
    """Provisional ids for the tokens met so far, with their document and corpus frequencies."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.document_frequencies = np.zeros(0, dtype=np.int64)
        self.term_frequencies = np.zeros(0, dtype=np.int64)

    def count(self, chunk_ids: np.ndarray, chunk_counts: np.ndarray) -> None:
        size = len(self.ids)
        if self.document_frequencies.size < size:  # grow geometrically, as a list does
            grown = max(size, 2 * self.document_frequencies.size)
            self.document_frequencies = np.pad(self.document_frequencies, (0, grown - self.document_frequencies.size))
            self.term_frequencies = np.pad(self.term_frequencies, (0, grown - self.term_frequencies.size))
        # a document lists each of its tokens once, so counting ids counts documents
        self.document_frequencies[:size] += np.bincount(chunk_ids, minlength=size)
        self.term_frequencies[:size] += np.bincount(chunk_ids, weights=chunk_counts, minlength=size).astype(np.int64)

    def terms(self) -> list[str]:
        return list(self.ids)  # insertion order: the provisional ids

    def frequencies(self) -> tuple[np.ndarray, np.ndarray]:
        size = len(self.ids)
        return self.document_frequencies[:size], self.term_frequencies[:size]


def _merged_tallies(terms: list[str], dfs: np.ndarray, tfs: np.ndarray, documents: int, group: ProcessRanks | None):
    """Every rank's tallies summed term by term (in one process: the tallies as they are)."""
    if group is None:
        return terms, dfs, tfs, documents
    gathered = _gather((terms, dfs, tfs, documents), group)
    index: dict[str, int] = {}
    for rank_terms, _, _, _ in gathered:
        for term in rank_terms:
            index.setdefault(term, len(index))
    merged_dfs = np.zeros(len(index), dtype=np.int64)
    merged_tfs = np.zeros(len(index), dtype=np.int64)
    for rank_terms, rank_dfs, rank_tfs, _ in gathered:
        positions = np.fromiter((index[t] for t in rank_terms), dtype=np.int64, count=len(rank_terms))
        np.add.at(merged_dfs, positions, rank_dfs)
        np.add.at(merged_tfs, positions, rank_tfs)
    return list(index), merged_dfs, merged_tfs, sum(item[3] for item in gathered)


def build_bag_of_words(
    documents: Iterable[str],
    directory: str | os.PathLike,
    vectorizer: TextVectorizer | None = None,
    *,
    documents_per_shard: int = DEFAULT_DOCUMENTS_PER_SHARD,
    seed: int = 0,
    process_group: ProcessRanks | None = None,
    progress: Any = None,
    source: dict[str, Any] | None = None,
) -> ShardedBagOfWords:
    """Count ``documents`` in one streaming pass into a sharded bag-of-words in ``directory``.

    Parameters
    ----------
    documents : iterable of str
        Read once, one document at a time (e.g. a :class:`~topicvae.text.corpus.CorpusStream`).
    directory : path
        Created; it must not exist yet. It is built beside its final place and renamed at the
        end, so an error leaves nothing half-written.
    vectorizer : TextVectorizer, optional
        The tokenization and vocabulary options (a default ``TextVectorizer()`` if omitted).
        The vocabulary is the one its ``fit`` would choose on the whole corpus.
    documents_per_shard : int
        The shard size, the unit that training holds in memory.
    seed : int
        Draws each document's shard.
    process_group : ProcessRanks, optional
        In data-parallel training: this rank keeps the documents rank, rank + R, ... and the
        ranks agree on the vocabulary and the corpus size. Every rank must call this function.
    progress : callable, optional
        Called with the number of documents read so far, every 1,000 documents.
    source : dict, optional
        What the documents came from (plain JSON values, e.g. a file's path, size and
        modification time), kept in the manifest as ``source`` so that a later run can tell
        whether the bag-of-words is still that of its corpus.
    """
    vectorizer = TextVectorizer() if vectorizer is None else TextVectorizer(**vectorizer.to_config())
    analyze = vectorizer.build_analyzer()
    if isinstance(documents_per_shard, bool) or not isinstance(documents_per_shard, int) or documents_per_shard < 2:
        raise ValueError(f"documents_per_shard={documents_per_shard!r} is invalid: give a whole number >= 2")
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} exists already: choose a new directory for the bag-of-words, or delete it")
    rank, world_size = (process_group.rank, process_group.world_size) if process_group is not None else (0, 1)
    staging = directory.with_name(f".{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        tally = _TokenTally()
        sample: list[str] = []  # the first documents, to check the token pattern against the text
        chunks, documents_read = _count_documents(documents, analyze, tally, staging, rank, world_size, progress, sample)
        terms, dfs, tfs, all_read = _merged_tallies(tally.terms(), *tally.frequencies(), documents_read, process_group)
        vocabulary = vectorizer.set_vocabulary_from_frequencies(terms, dfs, tfs, all_read, sample=sample)
        final_id = {word: index for index, word in enumerate(vocabulary)}
        # provisional id -> final id, -1 for tokens left out of the vocabulary
        remap = np.fromiter((final_id.get(t, -1) for t in tally.terms()), dtype=np.int64, count=len(tally.ids))
        del tally, terms, dfs, tfs
        n_shards = min(MAX_SHARDS, max(1, math.ceil(documents_read / documents_per_shard)))
        shards, kept = _write_shards(chunks, remap, len(vocabulary), n_shards, staging, np.random.default_rng([seed, rank]))
        kept_and_read = _gather((kept, documents_read), process_group)  # one exchange for both counts
        rank_documents = [int(kept) for kept, _ in kept_and_read]
        empty = [int(read - kept) for kept, read in kept_and_read]
        vectorizer.save_vocabulary(staging / VOCABULARY_FILE)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "vectorizer": vectorizer.to_config(),
            "vocabulary_size": len(vocabulary),
            "documents": sum(rank_documents),
            "empty_documents": sum(empty),
            "rank": rank,
            "world_size": world_size,
            "rank_documents": rank_documents,
            "seed": seed,
            "source": source,
            "shards": shards,
        }
        write_json_atomically(staging / MANIFEST_FILE, manifest)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ShardedBagOfWords(directory)


def _count_documents(documents, analyze, tally: _TokenTally, staging: Path, rank: int, world_size: int, progress, sample: list[str]):
    """The streaming pass: provisional counts to chunk files; returns them and the documents read.

    The first documents (``PATTERN_CHECK_DOCUMENTS``) are also appended to ``sample``.
    """
    chunks: list[Path] = []
    lengths: list[int] = []
    ids: list[int] = []
    counts: list[int] = []
    read = 0

    def flush() -> None:
        chunk_ids = np.asarray(ids, dtype=np.int64)
        chunk_counts = np.asarray(counts, dtype=np.int64)
        tally.count(chunk_ids, chunk_counts)
        path = staging / f"provisional-{len(chunks):05d}.bin"
        with open(path, "wb") as handle:
            _write_record(handle, np.asarray(lengths), chunk_ids, chunk_counts)
        chunks.append(path)
        lengths.clear(), ids.clear(), counts.clear()

    token_ids = tally.ids
    seen = 0  # documents of the stream, this rank's and the others'
    for index, document in enumerate(documents):
        seen = index + 1
        if progress is not None and index % 1000 == 0:
            progress(index)
        if index % world_size != rank:
            continue
        if not isinstance(document, str):
            raise ValueError(
                f"document {index} is a {type(document).__name__}, not a string; every document must be text"
            )
        if len(sample) < PATTERN_CHECK_DOCUMENTS:
            sample.append(document)
        per_document = Counter(analyze(document))
        ids.extend(token_ids.setdefault(token, len(token_ids)) for token in per_document)
        counts.extend(per_document.values())
        lengths.append(len(per_document))
        read += 1
        if len(lengths) == CHUNK_DOCUMENTS:
            flush()
    if lengths:
        flush()
    if progress is not None:
        progress(seen)
    return chunks, read


def _write_shards(
    chunks: Sequence[Path], remap: np.ndarray, n_words: int, n_shards: int, staging: Path, rng: np.random.Generator
):
    """Rewrite the provisional chunks under the final ids into shards drawn at random per document."""
    names = [f"shard-{k:05d}.bin" for k in range(n_shards)]
    documents = np.zeros(n_shards, dtype=np.int64)
    nonzeros = np.zeros(n_shards, dtype=np.int64)
    handles = [open(staging / name, "wb") for name in names]
    kept_documents = 0
    try:
        for path in chunks:
            for lengths, provisional, counts in _read_records(path):
                final = remap[provisional]
                keep = final >= 0  # the counts of words outside the vocabulary are dropped
                document_of = np.repeat(np.arange(lengths.size), lengths)
                kept_lengths = np.bincount(document_of[keep], minlength=lengths.size)
                matrix = _csr(kept_lengths, final[keep], counts[keep], n_words)
                matrix = matrix[kept_lengths > 0]  # a document without vocabulary words says nothing
                kept_documents += matrix.shape[0]
                shard_of = rng.integers(n_shards, size=matrix.shape[0])
                for shard in np.unique(shard_of):
                    part = matrix[shard_of == shard]
                    _write_record(handles[shard], np.diff(part.indptr), part.indices, part.data)
                    documents[shard] += part.shape[0]
                    nonzeros[shard] += part.nnz
            path.unlink()
    finally:
        for handle in handles:
            handle.close()
    shards = []
    for name, n_docs, n_nonzeros in zip(names, documents, nonzeros):
        if n_docs == 0:
            (staging / name).unlink()
            continue
        digest = hashlib.sha256((staging / name).read_bytes()).hexdigest()
        shards.append({"file": name, "documents": int(n_docs), "nonzeros": int(n_nonzeros), "sha256": digest})
    return shards, kept_documents


class ShardedBagOfWords:
    """A bag-of-words on disk, written by :func:`build_bag_of_words`; reads one shard at a time.

    Attributes
    ----------
    vocabulary : list of str
    vectorizer : TextVectorizer
        Fitted with the vocabulary: ``transform`` counts new documents the same way.
    n_documents : int
        N: the documents with a vocabulary word, over all ranks.
    n_empty_documents : int
        Documents without any vocabulary word (left out), over all ranks.
    rank_documents : list of int
        The documents each rank holds; ``local_documents`` is this directory's share.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.directory} is not a sharded bag-of-words: missing {MANIFEST_FILE}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{manifest_path} is not valid JSON ({error}); build the bag-of-words again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{manifest_path} does not describe a {FORMAT_NAME}")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{self.directory} has format version {manifest['format_version']}, this topicvae reads up to "
                f"{FORMAT_VERSION}: upgrade topicvae"
            )
        self.manifest = manifest
        self.vocabulary = load_vocabulary(self.directory / VOCABULARY_FILE)
        if len(self.vocabulary) != manifest["vocabulary_size"]:
            raise ValueError(f"{self.directory / VOCABULARY_FILE} does not match {MANIFEST_FILE}: build the bag-of-words again")
        self.vectorizer = TextVectorizer.from_config(manifest["vectorizer"], self.vocabulary)
        self.n_documents = int(manifest["documents"])
        self.n_empty_documents = int(manifest["empty_documents"])
        self.rank = int(manifest["rank"])
        self.world_size = int(manifest["world_size"])
        self.rank_documents = [int(n) for n in manifest["rank_documents"]]
        self.shards = list(manifest["shards"])
        self.source = manifest.get("source")

    @property
    def local_documents(self) -> int:
        return self.rank_documents[self.rank]

    @property
    def shape(self) -> tuple[int, int]:
        """(this directory's documents, vocabulary size)."""
        return self.local_documents, len(self.vocabulary)

    def read_shard(self, index: int) -> sp.csr_matrix:
        """Shard ``index`` as a float32 CSR matrix (documents x vocabulary)."""
        shard = self.shards[index]
        parts = list(_read_records(self.directory / shard["file"]))
        lengths, indices, counts = (np.concatenate(arrays) for arrays in zip(*parts))
        if lengths.size != shard["documents"] or indices.size != shard["nonzeros"]:
            raise ValueError(f"{self.directory / shard['file']} does not match {MANIFEST_FILE}: build the bag-of-words again")
        if indices.size and (indices.min() < 0 or indices.max() >= len(self.vocabulary)):
            raise ValueError(f"{self.directory / shard['file']} holds word ids outside the vocabulary: build the bag-of-words again")
        return _csr(lengths, indices, counts, len(self.vocabulary))

    def matrices(self) -> Iterator[sp.csr_matrix]:
        """Every shard in order: the whole local bag-of-words, one shard in memory at a time."""
        for index in range(len(self.shards)):
            yield self.read_shard(index)

    def rows(self, indices: Sequence[int] | np.ndarray) -> sp.csr_matrix:
        """The documents with these local indices (shards in order, then rows), in the order given."""
        indices = np.asarray(indices, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum([s["documents"] for s in self.shards])])
        parts, positions = [], []
        for index in range(len(self.shards)):
            inside = np.flatnonzero((indices >= starts[index]) & (indices < starts[index + 1]))
            if inside.size:
                parts.append(self.read_shard(index)[indices[inside] - starts[index]])
                positions.append(inside)
        if not parts:
            return sp.csr_matrix((0, len(self.vocabulary)), dtype=np.float32)
        stacked = sp.vstack(parts, format="csr")
        return stacked[np.argsort(np.concatenate(positions), kind="stable")]

    def fingerprint(self) -> dict[str, Any]:
        """The size and a SHA-256 of the shards' contents and the vocabulary (what a resumed run must match)."""
        digest = hashlib.sha256()
        for shard in self.shards:
            digest.update(shard["sha256"].encode("ascii"))
        digest.update("\n".join(self.vocabulary).encode("utf-8"))
        return {"documents": self.local_documents, "words": len(self.vocabulary), "sha256": digest.hexdigest()}


