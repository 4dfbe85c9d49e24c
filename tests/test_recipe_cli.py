"""`topicvae recipe` and `topicvae sweep` end to end on tiny data the tests write (IDX files) or render (dSprites)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from topicvae.cli import app
from topicvae.images.estimator import ImageModel
from topicvae.images.recipes import parse_exclusion

runner = CliRunner()


def test_recipe_mnist_trains_scores_saves_and_plots(tmp_path, tiny_mnist):
    out = tmp_path / "run"
    result = runner.invoke(app, ["recipe", "mnist", "--data", str(tiny_mnist), "--epochs", "2", "--batch-size", "50",
                                 "--test-size", "100", "--out", str(out), "--no-progress", "--exclude", "label=7,ink>=0.5"])
    assert result.exit_code == 0, result.output
    assert "mnist: hfvae g0=10,g1=10c (mlp), alpha=1, beta=4, gamma=3, delta=1" in result.output
    assert "Concrete group against the class: accuracy" in result.output
    assert "never trained on label=7,ink>=0.5" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == 100
    assert len(metrics["information"]["per_topic"]) == 11  # ten Gaussian dimensions and the Concrete variable
    assert set(metrics["labels"]) >= {"concrete_accuracy", "concrete", "gap", "normalized_gap", "per_gaussian_dimension"}
    assert 0.0 <= metrics["labels"]["concrete_accuracy"] <= 1.0
    # MNIST's recipe gives the class IMSAT's encoder and terms unless told otherwise
    assert metrics["training"]["class_encoder"] == "separate" and metrics["training"]["class_levers"]["imsat"] == 1000.0
    traversals, pruned = metrics["traversals"], set(metrics["information"]["pruned_gaussian_dimensions"])
    assert traversals["dimensions"] == [f"g0:{i}" for i in range(10) if f"g0:{i}" not in pruned]  # the active style only
    assert 0.0 <= traversals["judge_accuracy"] <= 1.0
    if traversals["dimensions"]:
        assert 0.0 <= traversals["kept"] <= 1.0 and set(traversals["per_value"]) == {"-3", "-2", "-1", "+0", "+1", "+2", "+3"}
        assert "style traversals keep the class in" in result.output
    else:  # two epochs on 300 images can prune every style dimension: nothing to traverse
        assert math.isnan(traversals["kept"]) and "style traversals" not in result.output
    generalization = metrics["generalization"]
    assert generalization["left_out_images"] > 0 and generalization["left_out_of_training"] > 0
    assert metrics["training"]["images"] == 300 - generalization["left_out_of_training"]
    for name in ("traversals.png", "traversals_g1.png", "reconstructions.png", "mutual_information.png", "generalization.png"):
        assert (out / "plots" / name).stat().st_size > 0
    loaded = ImageModel.load(out)
    assert loaded.groups_.num_columns == 20 and loaded.image_shape_ == (1, 28, 28)


@pytest.mark.slow
def test_recipe_dsprites_reports_disentanglement_metrics(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["recipe", "dsprites", "--objective", "beta-vae", "--train-size", "256", "--test-size", "128",
                                 "--epochs", "1", "--batch-size", "64", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "FactorVAE score" in result.output and "DCI disentanglement" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    disentanglement = metrics["disentanglement"]
    assert disentanglement["quick"] is True and disentanglement["dci"]["regressor"] == "random_forest"
    assert 0.0 <= disentanglement["factor_vae"]["score"] <= 1.0
    assert metrics["training"]["weights"] == {"alpha": 4.0, "beta": 4.0, "gamma": 4.0, "delta": 4.0}
    assert metrics["labels"]["label_meaning"] == "shape"


def test_sweep_runs_every_setting_and_plots_figure_6(tmp_path, tiny_mnist):
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", "mnist", "--data", str(tiny_mnist), "--beta", "1", "--beta", "4", "--gamma", "3",
                                 "--epochs", "1", "--test-size", "60", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert [(run["beta"], run["gamma"]) for run in summary["runs"]] == [(1.0, 3.0), (4.0, 3.0)]
    assert all({"mutual_information", "total_correlation", "label_gap", "concrete_accuracy"} <= set(run) for run in summary["runs"])
    assert (out / "sweep_mi_tc.png").stat().st_size > 0 and (out / "sweep_gap_beta.png").stat().st_size > 0
    assert (out / "beta4-gamma3-seed0" / "metrics.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--exclude", "colour=red"], "mnist has no factor 'colour'"),
        (["--exclude", "label~7"], "cannot read 'label~7'"),
        (["--beta", "-2"], "beta=-2.0 is invalid"),
        (["--objective", "vae", "--beta", "2"], "does not take beta"),
        (["--groups", "10,x"], "cannot read item 'x'"),
        (["--train-size", "1"], "train_size=1 is invalid"),
    ],
)
def test_recipe_errors_are_one_line_and_write_nothing(tmp_path, tiny_mnist, args, message):
    out = tmp_path / "run"
    result = runner.invoke(app, ["recipe", "mnist", "--data", str(tiny_mnist), "--out", str(out), "--no-progress", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert not out.exists()


def test_recipe_without_the_data_files_says_where_to_put_them(tmp_path):
    result = runner.invoke(app, ["recipe", "fashion-mnist", "--data", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1 and "is missing from root=" in result.output


def test_exclusion_rules_parse_names_and_numbers():
    assert parse_exclusion("shape=heart,pos_x>=0.5", "dsprites") == [("shape", "=", 2.0), ("pos_x", ">=", 0.5)]
    assert parse_exclusion("label=7, ink>=0.75", "mnist") == [("label", "=", 7.0), ("ink", ">=", 0.75)]
    with pytest.raises(ValueError, match="'wide' is not a number for ink"):
        parse_exclusion("ink>=wide", "mnist")


def test_recipe_when_the_download_fails_says_what_to_do(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("TOPICVAE_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = runner.invoke(app, ["recipe", "mnist", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "could not download train-images-idx3-ubyte.gz for mnist" in result.output
    assert "pass root= a folder holding the files" in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    assert not list((tmp_path / "cache").rglob("*.gz"))  # nothing half-written in the cache
