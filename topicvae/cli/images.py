"""The commands of the image domain: ``recipe`` (one experiment of the paper) and ``sweep``."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from topicvae.cli.app import (
    USER_ERRORS, Objective, app, check_creatable, echo, fail, print_information, run_with_progress,
)


class ImageRecipe(str, Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    dsprites = "dsprites"


class Architecture(str, Enum):
    mlp = "mlp"
    conv = "conv"


class ClassEncoder(str, Enum):
    shared = "shared"
    separate = "separate"


def _recipe_run(name, *, objective, groups, alpha, beta, gamma, delta, architecture, epochs, batch_size, lr, train_size,
                test_size, temperature, seed, data, exclude, mi_threshold, full_metrics, device, progress, out, data_cache=None,
                class_conditioned=False, levers=None, class_encoder=None, n_init=1):
    """Load, train, score and (with ``out``) save one recipe run; returns the scores."""
    from topicvae.images.recipes import load_recipe_data, recipe_model, score_image_model, write_image_plots, write_json

    model = recipe_model(
        name, objective=objective, groups=groups, architecture=architecture, epochs=epochs, batch_size=batch_size, lr=lr,
        temperature=temperature, seed=seed, device=device, alpha=alpha, beta=beta, gamma=gamma, delta=delta,
        class_conditioned=class_conditioned, class_encoder=class_encoder, n_init=n_init, **(levers or {}),
    )
    model._validate()  # a bad weight or option fails before the data are loaded
    images = data_cache if data_cache is not None else load_recipe_data(
        name, data_dir=data, train_size=train_size, test_size=test_size, exclude=exclude, seed=seed
    )
    started = time.perf_counter()
    run_with_progress(model.fit_iter(images.train), enabled=progress)
    seconds = time.perf_counter() - started
    scores = score_image_model(model, images, mi_threshold=mi_threshold, seed=seed, quick_disentanglement=not full_metrics)
    scores["training"] = {
        "images": int(len(images.train)), "epochs": model.epochs, "batch_size": model.batch_size, "seconds": seconds,
        "groups": str(model.groups_), "architecture": model.architecture, "objective": model.objective,
        "class_conditioned": model.class_conditioned, "class_encoder": model.class_encoder, "restarts": model.restarts_,
        "class_levers": {
            "class_capacity": model.class_capacity, "style_capacity": model.style_capacity, "augmentation": model.augmentation,
            "imsat": model.imsat,
        },
        "weights": model.weights_.as_dict(), "seed": seed, "history": model.history_,
    }
    if out is not None:
        model.save(out)
        scores["plots"] = write_image_plots(model, images, scores, out / "plots")
        write_json(scores, out / "metrics.json")
    return scores, images


def _print_recipe(scores: dict) -> None:
    training, information = scores["training"], scores["information"]
    echo(
        f"{scores['dataset']}: {training['objective']} {training['groups']} ({training['architecture']}), "
        f"{', '.join(f'{k}={v:g}' for k, v in training['weights'].items())}; {training['images']} images, "
        f"{training['epochs']} epochs in {training['seconds']:.1f} s"
    )
    print_information(information, "test images", "latent variables")
    gaussian_pruned = information["pruned_gaussian_dimensions"]
    echo(f"pruned Gaussian dimensions ({len(gaussian_pruned)}): {' '.join(gaussian_pruned) or 'none'}")
    echo(f"reconstruction error: {scores['reconstruction_error']['mean_nats_per_image']:.1f} nats per image")
    labels = scores.get("labels")
    if labels and "concrete_accuracy" in labels:
        echo(
            f"Concrete group against the {labels['label_meaning']}: accuracy {labels['concrete_accuracy']:.3f}, "
            f"I(y; c) = {labels['concrete']:.3f} nats of H(y) = {labels['label_entropy']:.3f}; "
            f"gap I(y; c) - max_e I(y; z_e) = {labels['gap']:.3f} nats ({labels['normalized_gap']:.3f} of H(y))"
        )
    traversals = scores.get("traversals")
    if traversals and traversals["per_value"]:
        echo(
            f"style traversals keep the class in {traversals['kept']:.2f} of decoded images "
            f"({traversals['per_value']['-3']:.2f} at -3, {traversals['per_value']['+3']:.2f} at +3; "
            f"judged by a nearest-neighbour classifier {traversals['judge_accuracy']:.2f} accurate on reconstructions)"
        )
    if "disentanglement" in scores:
        d = scores["disentanglement"]
        echo(
            f"FactorVAE score {d['factor_vae']['score']:.3f}; DCI disentanglement {d['dci']['disentanglement']:.3f}, "
            f"completeness {d['dci']['completeness']:.3f}, informativeness {d['dci']['informativeness_test']:.3f} "
            f"({d['dci']['regressor']}); MIG {d['mig']['mig']:.3f} ({d['sample_counts']})"
        )
    if "generalization" in scores:
        g = scores["generalization"]
        echo(
            f"never trained on {g['rule']} ({g['left_out_of_training']} training images or grid points left out): "
            f"reconstruction error {g['reconstruction_error_left_out']:.1f} nats on {g['left_out_images']} left-out images "
            f"against {g['reconstruction_error_seen']:.1f} on seen ones"
        )
        for name, entry in g.get("factors", {}).items():
            echo(f"  {name}: |r| with {entry['dimension']} {entry['abs_correlation_seen']:.2f} seen, {entry['abs_correlation_left_out']:.2f} left out")
    for path in scores.get("plots", []):
        echo(f"wrote {path}")


_RECIPE_HELP = {
    "objective": "Objective preset; the recipes use beta-VAE 4, beta-TCVAE 4 and HFVAE beta 4, gamma 3 unless the weights are given.",
    "groups": "Latent groups (default 10,10c for MNIST and Fashion-MNIST, 10,3c for dSprites).",
    "data": "Folder holding the data files (the four IDX .gz files, or the dSprites npz); default: the download cache.",
    "exclude": "Leave these combinations out of training, e.g. 'label=7,ink>=0.75' or 'shape=heart,pos_x>=0.5'.",
}


@app.command()
def recipe(
    name: Annotated[ImageRecipe, typer.Argument(help="The data set.")],
    objective: Annotated[Objective, typer.Option(help=_RECIPE_HELP["objective"])] = Objective.hfvae,
    groups: Annotated[Optional[str], typer.Option(help=_RECIPE_HELP["groups"])] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Weight of I(x; z).")] = None,
    beta: Annotated[Optional[float], typer.Option(help="Weight of the TC between groups.")] = None,
    gamma: Annotated[Optional[float], typer.Option(help="Weight of the TC within groups.")] = None,
    delta: Annotated[Optional[float], typer.Option(help="Weight of the dimension-wise KL.")] = None,
    architecture: Annotated[Optional[Architecture], typer.Option(help="mlp or conv (default mlp for MNIST, conv for dSprites).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training images.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    train_size: Annotated[Optional[int], typer.Option(help="Training images (default: all of MNIST; 100,000 dSprites samples).")] = None,
    test_size: Annotated[Optional[int], typer.Option(help="Test images scored.")] = None,
    temperature: Annotated[float, typer.Option(help="Temperature of the Concrete groups.")] = 0.66,
    class_conditioned: Annotated[bool, typer.Option("--class-conditioned", help="Encode the style given the class sample, q(c | x) q(z | x, c), as the authors' MNIST model does.")] = False,
    class_capacity: Annotated[float, typer.Option(help="Weight of |I(x; c) - C(t)|, C rising to log K: confident, balanced categories (0: off; docs/images.md).")] = 0.0,
    style_capacity: Annotated[float, typer.Option(help="Weight of |KL(style) - C(t)|, C rising to 5 nats: the style cannot take the class early (0: off).")] = 0.0,
    augmentation: Annotated[float, typer.Option(help="Weight of KL(q(c|x) || q(c|T(x))) for small random affine maps T: the class survives deformations (0: off).")] = 0.0,
    imsat: Annotated[Optional[float], typer.Option(help="Weight of IMSAT's terms: q(c|x) unchanged by a virtual adversarial nudge of the image, confident and balanced categories (0: off; default 1000 for MNIST and Fashion-MNIST, 0 for dSprites).")] = None,
    class_encoder: Annotated[Optional[ClassEncoder], typer.Option(help="The class group's logits: IMSAT's network of its own (separate; MNIST's and Fashion-MNIST's default) or a head on the style encoder (shared; dSprites').")] = None,
    n_init: Annotated[int, typer.Option(help="Restarts; the one with the lowest final training objective is kept (unsupervised, as KMeans's n_init).")] = 1,
    seed: Annotated[int, typer.Option(help="Seeds the run's own random numbers and the data sample.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Directory for the model, metrics.json and plots/.")] = None,
    data: Annotated[Optional[Path], typer.Option(help=_RECIPE_HELP["data"])] = None,
    exclude: Annotated[Optional[str], typer.Option(help=_RECIPE_HELP["exclude"])] = None,
    mi_threshold: Annotated[float, typer.Option(help="Variables with I(x; z_e) below this many nats are reported as pruned.")] = 0.1,
    full_metrics: Annotated[bool, typer.Option(help="dSprites: disentanglement_lib's full sample counts (slow) instead of 10x fewer.")] = False,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu or cuda.")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Train an image model (MNIST, Fashion-MNIST, dSprites) and report MI, pruning, accuracy and disentanglement."""
    try:
        if out is not None:
            check_creatable(out, "--out")
        scores, _ = _recipe_run(
            name.value, objective=objective.value, groups=groups, alpha=alpha, beta=beta, gamma=gamma, delta=delta,
            architecture=architecture.value if architecture else None, epochs=epochs, batch_size=batch_size, lr=lr,
            train_size=train_size, test_size=test_size, temperature=temperature, seed=seed, data=data, exclude=exclude,
            mi_threshold=mi_threshold, full_metrics=full_metrics, device=device, progress=progress, out=out,
            class_conditioned=class_conditioned, class_encoder=class_encoder.value if class_encoder else None, n_init=n_init,
            levers={"class_capacity": class_capacity, "style_capacity": style_capacity, "augmentation": augmentation, "imsat": imsat},
        )
    except USER_ERRORS as error:
        fail(error)
        return
    _print_recipe(scores)


