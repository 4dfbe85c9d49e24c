"""Every bad input of docs/reliability.md: one line on stderr, a non-zero exit, nothing half-written.

Each case is run through the CLI (``typer.testing.CliRunner``) exactly as the table in
docs/reliability.md shows it, and ``test_the_documented_table_is_what_the_cli_prints`` keeps the
table equal to what the CLI prints, and a second table the same for calls from Python. After
changing a message, regenerate both tables in place with

    python tests/test_bad_input.py --write
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
PY_TABLE_START, PY_TABLE_END = "<!-- python-faults:start -->", "<!-- python-faults:end -->"

#: Options that make every fit in this file take a second.
QUICK = ["--epochs", "1", "--batch-size", "20", "--min-df", "1", "--no-progress", "--mi-documents", "50", "--groups", "2x2"]


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
    message: str  # a regular expression the one-line message must match (exit 0: what stderr must match)
    exit_code: int = 1
    shows: str | None = None  # exit 0: a regular expression of the stdout line that shows the result
    reader_stops_after: int | None = None  # stdout is a pipe whose reader stops after this many lines (| head -N)
    left: Callable[[Path], str] | None = None  # what the run left behind, when more than an out/ directory


def _fit(corpus: str, *extra: str) -> list[str]:
    return ["fit", corpus, "--out", "out", *QUICK, *extra]


def _corpus(tmp: Path, name: str = "corpus.txt") -> str:
    return str(write_lines(tmp / name, good_documents()))


def _a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a folder\n")
    return tmp / "afile"


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
    from topicvae.text.shards import build_bag_of_words, file_source
    from topicvae.text.vectorizer import TextVectorizer

    corpus = Path(_corpus(tmp))
    build_bag_of_words(good_documents(), tmp / "shards" / "rank-0-of-1", TextVectorizer(min_df=1, stop_words=None),
                       source=file_source(corpus) if same_corpus else {"path": str(tmp / "other.txt")})
    return _fit(str(corpus), "--stream", "--shard-dir", "shards")


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _damaged(tmp: Path, name: str, *, keep: int | bytes | None, command: str = "topics") -> list[str]:
    """A saved model with one file cut to its first ``keep`` bytes (None: half its size; bytes:
    up to that marker, so that the cut does not move with the numbers before it), as an
    interrupted copy leaves it."""
    model = _saved_model(tmp)
    path = model / name
    data = path.read_bytes()
    end = len(data) // 2 if keep is None else data.index(keep) if isinstance(keep, bytes) else keep
    path.write_bytes(data[:end])
    return [command, str(model)]


#: Hindi with spaces between words: an ASCII-only token pattern finds none of its words.
HINDI = ["मैं आज बाज़ार गया और सब्ज़ी ख़रीदी", "बच्चे बगीचे में खेल रहे हैं", "वह रोज़ सुबह दौड़ने जाती है"] * 2


def _unfinished_run(tmp: Path) -> list[str]:
    """An --out directory as a killed fit leaves it: a checkpoint and no saved model yet."""
    from topicvae import TopicModel
    from topicvae.text.vectorizer import TextVectorizer

    model = TopicModel("prodlda", "2x2", epochs=3, batch_size=20, vectorizer=TextVectorizer(min_df=1))
    for progress in model.fit_iter(good_documents(), checkpoint_dir=tmp / "out" / "checkpoint"):
        if progress.epoch == 2:  # killed in epoch 2: epoch 1 is checkpointed
            break
    assert (tmp / "out" / "checkpoint" / "checkpoint.pt").is_file()
    return ["topics", "out"]


def _resume_finished(tmp: Path) -> list[str]:
    corpus = _corpus(tmp)
    result = runner.invoke(app, _fit(corpus))
    assert result.exit_code == 0, result.output
    return _fit(corpus, "--resume")


#: Chinese and Japanese sentences written, as they are, without spaces between words.
UNSEGMENTED = [
    "今天我们在厨房里用面粉和黄油烤了一个蛋糕", "望远镜里可以看到土星的光环和许多卫星", "足球比赛的最后一分钟前锋踢进了一个球",
    "妈妈在锅里炒大蒜和洋葱做晚饭", "天文学家用望远镜观察遥远的星系", "今日は台所でパンを焼きました",
    "望遠鏡で月のクレーターを見ました", "サッカーの試合で審判が笛を吹きました", "春になると公園の桜がきれいに咲きます",
    "他每天早上在河边跑步锻炼身体", "庭のチューリップが咲きました", "图书馆里有很多关于历史的旧书",
]


def _unsegmented(tmp: Path) -> str:
    return str(write_lines(tmp / "unsegmented.txt", UNSEGMENTED))


def _few_documents(tmp: Path, fresh: int = 0) -> str:
    """12 short documents: 'apple' is in 3 of them, every other word in 1; 'fresh' in the first ``fresh``."""
    lines = [f"apple {w}berry" for w in ("straw", "blue", "rasp")]
    lines += [f"{w}melon {w}fruit" for w in ("water", "honey", "bitter", "winter", "summer", "autumn", "spring", "dragon", "passion")]
    lines = [f"fresh {line}" if i < fresh else line for i, line in enumerate(lines)]
    return str(write_lines(tmp / "few.txt", lines))


def _transform_empty(tmp: Path) -> list[str]:
    model = _saved_model(tmp)
    documents = good_documents()
    write_lines(tmp / "new.txt", [documents[0], "unseen words only", "2026-12-01 :-) ;-)", documents[1]])
    return ["transform", str(model), "new.txt", "--out", "theta.csv"]


def _reference_without_two_words(tmp: Path) -> list[str]:
    from topicvae import TopicModel

    model = _saved_model(tmp)
    missing = TopicModel.load(model).topics(10)["words"].iloc[0][:2]
    reference = [" ".join(word for word in document.split() if word not in missing) for document in good_documents()]
    write_lines(tmp / "reference.txt", reference)
    return ["evaluate", str(model), "--corpus", "train.txt", "--reference", "reference.txt", "--pairs", "1"]


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
         r"error: .*weights.pt holds pickled Python objects \(UnpicklingError\), which topicvae never loads since unpickling "
         r"can run code: only use files from people you trust"),
    # ---- field cases (issue 15): damaged files name the file, the damage and a remedy that works ----
    Case("weights.pt cut to half its size (an interrupted copy)", lambda tmp: _damaged(tmp, "weights.pt", keep=None),
         r"error: .*model/weights.pt is damaged or incomplete \(\d+ bytes; .*\): restore the model directory from a copy, "
         r"or fit the model again$"),
    Case("weights.pt empty", lambda tmp: _damaged(tmp, "weights.pt", keep=0),
         r"error: .*model/weights.pt is empty \(0 bytes; an interrupted copy or a full disk\): restore the model directory"),
    Case("config.json cut short (before its weights)", lambda tmp: _damaged(tmp, "config.json", keep=b'"weights"'),
         r"error: .*model/config.json is damaged or incomplete \(not valid JSON: .*\): restore the model directory from a copy"),
    # cut before the corpus's path, whose length differs from folder to folder
    Case("report.json cut short, then evaluate without --corpus", lambda tmp: _damaged(tmp, "report.json", keep=10, command="evaluate"),
         r"error: .*model/report.json is damaged or incomplete \(not valid JSON: .*\), so the training corpus it names is "
         r"unknown: pass --corpus FILE"),
    Case("weights.pt cut to its first byte", lambda tmp: _damaged(tmp, "weights.pt", keep=1),
         r"error: .*model/weights.pt is damaged or incomplete \(1 byte; not a whole torch file\)"),
    Case("vocabulary.txt empty", lambda tmp: _damaged(tmp, "vocabulary.txt", keep=0),
         r"error: .*model/vocabulary.txt is empty \(an interrupted copy or a full disk\): restore the model directory"),
    Case("a directory holding only an unfinished run's checkpoint", _unfinished_run,
         r"error: out holds the checkpoint of an unfinished run, not a saved model: finish it with the same "
         r"'topicvae fit ... --out out' command and --resume", left=lambda tmp: "the checkpoint in `out/checkpoint`, untouched"),
    Case("transform --out onto a directory", lambda tmp: ["transform", str(_saved_model(tmp)), _corpus(tmp), "--out", str(_mkdir(tmp / "adir"))],
         r"error: --out .*adir is a directory: give the path of the CSV file to write, or - for stdout"),
    Case("a stop-word file that does not exist", lambda tmp: _fit(_corpus(tmp), "--stop-words", "stops.txt"),
         r"error: --stop-words stops.txt is no file: give 'english', 'none', or a file of stop words, one per line"),
    Case("a token pattern that matches the empty string", lambda tmp: _fit(_corpus(tmp), "--token-pattern", ""),
         r"error: token_pattern='' matches the empty string"),
    Case("Hindi text with an ASCII-only token pattern", lambda tmp: _fit(str(write_lines(tmp / "hindi.txt", HINDI)), "--token-pattern", r"\b[a-z]{3,}\b"),
         r"error: no word to count in the 6 documents: token_pattern=.* finds no word in 100% of the space-separated words .*--min-word-length 1"),
    Case("--out inside a file", lambda tmp: ["fit", _corpus(tmp), "--out", str(_a_file(tmp) / "run"), *QUICK],
         r"error: --out .*afile/run: .*afile is a file, not a folder: choose another path"),
    Case("--out where no folder can be made", lambda tmp: ["fit", _corpus(tmp), "--out", "/proc/topicvae-run", *QUICK],
         r"error: --out /proc/topicvae-run cannot be created in /proc \(.*\): choose a writable folder"),
    Case("--resume after the run finished and saved its model", _resume_finished,
         r"error: --resume: the run in out finished and saved its model there, so there is nothing to resume",
         left=lambda tmp: "the finished model in `out/`, untouched"),
    # ---- vocabularies that cannot hold topics: the real cause, never a generic "lower min_df" ----
    Case("Chinese and Japanese text without spaces between words", lambda tmp: _fit(_unsegmented(tmp), "--min-df", "5"),
         r"error: no word recurs across the 12 documents because the tokens are whole phrases \(median [\d.]+ characters, .*\): "
         r"the text has no spaces between words"),
    Case("the same, with the document-frequency filters opened", lambda tmp: _fit(_unsegmented(tmp), "--max-df", "1.0"),
         r"^warning: the vocabulary holds whole phrases as words \(median [\d.]+ characters", exit_code=0),
    Case("no word in min_df documents (12 short documents)", lambda tmp: _fit(_few_documents(tmp), "--min-df", "5"),
         r"error: no word occurs in min_df=5 documents or more: of the \d+ distinct tokens of the 12 documents, the most "
         r"widespread, 'apple', occurs in 3; lower min_df to 3 or less, or pass more documents\.$"),
    Case("every word in min_df documents is above max_df", lambda tmp: _fit(_few_documents(tmp, fresh=6), "--min-df", "4", "--max-df", "5"),
         r"error: every word in at least min_df=4 of the 12 documents also occurs in more than max_df=5 of them \('fresh' in 6\); "
         r"raise max_df to 6 or more \(1.0 keeps every word\), or lower min_df\.$"),
    Case("a vocabulary of fewer words than topics, most documents left empty",
         lambda tmp: _fit(_few_documents(tmp), "--min-df", "3", "--max-df", "1.0", "--groups", "2x3"),
         r"^warning: the vocabulary has 1 word for 6 topics: topics cannot differ.*\nwarning: 9 of 12 documents have no word "
         r"of the vocabulary", exit_code=0),
    # ---- degenerate input handled, not passed off as ordinary ----
    Case("transform of documents without any word of the vocabulary (2 of 4)", _transform_empty,
         r"^note: 2 of 4 documents have no word of the model's vocabulary: their topic columns are left empty and their "
         r"vocabulary_words is 0$", exit_code=0, shows=r"^wrote 4 documents",
         left=lambda tmp: "theta.csv: rows 1 and 2 empty, vocabulary_words 0"),
    Case("evaluate --reference in which two top words never occur", _reference_without_two_words,
         r"^$", exit_code=0, shows=r"^  top words absent from the reference, left out of their topics' pairs: \w+ \w+ \(in \d+ topics?\)$",
         left=lambda tmp: "nothing (prints every metric)"),
    # ---- a reader that stops reading: nothing is lost ----
    Case("fit --out DIR into a pipe whose reader stops after one line (| head -1)",
         lambda tmp: _fit(_corpus(tmp)), r"^$", exit_code=0, reader_stops_after=1),
    Case("topics into a pipe whose reader stops after one line (| head -1)",
         lambda tmp: ["topics", str(_saved_model(tmp))], r"^$", exit_code=0, reader_stops_after=1,
         left=lambda tmp: "nothing"),
]


def _invoke(case: Case, arguments: list[str], patch: pytest.MonkeyPatch):
    """Run the CLI; with ``reader_stops_after``, stdout fails as a pipe closed by its reader does."""
    if case.reader_stops_after is not None:
        import typer

        echo, printed = typer.echo, []

        def closing_echo(message="", *args, err=False, **kwargs):
            if not err:
                if len(printed) >= case.reader_stops_after:
                    raise BrokenPipeError(32, "Broken pipe")
                printed.append(message)
            return echo(message, *args, err=err, **kwargs)

        patch.setattr(typer, "echo", closing_echo)
    return runner.invoke(app, arguments)


def run_case(case: Case, tmp: Path, monkeypatch) -> tuple[int, str, str, list[str]]:
    """Run the case in ``tmp``; return the exit code, stderr, stdout and the arguments."""
    monkeypatch.chdir(tmp)
    arguments = case.make(tmp)
    result = _invoke(case, arguments, monkeypatch)
    return result.exit_code, result.stderr, result.stdout, arguments


@pytest.mark.parametrize("case", CASES, ids=[case.what for case in CASES])
def test_bad_input_gets_one_line_and_leaves_nothing_behind(case, tmp_path, monkeypatch):
    code, stderr, stdout, arguments = run_case(case, tmp_path, monkeypatch)
    assert code == case.exit_code, stderr + stdout
    assert "Traceback" not in stderr + stdout
    assert "this ran while loading" not in stdout + stderr  # the pickle never ran
    if case.exit_code:
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert re.search(case.message, stderr.strip()), stderr
        if case.left is None:  # a case that starts from a finished model says so in `left`
            assert not (tmp_path / "out").exists()  # no half-written --out directory
        assert not list(tmp_path.glob(".out*"))  # nor a staging directory
    else:
        assert re.search(case.message, stderr.strip()), stderr
        if case.shows is not None:
            assert any(re.search(case.shows, line) for line in stdout.splitlines()), stdout
        if case.reader_stops_after is not None:
            assert len(stdout.splitlines()) == case.reader_stops_after, stdout  # quiet once the reader stopped
        if arguments[0] == "fit":  # the model and its report are saved, whatever happened to stdout
            assert {"config.json", "weights.pt", "report.json", "run.json"} <= {p.name for p in (tmp_path / "out").iterdir()}
            assert not (tmp_path / "out" / "checkpoint").exists()


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
# The same from Python: the library's own faults of the same kinds (issue 15)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PyCase:
    """One call from Python: statements, then an expression whose value (or error) the user sees."""

    what: str
    code: str  # lines run in NAMESPACE; the last one is an expression
    expect: str  # a regular expression the output (warnings, then the value or the error) must match


#: Fast options of the models fitted in PY_CASES.
TINY = dict(groups="2x2", epochs=2, batch_size=20, seed=0)

PY_SETUP = """
import random
import numpy as np
import torch
from torch import eye, ones, zeros
from torch.distributions import Independent, MultivariateNormal, Normal
from topicvae import ObjectiveWeights, TopicModel, hfvae_objective
from topicvae.text.vectorizer import TextVectorizer

