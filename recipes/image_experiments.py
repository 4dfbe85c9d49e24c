"""The image experiments of the paper (Sections 5.1 and 5.3) over several seeds.

1. MNIST and Fashion-MNIST with HFVAE (10 Gaussian dimensions + a 10-way Concrete group):
   the Concrete group's unsupervised accuracy and the pruned continuous dimensions;
2. dSprites (10 Gaussian dimensions + a 3-way Concrete group) with VAE, beta-VAE (4),
   beta-TCVAE (4) and HFVAE (beta 4, gamma 3): the FactorVAE score and DCI disentanglement,
   beside the paper's Table 3.

Every run is ``topicvae recipe ... --out WORK/<experiment>-<objective>-s<seed>`` (a run whose
``metrics.json`` exists is reused); the summary goes to a JSON file and Markdown tables.

    python recipes/image_experiments.py --work runs/ --mnist-data ../shared/data/mnist \\
        --fashion-data ../shared/data/fashion-mnist [--only mnist fashion-mnist dsprites] [-- recipe options]

Options after ``--`` go to every ``topicvae recipe`` call (e.g. ``--epochs 10``), so the budget
of a run is stated once and recorded.

The recipes score dSprites with ten times fewer metric samples than disentanglement_lib, to fit
a CPU budget. ``--full-counts`` scores every trained dSprites model again with disentanglement_lib's
full sample counts for DCI and MIG (seconds per model), and ``--full-factor-vae-seeds 0`` the
FactorVAE score too for the models of those seeds (about 970,000 images encoded per model); the
scores go to ``disentanglement_full.json`` in the run's folder (reused when there), and the
tables show them beside the reduced ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

EXPERIMENTS = {
    "mnist": [("hfvae", [])],
    "fashion-mnist": [("hfvae", [])],
    "dsprites": [("vae", []), ("beta-vae", []), ("beta-tcvae", []), ("hfvae", [])],
}
#: The paper's Table 3 (mean over 10 restarts): Kim & Mnih's score and Eastwood & Williams' disentanglement.
PAPER_TABLE_3 = {"vae": (0.63, 0.30), "beta-vae": (0.63, 0.41), "beta-tcvae": (0.62, 0.29), "hfvae": (0.63, 0.39)}
#: The paper's Figure 4: continuous dimensions pruned by HFVAE.
PAPER_PRUNED = {"mnist": 3, "fashion-mnist": 4}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    parser.add_argument("--mnist-data", type=Path, default=None)
    parser.add_argument("--fashion-data", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=None, help="JSON summary (default WORK/image_results.json)")
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--full-counts", action="store_true",
                        help="score every dSprites model again with the full sample counts of DCI and MIG")
    parser.add_argument("--full-factor-vae-seeds", type=int, nargs="*", default=[],
                        help="with --full-counts: also the FactorVAE score at full counts for the models of these seeds")
    args = parser.parse_args(argv)
    results_path = args.results or args.work / "image_results.json"
    if args.tables_only:
        print(markdown_tables(json.loads(results_path.read_text())))
        return
    data = {"mnist": args.mnist_data, "fashion-mnist": args.fashion_data, "dsprites": None}
    runs = []
    for name in args.only:
        for objective, options in EXPERIMENTS[name]:
            for seed in args.seeds:
                out = args.work / f"{name}-{objective}-s{seed}"
                if not (out / "metrics.json").is_file():
                    command = [sys.executable, "-m", "topicvae.cli", "recipe", name, "--objective", objective, "--seed", str(seed),
                               "--out", str(out), "--no-progress", *options, *extra]
                    if data[name] is not None:
                        command += ["--data", str(data[name])]
                    print(" ".join(command[2:]), flush=True)
                    completed = subprocess.run(command, capture_output=True, text=True)
                    (args.work / f"{out.name}.log").write_text(completed.stdout + completed.stderr)
                    if completed.returncode != 0:
                        raise SystemExit(f"{out.name} failed: {completed.stderr.strip().splitlines()[-1]}")
                metrics = json.loads((out / "metrics.json").read_text())
                run = {"experiment": name, "objective": objective, "seed": seed, "directory": out.name, **summary(metrics)}
                if name == "dsprites" and args.full_counts:
                    metrics_wanted = ["dci", "mig"] + (["factor_vae"] if seed in args.full_factor_vae_seeds else [])
                    run["full_counts"] = disentanglement_summary(full_count_scores(out, seed, metrics_wanted))
                runs.append(run)
    results = {"recipe_options": extra, "runs": runs}
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {results_path}\n")
    print(markdown_tables(results))


def summary(metrics: dict) -> dict:
    """The numbers the tables need from one run's metrics.json."""
    training, information = metrics["training"], metrics["information"]
    out = {
        "images": training["images"], "epochs": training["epochs"], "seconds": training["seconds"], "weights": training["weights"],
        "mutual_information": information["mutual_information"],
        "pruned_gaussian_dimensions": information["pruned_gaussian_dimensions"],
        "reconstruction_error": metrics["reconstruction_error"]["mean_nats_per_image"],
    }
    if "labels" in metrics and "concrete_accuracy" in metrics["labels"]:
        out.update(concrete_accuracy=metrics["labels"]["concrete_accuracy"], label_gap=metrics["labels"]["normalized_gap"])
    if "disentanglement" in metrics:
        out.update(disentanglement_summary(metrics["disentanglement"]))
    return out


