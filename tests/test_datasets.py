"""Tests for topicvae.text.newsgroups and the shipped sample corpus."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import sklearn_newsgroup_helpers

import topicvae.text.newsgroups as datasets
from topicvae.text.newsgroups import Dataset, load_20newsgroups
from topicvae.text.corpus import read_corpus
from topicvae.text.vectorizer import TextVectorizer
from topicvae.text.newsgroups import strip_newsgroup_post

REPO = Path(__file__).resolve().parents[1]
SHARED_20NG = REPO.parent / "shared" / "data" / "20newsgroups"
SAMPLE = REPO / "corpora" / "20newsgroups-sample.txt.gz"
SAMPLE_LABELS = REPO / "corpora" / "20newsgroups-sample.labels.txt"

NEWSGROUPS = [
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med",
    "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
    "talk.politics.misc", "talk.religion.misc",
]  # fmt: skip

POST = (
    "From: a@b.c\nSubject: Re: engines\n\nIn article <1@b.c> x@y.z writes:\n> old text\n"
    "V8 engines are loud.\nI like them.\n\n-- \nsig\n"
)
# (label, file name, raw text) of a tiny "bydate" copy; deliberately not in sorted order
FAKE_TRAIN = [
    ("sci.space", "200", "Subject: orbit\n\nThe orbit decays.\n\nbye\n"),
    ("rec.autos", "10", POST),
    ("rec.autos", "9", "Subject: caf\xe9\n\nLatin-1 caf\xe9 text\r\n\r\nbye\r\n"),
]
FAKE_TEST = [("rec.autos", "11", "Subject: t\n\ntest post\n\nbye\n")]


def sorted_records(records):
    return sorted(records, key=lambda record: (record[0], record[1]))


def write_jsonl_copy(directory: Path) -> Path:
    for split, records in (("train", FAKE_TRAIN), ("test", FAKE_TEST)):
        lines = [
            json.dumps({"id": f"{label}/{name}", "label": label, "text": text})
            for label, name, text in sorted_records(records)
        ]
        path = directory / f"20news-bydate-{split}.jsonl.gz"
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return directory


def write_folder_copy(directory: Path) -> Path:
    for split, records in (("train", FAKE_TRAIN), ("test", FAKE_TEST)):
        for label, name, text in records:
            group = directory / f"20news-bydate-{split}" / label
            group.mkdir(parents=True, exist_ok=True)
            (group / name).write_bytes(text.encode("latin-1"))
    return directory


@pytest.fixture(params=["jsonl", "folders"])
def local_copy(request, tmp_path):
    write = write_jsonl_copy if request.param == "jsonl" else write_folder_copy
    return write(tmp_path)


def test_local_copy_keeps_file_order_and_sklearn_label_ids(local_copy):
    train = load_20newsgroups("train", source=local_copy, remove=())
    expected = sorted_records(FAKE_TRAIN)  # name order is string order: "10" < "9"
    assert train.texts == [text for _label, _name, text in expected]
    assert train.label_names == ["rec.autos", "sci.space"]
    assert train.labels.tolist() == [0, 0, 1]
    assert train.labels.dtype == np.int64
    assert "\r\n" in train.texts[1] and "caf\xe9" in train.texts[1]  # bytes kept exactly


def test_local_copy_strips_like_sklearn(local_copy):
    train = load_20newsgroups("train", source=local_copy)
    assert train.texts[0] == strip_newsgroup_post(POST)
    assert train.texts[0] == "V8 engines are loud.\nI like them.\n"
    headers_only = load_20newsgroups("train", source=local_copy, remove=("headers",))
    assert headers_only.texts[0] == strip_newsgroup_post(POST, footers=False, quotes=False)


def test_local_copy_test_and_all_subsets(local_copy):
    test = load_20newsgroups("test", source=local_copy, remove=[])
    assert test.texts == [FAKE_TEST[0][2]] and test.label_names == ["rec.autos"]
    everything = load_20newsgroups("all", source=local_copy, remove=[])
    assert len(everything) == 4
    assert everything.texts[-1] == FAKE_TEST[0][2]  # train first, then test
    assert everything.labels.tolist() == [0, 0, 1, 0]


def test_bad_subset_and_remove(tmp_path):
    with pytest.raises(ValueError, match="subset='validation' is invalid"):
        load_20newsgroups("validation", source=tmp_path)
    with pytest.raises(ValueError, match="remove=.*'signatures'"):
        load_20newsgroups("train", source=tmp_path, remove=("headers", "signatures"))


def test_source_without_the_expected_files(tmp_path):
    with pytest.raises(ValueError, match="holds neither 20news-bydate-train.jsonl.gz"):
        load_20newsgroups("train", source=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_20newsgroups("train", source=tmp_path / "missing")


def test_download_failure_points_to_source(monkeypatch):
    def offline(**kwargs):
        assert kwargs["shuffle"] is False and kwargs["subset"] == "test"
        raise OSError("[Errno -3] Temporary failure in name resolution\nmore")

    monkeypatch.setattr(datasets, "fetch_20newsgroups", offline)
    with pytest.raises(RuntimeError, match=r"could not download.*name resolution more.*--source"):
        load_20newsgroups("test")


def test_sklearn_path_returns_a_dataset(monkeypatch):
    from sklearn.utils import Bunch

    def fake_fetch(**kwargs):
        assert kwargs["remove"] == ("headers",)
        return Bunch(data=["a", "b"], target=np.array([1, 0]), target_names=["x", "y"])

    monkeypatch.setattr(datasets, "fetch_20newsgroups", fake_fetch)
    loaded = load_20newsgroups("train", remove=["headers"])
    assert isinstance(loaded, Dataset)
    assert loaded.texts == ["a", "b"] and loaded.label_names == ["x", "y"]
    assert loaded.labels.tolist() == [1, 0] and loaded.labels.dtype == np.int64


def test_dataset_checks_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        Dataset(texts=["a"], labels=np.array([0, 1]), label_names=["x"])


# ---------------------------------------------------------------------------
# The shipped sample corpus
# ---------------------------------------------------------------------------


def test_sample_corpus_shape_and_labels():
    docs = read_corpus(SAMPLE)
    labels = read_corpus(SAMPLE_LABELS)
    assert len(docs) == len(labels) == 2000
    assert Counter(labels) == {name: 100 for name in NEWSGROUPS}
    assert labels == sorted(labels)
    assert min(len(doc.split()) for doc in docs) >= 20
    assert SAMPLE.stat().st_size < 1_000_000


def test_sample_corpus_vectorizes():
    vectorizer = TextVectorizer()
    counts = vectorizer.fit_transform(read_corpus(SAMPLE))
    assert counts.shape == (2000, 2000)
    assert vectorizer.n_empty_documents_ < 20
    assert {"god", "space", "car", "game", "windows"} <= set(vectorizer.vocabulary_)


# ---------------------------------------------------------------------------
# Real data in ../shared/data (skipped where it is absent)
# ---------------------------------------------------------------------------

needs_shared_data = pytest.mark.skipif(
    not SHARED_20NG.is_dir(), reason=f"needs the 20 Newsgroups copy in {SHARED_20NG}"
)


@pytest.fixture(scope="module")
def shared_train():
    return load_20newsgroups("train", source=SHARED_20NG)


@pytest.mark.shared_data
@needs_shared_data
def test_shared_20newsgroups_sizes_and_labels(shared_train):
    test = load_20newsgroups("test", source=SHARED_20NG)
    assert len(shared_train) == 11314 and len(test) == 7532
    assert shared_train.label_names == test.label_names == NEWSGROUPS
    assert np.bincount(shared_train.labels)[NEWSGROUPS.index("sci.space")] == 593


@pytest.mark.shared_data
@needs_shared_data
def test_shared_20newsgroups_stripping_equals_sklearn(shared_train):
    strip_newsgroup_header, strip_newsgroup_footer, strip_newsgroup_quoting = sklearn_newsgroup_helpers()
    raw = load_20newsgroups("train", source=SHARED_20NG, remove=())
    expected = [
        strip_newsgroup_quoting(strip_newsgroup_footer(strip_newsgroup_header(text)))
        for text in raw.texts
    ]
    assert shared_train.texts == expected


@pytest.mark.shared_data
@needs_shared_data
def test_shared_20newsgroups_vectorizes_with_stripping(shared_train):
    raw = load_20newsgroups("train", source=SHARED_20NG, remove=())
    vectorizer = TextVectorizer(strip_newsgroup=True)
    counts = vectorizer.fit_transform(raw.texts)
    assert counts.shape == (11314, 2000)
    topic_words = {"god", "space", "car", "hockey", "encryption", "windows"}
    assert topic_words <= set(vectorizer.vocabulary_)
    assert not {"the", "and", "would"} & set(vectorizer.vocabulary_)
    # posts that are all quotes/headers become empty rows, reported, not fatal
    assert 0 < vectorizer.n_empty_documents_ < 500