docs = DOCUMENTS
model = TopicModel("prodlda", vectorizer=TextVectorizer(min_df=1), **TINY).fit(docs)
generator = torch.Generator().manual_seed(0)
q = Normal(torch.randn(16, 4, generator=generator), torch.rand(16, 4, generator=generator) + 0.3)
z = q.loc + q.scale * torch.randn(16, 4, generator=generator)

def terms(prior=Normal(0.0, 1.0), posterior=q):
    return hfvae_objective(torch.zeros(16), [posterior], [prior], [z], 100, ObjectiveWeights(alpha=1, beta=0.1, gamma=4))
"""

PY_CASES = [
    PyCase("a prior with an event shape: `Independent(Normal, 1)` or `MultivariateNormal(0, I)`, the density of `Normal(0, 1)`",
           "[round(float(terms(prior=p).dimwise_kl.sum()), 4) for p in (Normal(0.0, 1.0), Independent(Normal(zeros(4), ones(4)), 1), MultivariateNormal(zeros(4), eye(4)))]",
           r"^\[(\d\.\d+), \1, \1\]$"),
    PyCase("an `Independent` posterior: gamma must still weigh the TC within the group",
           "[round(float(terms(posterior=p).tc_within.sum()), 4) for p in (q, Independent(q, 1))]",
           r"^\[(\d\.\d+), \1\]$"),
    PyCase("a prior whose dimensions are correlated (its density does not factorize)",
           "terms(prior=MultivariateNormal(zeros(4), eye(4) + 0.5))",
           r"^ValueError: the prior of group 0 is a MultivariateNormal with correlated dimensions: its density does not "
           r"factorize over the group's variables"),
    PyCase("`fit_iter` stopped after its first step, then `correlated_topics()`",
           "stopped = TopicModel('prodlda', vectorizer=TextVectorizer(min_df=1), **TINY)\nnext(iter(stopped.fit_iter(docs)))\nstopped.correlated_topics()",
           r"^NotFittedError: this TopicModel has no topic analysis \(its training stopped before the end, .*\): pass "
           r"analysis=model.analyse\(X\), or set model.analysis_ = model.analyse\(X\)$"),
    PyCase("the same stopped model: `save`, `load`, `topics`",
           "stopped = TopicModel('prodlda', vectorizer=TextVectorizer(min_df=1), **TINY)\nnext(iter(stopped.fit_iter(docs)))\n"
           "stopped.save('stopped')\nTopicModel.load('stopped').topics(3).shape",
           r"^\(4, 3\)$"),
    PyCase("a refit stopped early after a complete fit: the earlier fit's correlations",
           "refit = TopicModel('prodlda', vectorizer=TextVectorizer(min_df=1), **TINY).fit(docs)\nnext(iter(refit.fit_iter(docs)))\n"
           "(refit.analysis_, refit.topic_correlation_)",
           r"^\(None, None\)$"),
    PyCase("`topic_correlation(X)` with 400 documents without vocabulary words added",
           "float(np.abs(model.topic_correlation(docs + ['0000'] * 400) - model.topic_correlation(docs)).max())",
           r"^0\.0$"),
    PyCase("`fit` and the caller's global random generators (Python, NumPy, torch)",
           "np.random.seed(1); random.seed(1); torch.manual_seed(1); expected = (np.random.random(), random.random(), torch.rand(1).item())\n"
           "np.random.seed(1); random.seed(1); torch.manual_seed(1); TopicModel('prodlda', vectorizer=TextVectorizer(min_df=1), **TINY).fit(docs)\n"
           "(np.random.random(), random.random(), torch.rand(1).item()) == expected",
           r"^True$"),
    PyCase("`transform` of a document without any vocabulary word",
           "theta = model.transform(['0000 :-)', docs[0]])\nnp.isnan(theta).all(axis=1).tolist()",
           r"^EmptyDocumentWarning: 1 of 2 documents have no word of the model's vocabulary \(rows 0\): their rows are NaN, "
           r"since the model can say nothing about them<br>\[True, False\]$"),
]


def run_python_case(case: PyCase, tmp: Path, namespace: dict) -> str:
    """Run the case's code in a copy of ``namespace`` inside ``tmp``; what the user sees, lines joined by <br>."""
    import os
    import warnings

    lines = case.code.split("\n")
    scope = dict(namespace)
    shown = []
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                exec("\n".join(lines[:-1]), scope)
                result = repr(eval(lines[-1], scope))
            except Exception as error:  # what the user sees is the error
                result = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        shown += [f"{w.category.__name__}: {w.message}" for w in caught if w.category.__module__.startswith("topicvae")]
    finally:
        os.chdir(cwd)
    return "<br>".join([*shown, result])