def disentanglement_summary(d: dict) -> dict:
    """The dSprites scores of one :func:`topicvae.images.disentanglement.evaluate_disentanglement` report
    (only the metrics it holds)."""
    out = {"metric_samples": d["sample_counts"]}
    if "factor_vae" in d:
        out["factor_vae"] = d["factor_vae"]["score"]
    if "dci" in d:
        out.update(dci_disentanglement=d["dci"]["disentanglement"], dci_completeness=d["dci"]["completeness"],
                   dci_informativeness=d["dci"]["informativeness_test"], dci_regressor=d["dci"]["regressor"],
                   # reports written before the predictor was recorded used RandomForestClassifier for "random_forest"
                   dci_predictor=d["dci"].get("predictor", "RandomForestClassifier" if d["dci"]["regressor"] == "random_forest" else None))
    if "mig" in d:
        out["mig"] = d["mig"]["mig"]
    return out


def full_count_scores(run_directory: Path, seed: int, metrics: list[str]) -> dict:
    """``metrics`` at disentanglement_lib's full sample counts on a trained dSprites run.

    The same estimators, predictor (the recipe's random forest) and seed as the recipe's reduced
    scoring; only the sample counts differ. Cached in the run's folder; a metric missing from the
    cache is computed and added."""
    path = run_directory / "disentanglement_full.json"
    report = json.loads(path.read_text()) if path.is_file() else None
    missing = [m for m in metrics if report is None or m not in report]
    if missing:
        from topicvae.images.disentanglement import evaluate_disentanglement
        from topicvae.images.dsprites import load_dsprites
        from topicvae.images.estimator import ImageModel

        print(f"scoring {run_directory.name} at full sample counts: {', '.join(missing)}", flush=True)
        model = ImageModel.load(run_directory)
        fresh = evaluate_disentanglement(load_dsprites(), model.transform, np.random.default_rng(seed), metrics=missing,
                                         quick=False, dci_regressor="random_forest")
        report = fresh if report is None else {**report, **{m: fresh[m] for m in missing}, "metrics": [*report["metrics"], *missing]}
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _mean_sd(values, digits: int) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else f"{values[0]:.{digits}f}"


def _by_objective(runs: list[dict]):
    """(objective, its runs) in the order of the paper's Table 3, skipping objectives without runs."""
    for objective in PAPER_TABLE_3:
        chosen = [r for r in runs if r["objective"] == objective]
        if chosen:
            yield objective, chosen


