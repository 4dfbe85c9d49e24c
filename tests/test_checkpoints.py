"""Faults during training: checkpoints, resuming, divergence and Ctrl-C (docs/reliability.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import topicvae.training.loop
from topicvae.cli import app
from topicvae.topics.estimator import TopicModel
from topicvae.io.model_files import CHECKPOINT_FILE, ModelFileError, read_checkpoint

from conftest import counts_to_documents, planted_corpus

runner = CliRunner()

#: 120 documents in batches of 40: 3 steps per epoch.
STEPS_PER_EPOCH = 3


@pytest.fixture(scope="module")
def corpus():
    counts, vocabulary, _ = planted_corpus(n_docs=120, n_topics=4, words_per_topic=5, n_noise_words=10, seed=5)
    return counts, vocabulary


def tiny(**kwargs) -> TopicModel:
    params = dict(groups="2x2", epochs=6, batch_size=40, hidden_sizes=(16,), seed=0)
    params.update(kwargs)
    return TopicModel(**params)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def fault_at_step(monkeypatch, step_number: int, fault: str) -> None:
    """Make the objective's ``step_number``-th call (1-based, over the whole run) raise Ctrl-C or give NaN."""
    real = topicvae.training.loop.hfvae_objective
    calls = []

    def objective(log_likelihood, *args, **options):
        calls.append(None)
        if len(calls) == step_number:
            if fault == "interrupt":
                raise KeyboardInterrupt
            log_likelihood = log_likelihood * float("nan")
        return real(log_likelihood, *args, **options)

    monkeypatch.setattr(topicvae.training.loop, "hfvae_objective", objective)


def step_number(epoch: int, step: int) -> int:
    return (epoch - 1) * STEPS_PER_EPOCH + step


# ------------------------------------------------------------------------------------------
# the library
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_resume_after_k_epochs_matches_an_uninterrupted_run(tmp_path, corpus, seed):
    counts, vocabulary = corpus
    reference = tiny(seed=seed).fit(counts, vocabulary=vocabulary)

    interrupted = tiny(seed=seed)
    with pytest.raises(KeyboardInterrupt):
        for progress in interrupted.fit_iter(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, checkpoint_every=1):
            if progress.epoch_done and progress.epoch == 2:
                raise KeyboardInterrupt  # the caller stops: the checkpoint of epoch 2 is on disk already
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint["epoch"] == 2 and len(checkpoint["history"]) == 2

    resumed = tiny(seed=seed).fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    assert_same_state(resumed.model_.state_dict(), reference.model_.state_dict())
    assert resumed.history_ == reference.history_
    assert (resumed.topic_correlation_ == reference.topic_correlation_).all()
    # the run did go on after the checkpoint
    assert not torch.equal(checkpoint["model"]["topic_words.weight"], resumed.model_.state_dict()["topic_words.weight"])
    assert read_checkpoint(tmp_path)["epoch"] == 6  # the last epoch is always written


def _count_kernel_calls(kind: str, monkeypatch) -> list[str]:
    """Switch training to ``kind`` ("compiled" or "native") kernels and record their calls' names."""
    import topicvae.objective.kernels as kernels
    from topicvae.objective import native

    monkeypatch.delenv("TOPICVAE_COMPILE", raising=False)
    calls: list[str] = []
    if kind == "compiled":
        monkeypatch.setenv("TOPICVAE_NATIVE", "0")  # else the native kernels, preferred where built, would run
        monkeypatch.setattr(kernels, "_COMPILED_KERNELS", kernels._CompiledKernels())
        run = kernels._COMPILED_KERNELS.run
        monkeypatch.setattr(kernels._COMPILED_KERNELS, "run", lambda *args: calls.append(args[0]) or run(*args))
        return calls
    monkeypatch.delenv("TOPICVAE_NATIVE", raising=False)
    module = native.native_module()
    if module is None:
        pytest.skip(f"the native kernels cannot be built on this machine ({native._NATIVE.failure})")

    class Counting:
        def forward(self, *args):
            calls.append("forward")
            return module.forward(*args)

        def backward(self, *args):
            calls.append("backward")
            return module.backward(*args)

    monkeypatch.setattr(kernels, "native_module", Counting)
    return calls


