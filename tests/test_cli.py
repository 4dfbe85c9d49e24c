"""The command line, driven with typer's CliRunner."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from topicvae.cli import app

runner = CliRunner()

FAST = ["--epochs", "2", "--batch-size", "50", "--min-df", "2", "--stop-words", "none", "--no-progress"]


def test_fit_prints_topics_and_pairs_and_writes_report(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    result = runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--beta", "0.1", "--gamma", "4", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "group g0 (3 Gaussian topics, " in result.output
    assert "group g1 (3 Gaussian topics, " in result.output
    assert "associated topics across groups (partial correlation under q(z)" in result.output
    assert "s per epoch" in result.output
    assert "over 400 training documents" in result.output and "topics active: " in result.output
    assert "can be slightly negative" in result.output
    report = json.loads((out / "report.json").read_text())
    information = report["information"]
    assert information["dataset_size"] == 400 and information["threshold"] is None
    assert information["rule"].startswith("an estimate within two standard errors of 0 is pruned")
    assert set(information["per_topic"]) == {f"g{d}:{k}" for d in range(2) for k in range(3)}
    assert sorted(information["active_topics"] + information["pruned_topics"]) == sorted(information["per_topic"])
    if information["pruned_topics"]:  # every pruned topic lies below every active one
        assert max(information["per_topic"][t] for t in information["pruned_topics"]) < min(
            information["per_topic"][t] for t in information["active_topics"]
        )
    assert [t["mutual_information"] for t in report["topics"]] == [information["per_topic"][t["label"]] for t in report["topics"]]
    for topic in information["active_topics"]:
        assert f"{topic}  MI {information['per_topic'][topic]:.3f}" in result.output
    assert len(report["topics"]) == 6
    assert {"group", "index", "words", "label"} <= set(report["topics"][0])
    active = len(information["active_topics"])
    assert len(report["correlations"]["topics"]) == active
    assert len(report["correlated_pairs"]) <= 9  # at most 3 x 3 pairs of active topics across the two groups
    assert {"topic_a", "topic_b", "partial", "correlation", "null_quantile", "significant", "kind", "shared_words"} == set(
        report["correlated_pairs"][0]
    )
    assert [row["epoch"] for row in report["history"]] == [1, 2]
    for term in ("reconstruction", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo", "loss"):
        assert term in report["history"][0]
    assert report["weights"] == {"alpha": 1.0, "beta": 0.1, "gamma": 4.0, "delta": 1.0}

    shown = runner.invoke(app, ["topics", str(out), "--top-words", "4"])
    assert shown.exit_code == 0, shown.output
    assert "g1:2" in shown.output

    table_path = tmp_path / "theta.csv"
    transformed = runner.invoke(app, ["transform", str(out), str(corpus), "--out", str(table_path)])
    assert transformed.exit_code == 0, transformed.output
    table = pd.read_csv(table_path, index_col="document")
    assert list(table.columns) == ["g0:0", "g0:1", "g0:2", "g1:0", "g1:1", "g1:2", "vocabulary_words"]
    assert len(table) == 400


@pytest.mark.parametrize("seed", [0, 3])
def test_the_same_seed_gives_the_same_report_and_weights(tmp_path, planted_docs_file, seed):
    # report.json holds results only (timings go to run.json), so on CPU two runs with one
    # seed write the same bytes; another seed must change it, or the test could not fail.
    import torch

    corpus, _ = planted_docs_file

    def fit(name, run_seed):
        out = tmp_path / name
        result = runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--seed", str(run_seed), "--out", str(out), *FAST])
        assert result.exit_code == 0, result.output
        return out

    first, second, other = fit("first", seed), fit("second", seed), fit("other", seed + 1)
    assert (first / "report.json").read_bytes() == (second / "report.json").read_bytes()
    assert (first / "report.json").read_bytes() != (other / "report.json").read_bytes()
    weights = [torch.load(out / "weights.pt", weights_only=True) for out in (first, second)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    facts = json.loads((first / "run.json").read_text())
    assert set(facts) == {"training_seconds", "seconds_per_epoch", "epochs_trained", "resumed_from_epoch", "processes", "backend"}
    assert facts["epochs_trained"] == 2 and facts["resumed_from_epoch"] == 0 and facts["training_seconds"] > 0


def test_fit_nvdm_with_a_concrete_group(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    result = runner.invoke(app, ["fit", str(corpus), "--model", "nvdm", "--groups", "4,3c", *FAST])
    assert result.exit_code == 0, result.output
    assert "group g1 (3 Concrete categories, I(x; z) = " in result.output
    assert "of 5 topics active" in result.output  # 4 Gaussian topics and the Concrete group


@pytest.mark.parametrize(
    "args, message",
    [
        (["--groups", "2x"], "cannot read item '2x'"),
        (["--epochs", "0"], "epochs=0 is invalid"),
        (["--beta", "-1"], "beta=-1.0 is invalid"),
        (["--lr", "0"], "lr=0.0 is invalid"),
        (["--objective", "vae", "--gamma", "3"], "does not take gamma"),
        (["--mi-threshold", "-1"], "mi_threshold=-1.0 is invalid"),
        (["--mi-documents", "1"], "--mi-documents 1 is invalid"),
    ],
)
def test_bad_options_give_one_line_error_and_write_nothing(tmp_path, planted_docs_file, args, message):
    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    base = ["fit", str(corpus), "--out", str(out), "--no-progress", "--min-df", "2", "--stop-words", "none"]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert not out.exists()


def test_missing_corpus_and_missing_model_dir(tmp_path):
    result = runner.invoke(app, ["fit", str(tmp_path / "absent.txt"), "--no-progress"])
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["topics", str(tmp_path)])
    assert result.exit_code == 1 and "is not a saved topicvae model" in result.output


def test_debug_flag_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "topics", str(tmp_path)])
    assert result.exit_code != 0
    assert result.exception is not None


def test_data_20newsgroups_from_a_local_copy(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    records = [
        {"id": "sci.space/1", "label": "sci.space", "text": "From: a@b\nSubject: orbit\n\nThe shuttle\nreached orbit today.\n"},
        {"id": "rec.autos/2", "label": "rec.autos", "text": "From: c@d\nSubject: cars\n\nMy engine\nneeds oil.\n"},
        {"id": "rec.autos/3", "label": "rec.autos", "text": "From: e@f\nSubject: empty\n\n> only a quote\n"},
    ]
    with gzip.open(source / "20news-bydate-train.jsonl.gz", "wt", encoding="ascii") as f:
        for record in sorted(records, key=lambda r: r["label"]):
            f.write(json.dumps(record) + "\n")
    out, labels = tmp_path / "train.txt", tmp_path / "train.labels"
    result = runner.invoke(
        app, ["data", "20newsgroups", "--subset", "train", "--source", str(source), "--out", str(out), "--labels", str(labels)]
    )
    assert result.exit_code == 0, result.output
    assert "1 left empty by stripping" in result.output
    assert out.read_text().splitlines() == ["My engine needs oil.", "The shuttle reached orbit today."]
    assert labels.read_text().splitlines() == ["rec.autos", "sci.space"]


def test_evaluate_prints_every_metric_and_writes_json_and_plots(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    fitted = runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST])
    assert fitted.exit_code == 0, fitted.output
    shown = runner.invoke(app, ["evaluate", str(out), "--mi-threshold", "0.05"])
    assert shown.exit_code == 0, shown.output
    for text in ("NPMI, whole documents, top 10", "NPMI, sliding window 10", "C_V (gensim), window 110", "UMass (gensim), whole documents", "topic diversity", "perplexity, corpus-level", "I(x; z) =", "topics active: I(x; z_k) >= 0.05 nats", "partial=", "null="):
        assert text in shown.output
    plots = tmp_path / "plots"
    result = runner.invoke(app, ["evaluate", str(out), "--corpus", str(corpus), "--json", "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= {"coherence", "diversity", "perplexity", "information", "correlations", "plots"}
    assert set(report["coherence"]) == {"npmi_document", "npmi_window", "c_v", "u_mass"}
    assert len(report["coherence"]["c_v"]["per_topic"]) == 6
    assert len(report["information"]["per_topic"]) == 6
    assert report["information"]["mutual_information"] <= __import__("math").log(400) + 1e-6
    active = len(report["information"]["active_topics"])
    assert len(report["correlations"]["topics"]) == active
    assert len(report["correlations"]["strongest"]) <= 9
    assert all(len(row) == active for row in report["correlations"]["null_quantile"])
    assert (plots / "mutual_information.png").stat().st_size > 0 and (plots / "correlation.png").stat().st_size > 0


def test_evaluate_without_a_recorded_corpus_says_what_to_pass(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    assert runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST]).exit_code == 0
    (out / "report.json").unlink()
    result = runner.invoke(app, ["evaluate", str(out)])
    assert result.exit_code == 1 and "pass --corpus FILE" in result.output


def test_fit_streams_the_corpus_into_shards_and_reuses_them(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    shards = tmp_path / "shards"
    arguments = ["fit", str(corpus), "--groups", "2x3", "--stream", "--shard-dir", str(shards), *FAST]
    first = runner.invoke(app, [*arguments, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "on 400 documents" in first.output and "group g1 (3 Gaussian topics, " in first.output
    manifest = json.loads((shards / "rank-0-of-1" / "manifest.json").read_text())
    assert manifest["documents"] == 400 and manifest["world_size"] == 1
    # the shards are kept and read again: the same data, so the same model
    second = runner.invoke(app, [*arguments, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert (tmp_path / "a" / "weights.pt").read_bytes() == (tmp_path / "b" / "weights.pt").read_bytes()
    assert json.loads((tmp_path / "a" / "run.json").read_text())["processes"] == 1


def test_fit_under_torchrun_trains_on_two_processes_and_speaks_once(tmp_path, planted_docs_file):
    import os
    import subprocess
    import sys

    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "topicvae", "fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("data-parallel over 2 processes (gloo)") == 1
    assert result.stdout.count("group g0 (3 Gaussian topics, ") == 1  # rank 0 alone prints
    assert result.stdout.count("saved the model") == 1
    assert json.loads((out / "run.json").read_text())["processes"] == 2
    assert json.loads((out / "report.json").read_text())["n_documents"] == 400
    shown = runner.invoke(app, ["topics", str(out)])
    assert shown.exit_code == 0, shown.output


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_commands_other_than_fit_refuse_a_torchrun_launch(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it in every process
    result = runner.invoke(app, ["topics", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: 'topicvae topics' runs in one process: only 'fit' trains data-parallel under torchrun; run it without torchrun"
    )


# ------------------------------------------------------------------------------------------
# a reader that stops reading (| head): a real pipe, closed by a real process
# ------------------------------------------------------------------------------------------
def _through_head(arguments: list[str], cwd) -> tuple[int, str, str]:
    """Run ``python -m topicvae ARGS | head -1``; return topicvae's exit status, its stderr and head's output."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    producer = subprocess.Popen([sys.executable, "-m", "topicvae", *arguments], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-1"], stdin=producer.stdout, capture_output=True, text=True, timeout=300)
    producer.stdout.close()  # only head reads it now; once head exits, writes fail with EPIPE
    stderr = producer.stderr.read().decode()
    return producer.wait(timeout=300), stderr, head.stdout


