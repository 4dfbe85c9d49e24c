"""Image recipes: MNIST, Fashion-MNIST and dSprites through the latent-group API.

A recipe loads a data set, trains an :class:`~topicvae.images.estimator.ImageModel` (the defaults follow
the paper's Table 2: 10 Gaussian dimensions beside a 10-way Concrete group for MNIST and
Fashion-MNIST, a 3-way one for dSprites) and scores it:

* every data set: I(x; z), I(x; z_de) per latent variable with the variables it prunes, the
  total correlations between and within groups (all over the test images, N = their number),
  and the mean reconstruction error;
* labelled data (MNIST, Fashion-MNIST): the Concrete group's unsupervised accuracy (best
  one-to-one matching of categories to classes), I(y; z_e) for every Gaussian dimension and
  I(y; c) for the Concrete argmax c (20-bin histograms, as disentanglement_lib), and the paper's
  Figure 6 gap I(y; c) - max_e I(y; z_e), also divided by H(y); and whether the traversals keep
  the class (:func:`traversal_identity`: a nearest-neighbour judge names the class of images
  decoded at each category with one style dimension moved over (-3, 3), as the paper's Figure 5);
* dSprites: the FactorVAE score, DCI and MIG (:mod:`topicvae.images.disentanglement`), and the
  Concrete group's accuracy against the shape.

With ``exclude`` a recipe leaves chosen factor combinations out of training (the paper's
Section 5.5) and compares the left-out images with seen ones.

Plots: latent traversals over (-3, 3), sorted MI bars, reconstructions, and for ``exclude``
the encoded values of the left-out images beside the seen ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import mutual_info_score

from topicvae.objective.information import InformationReport, plot_information
from topicvae.io.atomic import write_json_atomically
from topicvae.images.disentanglement import (
    discrete_mutual_information,
    evaluate_disentanglement,
    factor_entropy,
    unsupervised_accuracy,
)
from topicvae.objective.information import information_summary
from topicvae.images.data import load_idx_dataset
from topicvae.images.dsprites import DSPRITES_FACTORS, DSPRITES_SHAPE_NAMES, DSprites, load_dsprites
from topicvae.images.estimator import ImageModel
from topicvae.io.model_files import plain

__all__ = ["RECIPES", "RECIPE_WEIGHTS", "RecipeSettings", "ImageData", "load_recipe_data", "parse_exclusion", "score_image_model", "write_image_plots"]


@dataclass(frozen=True)
class RecipeSettings:
    """What a recipe trains, and on how many images (``train_size=None``: the whole training split).

    ``class_encoder`` and ``imsat`` say how the Concrete group learns the class (see
    :class:`~topicvae.images.estimator.ImageModel`): MNIST and Fashion-MNIST use IMSAT's class
    encoder and terms, measured in docs/images.md; dSprites, not yet measured with them, the
    plain objective.
    """

    dataset: str
    groups: str
    architecture: str
    epochs: int
    batch_size: int
    lr: float
    train_size: int | None
    test_size: int
    class_encoder: str = "shared"
    imsat: float = 0.0


RECIPES: dict[str, RecipeSettings] = {
    # 20 epochs with IMSAT's class encoder: about 20 minutes of training on 2 CPU cores
    "mnist": RecipeSettings(
        "mnist", "10,10c", "mlp", epochs=20, batch_size=256, lr=1e-3, train_size=None, test_size=10000,
        class_encoder="separate", imsat=1000.0,
    ),
    "fashion-mnist": RecipeSettings(
        "fashion-mnist", "10,10c", "mlp", epochs=20, batch_size=256, lr=1e-3, train_size=None, test_size=10000,
        class_encoder="separate", imsat=1000.0,
    ),
    # dSprites has 737,280 images; a random sample of the grid keeps a CPU run within minutes
    "dsprites": RecipeSettings("dsprites", "10,3c", "conv", epochs=5, batch_size=256, lr=5e-4, train_size=100000, test_size=5000),
}

#: Each objective's weights in the recipes: the paper's dSprites comparison (Table 3) uses
#: beta-VAE (4), beta-TCVAE (4) and HFVAE (beta 4, gamma 3).
RECIPE_WEIGHTS: dict[str, dict[str, float]] = {
    "vae": {},
    "beta-vae": {"beta": 4.0},
    "beta-tcvae": {"beta": 4.0},
    "hfvae": {"beta": 4.0, "gamma": 3.0},
}


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImageData:
    """Training and test images of a recipe, with labels or ground-truth factors.

    ``excluded`` holds images of the left-out combinations (never trained on) when the recipe
    has an exclusion rule; ``excluded_labels``/``excluded_factors`` describe them.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray | None = None
    test_factors: np.ndarray | None = None
    label_names: list[str] = field(default_factory=list)
    ground_truth: DSprites | None = None
    exclusion: str | None = None
    excluded: np.ndarray | None = None
    excluded_labels: np.ndarray | None = None
    excluded_factors: np.ndarray | None = None
    excluded_from_training: int = 0


