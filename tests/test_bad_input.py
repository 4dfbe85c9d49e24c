"""Every bad input of docs/reliability.md: one line on stderr, a non-zero exit, nothing half-written.

Each case is run through the CLI (``typer.testing.CliRunner``) exactly as the table in
docs/reliability.md shows it, and ``test_the_documented_table_is_what_the_cli_prints`` keeps the
table equal to what the CLI prints. After changing a message, regenerate the table with

    python tests/test_bad_input.py > /tmp/table.md   # then paste it between the markers
"""

from __future__ import annotations

import json
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest's helpers when run as a script

from conftest import counts_to_documents, planted_corpus  # noqa: E402

from topicvae.cli import app  # noqa: E402

runner = CliRunner()
DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- bad-input:start -->", "<!-- bad-input:end -->"

#: Options that make every fit in this file take a second.
QUICK = ["--epochs", "1", "--batch-size", "20", "--min-df", "1", "--no-progress", "--mi-documents", "50"]


def good_documents() -> list[str]:
    counts, vocabulary, _ = planted_corpus(n_docs=60, n_topics=3, words_per_topic=5, n_noise_words=5, doc_length=30, seed=1)
    return counts_to_documents(counts, vocabulary)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Case:
    """One bad input: what the user has, the command they run, and what they must see."""

    what: str  # the row's first cell
    make: Callable[[Path], list[str]]  # builds the inputs under a folder; returns the CLI arguments (after "topicvae")
    message: str  # a regular expression the one-line message must match
    exit_code: int = 1


def _fit(corpus: str, *extra: str) -> list[str]:
    return ["fit", corpus, "--out", "out", *QUICK, *extra]


def _corpus(tmp: Path, name: str = "corpus.txt") -> str:
    return str(write_lines(tmp / name, good_documents()))


def _saved_model(tmp: Path) -> Path:
    """A model directory written by ``topicvae fit --out`` (made once per folder)."""
    model = tmp / "model"
    if not model.exists():
        result = runner.invoke(app, ["fit", _corpus(tmp, "train.txt"), "--out", str(model), *QUICK, "--groups", "2x2"])
        assert result.exit_code == 0, result.output
    return model


def _edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