@pytest.mark.parametrize("kind", ["compiled", "native"])
def test_resume_takes_the_uninterrupted_runs_kernels_and_matches_it(tmp_path, corpus, monkeypatch, kind):
    # Training takes the compiled or native kernels when the whole run is long enough. The
    # thresholds are lowered so that 6 epochs qualify and the 4 left after a resume would not:
    # the resumed run must still take them, or its arithmetic (and its bits) would differ.
    import topicvae.objective.marginals as marginals

    calls = _count_kernel_calls(kind, monkeypatch)
    per_step = 40 * 40 * 4  # B^2 x variables of tiny(): batches of 40, groups 2x2
    monkeypatch.setattr(marginals, "COMPILE_MIN_ELEMENTS", per_step)
    monkeypatch.setattr(marginals, "COMPILE_MIN_TOTAL_ELEMENTS", per_step * STEPS_PER_EPOCH * 5)
    counts, vocabulary = corpus
    reference = tiny().fit(counts, vocabulary=vocabulary)
    assert calls.count("backward") == 6 * STEPS_PER_EPOCH  # at every step, one block each

    interrupted = tiny()
    with pytest.raises(KeyboardInterrupt):
        for progress in interrupted.fit_iter(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path):
            if progress.epoch_done and progress.epoch == 2:
                raise KeyboardInterrupt
    calls.clear()
    resumed = tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    assert calls.count("backward") == 4 * STEPS_PER_EPOCH
    assert_same_state(resumed.model_.state_dict(), reference.model_.state_dict())
    assert resumed.history_ == reference.history_


@pytest.mark.parametrize("how", ["Ctrl-C inside a step", "the caller closes the generator"])
def test_stopping_mid_epoch_rolls_back_to_the_last_completed_epoch(tmp_path, corpus, monkeypatch, how):
    counts, vocabulary = corpus
    reference = tiny().fit(counts, vocabulary=vocabulary)
    # every 3 epochs: epoch 3 is written when due, epoch 4 only because training stops in epoch 5
    steps = tiny().fit_iter(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, checkpoint_every=3)
    if how == "Ctrl-C inside a step":
        with monkeypatch.context() as patch:
            fault_at_step(patch, step_number(5, 2), "interrupt")
            with pytest.raises(KeyboardInterrupt):
                for _ in steps:
                    pass
    else:
        for progress in steps:
            if (progress.epoch, progress.step) == (5, 2):
                break
        steps.close()
    assert read_checkpoint(tmp_path)["epoch"] == 4

    resumed = tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    assert_same_state(resumed.model_.state_dict(), reference.model_.state_dict())
    assert resumed.history_ == reference.history_


def test_a_failed_write_leaves_the_previous_checkpoint_whole_and_no_temporary_file(tmp_path, corpus, monkeypatch):
    counts, vocabulary = corpus
    real_save = torch.save

    def save_that_fails_from_epoch_3(payload, handle, *args, **kwargs):
        if payload["epoch"] >= 3:
            handle.write(b"PK\x03\x04 the first bytes of a checkpoint")
            raise OSError(28, "No space left on device")
        return real_save(payload, handle, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_that_fails_from_epoch_3)
        message = r"could not write the checkpoint of epoch 3 to .* \(\[Errno 28\] No space left on device; .* MiB free on that disk\); the checkpoint of epoch 2 there is intact"
        with pytest.raises(OSError, match=message):
            tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]
    assert read_checkpoint(tmp_path)["epoch"] == 2

    resumed = tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    assert_same_state(resumed.model_.state_dict(), tiny().fit(counts, vocabulary=vocabulary).model_.state_dict())


def test_a_nan_loss_names_epoch_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    counts, vocabulary = corpus
    with monkeypatch.context() as patch:
        fault_at_step(patch, step_number(4, 2), "nan")
        with pytest.raises(FloatingPointError, match=r"^training diverged at epoch 4, step 2: the loss term is nan; lower"):
            tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, checkpoint_every=2)
    good = read_checkpoint(tmp_path)
    assert good["epoch"] == 3  # epoch 3 was pending (every 2) and is written on the way out; epoch 4 never is
    assert all(torch.isfinite(t).all() for t in good["model"].values() if t.is_floating_point())

    # the fault was transient (on CPU the same options diverge again): resuming reaches the uninterrupted model
    resumed = tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    assert_same_state(resumed.model_.state_dict(), tiny().fit(counts, vocabulary=vocabulary).model_.state_dict())