def test_a_closed_output_pipe_loses_nothing_and_says_nothing(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    status, stderr, first = _through_head(["fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST], tmp_path)
    assert (status, stderr) == (0, ""), stderr
    assert first.startswith("prodlda with groups g0=3,g1=3 on 400 documents")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "report.json", "run.json", "vocabulary.txt", "weights.pt"]
    assert json.loads((out / "report.json").read_text())["n_documents"] == 400
    status, stderr, first = _through_head(["topics", str(out), "--top-words", "3"], tmp_path)
    assert (status, stderr) == (0, "") and first.startswith("prodlda with groups g0=3,g1=3, ")


def test_transform_marks_documents_without_vocabulary_words(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    assert runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST]).exit_code == 0
    documents = corpus.read_text(encoding="utf-8").splitlines()
    new = tmp_path / "new.txt"
    new.write_text("\n".join([documents[0], "nothing here is known", "12:30 ;-)", documents[1]]) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["transform", str(out), str(new), "--out", str(tmp_path / "theta.csv")])
    assert result.exit_code == 0, result.output
    assert "note: 2 of 4 documents have no word of the model's vocabulary" in result.stderr
    table = pd.read_csv(tmp_path / "theta.csv", index_col="document")
    from topicvae import TopicModel

    known = TopicModel.load(out).vectorizer_.transform(documents[:2]).sum(axis=1).A1.astype(int).tolist()
    assert table["vocabulary_words"].tolist() == [known[0], 0, 0, known[1]] and min(known) > 0
    topic_columns = table.drop(columns="vocabulary_words")
    assert topic_columns.loc[[1, 2]].isna().all().all() and topic_columns.loc[[0, 3]].notna().all().all()
    assert topic_columns.loc[[0, 3]].sum(axis=1).tolist() == pytest.approx([1.0, 1.0])


def test_evaluate_scores_every_topic_the_reference_can_score(tmp_path, planted_docs_file):
    corpus, topics = planted_docs_file
    out = tmp_path / "run"
    assert runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST]).exit_code == 0
    # a held-out reference that lacks every word of the first planted topic
    absent = set(topics[0])
    reference = tmp_path / "reference.txt"
    reference.write_text(
        "\n".join(" ".join(w for w in line.split() if w not in absent) for line in corpus.read_text().splitlines()) + "\n"
    )
    result = runner.invoke(app, ["evaluate", str(out), "--reference", str(reference), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for measure in ("npmi_document", "npmi_window", "c_v", "u_mass"):
        entry = report["coherence"][measure]
        named = {word for words in entry["absent_words"].values() for word in words}
        assert named and named <= absent
        scored = [value for value in entry["per_topic"] if value is not None]
        assert len(scored) + len(entry["unscored_topics"]) == 6 and scored
        assert entry["mean"] == pytest.approx(sum(scored) / len(scored))
    assert report["perplexity"]["corpus_level"]["value"] > 0 and report["diversity"]["value"] > 0


def test_a_closed_stderr_stops_the_progress_bar_not_the_fit(tmp_path, planted_docs_file):
    """`fit ... 2>&1 | head -c 5`: the bar's reader goes away; the model is saved all the same."""
    import os
    import subprocess
    import sys

    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    options = [option for option in FAST if option != "--no-progress"]
    fit = subprocess.Popen(
        [sys.executable, "-m", "topicvae", "fit", str(corpus), "--groups", "2x3", "--out", str(out), *options],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    head = subprocess.run(["head", "-c", "5"], stdin=fit.stdout, capture_output=True, timeout=300)
    fit.stdout.close()
    assert fit.wait(timeout=300) == 0 and len(head.stdout) == 5
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "report.json", "run.json", "vocabulary.txt", "weights.pt"]


def test_transform_writes_to_stdout_pipes_and_refuses_a_directory(tmp_path, planted_docs_file, monkeypatch):
    import os

    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    assert runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST]).exit_code == 0
    to_stdout = runner.invoke(app, ["transform", str(out), str(corpus), "--out", "-"])
    assert to_stdout.exit_code == 0, to_stdout.output
    lines = to_stdout.stdout.splitlines()
    assert lines[0] == "document,g0:0,g0:1,g0:2,g1:0,g1:1,g1:2,vocabulary_words" and len(lines) == 401
    assert "wrote 400 documents x 6 topics to stdout" in to_stdout.stderr
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "-").exists()
    (tmp_path / "adir").mkdir()
    refused = runner.invoke(app, ["transform", str(out), str(corpus), "--out", "adir"])
    assert refused.exit_code == 1 and "error: --out adir is a directory: give the path of the CSV file to write" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "planted.txt", "run"]  # no temporary file left
    # a named pipe stays a pipe: the table goes through it, not over it
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    import threading

    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    through = runner.invoke(app, ["transform", str(out), str(corpus), "--out", str(fifo)])
    reader.join(timeout=60)
    assert through.exit_code == 0 and fifo.is_fifo() and len(received[0].splitlines()) == 401


