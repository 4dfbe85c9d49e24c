"""Corpora larger than memory: the streaming reader, the sharded bag-of-words and training from it."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import counts_to_documents, planted_corpus
from topicvae import TopicModel
from topicvae.text.shards import MANIFEST_FILE, ShardedBagOfWords, build_bag_of_words
from topicvae.topics.source import ShardBatches
from topicvae.text.corpus import CorpusStream, read_corpus
from topicvae.text.vectorizer import TextVectorizer

SAMPLE = Path(__file__).resolve().parents[1] / "corpora" / "20newsgroups-sample.txt.gz"


def row_multiset(matrix: sp.csr_matrix) -> Counter:
    """Each document as a hashable (word ids, counts) pair, counted: rows in any order compare equal."""
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    return Counter(
        (tuple(matrix.indices[a:b]), tuple(matrix.data[a:b])) for a, b in zip(matrix.indptr[:-1], matrix.indptr[1:])
    )


def whole(bag_of_words: ShardedBagOfWords) -> sp.csr_matrix:
    return sp.vstack(list(bag_of_words.matrices()), format="csr")


# ---------------------------------------------------------------------------------------------
# The vocabulary and counts are those of the in-memory vectorizer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        dict(max_features=1000),  # ties in corpus frequency at the cut
        dict(max_features=None),
        dict(min_df=0.002, max_df=40, max_features=1500),  # a fraction and a count
        dict(stop_words=None, lowercase=False, max_features=800),
    ],
    ids=["max-features", "all-words", "fraction-and-count", "no-stop-words-cased"],
)
def test_the_streamed_bag_of_words_is_the_in_memory_one(tmp_path, options):
    documents = read_corpus(SAMPLE)
    in_memory = TextVectorizer(**options)
    counts = in_memory.fit_transform(documents)
    streamed = build_bag_of_words(CorpusStream(SAMPLE), tmp_path / "bow", TextVectorizer(**options), documents_per_shard=300)
    assert streamed.vocabulary == in_memory.vocabulary_
    nonempty = np.diff(counts.indptr) > 0
    assert streamed.n_documents == nonempty.sum()
    assert streamed.n_empty_documents == (~nonempty).sum()
    assert row_multiset(whole(streamed)) == row_multiset(counts[nonempty])
    # the stored vectorizer counts new documents as the in-memory one does
    assert (streamed.vectorizer.transform(documents[:50]) != in_memory.transform(documents[:50])).nnz == 0


def test_newsgroup_stripping_happens_before_streamed_counting(tmp_path):
    counts, vocabulary, _ = planted_corpus(n_docs=120, seed=0)
    posts = [
        f"From: someone{i}@example.com\nSubject: noisea noiseb\n\n{text}\n\n-- \nnoisec signature"
        for i, text in enumerate(counts_to_documents(counts, vocabulary))
    ]
    options = dict(strip_newsgroup=True, min_df=1, max_df=1.0, max_features=None)
    in_memory = TextVectorizer(**options)
    expected = in_memory.fit_transform(posts)
    streamed = build_bag_of_words(posts, tmp_path / "bow", TextVectorizer(**options))
    assert streamed.vocabulary == in_memory.vocabulary_
    assert row_multiset(whole(streamed)) == row_multiset(expected[np.diff(expected.indptr) > 0])


def test_corpus_stream_reads_every_format_as_read_corpus_does(tmp_path):
    texts = ["first document here", "", "second, with a comma", "caf\u00e9 third"]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n", encoding="utf-8")
    import pandas as pd

    pd.DataFrame({"text": texts}).to_csv(tmp_path / "c.csv", index=False)
    with gzip.open(tmp_path / "c.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(texts) + "\n")
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    for path in (tmp_path / "c.jsonl", tmp_path / "c.csv", tmp_path / "c.txt.gz", folder):
        assert list(CorpusStream(path)) == list(read_corpus(path)), path


def test_corpus_stream_counts_replaced_bytes_and_reports_bad_ones(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me\nplain\n".encode("latin-1"))
    stream = CorpusStream(path, errors="replace")
    assert list(stream) == list(read_corpus(path, errors="replace"))
    assert stream.undecodable_bytes == 2
    with pytest.raises(ValueError, match="is not valid utf-8 text"):
        list(CorpusStream(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CorpusStream(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------------
# Shards and batches
# ---------------------------------------------------------------------------------------------
def sorted_planted_documents(seed: int) -> tuple[list[str], np.ndarray]:
    """A planted corpus sorted by each document's dominant topic (as 20 Newsgroups files are by group)."""
    counts, vocabulary, _ = planted_corpus(n_docs=1200, seed=seed)
    dense = counts.toarray()
    dominant = dense[:, :60].reshape(len(dense), 6, 10).sum(-1).argmax(1)
    order = np.argsort(dominant, kind="stable")
    documents = counts_to_documents(counts, vocabulary, seed)
    return [documents[i] for i in order], dominant[order]