_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|=|>|<)\s*([^\s]+)\s*$")
_OPERATORS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "=": lambda a, b: np.isclose(a, b),
    ">=": lambda a, b: a >= b - 1e-9,
    "<=": lambda a, b: a <= b + 1e-9,
    ">": lambda a, b: a > b + 1e-9,
    "<": lambda a, b: a < b - 1e-9,
}


def parse_exclusion(rule: str, dataset: str) -> list[tuple[str, str, float]]:
    """Read an exclusion rule: conditions joined by commas, all of which must hold.

    MNIST and Fashion-MNIST: ``label`` (class id or name) and ``ink``, the image's total
    intensity as a quantile among the training images of its class (0..1; a proxy for stroke
    thickness), e.g. ``"label=7,ink>=0.75"`` (thick sevens, the paper's example).
    dSprites: ``shape`` (square, ellipse, heart or 0..2), ``scale`` (0.5..1), ``orientation``
    (radians), ``pos_x`` and ``pos_y`` (0..1), e.g. ``"shape=heart,pos_x>=0.5"``.
    """
    fields_by_dataset = {"dsprites": ("shape", "scale", "orientation", "pos_x", "pos_y"), "mnist": ("label", "ink"), "fashion-mnist": ("label", "ink")}
    allowed = fields_by_dataset[dataset]
    conditions = []
    for part in rule.split(","):
        match = _CONDITION.match(part)
        if match is None:
            raise ValueError(f"exclude={rule!r}: cannot read {part.strip()!r}; write conditions like 'label=7,ink>=0.75'")
        name, operator, text = match.groups()
        if name not in allowed:
            raise ValueError(f"exclude={rule!r}: {dataset} has no factor {name!r}; use {', '.join(allowed)}")
        if name == "shape" and text in DSPRITES_SHAPE_NAMES:
            value = float(DSPRITES_SHAPE_NAMES.index(text))
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"exclude={rule!r}: {text!r} is not a number for {name}") from None
        conditions.append((name, operator, value))
    return conditions


def _matches(conditions, values: dict[str, np.ndarray]) -> np.ndarray:
    mask = np.ones(len(next(iter(values.values()))), dtype=bool)
    for name, operator, value in conditions:
        mask &= _OPERATORS[operator](values[name], value)
    return mask


