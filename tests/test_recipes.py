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
    labels = (ROOT / "corpora" / "20newsgroups-sample.labels.txt").read_text(encoding="utf-8").splitlines()
    for name, part in (("train", slice(0, 400)), ("test", slice(1000, 1150))):
        (tmp_path / f"{name}.txt").write_text("\n".join(posts[part]) + "\n", encoding="utf-8")
        (tmp_path / f"{name}.labels.txt").write_text("\n".join(labels[part]) + "\n", encoding="utf-8")
    recipe = load_recipe("newsgroups_hfvae_vs_vae")
    recipe.main(["--work", str(tmp_path), "--epochs", "1", "--seeds", "3", "--nvdm-seeds", "--fit", "--score"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(run["run"], run["seed"]) for run in results["runs"]] == [("hfvae", 3), ("vae", 3), ("lda", 3)]
    hfvae, vae, lda = results["runs"]
    assert len(hfvae["test"]["information"]["per_topic"]) == 50 and len(vae["test"]["information"]["per_topic"]) == 50
    assert set(hfvae["test"]["information"]["tc_within"]) == {"g0", "g1"} and set(vae["test"]["information"]["tc_within"]) == {"g0"}
    assert set(hfvae["test"]["labels"]["per_topic"]["g0:0"]) == {"label", "share"}
    assert 0 <= lda["purity"] <= 1 and len(lda["agreement"]["word_share"]) == 50
    assert (tmp_path / "plots" / "hfvae-s3" / "mutual_information.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "\n| hfvae | 3 | " in printed and "\n| vae | 3 | " in printed and "\n| lda | 3 | " in printed
    assert "HFVAE seed 3: the ten strongest associations across groups on the test posts" in printed
    # a second call reuses the saved models instead of fitting again
    (tmp_path / "models" / "vae-s3" / "seconds.txt").write_text("-1\n")
    recipe.main(["--work", str(tmp_path), "--epochs", "1", "--seeds", "3", "--nvdm-seeds", "--fit"])
    assert (tmp_path / "models" / "vae-s3" / "seconds.txt").read_text() == "-1\n"


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
    import topicvae.images.disentanglement
    import topicvae.images.dsprites
    import topicvae.images.estimator

    recipe = load_recipe("image_experiments")
    calls = []

    def evaluate(data, represent, rng, *, metrics, quick, dci_regressor):
        calls.append((list(metrics), quick, dci_regressor))
        scores = {"factor_vae": {"score": 0.7}, "mig": {"mig": 0.1},
                  "dci": {"disentanglement": 0.4, "completeness": 0.5, "informativeness_test": 0.6,
                          "regressor": dci_regressor, "predictor": "RandomForestRegressor"}}
        return {"sample_counts": "disentanglement_lib defaults", "metrics": list(metrics), **{m: scores[m] for m in metrics}}

    monkeypatch.setattr(topicvae.images.disentanglement, "evaluate_disentanglement", evaluate)
    monkeypatch.setattr(topicvae.images.estimator.ImageModel, "load", classmethod(lambda cls, path: type("Model", (), {"transform": None})))
    monkeypatch.setattr(topicvae.images.dsprites, "load_dsprites", lambda: None)
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