@app.command()
def sweep(
    name: Annotated[ImageRecipe, typer.Argument(help="The data set.")],
    out: Annotated[Path, typer.Option(help="Directory for every run, sweep.json and the plots.")],
    beta: Annotated[list[float], typer.Option(help="Values of beta (repeat the option).")] = [1.0, 2.0, 4.0, 8.0],
    gamma: Annotated[Optional[float], typer.Option(help="Fixed gamma; without it gamma = beta (the beta-TCVAE line).")] = None,
    seeds: Annotated[int, typer.Option(help="Restarts per setting (seeds 0, 1, ...).")] = 1,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training images.")] = None,
    train_size: Annotated[Optional[int], typer.Option(help="Training images.")] = None,
    test_size: Annotated[Optional[int], typer.Option(help="Test images scored.")] = None,
    data: Annotated[Optional[Path], typer.Option(help=_RECIPE_HELP["data"])] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """The paper's Figure 6: HFVAE over beta (gamma = beta, or a fixed gamma), I(x; z) against TC and the label gap against beta."""
    try:
        from topicvae.images.recipes import headline, load_recipe_data, plot_sweep, write_json

        if seeds < 1:
            raise ValueError(f"--seeds {seeds} is invalid: give a whole number >= 1")
        images = load_recipe_data(name.value, data_dir=data, train_size=train_size, test_size=test_size, seed=0)
        runs = []
        for b in beta:
            g = b if gamma is None else gamma
            for seed in range(seeds):
                run_dir = out / f"beta{b:g}-gamma{g:g}-seed{seed}"
                scores, _ = _recipe_run(
                    name.value, objective="hfvae", groups=None, alpha=None, beta=b, gamma=g, delta=None, architecture=None,
                    epochs=epochs, batch_size=None, lr=None, train_size=train_size, test_size=test_size, temperature=0.66,
                    seed=seed, data=data, exclude=None, mi_threshold=0.1, full_metrics=False, device="cpu",
                    progress=progress, out=run_dir, data_cache=images,
                )
                runs.append({"beta": b, "gamma": g, "seed": seed, "directory": run_dir.name, **headline(scores)})
                echo(f"beta={b:g} gamma={g:g} seed={seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in headline(scores).items()))
        plots = plot_sweep(runs, out)
        write_json({"dataset": name.value, "gamma": "beta" if gamma is None else gamma, "runs": runs, "plots": plots}, out / "sweep.json")
    except USER_ERRORS as error:
        fail(error)
        return
    for path in plots:
        echo(f"wrote {path}")