def _predictors(summaries: list[dict]) -> str:
    """The DCI predictor(s) behind a table's rows."""
    return " and ".join(sorted({str(r.get("dci_predictor")) for r in summaries}))


def _seeds(runs: list[dict]) -> str:
    return ", ".join(str(r["seed"]) for r in runs)


def _table_head(*columns: str, caption: str | None = None) -> list[str]:
    """A Markdown table's header and separator rows, after a blank line and ``caption`` when given."""
    head = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return ["", caption, "", *head] if caption else head


def markdown_tables(results: dict) -> str:
    lines = []
    labelled = [r for r in results["runs"] if r["experiment"] in ("mnist", "fashion-mnist")]
    if labelled:
        lines += _table_head("data", "seed", "training images x epochs", "seconds", "Concrete accuracy",
                             "pruned Gaussian dimensions (paper)", "I(x; z)", "reconstruction error (nats)")
        for r in labelled:
            lines.append(
                f"| {r['experiment']} | {r['seed']} | {r['images']} x {r['epochs']} | {r['seconds']:.0f} | {r['concrete_accuracy']:.3f} "
                f"| {len(r['pruned_gaussian_dimensions'])} ({PAPER_PRUNED[r['experiment']]}) | {r['mutual_information']:.2f} | {r['reconstruction_error']:.1f} |"
            )
    dsprites = [r for r in results["runs"] if r["experiment"] == "dsprites"]
    if dsprites:
        rescored = [r for r in dsprites if "full_counts" in r]
        dci_note = "DCI is in the next table, at full counts" if rescored else "for DCI at full counts, which costs seconds, add --full-counts"
        lines += _table_head("objective", "seeds", "FactorVAE score (paper)", "MIG", "Concrete accuracy (shape)", "I(x; z)",
                             "pruned Gaussian dimensions", caption=f"Reduced sample counts (the recipe's scoring; {dci_note}):")
        for objective, chosen in _by_objective(dsprites):
            kim, _ = PAPER_TABLE_3[objective]
            lines.append(
                f"| {objective} | {_seeds(chosen)} | {_mean_sd([r['factor_vae'] for r in chosen], 2)} ({kim:.2f}) "
                f"| {_mean_sd([r['mig'] for r in chosen], 3)} | {_mean_sd([r['concrete_accuracy'] for r in chosen], 2)} "
                f"| {_mean_sd([r['mutual_information'] for r in chosen], 2)} "
                f"| {_mean_sd([len(r['pruned_gaussian_dimensions']) for r in chosen], 1)} |"
            )
        if rescored:
            predictors = _predictors([r["full_counts"] for r in rescored])
            lines += _table_head("objective", "seeds", "DCI disentanglement (paper)", "DCI completeness", "DCI informativeness", "MIG",
                                 "FactorVAE score (paper), seeds",
                                 caption=f"disentanglement_lib's full sample counts (the same models; DCI with {predictors}):")
            for objective, chosen in _by_objective(rescored):
                kim, eastwood = PAPER_TABLE_3[objective]
                full = [r["full_counts"] for r in chosen]
                with_factor_vae = [r for r in chosen if "factor_vae" in r["full_counts"]]
                factor_vae = (f"{_mean_sd([r['full_counts']['factor_vae'] for r in with_factor_vae], 2)} ({kim:.2f}), {_seeds(with_factor_vae)}"
                              if with_factor_vae else "—")
                lines.append(
                    f"| {objective} | {_seeds(chosen)} | {_mean_sd([f['dci_disentanglement'] for f in full], 2)} ({eastwood:.2f}) "
                    f"| {_mean_sd([f['dci_completeness'] for f in full], 2)} | {_mean_sd([f['dci_informativeness'] for f in full], 2)} "
                    f"| {_mean_sd([f['mig'] for f in full], 3)} | {factor_vae} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
