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


def test_image_experiments_full_counts_are_cached_merged_and_tabulated(tmp_path, monkeypatch):
    """--full-counts: each metric is computed once per run at full counts, added to the cache, and
    tabulated beside the paper; the reduced table shows what the recipe itself scored."""
    import topicvae.disentanglement
    import topicvae.image_data
    import topicvae.images

    recipe = load_recipe("image_experiments")
    calls = []

    def evaluate(data, represent, rng, *, metrics, quick, dci_regressor):
        calls.append((list(metrics), quick, dci_regressor))
        scores = {"factor_vae": {"score": 0.7}, "mig": {"mig": 0.1},
                  "dci": {"disentanglement": 0.4, "completeness": 0.5, "informativeness_test": 0.6,
                          "regressor": dci_regressor, "predictor": "RandomForestRegressor"}}
        return {"sample_counts": "disentanglement_lib defaults", "metrics": list(metrics), **{m: scores[m] for m in metrics}}

    monkeypatch.setattr(topicvae.disentanglement, "evaluate_disentanglement", evaluate)
    monkeypatch.setattr(topicvae.images.ImageModel, "load", classmethod(lambda cls, path: type("Model", (), {"transform": None})))
    monkeypatch.setattr(topicvae.image_data, "load_dsprites", lambda: None)
    run = tmp_path / "dsprites-hfvae-s0"
    run.mkdir()
    recipe.full_count_scores(run, 0, ["dci", "mig"])
    merged = recipe.full_count_scores(run, 0, ["dci", "mig", "factor_vae"])
    recipe.full_count_scores(run, 0, ["dci"])  # all cached: nothing is computed again
    assert calls == [(["dci", "mig"], False, "random_forest"), (["factor_vae"], False, "random_forest")]
    assert merged["metrics"] == ["dci", "mig", "factor_vae"]

    reduced = {"factor_vae": 0.6, "mig": 0.05, "concrete_accuracy": 0.35, "mutual_information": 7.5,
               "pruned_gaussian_dimensions": ["g0:1"]}
    runs = [{"experiment": "dsprites", "objective": "hfvae", "seed": seed, **reduced,
             "full_counts": recipe.disentanglement_summary(merged)} for seed in (0, 1)]
    runs[1]["full_counts"].pop("factor_vae")  # FactorVAE at full counts for seed 0 only
    tables = recipe.markdown_tables({"runs": runs})
    assert "| hfvae | 0, 1 | 0.60 ± 0.00 (0.63) | 0.050 ± 0.000 | 0.35 ± 0.00 | 7.50 ± 0.00 | 1.0 ± 0.0 |" in tables
    assert "DCI with RandomForestRegressor" in tables
    assert "| hfvae | 0, 1 | 0.40 ± 0.00 (0.39) | 0.50 ± 0.00 | 0.60 ± 0.00 | 0.100 ± 0.000 | 0.70 (0.63), 0 |" in tables