def test_weights_that_turn_non_finite_after_a_finite_loss_are_never_checkpointed(tmp_path, corpus, monkeypatch):
    counts, vocabulary = corpus
    real_step, calls = torch.optim.Adam.step, []

    def step_that_breaks_a_weight(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls.append(None)
        if len(calls) == step_number(2, 3):  # the last step of epoch 2: no later loss would show it
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step_that_breaks_a_weight)
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 3: the parameter \S+ is no longer finite"):
        tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path)
    assert read_checkpoint(tmp_path)["epoch"] == 1


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(lr=1e-3), ValueError, r"another run: lr is 0\.002 in the checkpoint and 0\.001 now; resume with the same"),
        (dict(seed=1), ValueError, r"another run: seed is 0 in the checkpoint and 1 now"),
        (dict(groups="2x3"), ValueError, r"another run: groups is 'g0=2,g1=2' in the checkpoint and 'g0=3,g1=3' now"),
        (dict(documents=slice(1, None)), ValueError, r"another run: corpus\.documents is 120 in the checkpoint and 119 now"),
        (dict(documents="one count changed"), ValueError, r"another run: corpus\.sha256 is '[0-9a-f]{64}' in the checkpoint"),
        (dict(resume=False), FileExistsError, r"holds the checkpoint of an earlier run: resume it"),
        (dict(checkpoint_dir="elsewhere"), FileNotFoundError, r"there is no checkpoint at .*elsewhere"),
    ],
)
def test_resuming_another_run_is_refused_with_one_line(tmp_path, corpus, change, error, match):
    counts, vocabulary = corpus
    tiny(epochs=2).fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path / "run")
    before = (tmp_path / "run" / CHECKPOINT_FILE).read_bytes()
    change = dict(change)
    documents = change.pop("documents", None)
    if isinstance(documents, slice):
        counts = counts[documents]
    elif documents is not None:
        counts = counts.copy()
        counts.data[0] += 1
    fit_args = dict(checkpoint_dir=tmp_path / change.pop("checkpoint_dir", "run"), resume=change.pop("resume", True))
    with pytest.raises(error, match=match) as raised:
        tiny(epochs=2, **change).fit(counts, vocabulary=vocabulary, **fit_args)
    assert "\n" not in str(raised.value)
    assert (tmp_path / "run" / CHECKPOINT_FILE).read_bytes() == before


@pytest.mark.parametrize(
    "fit_args, match",
    [
        (dict(checkpoint_every=0), r"checkpoint_every=0 is invalid"),
        (dict(checkpoint_every=True), r"checkpoint_every=True is invalid"),
        (dict(resume=True), r"resume=True needs checkpoint_dir"),
    ],
)
def test_bad_checkpoint_arguments_are_refused(corpus, fit_args, match):
    counts, _ = corpus
    with pytest.raises(ValueError, match=match):
        tiny().fit(counts, **fit_args)


def test_the_checkpoint_is_plain_data_that_loads_with_weights_only(tmp_path, corpus):
    counts, vocabulary = corpus
    model = tiny(epochs=2).fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path)
    checkpoint = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert {"format_version", "run", "config", "vocabulary", "epoch", "epochs", "history", "model", "optimizer", "rng"} <= set(checkpoint)
    assert (checkpoint["epoch"], checkpoint["epochs"], checkpoint["vocabulary"]) == (2, 2, vocabulary)
    assert checkpoint["history"] == model.history_
    assert_same_state(checkpoint["model"], model.model_.state_dict())
    assert set(checkpoint["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert checkpoint["rng"]["shuffle"].dtype == checkpoint["rng"]["torch"].dtype == torch.uint8
    # the run's own streams only: NumPy's and Python's global generators are the caller's, never the run's
    assert set(checkpoint["rng"]) == {"shuffle", "torch"}
    assert checkpoint["config"]["groups"] == "g0=2,g1=2" and checkpoint["run"]["corpus"]["documents"] == 120


@pytest.mark.parametrize("content", ["a pickled object", "a truncated file", "a newer format"])
def test_a_checkpoint_that_is_damaged_pickled_or_newer_is_refused(tmp_path, corpus, content):
    counts, vocabulary = corpus
    path = tmp_path / CHECKPOINT_FILE
    if content == "a pickled object":
        torch.save({"format_version": 1, "payload": Path("pickled object")}, path)
        match = r"checkpoint.pt holds pickled Python objects \(UnpicklingError\), which topicvae never loads"
    elif content == "a truncated file":
        tiny(epochs=1).fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path)
        path.write_bytes(path.read_bytes()[:1000])
        match = r"checkpoint.pt is damaged or incomplete \(1000 bytes; not a whole torch file\): delete .* to start the run again$"
    else:
        torch.save({"format_version": 99}, path)
        match = r"has checkpoint format 99, this topicvae reads up to 1: resume it with the topicvae that wrote it"
    with pytest.raises(ModelFileError, match=match):
        tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------
#: 120 documents in batches of 60 (2 steps per epoch); every word is kept.
CLI_OPTIONS = ["--groups", "2x2", "--batch-size", "60", "--min-df", "1", "--max-df", "1.0", "--stop-words", "none", "--no-progress"]
CLI_STEPS_PER_EPOCH = 2


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, corpus):
    counts, vocabulary = corpus
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n".join(counts_to_documents(counts, vocabulary)) + "\n", encoding="utf-8")
    return path