def python_namespace(tmp: Path) -> dict:
    scope = {"DOCUMENTS": good_documents(), "TINY": TINY}
    exec(PY_SETUP, scope)
    return scope


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    return python_namespace(tmp_path_factory.mktemp("python"))


@pytest.mark.parametrize("case", PY_CASES, ids=[case.what for case in PY_CASES])
def test_python_faults_are_handled_or_named(case, namespace, tmp_path):
    seen = run_python_case(case, tmp_path, namespace)
    assert re.search(case.expect, seen), seen


def render_python_table(tmp_root: Path) -> str:
    namespace = python_namespace(tmp_root)
    rows = ["| fault | code (after the setup in tests/test_bad_input.py) | what the user sees |", "|---|---|---|"]
    for index, case in enumerate(PY_CASES):
        tmp = tmp_root / f"python{index}"
        tmp.mkdir(parents=True)
        code = "<br>".join(f"`{line}`" for line in case.code.split("\n"))
        seen = run_python_case(case, tmp, namespace).replace("|", "\\|")
        rows.append(f"| {case.what} | {code.replace('|', chr(92) + '|')} | {seen} |")
    return "\n".join(rows)


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
    rows = ["| input or fault | command (fit's speed options left out) | exit code | what the user sees | left behind |",
            "|---|---|---|---|---|"]
    for index, case in enumerate(CASES):
        tmp = tmp_root / f"case{index}"
        tmp.mkdir(parents=True)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp)
            arguments = case.make(tmp)
            result = _invoke(case, arguments, patch)
        seen = result.stderr.strip().splitlines()
        if case.shows is not None:
            seen += [f"stdout: {line.strip()}" for line in result.stdout.splitlines() if re.search(case.shows, line)][:1]
        if case.reader_stops_after is not None:
            seen += [f"stdout: {case.reader_stops_after} line, then nothing (the reader stopped); stderr: nothing"]
        message = "<br>".join(seen) or "(trains and saves the model)"
        message = message.replace(str(tmp) + "/", "").replace("|", "\\|")
        if case.left is not None:
            left = case.left(tmp)
        else:
            left = "nothing" if not (tmp / "out").exists() else "the finished model in `out/`"
        shown = _shown(arguments, tmp) + (f" \\| head -{case.reader_stops_after}" if case.reader_stops_after else "")
        rows.append(f"| {case.what.replace('|', chr(92) + '|')} | `{shown}` | {result.exit_code} | {message} | {left} |")
    return "\n".join(rows)


def _documented(start: str, end: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    assert start in text and end in text, f"{DOC} lacks the table's markers {start} {end}"
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_the_documented_table_is_what_the_cli_prints(tmp_path):
    assert _documented(TABLE_START, TABLE_END) == render_table(tmp_path), "regenerate the tables: python tests/test_bad_input.py --write"


def test_the_documented_python_table_is_what_the_library_gives(tmp_path):
    assert _documented(PY_TABLE_START, PY_TABLE_END) == render_python_table(tmp_path), (
        "regenerate the tables: python tests/test_bad_input.py --write"
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        tables = {(TABLE_START, TABLE_END): render_table(Path(folder) / "cli"),
                  (PY_TABLE_START, PY_TABLE_END): render_python_table(Path(folder) / "python")}
    if "--write" in sys.argv:  # put both tables between their markers in docs/reliability.md
        text = DOC.read_text(encoding="utf-8")
        for (start, end), table in tables.items():
            text = text.split(start, 1)[0] + start + "\n" + table + "\n" + end + text.split(end, 1)[1]
        DOC.write_text(text, encoding="utf-8")
    else:
        print("\n\n".join(tables.values()))