def test_damaged_vocabulary_and_stop_word_files_are_named(tmp_path, planted_docs_file):
    corpus, _ = planted_docs_file
    out = tmp_path / "run"
    assert runner.invoke(app, ["fit", str(corpus), "--groups", "2x3", "--out", str(out), *FAST]).exit_code == 0
    vocabulary = out / "vocabulary.txt"
    words = vocabulary.read_bytes()
    for content, message in ((b"", "is empty (an interrupted copy or a full disk)"), (b"\xff\xfeword\n", "is damaged (not UTF-8 text")):
        vocabulary.write_bytes(content)
        result = runner.invoke(app, ["topics", str(out)])
        assert result.exit_code == 1 and f"run/vocabulary.txt {message}" in result.stderr, result.stderr
    vocabulary.write_bytes(words)
    for size in (1, 2):  # the first bytes of a zip archive: damaged, not "pickled objects"
        weights = out / "weights.pt"
        weights.write_bytes(b"PK"[:size])
        result = runner.invoke(app, ["topics", str(out)])
        assert f"weights.pt is damaged or incomplete ({size} byte" in result.stderr and "pickled" not in result.stderr
    result = runner.invoke(app, ["fit", str(corpus), *FAST, "--stop-words", str(tmp_path / "nofile.txt")])
    assert result.exit_code == 1 and "nofile.txt is no file: give 'english', 'none', or a file of stop words" in result.stderr
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoint").mkdir(parents=True)
    (unfinished / "checkpoint" / "checkpoint.pt").write_bytes(b"")
    result = runner.invoke(app, ["topics", str(unfinished)])
    assert result.exit_code == 1 and "holds the checkpoint of an unfinished run, not a saved model" in result.stderr
