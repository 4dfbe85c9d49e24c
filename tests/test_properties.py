"""Property-based tests (hypothesis) for the group-spec parser, the corpus reader and the model loader.

Each property says what happens for *any* input a strategy can build: valid input round-trips, and
bad input gives a ``ValueError`` (or ``OSError``) with a one-line message, never another exception.
Hypothesis runs many examples inside one test call, so function-scoped ``tmp_path`` would be shared
between them: every example gets its own fresh directory from :func:`tempfile.mkdtemp` instead.
"""

from __future__ import annotations

import codecs

import json
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from topicvae.topics.estimator import TopicModel  # noqa: E402
from topicvae.latent.groups import GroupSpec, LatentGroup  # noqa: E402
from topicvae.io.model_files import ModelFileError  # noqa: E402
from topicvae.text.corpus import read_corpus  # noqa: E402

from conftest import planted_corpus  # noqa: E402

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_line(error: BaseException) -> None:
    message = str(error)
    assert message.strip(), f"{type(error).__name__} has an empty message"
    assert "\n" not in message and "\r" not in message, f"message is not one line: {message!r}"


def fresh_dir(base: Path) -> Path:
    """A new empty directory under ``base`` for one hypothesis example."""
    return Path(tempfile.mkdtemp(dir=base))


# ---------------------------------------------------------------------------------------------
# Group-spec parser
# ---------------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,6}", fullmatch=True)


@st.composite
def group_specs(draw):
    """(spec text, expected groups) for a random valid spec in any accepted item form."""
    n_items = draw(st.integers(1, 5))
    named = draw(st.booleans())  # auto names (g0, g1, ...) and explicit names do not mix safely
    item_names = draw(st.lists(names, min_size=n_items, max_size=n_items, unique=True)) if named else None
    items, groups = [], []
    for i in range(n_items):
        concrete = draw(st.booleans())
        size = draw(st.integers(2 if concrete else 1, 60))
        count = 1 if named else draw(st.integers(1, 3))
        suffix = draw(st.sampled_from("cC")) if concrete else ""
        text = f"{size}{suffix}"
        if not named and (count > 1 or draw(st.booleans())):
            text = f"{count}{draw(st.sampled_from('xX'))}{text}"
        if named:
            text = f"{item_names[i]}={text}"
        pad = draw(st.sampled_from(["", " ", "\t", "  "]))
        items.append(f"{pad}{text}{pad}")
        kind = "concrete" if concrete else "gaussian"
        for _ in range(count):
            name = item_names[i] if named else f"g{len(groups)}"
            groups.append(LatentGroup(name, size, kind))
    return ",".join(items), groups


@FAST
@given(group_specs())
def test_valid_group_specs_parse_and_round_trip(case):
    text, groups = case
    spec = GroupSpec.parse(text)
    assert list(spec) == groups
    assert GroupSpec.parse(str(spec)) == spec
    assert GroupSpec.parse(repr(spec)[len("GroupSpec('") : -2]) == spec
    assert spec.num_columns == sum(g.size for g in groups)
    # the column slices tile 0..num_columns in order, without gaps or overlaps
    covered = []
    for group, (name, columns) in zip(spec, spec.column_slices().items()):
        assert name == group.name and columns.stop - columns.start == group.size
        covered.extend(range(columns.start, columns.stop))
    assert covered == list(range(spec.num_columns))
    assert len(spec.topic_labels()) == spec.num_columns
    assert spec.num_variables == sum(g.size if g.kind == "gaussian" else 1 for g in groups)
    assert len(spec.variable_labels()) == spec.num_variables


spec_like_text = st.text(alphabet="0123456789xXcC,= \tab_-.\n", max_size=20)


@FAST
@given(st.one_of(st.text(max_size=30), spec_like_text))
@example("0")
@example("0x5")
@example("1c")
@example("a=2x5")
@example("g1=5,5")
@example("٣")  # a non-ASCII digit: \d matches it and int() reads it
@example("5\n")
@example("5\n,3")
def test_any_text_parses_or_raises_one_line_value_error(text):
    try:
        spec = GroupSpec.parse(text)
    except ValueError as error:
        assert_one_line(error)
    else:
        assert isinstance(spec, GroupSpec)
        assert GroupSpec.parse(str(spec)) == spec


# ---------------------------------------------------------------------------------------------
# Corpus reader
# ---------------------------------------------------------------------------------------------


@FAST
@given(
    data=st.one_of(st.binary(max_size=200), st.text(max_size=60).map(lambda t: t.encode("utf-8"))),
    errors=st.sampled_from(["strict", "replace", "ignore"]),
)
@example(data=b"", errors="strict")
@example(data=b"\xff\xfe\x00", errors="strict")
@example(data=b"\xef\xbb\xbf\n \n", errors="strict")
@example(data=b"\xef", errors="replace")
def test_any_bytes_read_or_raise_one_line_error(tmp_path_factory, data, errors):
    path = fresh_dir(tmp_path_factory.getbasetemp()) / "corpus.txt"
    path.write_bytes(data)
    try:
        documents = read_corpus(path, errors=errors)
    except (ValueError, UnicodeError, OSError) as error:
        assert_one_line(error)
    else:
        assert isinstance(documents, list) and documents
        assert all(isinstance(d, str) and d.strip() and "\n" not in d for d in documents)
    # CPython's utf-8-sig stream decoder drops a file that is only the start of a byte-order
    # mark (b"\xef", b"\xef\xbb") instead of replacing it: such a file is refused as empty above.
    truncated_bom = 0 < len(data) < 3 and codecs.BOM_UTF8.startswith(data)
    if errors != "strict" and not truncated_bom and data.decode("utf-8", errors=errors).removeprefix("\ufeff").strip():
        # a replacing/ignoring decoder never fails on bytes: text with any non-blank line reads
        assert read_corpus(path, errors=errors)