def _ink_quantiles(images: np.ndarray, labels: np.ndarray, reference_images: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
    """Each image's total intensity as a quantile among the reference images of its class."""
    ink = images.reshape(len(images), -1).sum(1, dtype=np.int64)
    reference_ink = reference_images.reshape(len(reference_images), -1).sum(1, dtype=np.int64)
    quantiles = np.empty(len(images))
    for label in np.unique(labels):
        pool = np.sort(reference_ink[reference_labels == label])
        rows = labels == label
        quantiles[rows] = np.searchsorted(pool, ink[rows], side="right") / max(len(pool), 1)
    return quantiles


def _dsprites_values(factor_classes: np.ndarray) -> dict[str, np.ndarray]:
    names = ("shape", "scale", "orientation", "pos_x", "pos_y")
    values = {name: np.asarray(DSPRITES_FACTORS[name], dtype=np.float64)[factor_classes[:, i]] for i, name in enumerate(names)}
    values["shape"] = factor_classes[:, 0].astype(np.float64)  # shapes by class id 0..2
    return values


def load_recipe_data(
    name: str,
    *,
    data_dir: str | Path | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    exclude: str | None = None,
    seed: int = 0,
) -> ImageData:
    """The images of recipe ``name``: MNIST/Fashion-MNIST from ``data_dir`` (the folder of the four
    IDX files; without it, the cache filled by downloading) or dSprites (the official npz in
    ``data_dir`` or the cache, else the procedural renderer)."""
    if name not in RECIPES:
        raise ValueError(f"recipe {name!r} is unknown: choose one of {', '.join(RECIPES)}")
    settings = RECIPES[name]
    train_size = settings.train_size if train_size is None else train_size
    test_size = settings.test_size if test_size is None else test_size
    for label, value in (("train_size", train_size), ("test_size", test_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
            raise ValueError(f"{label}={value!r} is invalid: give a whole number >= 2")
    rng = np.random.default_rng(seed)
    conditions = parse_exclusion(exclude, name) if exclude else None
    if name == "dsprites":
        npz = Path(data_dir) / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz" if data_dir else None
        truth = load_dsprites(npz if npz is not None and npz.is_file() else None)
        excluded_mask = (lambda f: _matches(conditions, _dsprites_values(f))) if conditions else None
        train, _ = truth.sample(train_size, rng, exclude=excluded_mask)
        test, test_factors = truth.sample(test_size, rng, exclude=excluded_mask)
        data = ImageData(name, train, test, test_labels=test_factors[:, 0], test_factors=test_factors,
                         label_names=list(DSPRITES_SHAPE_NAMES), ground_truth=truth)
        if conditions:
            left_out, left_out_factors = truth.sample(test_size, rng, exclude=lambda f: ~excluded_mask(f))
            grid_left_out = int(excluded_mask(truth.factors_of(np.arange(len(truth)))).sum())
            data = replace(data, exclusion=exclude, excluded=left_out, excluded_labels=left_out_factors[:, 0],
                           excluded_factors=left_out_factors, excluded_from_training=grid_left_out)
        return data

    train_split = load_idx_dataset(settings.dataset, "train", root=data_dir)
    test_split = load_idx_dataset(settings.dataset, "test", root=data_dir)
    train, train_labels = train_split.images, train_split.labels
    test, test_labels = test_split.images, test_split.labels
    excluded = excluded_labels = None
    left_out_count = 0
    if conditions:
        def rule(images, labels):
            return _matches(conditions, {"label": labels.astype(np.float64), "ink": _ink_quantiles(images, labels, train_split.images, train_split.labels)})

        train_mask, test_mask = rule(train, train_labels), rule(test, test_labels)
        if not train_mask.any():
            raise ValueError(f"exclude={exclude!r} matches no training image: loosen the rule")
        left_out_count = int(train_mask.sum())
        train, train_labels = train[~train_mask], train_labels[~train_mask]
        excluded, excluded_labels = test[test_mask], test_labels[test_mask]
        test, test_labels = test[~test_mask], test_labels[~test_mask]
    if train_size is not None and train_size < len(train):
        train = train[np.sort(rng.choice(len(train), train_size, replace=False))]
    if test_size < len(test):
        keep = np.sort(rng.choice(len(test), test_size, replace=False))
        test, test_labels = test[keep], test_labels[keep]
    return ImageData(name, train, test, test_labels=test_labels, label_names=list(train_split.label_names),
                     exclusion=exclude, excluded=excluded, excluded_labels=excluded_labels, excluded_from_training=left_out_count)


# ------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------
def _gaussian_columns(model: ImageModel) -> np.ndarray:
    return np.asarray(model.groups_.gaussian_columns(), dtype=int)


def label_information(model: ImageModel, images: np.ndarray, labels: np.ndarray, bins: int = 20) -> dict[str, Any]:
    """I(y; z_e) per Gaussian dimension (posterior means, ``bins``-bin histograms), I(y; c) for the
    Concrete argmax c, and the paper's Figure 6 gap I(y; c) - max_e I(y; z_e), in nats and / H(y)."""
    moments = model.group_moments(images)  # one encoding pass for the codes and the classes
    codes = np.concatenate([mean for mean, _ in moments], axis=1)
    labels = np.asarray(labels)
    entropy = float(factor_entropy(labels[:, None])[0])
    gaussian = codes[:, _gaussian_columns(model)]
    per_dimension = discrete_mutual_information(gaussian, labels[:, None], bins=bins)[:, 0] if gaussian.shape[1] else np.zeros(0)
    result: dict[str, Any] = {
        "bins": bins,
        "label_entropy": entropy,
        "per_gaussian_dimension": dict(zip([model.code_labels()[i] for i in _gaussian_columns(model)], per_dimension.tolist())),
    }
    if model.groups_.concrete:
        first_concrete = next(i for i, g in enumerate(model.groups_) if g.is_concrete)  # as model.classes()
        classes = moments[first_concrete][0].argmax(axis=1)
        concrete = float(mutual_info_score(labels, classes))  # c is already discrete: no binning
        best_gaussian = float(per_dimension.max()) if per_dimension.size else 0.0
        result.update({
            "concrete": concrete,
            "concrete_accuracy": unsupervised_accuracy(labels, classes),
            "gap": concrete - best_gaussian,
            "normalized_gap": (concrete - best_gaussian) / entropy if entropy > 0 else 0.0,
        })
    return result


#: The style values of the traversals :func:`traversal_identity` judges.
TRAVERSAL_VALUES = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def traversal_identity(
    model: ImageModel, images: np.ndarray, labels: np.ndarray, *, active: Sequence[str] | None = None,
    bases_per_category: int = 10, neighbours: int = 5, seed: int = 0,
) -> dict[str, Any]:
    """Do the style traversals keep the class? The paper's Figure 5, counted instead of looked at.

    A judge, scikit-learn's ``KNeighborsClassifier`` (``neighbours`` nearest by pixel distance),
    names the class of decoded images. It is fitted on the decoder's reconstructions of the first
    half of ``images`` [N, ...] with their ``labels`` [N], so that it reads decoded pixel
    probabilities as it will be asked to (fitted on raw images it calls every blurred decode an
    8), and ``judge_accuracy`` is its accuracy on the reconstructions of the other half. Each
    Concrete category k gets the class most of the images it takes belong to; from
    ``bases_per_category`` of those images' codes (drawn with ``seed``) the Concrete block is set
    to the one-hot of k and one Gaussian dimension (each of ``active``, default all) to each of
    ``TRAVERSAL_VALUES``. Returns the share of decoded images the judge gives the category's class:
    ``kept`` over all traversals, ``kept_at_zero`` with the moved dimension at 0 (its prior
    mean), ``per_value`` and ``per_category``; categories that take no image are left out.
    """
    from sklearn.neighbors import KNeighborsClassifier

    images, labels = np.asarray(images), np.asarray(labels)
    code = model.transform(images)  # encoded once: the reconstructions and the categories both read it
    reconstructions = model.decode(code).reshape(len(images), -1)
    half = len(images) // 2
    judge = KNeighborsClassifier(n_neighbors=neighbours).fit(reconstructions[:half], labels[:half])
    judge_accuracy = float((judge.predict(reconstructions[half:]) == labels[half:]).mean())
    concrete = next(g for g in model.groups_ if g.is_concrete)
    block = model.groups_.column_slices()[concrete.name]
    assigned = code[:, block].argmax(1)
    code_labels = model.code_labels()
    columns = [c for c in _gaussian_columns(model) if active is None or code_labels[c] in set(active)]
    rng = np.random.default_rng(seed)
    kept, values_kept, per_category = [], {v: [] for v in TRAVERSAL_VALUES}, {}
    for category in range(concrete.size):
        members = np.flatnonzero(assigned == category)
        if not len(members) or not columns:  # an empty category, or no active style dimension to move
            continue
        target = np.bincount(labels[members]).argmax()
        bases = code[rng.choice(members, size=min(bases_per_category, len(members)), replace=False)]
        bases[:, block] = np.eye(concrete.size)[category]
        grid = np.repeat(bases[:, None, None], len(columns), axis=1).repeat(len(TRAVERSAL_VALUES), axis=2)
        for i, column in enumerate(columns):
            grid[:, i, :, column] = TRAVERSAL_VALUES
        decoded = model.decode(grid.reshape(-1, grid.shape[-1]))
        same = (judge.predict(decoded.reshape(len(decoded), -1)) == target).reshape(grid.shape[:3])
        per_category[f"{concrete.name}={category}"] = {"class": int(target), "kept": float(same.mean())}
        kept.append(same)
        for j, value in enumerate(TRAVERSAL_VALUES):
            values_kept[value].append(same[:, :, j])
    if not kept:
        return {
            "kept": float("nan"), "kept_at_zero": float("nan"), "per_value": {}, "per_category": {},
            "dimensions": [code_labels[c] for c in columns], "judge_accuracy": judge_accuracy,
        }
    per_value = {f"{v:+g}": float(np.mean([k.mean() for k in values_kept[v]])) for v in TRAVERSAL_VALUES}
    return {
        "kept": float(np.mean([k.mean() for k in kept])),
        "kept_at_zero": per_value["+0"],
        "per_value": per_value,
        "per_category": per_category,
        "dimensions": [code_labels[c] for c in columns],
        "judge": f"{neighbours}-nearest-neighbour classifier on the reconstructions of {half} labelled images",
        "judge_accuracy": judge_accuracy,
    }


def score_image_model(
    model: ImageModel,
    data: ImageData,
    *,
    mi_threshold: float = 0.1,
    seed: int = 0,
    quick_disentanglement: bool = True,
    dci_regressor: str = "random_forest",
) -> dict[str, Any]:
    """Every metric of the recipe on its test images (see the module docstring)."""
    information = model.information(data.test, seed=seed, max_items=10000)
    summary = information_summary(model, information, mi_threshold)
    gaussian_labels = [model.code_labels()[i] for i in _gaussian_columns(model)]
    summary["pruned_gaussian_dimensions"] = [label for label in summary["pruned_topics"] if label in gaussian_labels]
    summary["total_correlation"] = summary["tc_between"] + sum(summary["tc_within"].values())
    seen_error = float(model.reconstruction_error(data.test).mean())
    scores: dict[str, Any] = {
        "dataset": data.name,
        "test_images": int(len(data.test)),
        "information": summary,
        "reconstruction_error": {"mean_nats_per_image": seen_error, "code": "posterior mean"},
    }
    if data.test_labels is not None:
        scores["labels"] = label_information(model, data.test, data.test_labels)
        scores["labels"]["label_meaning"] = "shape" if data.name == "dsprites" else "class"
        if model.groups_.concrete and data.name != "dsprites":  # dSprites' shape is judged by its own metrics
            pruned = set(summary["pruned_gaussian_dimensions"])
            active = [label for label in gaussian_labels if label not in pruned]
            scores["traversals"] = traversal_identity(model, data.test, data.test_labels, active=active, seed=seed)
    if data.ground_truth is not None:
        scores["disentanglement"] = evaluate_disentanglement(
            data.ground_truth, model.transform, np.random.default_rng(seed), quick=quick_disentanglement, dci_regressor=dci_regressor
        )
    if data.excluded is not None:
        scores["generalization"] = generalization_report(model, data, seen_error=seen_error)
    return scores


def generalization_report(model: ImageModel, data: ImageData, *, seen_error: float | None = None) -> dict[str, Any]:
    """Left-out combinations against seen test images: reconstruction error and encoded values.

    For each Gaussian dimension, the mean and standard deviation of the posterior means on the
    seen and on the left-out images; the Concrete group's accuracy on both (against classes or
    shapes); and, for dSprites, each factor's correlation with its best-matching dimension on the
    seen images and, with the same dimension, on the left-out ones (how well the code carries
    over to combinations it never saw). ``seen_error``: the seen images' mean reconstruction
    error when the caller has it already.
    """
    seen_codes, left_codes = model.transform(data.test), model.transform(data.excluded)
    columns = _gaussian_columns(model)
    labels = model.code_labels()
    report: dict[str, Any] = {
        "rule": data.exclusion,
        "left_out_of_training": data.excluded_from_training,
        "seen_images": int(len(data.test)),
        "left_out_images": int(len(data.excluded)),
        "reconstruction_error_seen": seen_error if seen_error is not None else float(model.reconstruction_error(data.test).mean()),
        "reconstruction_error_left_out": float(model.reconstruction_error(data.excluded).mean()),
        "codes": {
            labels[c]: {
                "seen_mean": float(seen_codes[:, c].mean()), "seen_std": float(seen_codes[:, c].std()),
                "left_out_mean": float(left_codes[:, c].mean()), "left_out_std": float(left_codes[:, c].std()),
            }
            for c in columns
        },
    }
    if model.groups_.concrete and data.excluded_labels is not None:
        report["concrete_accuracy_seen"] = unsupervised_accuracy(data.test_labels, model.classes(data.test))
        report["concrete_accuracy_left_out"] = unsupervised_accuracy(data.excluded_labels, model.classes(data.excluded))
    if data.excluded_factors is not None and data.test_factors is not None and len(columns):
        factors = {}
        for f, name in enumerate(data.ground_truth.factor_names):
            seen_corr = [abs(_correlation(seen_codes[:, c], data.test_factors[:, f])) for c in columns]
            best = int(np.argmax(seen_corr))
            factors[name] = {
                "dimension": labels[columns[best]],
                "abs_correlation_seen": seen_corr[best],
                "abs_correlation_left_out": abs(_correlation(left_codes[:, columns[best]], data.excluded_factors[:, f])),
            }
        report["factors"] = factors
    return report


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------
def _image_grid(images: np.ndarray, rows: int, cols: int, path: Path, *, row_labels: Sequence[str] = (), col_labels: Sequence[str] = (), title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = images.shape[-2:]
    canvas = np.ones((rows * (height + 1), cols * (width + 1)))
    for index, image in enumerate(images[: rows * cols]):
        r, c = divmod(index, cols)
        canvas[r * (height + 1): r * (height + 1) + height, c * (width + 1): c * (width + 1) + width] = image.reshape(-1, height, width).mean(0)
    figure, axes = plt.subplots(figsize=(0.6 * cols + 1.2, 0.6 * rows + 0.6))
    axes.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes.set_xticks([c * (width + 1) + width / 2 for c in range(len(col_labels))], list(col_labels), fontsize=6)
    axes.set_yticks([r * (height + 1) + height / 2 for r in range(len(row_labels))], list(row_labels), fontsize=6)
    axes.tick_params(length=0)
    if title:
        axes.set_title(title, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _information_report(summary: dict[str, Any], model: ImageModel) -> InformationReport:
    """The :class:`InformationReport` behind an :func:`information_summary` dict (no second estimate)."""
    names = [g.name for g in model.groups_]
    return InformationReport(
        dataset_size=summary["dataset_size"],
        mutual_information=summary["mutual_information"],
        per_group=np.array([summary["per_group"][n] for n in names]),
        per_variable=np.array([summary["per_topic"][label] for label in model.variable_labels()]),
        tc_between=summary["tc_between"],
        tc_within=np.array([summary["tc_within"][n] for n in names]),
    )


def write_image_plots(model: ImageModel, data: ImageData, scores: dict[str, Any], directory: str | Path, *, steps: int = 9) -> list[str]:
    """Traversals, sorted MI bars, reconstructions (and left-out codes) as PNG files in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    values = np.linspace(-3, 3, steps)
    base = model.transform(data.test[:1])[0]
    per_variable = scores["information"]["per_topic"]
    columns = _gaussian_columns(model)
    labels = model.code_labels()
    order = sorted(columns, key=lambda c: -per_variable[labels[c]])
    # every Gaussian dimension, sorted by I(x; z_e), over (-3, 3) around the first test image's code
    codes = np.repeat(base[None], len(order) * steps, axis=0)
    for row, column in enumerate(order):
        codes[row * steps:(row + 1) * steps, column] = values
    _image_grid(model.decode(codes), len(order), steps, directory / "traversals.png",
                row_labels=[f"{labels[c]} ({per_variable[labels[c]]:.2f})" for c in order],
                col_labels=[f"{v:+.1f}" for v in values], title="Traversals over (-3, 3), rows sorted by I(x; z_e) [nats]")
    written.append(directory / "traversals.png")
    for group in model.groups_.concrete:
        # per category of the Concrete group, the most informative dimension's traversal (paper Fig. 4)
        start = model.groups_.column_slices()[group.name].start
        if not order:
            break
        codes = np.repeat(base[None], group.size * steps, axis=0)
        for category in range(group.size):
            rows = slice(category * steps, (category + 1) * steps)
            codes[rows, start:start + group.size] = np.eye(group.size)[category]
            codes[rows, order[0]] = values
        path = directory / f"traversals_{group.name}.png"
        _image_grid(model.decode(codes), group.size, steps, path, row_labels=[f"{group.name}={k}" for k in range(group.size)],
                    col_labels=[f"{v:+.1f}" for v in values], title=f"Each category of {group.name}, traversing {labels[order[0]]}")
        written.append(path)
    originals = data.test[:10].astype(np.float32) / (255.0 if data.test.max() > 1 else 1.0)
    _image_grid(np.concatenate([originals[:, None], model.reconstruct(data.test[:10])]), 2, len(originals), directory / "reconstructions.png",
                row_labels=["data", "reconstruction"], title="Test images and their mean-code reconstructions")
    written.append(directory / "reconstructions.png")
    plot_information(_information_report(scores["information"], model), model.variable_labels(), scores["information"]["threshold"], directory / "mutual_information.png", unit="latent variable")
    written.append(directory / "mutual_information.png")
    if data.excluded is not None and len(columns):
        written.append(_plot_generalization(model, data, scores["generalization"], directory / "generalization.png"))
    return [str(p) for p in written]


def _plot_generalization(model: ImageModel, data: ImageData, report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen, left = model.transform(data.test), model.transform(data.excluded)
    columns = _gaussian_columns(model)
    labels = model.code_labels()
    shift = [abs(report["codes"][labels[c]]["left_out_mean"] - report["codes"][labels[c]]["seen_mean"]) for c in columns]
    chosen = [columns[i] for i in np.argsort(shift)[::-1][:4]]
    figure, axes = plt.subplots(1, len(chosen) + 1, figsize=(3.0 * (len(chosen) + 1), 2.8))
    for ax, column in zip(axes, chosen):
        ax.hist(seen[:, column], bins=40, density=True, alpha=0.5, label="seen")
        ax.hist(left[:, column], bins=40, density=True, alpha=0.5, label="left out")
        ax.set_title(labels[column], fontsize=8)
    axes[0].legend(fontsize=7)
    originals = data.excluded[:6].astype(np.float32) / (255.0 if data.excluded.max() > 1 else 1.0)
    pair = np.concatenate([originals.reshape(len(originals), *originals.shape[-2:]), model.reconstruct(data.excluded[:6])[:, 0]], axis=1)
    axes[-1].imshow(np.concatenate(list(pair), axis=1), cmap="gray_r", vmin=0, vmax=1)
    axes[-1].set_title("left-out images (top) and reconstructions", fontsize=8)
    axes[-1].axis("off")
    figure.suptitle(f"Never trained on: {report['rule']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_json(payload: dict, path: str | Path) -> None:
    """Write JSON atomically (see :func:`topicvae.io.atomic.write_json_atomically`), NumPy values as plain ones."""
    write_json_atomically(path, plain(payload))


def recipe_model(name: str, *, objective: str = "hfvae", groups: str | None = None, architecture: str | None = None,
                 epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                 temperature: float = 0.66, seed: int = 0, device: str = "cpu", class_conditioned: bool = False,
                 class_capacity: float = 0.0, style_capacity: float = 0.0, augmentation: float = 0.0,
                 imsat: float | None = None, class_encoder: str | None = None, n_init: int = 1,
                 **weights: float | None) -> ImageModel:
    """An unfitted :class:`ImageModel` with recipe ``name``'s settings, overridden by the arguments (None: the recipe's)."""
    if name not in RECIPES:
        raise ValueError(f"recipe {name!r} is unknown: choose one of {', '.join(RECIPES)}")
    if objective not in RECIPE_WEIGHTS:
        raise ValueError(f"objective={objective!r} is unknown: choose one of {', '.join(RECIPE_WEIGHTS)}")
    settings = RECIPES[name]
    chosen = {**RECIPE_WEIGHTS[objective], **{k: v for k, v in weights.items() if v is not None}}
    if class_encoder is None:  # a class-conditioned style reads the class from its own head
        class_encoder = "shared" if class_conditioned else settings.class_encoder
    return ImageModel(
        groups or settings.groups, architecture=architecture or settings.architecture, objective=objective,
        epochs=settings.epochs if epochs is None else epochs, batch_size=settings.batch_size if batch_size is None else batch_size,
        lr=settings.lr if lr is None else lr, temperature=temperature, class_conditioned=class_conditioned, seed=seed,
        class_capacity=class_capacity, style_capacity=style_capacity, augmentation=augmentation,
        imsat=settings.imsat if imsat is None else imsat, class_encoder=class_encoder, n_init=n_init,
        device=device, **chosen,
    )


def headline(scores: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a sweep plots: I(x; z), total correlation, the label gap, the Concrete accuracy."""
    out = {
        "mutual_information": scores["information"]["mutual_information"],
        "total_correlation": scores["information"]["total_correlation"],
        "pruned_gaussian_dimensions": len(scores["information"]["pruned_gaussian_dimensions"]),
    }
    if "labels" in scores and "gap" in scores["labels"]:
        out.update(label_gap=scores["labels"]["normalized_gap"], concrete_accuracy=scores["labels"]["concrete_accuracy"])
    if "disentanglement" in scores:
        d = scores["disentanglement"]
        out.update(factor_vae=d["factor_vae"]["score"], dci_disentanglement=d["dci"]["disentanglement"], mig=d["mig"]["mig"])
    return out


def plot_sweep(runs: Sequence[dict[str, Any]], directory: str | Path) -> list[str]:
    """The paper's Figure 6: I(x; z) against the total correlation, and the label gap against beta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(4.5, 3.5))
    betas = sorted({run["beta"] for run in runs})
    colours = plt.cm.viridis(np.linspace(0, 1, max(len(betas), 2)))
    for beta, colour in zip(betas, colours):
        chosen = [run for run in runs if run["beta"] == beta]
        axes.scatter([r["total_correlation"] for r in chosen], [r["mutual_information"] for r in chosen], color=colour,
                     label=f"beta={beta:g}, gamma={chosen[0]['gamma']:g}")
    axes.set_xlabel("total correlation TC(z, c) [nats]")
    axes.set_ylabel("I(x; z, c) [nats]")
    axes.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(directory / "sweep_mi_tc.png", dpi=120)
    plt.close(figure)
    written = [str(directory / "sweep_mi_tc.png")]
    if all("label_gap" in run for run in runs):
        figure, axes = plt.subplots(figsize=(4.5, 3.5))
        for beta in betas:
            gaps = [run["label_gap"] for run in runs if run["beta"] == beta]
            axes.scatter([beta] * len(gaps), gaps, color="tab:blue", alpha=0.6)
        axes.plot(betas, [np.mean([r["label_gap"] for r in runs if r["beta"] == b]) for b in betas], color="tab:blue")
        axes.set_xscale("log")
        # label the swept values themselves: log-axis minor labels (3x10^0 ...) collide
        axes.set_xticks(betas, [f"{beta:g}" for beta in betas])
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes.set_xlabel("beta")
        axes.set_ylabel("(I(y; c) - max_e I(y; z_e)) / H(y)")
        figure.tight_layout()
        figure.savefig(directory / "sweep_gap_beta.png", dpi=120)
        plt.close(figure)
        written.append(str(directory / "sweep_gap_beta.png"))
    return written