class _Payload:
    """Runs code when unpickled: what a malicious weights.pt would do."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def _pickled_weights(tmp: Path) -> list[str]:
    model = _saved_model(tmp)
    with open(model / "weights.pt", "wb") as handle:
        pickle.dump({"weights": _Payload()}, handle)
    return ["topics", str(model)]


def _wrong_shape_weights(tmp: Path) -> list[str]:
    model = _saved_model(tmp)
    state = torch.load(model / "weights.pt", weights_only=True)
    state["topic_words.weight"] = torch.zeros(3, 3)
    torch.save(state, model / "weights.pt")
    return ["topics", str(model)]


def _newer_format(tmp: Path) -> list[str]:
    model = _saved_model(tmp)
    _edit_config(model, format_version=99)
    return ["topics", str(model)]


def _missing_weights(tmp: Path) -> list[str]:
    model = _saved_model(tmp)
    (model / "weights.pt").unlink()
    return ["topics", str(model)]


def _vocabulary_of_another_size(tmp: Path) -> list[str]:
    model = _saved_model(tmp)
    (model / "vocabulary.txt").write_text("just\nthree\nwords\n", encoding="utf-8")
    return ["topics", str(model)]


def _enormous_document(tmp: Path) -> list[str]:
    documents = good_documents()
    documents.append(" ".join(documents) * 40)  # one line of about 70,000 words
    return _fit(str(write_lines(tmp / "corpus.txt", documents)))


def _shards(tmp: Path, *, same_corpus: bool) -> list[str]:
    """Shards counted with other vocabulary options, from the same corpus file or from another one."""
    from topicvae.streaming import build_bag_of_words, file_source
    from topicvae.text import TextVectorizer

    corpus = Path(_corpus(tmp))
    build_bag_of_words(good_documents(), tmp / "shards" / "rank-0-of-1", TextVectorizer(min_df=1, stop_words=None),
                       source=file_source(corpus) if same_corpus else {"path": str(tmp / "other.txt")})
    return _fit(str(corpus), "--stream", "--shard-dir", "shards")


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


CASES = [
    # ---- the corpus ----------------------------------------------------------------------
    Case("corpus path that does not exist", lambda tmp: _fit("missing.txt"),
         r"error: corpus path 'missing.txt' does not exist; pass an existing"),
    Case("empty file", lambda tmp: _fit(str(write_lines(tmp / "empty.txt", [])), ),
         r"error: corpus '.*empty.txt' holds no documents; check the file and its format\."),
    Case("directory without text files", lambda tmp: _fit(str(_mkdir(tmp / "folder"))),
         r"error: directory '.*folder' contains no \*\.txt files"),
    Case("non-UTF-8 bytes (Latin-1 text)",
         lambda tmp: (tmp / "latin1.txt").write_bytes("\n".join(good_documents()).encode() + "\ncaf\xe9\n".encode("latin-1"))
         and _fit(str(tmp / "latin1.txt")),
         r"error: '.*latin1.txt' is not valid utf-8 text \(invalid continuation byte at byte \d+\); pass the file's "
         r"encoding .* or replace undecodable bytes \(--decode-errors replace"),
    Case("binary file (a gzip stream saved as .txt)",
         lambda tmp: (tmp / "binary.txt").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256))) and _fit(str(tmp / "binary.txt")),
         r"error: '.*binary.txt' is not valid utf-8 text"),
    Case("one enormous document (about 70,000 words on one line)", _enormous_document,
         r"^$", exit_code=0),
    Case("every document is stop words", lambda tmp: _fit(str(write_lines(tmp / "stop.txt", ["the and of to", "a is it the"] * 30))),
         r"error: no word to count in the 60 documents: every token is a stop word"),
    Case("CSV without the named column",
         lambda tmp: write_lines(tmp / "c.csv", ["body", *good_documents()]) and _fit(str(tmp / "c.csv")),
         r"error: text_column='text' not found in c.csv; its columns are: body\. Pass --text-column"),
    Case("non-UTF-8 bytes, streamed",
         lambda tmp: (tmp / "latin1.txt").write_bytes("\n".join(good_documents()).encode() + "\ncaf\xe9\n".encode("latin-1"))
         and _fit(str(tmp / "latin1.txt"), "--stream"),
         r"error: '.*latin1.txt' is not valid utf-8 text \(invalid continuation byte at byte \d+\)"),
    Case("JSON lines without the named field",
         lambda tmp: write_lines(tmp / "c.jsonl", [json.dumps({"body": d}) for d in good_documents()]) and _fit(str(tmp / "c.jsonl")),
         r"error: text_column='text' not found on line 1 of c.jsonl; its fields are: body\. Pass --text-column"),
    # ---- options ---------------------------------------------------------------------------
    Case("zero epochs", lambda tmp: _fit(_corpus(tmp), "--epochs", "0"), r"error: epochs=0 is invalid"),
    Case("negative batch size", lambda tmp: _fit(_corpus(tmp), "--batch-size", "-5"), r"error: batch_size=-5 is invalid"),
    Case("zero learning rate", lambda tmp: _fit(_corpus(tmp), "--lr", "0"), r"error: lr=0.0 is invalid"),
    Case("a group of zero topics", lambda tmp: _fit(_corpus(tmp), "--groups", "2x0"), r"error: .*group"),
    Case("NaN weight", lambda tmp: _fit(_corpus(tmp), "--beta", "nan"), r"error: beta=nan is invalid"),
    Case("negative weight", lambda tmp: _fit(_corpus(tmp), "--gamma", "-1"), r"error: gamma=-1.0 is invalid"),
    Case("group spec that does not parse", lambda tmp: _fit(_corpus(tmp), "--groups", "2x"), r"error: .*2x"),
    Case("groups that do not fit the model (ProdLDA with one topic)", lambda tmp: _fit(_corpus(tmp), "--groups", "1"),
         r"error: groups='1' gives ProdLDA a single Gaussian topic, whose Dirichlet prior is degenerate"),
    Case("weights the preset does not take", lambda tmp: _fit(_corpus(tmp), "--objective", "vae", "--beta", "2"),
         r"error: objective='vae' does not take beta"),
    Case("a device that does not exist", lambda tmp: _fit(_corpus(tmp), "--device", "tpu"),
         r"error: device='tpu' is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:K'"),
    Case("--shard-dir without --stream", lambda tmp: _fit(_corpus(tmp), "--shard-dir", "shards"),
         r"error: --shard-dir needs --stream \(or a torchrun launch\)"),
    Case("a shard directory of another corpus", lambda tmp: _shards(tmp, same_corpus=False),
         r"error: .*rank-0-of-1 holds the bag-of-words of another corpus, or of an older version of it \(.*other.txt\)"),
    Case("a shard directory counted with other vocabulary options", lambda tmp: _shards(tmp, same_corpus=True),
         r"error: .*rank-0-of-1 holds a bag-of-words counted with other vocabulary options"),
    # ---- model directories -----------------------------------------------------------------
    Case("model directory that does not exist", lambda tmp: ["topics", str(tmp / "nothing")],
         r"error: .*nothing is not a saved topicvae model: missing config.json"),
    Case("model without weights.pt", _missing_weights, r"error: .* is not a complete saved model: missing weights.pt"),
    Case("model from a newer format version", _newer_format,
         r"error: .* has model format 99, this topicvae reads up to \d+: upgrade topicvae"),
    Case("weights of the wrong shape", _wrong_shape_weights,
         r"error: .*weights.pt holds topic_words.weight of shape \(3, 3\), but config.json and vocabulary.txt \(\d+ words\) "
         r"describe shape \(\d+, 4\): the files come from different models"),
    Case("vocabulary that does not match the weights", _vocabulary_of_another_size,
         r"error: .*weights.pt holds .* but config.json and vocabulary.txt \(3 words\) describe"),
    Case("weights.pt replaced by a pickle that runs code", _pickled_weights,
         r"error: .*weights.pt is not a plain tensor file and was not loaded \(UnpicklingError\); only load models from people you trust"),
]


def run_case(case: Case, tmp: Path, monkeypatch) -> tuple[int, str, str]:
    """Run the case in ``tmp``; return the exit code, stderr and stdout."""
    monkeypatch.chdir(tmp)
    arguments = case.make(tmp)
    result = runner.invoke(app, arguments)
    return result.exit_code, result.stderr, result.stdout


@pytest.mark.parametrize("case", CASES, ids=[case.what for case in CASES])
def test_bad_input_gets_one_line_and_leaves_nothing_behind(case, tmp_path, monkeypatch):
    code, stderr, stdout = run_case(case, tmp_path, monkeypatch)
    assert code == case.exit_code, stderr + stdout
    assert "Traceback" not in stderr + stdout
    assert "this ran while loading" not in stdout + stderr  # the pickle never ran
    if case.exit_code:
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert re.search(case.message, stderr.strip()), stderr
        assert not (tmp_path / "out").exists()  # no half-written --out directory
        assert not list(tmp_path.glob(".out*"))  # nor a staging directory


def test_replacing_undecodable_bytes_reports_how_many(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("\n".join(good_documents()).encode() + "\ncaf\xe9 na\xefve\n".encode("latin-1"))
    result = runner.invoke(app, _fit("latin1.txt", "--decode-errors", "replace"))
    assert result.exit_code == 0, result.output
    assert "note: replaced 2 undecodable byte(s) of latin1.txt with U+FFFD (--decode-errors replace)" in result.stderr
    assert (tmp_path / "out" / "report.json").is_file()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["--debug", "fit", "missing.txt"])
    assert result.exit_code != 0
    assert isinstance(result.exception, FileNotFoundError)


# ---------------------------------------------------------------------------------------------
# The table of docs/reliability.md
# ---------------------------------------------------------------------------------------------
def _shown(arguments: list[str], tmp: Path) -> str:
    """The command as the table shows it: fit's speed options (QUICK) left out, paths relative."""
    for start in range(len(arguments) - len(QUICK) + 1):
        if arguments[start : start + len(QUICK)] == QUICK:
            arguments = arguments[:start] + arguments[start + len(QUICK):]
            break
    return " ".join(["topicvae", *arguments]).replace(str(tmp) + "/", "")


def render_table(tmp_root: Path) -> str:
    """The Markdown table of every case, with the message the CLI printed (paths made relative)."""
    rows = ["| bad input | command (fit's speed options left out) | exit code | what the user sees | left behind |",
            "|---|---|---|---|---|"]
    for index, case in enumerate(CASES):
        tmp = tmp_root / f"case{index}"
        tmp.mkdir(parents=True)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp)
            arguments = case.make(tmp)
            result = runner.invoke(app, arguments)
        message = (result.stderr.strip() or "(trains and saves the model)").replace(str(tmp) + "/", "")
        left = "nothing" if not (tmp / "out").exists() else "the finished model in `out/`"
        message = message.replace("|", "\\|")
        rows.append(f"| {case.what} | `{_shown(arguments, tmp)}` | {result.exit_code} | {message} | {left} |")
    return "\n".join(rows)


def test_the_documented_table_is_what_the_cli_prints(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text, f"{DOC} lacks the table's markers"
    documented = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert documented == render_table(tmp_path), "regenerate the table: python tests/test_bad_input.py"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        print(render_table(Path(folder)))
