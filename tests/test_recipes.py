"""The recipes run end to end on small data (the shipped corpus sample, one short epoch)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_newsgroups_hfvae_vs_vae_recipe_fits_scores_and_tabulates(tmp_path, capsys):
    with gzip.open(ROOT / "corpora" / "20newsgroups-sample.txt.gz", "rt", encoding="utf-8") as handle:
        posts = handle.read().splitlines()
    (tmp_path / "train.txt").write_text("\n".join(posts[:400]) + "\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n".join(posts[1000:1150]) + "\n", encoding="utf-8")
    recipe = load_recipe("newsgroups_hfvae_vs_vae")
    recipe.main(["--work", str(tmp_path), "--epochs", "1", "--seeds", "3"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(run["model"], run["seed"]) for run in results["runs"]] == [("hfvae", 3), ("vae", 3)]
    hfvae, vae = results["runs"]
    assert len(hfvae["test"]["information"]["per_topic"]) == 50 and len(vae["test"]["information"]["per_topic"]) == 50
    assert set(hfvae["test"]["information"]["tc_within"]) == {"g0", "g1"} and set(vae["test"]["information"]["tc_within"]) == {"g0"}
    assert hfvae["train_information"]["dataset_size"] <= 400
    assert hfvae["strong_pairs"]["largest_across"] is not None and vae["strong_pairs"]["largest_across"] is None
    printed = capsys.readouterr().out
    assert "| HFVAE 2x25 (alpha 1, beta 0.1, gamma 4) | 3 |" in printed
    assert "| VAE 50 (all weights 1) | 3 |" in printed
    assert "Five strongest cross-group pairs of the HFVAE model, seed 3" in printed
    assert printed.count("\n| 0.") + printed.count("\n| -0.") + printed.count("\n| 1.") == 5  # five pair rows


def test_image_experiments_recipe_runs_the_recipes_and_tabulates(tmp_path, tiny_mnist, capsys):
    recipe = load_recipe("image_experiments")
    work = tmp_path / "work"
    recipe.main(["--work", str(work), "--only", "mnist", "--seeds", "0", "1", "--mnist-data", str(tiny_mnist),
                 "--", "--epochs", "1", "--test-size", "50"])
    results = json.loads((work / "image_results.json").read_text())
    assert results["recipe_options"] == ["--epochs", "1", "--test-size", "50"]
    assert [(run["experiment"], run["objective"], run["seed"]) for run in results["runs"]] == [("mnist", "hfvae", 0), ("mnist", "hfvae", 1)]
    assert all(run["epochs"] == 1 and 0 <= run["concrete_accuracy"] <= 1 for run in results["runs"])
    printed = capsys.readouterr().out
    assert "| mnist | 0 | 300 x 1 |" in printed and "| mnist | 1 | 300 x 1 |" in printed
    # a second call reuses the finished runs instead of training again
    (work / "mnist-hfvae-s0" / "weights.pt").unlink()
    recipe.main(["--work", str(work), "--only", "mnist", "--seeds", "0", "--mnist-data", str(tiny_mnist), "--", "--epochs", "1"])
    assert not (work / "mnist-hfvae-s0" / "weights.pt").exists()