def fit_command(corpus_file: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["fit", str(corpus_file), *CLI_OPTIONS, "--epochs", str(epochs), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus_file):
    """The weights of uninterrupted CLI runs, by number of epochs."""
    runs = {}

    def weights(epochs: int) -> dict[str, torch.Tensor]:
        if epochs not in runs:
            out = tmp_path_factory.mktemp("uninterrupted") / "run"
            result = runner.invoke(app, fit_command(corpus_file, out, epochs))
            assert result.exit_code == 0, result.output
            assert not (out / "checkpoint").exists()  # the saved model supersedes it
            runs[epochs] = torch.load(out / "weights.pt", weights_only=True)
        return runs[epochs]

    return weights


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_model(tmp_path, corpus_file, uninterrupted):
    epochs, out = 30, tmp_path / "run"
    checkpoint = out / "checkpoint" / CHECKPOINT_FILE
    # the same number of threads as this process, so that both sides compute alike
    environment = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "topicvae.cli", *fit_command(corpus_file, out, epochs, "--checkpoint-every", "1")]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    killed_at = read_checkpoint(out / "checkpoint")["epoch"]
    assert 1 <= killed_at < epochs and not (out / "weights.pt").exists()

    result = runner.invoke(app, fit_command(corpus_file, out, epochs, "--resume"))
    assert result.exit_code == 0, result.output
    assert f"resumed from epoch {killed_at} of {epochs}, then {epochs - killed_at} epochs in" in result.output
    assert_same_state(torch.load(out / "weights.pt", weights_only=True), uninterrupted(epochs))
    assert not (out / "checkpoint").exists()