@pytest.mark.parametrize("seed", [0, 1])
def test_batches_mix_a_sorted_corpus_and_visit_each_document_once(tmp_path, seed):
    documents, _ = sorted_planted_documents(seed)
    bag = build_bag_of_words(
        documents, tmp_path / "bow", TextVectorizer(min_df=1, max_df=1.0, max_features=None),
        documents_per_shard=150, seed=seed,
    )
    assert len(bag.shards) == 8
    topic_words = np.array([ord(w[5]) - ord("a") if w.startswith("topic") else -1 for w in bag.vocabulary])
    batches = ShardBatches(bag, steps_per_epoch=12)
    seen = []
    for batch in batches.epoch(torch.Generator().manual_seed(seed)):
        dense = batch.numpy()
        per_topic = np.stack([dense[:, topic_words == k].sum(1) for k in range(6)], axis=1)
        # about 100 documents drawn at random from six equally common topics: all six are there
        # (read in file order, a batch would hold one or two)
        assert set(per_topic.argmax(1)) == set(range(6))
        seen.append(sp.csr_matrix(dense))
    assert [m.shape[0] for m in seen] == [100] * 12
    assert row_multiset(sp.vstack(seen)) == row_multiset(whole(bag))
    # another epoch, another order
    first = next(iter(batches.epoch(torch.Generator().manual_seed(seed + 1))))
    assert not torch.equal(first, torch.from_numpy(seen[0].toarray()))


def test_rows_come_back_in_the_order_asked(tmp_path):
    documents, _ = sorted_planted_documents(0)
    bag = build_bag_of_words(documents[:500], tmp_path / "bow", TextVectorizer(min_df=1, max_features=None), documents_per_shard=100)
    everything = whole(bag)
    wanted = np.array([bag.n_documents - 1, 3, 250, 101, 0])
    assert (bag.rows(wanted) != everything[wanted]).nnz == 0


def test_a_failed_build_leaves_nothing_and_an_existing_directory_is_kept(tmp_path):
    with pytest.raises(ValueError, match="document 2 is a int, not a string"):
        build_bag_of_words(["one two three", "four five six", 7], tmp_path / "bow", TextVectorizer(min_df=1))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "bow").mkdir()
    with pytest.raises(FileExistsError, match="exists already"):
        build_bag_of_words(["one two three"], tmp_path / "bow", TextVectorizer(min_df=1))


def test_empty_vocabularies_get_the_in_memory_messages(tmp_path):
    for documents, options in (
        (["the and of", "it is"], {}),
        (["alpha beta", "gamma delta"], dict(min_df=2)),
        (["common apple", "common pear", "common plum", "rare kiwi"], dict(min_df=2, max_df=0.5)),
        (["今天我们在厨房里用面粉和黄油烤了一个蛋糕", "望远镜里可以看到土星的光环和许多卫星"], dict(min_df=2)),
    ):
        with pytest.raises(ValueError) as in_memory:
            TextVectorizer(**options).fit_transform(documents)
        with pytest.raises(ValueError) as streamed:
            build_bag_of_words(documents, tmp_path / "bow", TextVectorizer(**options))
        assert str(streamed.value) == str(in_memory.value)
    assert list(tmp_path.iterdir()) == []


def test_damaged_bags_of_words_are_refused(tmp_path):
    bag = build_bag_of_words(read_corpus(SAMPLE)[:400], tmp_path / "bow", TextVectorizer(min_df=2), documents_per_shard=100)
    shard = tmp_path / "bow" / bag.shards[0]["file"]
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(ValueError, match="ends inside a record: the shard is truncated"):
        ShardedBagOfWords(tmp_path / "bow").read_shard(0)
    (tmp_path / "bow" / MANIFEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="is not a sharded bag-of-words: missing manifest.json"):
        ShardedBagOfWords(tmp_path / "bow")


# ---------------------------------------------------------------------------------------------
# Training from shards
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_prodlda_recovers_planted_topics_from_shards(tmp_path, seed):
    counts, vocabulary, planted = planted_corpus(seed=seed)
    documents = counts_to_documents(counts, vocabulary, seed)
    bag = build_bag_of_words(
        documents, tmp_path / "bow", TextVectorizer(min_df=1, max_df=1.0, max_features=None), documents_per_shard=200, seed=seed
    )
    model = TopicModel("prodlda", "2x4", epochs=80, batch_size=100, seed=seed).fit(bag)
    found = [set(words) for words in model.topics(10)["words"]]
    assert all(max(len(words & set(topic)) for words in found) >= 8 for topic in planted), model.topics(10)["words"].tolist()
    assert model.n_documents_ == 1200
    # the fitted vectorizer reads new text; the information analysis reads a subset of the shards
    assert model.transform(documents[:5]).shape == (5, 8)
    report = model.information(bag, max_documents=300)
    assert report.dataset_size == 300
    # the correlations over the shards are those over the same documents in memory
    np.testing.assert_allclose(model.topic_correlation(bag), model.topic_correlation_, atol=1e-12)
    np.testing.assert_allclose(model.topic_correlation(whole(bag)), model.topic_correlation_, atol=1e-9)
    assert model.transform(bag).shape == (1200, 8)
    model.save(tmp_path / "model")
    np.testing.assert_array_equal(TopicModel.load(tmp_path / "model").transform(documents[:5]), model.transform(documents[:5]))


def test_a_bag_of_words_built_for_another_rank_is_refused(tmp_path):
    bag = build_bag_of_words(read_corpus(SAMPLE)[:200], tmp_path / "bow", TextVectorizer(min_df=2))
    bag.rank, bag.world_size = 1, 2
    with pytest.raises(ValueError, match="holds rank 1's share of 2 process"):
        TopicModel(epochs=1).fit(bag)