# One-line documents: no universal-newline characters (open() in text mode splits on \n, \r and \r\n)
# and no U+FEFF, which the reader drops when it starts the file (a byte-order mark). Other separators
# that str.splitlines() knows (\x0b, \x1c, \x85, \u2028, ...) are *not* line ends for the reader.
# Surrogates are left out: they cannot be written as UTF-8 at all.
documents = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\ufeff"), max_size=20), max_size=8)


@FAST
@given(documents)
@example(["a\x0bb", "c\u2028d", "\x85"])
@example(["  padded  ", "\t"])
def test_utf8_documents_round_trip(tmp_path_factory, docs):
    path = fresh_dir(tmp_path_factory.getbasetemp()) / "corpus.txt"
    path.write_bytes("".join(d + "\n" for d in docs).encode("utf-8"))
    # lines that are blank after strip() are not documents; the rest come back verbatim
    # (leading and trailing spaces kept)
    expected = [d for d in docs if d.strip()]
    if not expected:
        with pytest.raises(ValueError, match="holds no documents") as caught:
            read_corpus(path)
        assert_one_line(caught.value)
    else:
        assert read_corpus(path) == expected


# ---------------------------------------------------------------------------------------------
# Model loader
# ---------------------------------------------------------------------------------------------

UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Payload:
    """Unpickling this calls ``_record_unpickling``: a stand-in for arbitrary code."""

    def __init__(self, tag: str):
        self.tag = tag

    def __reduce__(self):
        return (_record_unpickling, (self.tag,))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    counts, vocabulary, _ = planted_corpus(n_docs=40, n_topics=2, words_per_topic=4, n_noise_words=4, seed=1)
    model = TopicModel(groups="2,2c", epochs=1, batch_size=20, hidden_sizes=(8,), seed=0)
    model.fit(counts, vocabulary=vocabulary)
    directory = model.save(tmp_path_factory.mktemp("model") / "saved")
    TopicModel.load(directory)  # the pristine copy loads
    return directory


def copy_of(saved: Path, tmp_path_factory) -> Path:
    target = fresh_dir(tmp_path_factory.getbasetemp()) / "model"
    shutil.copytree(saved, target)
    return target


def load_or_one_line_error(directory: Path) -> None:
    UNPICKLED.clear()
    try:
        TopicModel.load(directory)
    except (ModelFileError, ValueError, OSError) as error:
        assert_one_line(error)
    assert not UNPICKLED, "loading unpickled an object"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@SLOW
@given(st.binary(max_size=300))
@example(b"")
@example(pickle.dumps({"encoder": _Payload("weights")}))
def test_random_weights_bytes(saved_model, tmp_path_factory, data):
    directory = copy_of(saved_model, tmp_path_factory)
    (directory / "weights.pt").write_bytes(data)
    load_or_one_line_error(directory)


@SLOW
@given(st.data())
def test_truncated_weights(saved_model, tmp_path_factory, data):
    directory = copy_of(saved_model, tmp_path_factory)
    weights = (directory / "weights.pt").read_bytes()
    length = data.draw(st.integers(0, len(weights) - 1), label="length")
    (directory / "weights.pt").write_bytes(weights[:length])
    with pytest.raises(ModelFileError) as caught:
        TopicModel.load(directory)
    assert_one_line(caught.value)


@SLOW
@given(st.data())
def test_deleted_file(saved_model, tmp_path_factory, data):
    directory = copy_of(saved_model, tmp_path_factory)
    victim = data.draw(st.sampled_from(sorted(p.name for p in directory.iterdir())), label="file")
    (directory / victim).unlink()
    with pytest.raises(ModelFileError) as caught:
        TopicModel.load(directory)
    assert_one_line(caught.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


# Every field of a saved TopicModel's config.json, top level and one level down ("params.groups").
CONFIG_FIELDS = [
    "format_version", "estimator", "topicvae_version", "params", "weights", "vectorizer", "fitted",
    *(f"params.{k}" for k in (
        "model", "groups", "objective", "alpha", "beta", "gamma", "delta", "epochs", "batch_size", "lr",
        "hidden_sizes", "dropout", "prior_concentration", "temperature", "seed", "device", "precision",
        "encoder_input", "posterior_norm", "word_shift", "init", "topic_dropout", "lr_schedule", "gamma_warmup",
    )),
    *(f"weights.{k}" for k in ("alpha", "beta", "gamma", "delta")),
    *(f"fitted.{k}" for k in ("n_documents", "n_empty_documents", "history", "topic_correlation", "analysis")),
]


def test_config_fields_list_is_complete(saved_model):
    config = json.loads((saved_model / "config.json").read_text(encoding="utf-8"))
    actual = [k for k in config] + [f"{k}.{s}" for k, v in config.items() if isinstance(v, dict) for s in v]
    assert sorted(actual) == sorted(CONFIG_FIELDS)


@SLOW
@given(field=st.sampled_from(CONFIG_FIELDS), value=json_values)
@example(field="weights", value=[])  # once a TypeError escaping TopicModel.load
@example(field="fitted", value={})  # once a KeyError
@example(field="estimator", value="a\nb")  # once an unquoted name that made the message two lines
@example(field="params.hidden_sizes", value=[])  # once an IndexError (hidden_sizes[-1])
def test_config_field_replaced_by_random_json(saved_model, tmp_path_factory, field, value):
    directory = copy_of(saved_model, tmp_path_factory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    *parents, last = field.split(".")
    parent = config
    for key in parents:
        parent = parent[key]
    parent[last] = value
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    load_or_one_line_error(directory)