def test_cli_nan_names_epoch_and_term_and_where_the_last_good_checkpoint_is(tmp_path, corpus_file, uninterrupted, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        fault_at_step(patch, (3 - 1) * CLI_STEPS_PER_EPOCH + 2, "nan")
        result = runner.invoke(app, fit_command(corpus_file, out, 5))
    assert result.exit_code == 1
    assert result.stderr == (
        "error: training diverged at epoch 3, step 2: the loss term is nan; lower the learning rate (--lr) or the weights; "
        f"the last good checkpoint (epoch 2 of 5) is kept in {out / 'checkpoint'}: "
        "delete it to start again with other options, or rerun with --resume to continue it unchanged\n"
    )
    assert not (out / "weights.pt").exists()

    result = runner.invoke(app, fit_command(corpus_file, out, 5, "--resume"))
    assert result.exit_code == 0, result.output
    assert_same_state(torch.load(out / "weights.pt", weights_only=True), uninterrupted(5))


@pytest.mark.parametrize("where", ["in a training step", "in the progress bar"])
def test_cli_ctrl_c_checkpoints_the_last_completed_epoch_and_exits_130(tmp_path, corpus_file, uninterrupted, monkeypatch, where):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        if where == "in a training step":
            fault_at_step(patch, (4 - 1) * CLI_STEPS_PER_EPOCH + 1, "interrupt")
        else:
            import tqdm

            real_update, updates = tqdm.tqdm.update, []

            def update(self, n=1):
                updates.append(None)
                if len(updates) == (4 - 1) * CLI_STEPS_PER_EPOCH + 1:
                    raise KeyboardInterrupt
                return real_update(self, n)

            patch.setattr(tqdm.tqdm, "update", update)
        # every 2 epochs: epoch 3 is written only because of the interruption
        result = runner.invoke(app, fit_command(corpus_file, out, 5, "--checkpoint-every", "2"))
    assert result.exit_code == 130
    assert result.stderr == (
        f"\ninterrupted: the checkpoint of the last completed epoch (epoch 3 of 5) is kept in {out / 'checkpoint'}: "
        "rerun the same command with --resume to continue from it\n"
    )
    assert read_checkpoint(out / "checkpoint")["epoch"] == 3 and not (out / "weights.pt").exists()

    result = runner.invoke(app, fit_command(corpus_file, out, 5, "--checkpoint-every", "2", "--resume"))
    assert result.exit_code == 0, result.output
    assert_same_state(torch.load(out / "weights.pt", weights_only=True), uninterrupted(5))


def test_cli_refuses_to_resume_with_other_options_or_without_a_checkpoint(tmp_path, corpus_file, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        fault_at_step(patch, 2 * CLI_STEPS_PER_EPOCH + 1, "interrupt")
        assert runner.invoke(app, fit_command(corpus_file, out, 5)).exit_code == 130
    before = (out / "checkpoint" / CHECKPOINT_FILE).read_bytes()
    for extra, message in [
        (["--seed", "1", "--resume"], f"error: the checkpoint in {out / 'checkpoint'} was written for another run: seed is 0 in the checkpoint and 1 now; "),
        (["--min-df", "2", "--resume"], "vectorizer.min_df is 1 in the checkpoint and 2 now"),
        ([], f"error: {out / 'checkpoint' / CHECKPOINT_FILE} holds the checkpoint of an earlier run: resume it (--resume"),
    ]:
        result = runner.invoke(app, fit_command(corpus_file, out, 5, *extra))
        assert result.exit_code == 1, result.output
        assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert (out / "checkpoint" / CHECKPOINT_FILE).read_bytes() == before

    result = runner.invoke(app, fit_command(corpus_file, tmp_path / "fresh", 5, "--resume"))
    assert result.exit_code == 1 and "error: there is no checkpoint at" in result.stderr
    result = runner.invoke(app, ["fit", str(corpus_file), *CLI_OPTIONS, "--resume"])
    assert result.exit_code == 1 and "error: --resume needs --out DIR" in result.stderr


def test_a_run_without_warmup_is_described_as_before_the_option_existed_and_a_warmup_is_checked(tmp_path, corpus):
    # checkpoints written before gamma_warmup existed have no such key: a run without a warm-up
    # must match them, and a run with one must be told what differs
    counts, vocabulary = corpus
    with pytest.raises(KeyboardInterrupt):
        for progress in tiny(gamma_warmup=0.0).fit_iter(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, checkpoint_every=1):
            if progress.epoch_done and progress.epoch == 2:
                raise KeyboardInterrupt
    assert "gamma_warmup" not in read_checkpoint(tmp_path)["run"]
    with pytest.raises(ValueError, match=r"gamma_warmup is not set in the checkpoint and is 0\.5 now"):
        tiny().fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)  # ProdLDA's default warm-up
    resumed = tiny(gamma_warmup=0.0).fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    assert len(resumed.history_) == 6


def test_dropout_on_theta_like_the_encoders_is_described_as_before_the_option_existed(tmp_path, corpus):
    # checkpoints written before topic_dropout existed have no such key: dropout on theta equal
    # to the encoder's (the only kind then) must match them, and another must be told apart
    counts, vocabulary = corpus
    with pytest.raises(KeyboardInterrupt):
        for progress in tiny(gamma_warmup=0.0).fit_iter(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, checkpoint_every=1):
            if progress.epoch_done and progress.epoch == 2:
                raise KeyboardInterrupt
    assert "topic_dropout" not in read_checkpoint(tmp_path)["run"]
    with pytest.raises(ValueError, match=r"topic_dropout is not set in the checkpoint and is 0\.0 now"):
        tiny(gamma_warmup=0.0, topic_dropout=0.0).fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    resumed = tiny(gamma_warmup=0.0, topic_dropout=0.2).fit(counts, vocabulary=vocabulary, checkpoint_dir=tmp_path, resume=True)
    assert len(resumed.history_) == 6
