"""``ImageModel``: the estimator for images, with the same groups, objective and analysis as topics."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError

from topicvae.objective.information import InformationReport, encoder_information, sampled_information, subset_indices
from topicvae.images.class_levers import VAT_RADIUS_SCALE, ClassLevers, neighbour_distances
from topicvae.latent.groups import GroupSpec
from topicvae.images.models import ARCHITECTURES, ImageVAE, check_class_encoder
from topicvae.objective.terms import ObjectiveWeights, item_elbo
from topicvae.io.model_files import FORMAT_VERSION, interpreting_config, load_weights, package_version, plain, read_config, write_model_directory
from topicvae.training.distributed import resolve_device
from topicvae.utils.random_state import RandomStreams, seeded
from topicvae.training.loop import TrainingProgress, check_seed, check_training_options, train
from topicvae.training.batches import ImageBatches

__all__ = ["ImageModel", "restart_seeds", "final_training_objective"]


def restart_seeds(seed: int, n_init: int) -> list[int]:
    """The seeds of ``n_init`` restarts: ``seed`` first, then seeds derived from the pair (seed, r).

    Derived rather than seed + r, so that the restarts of seed 0 are not the first runs of seeds 1, 2, ...
    """
    derived = [int(np.random.SeedSequence([seed, r]).generate_state(1, dtype=np.uint32)[0]) for r in range(1, n_init)]
    return [seed, *derived]


def final_training_objective(terms: dict[str, float]) -> float:
    """The loss a restart minimized, from its last epoch's mean terms: the objective's loss plus the levers' penalty."""
    return float(terms["loss"]) + float(terms.get("penalty", 0.0))


def _image_tensor(X, *, name: str = "X") -> tuple[torch.Tensor, float]:
    """Images as a [N, C, H, W] tensor and the factor that maps its values into [0, 1].

    uint8 arrays keep their type (a quarter of float32's memory): grey levels 0..255 get the
    factor 1/255, binary {0, 1} images the factor 1. Float arrays must lie in [0, 1].
    """
    if isinstance(X, np.ndarray):
        if X.dtype == np.bool_:  # binary images: 0 and 1
            X = X.astype(np.uint8)
        # torch needs a writable buffer; read-only arrays (np.frombuffer, memory maps) are copied
        tensor = torch.from_numpy(X if X.flags.writeable and X.flags.c_contiguous else np.array(X, order="C"))
    elif isinstance(X, torch.Tensor):
        tensor = X.detach().cpu()
        if tensor.dtype == torch.bool:
            tensor = tensor.to(torch.uint8)
    else:
        raise ValueError(f"{name} of type {type(X).__name__} is invalid: pass a numpy array or tensor of images [N, H, W] or [N, C, H, W]")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}: pass images [N, H, W] or [N, C, H, W]")
    if tensor.shape[3] in (1, 3, 4) and tensor.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}, channels last [N, H, W, C]: pass [N, C, H, W], "
            f"e.g. np.moveaxis({name}, -1, 1)"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} holds no images: pass at least one")
    if tensor.dtype == torch.uint8:
        return tensor, (1.0 if int(tensor.max()) <= 1 else 1.0 / 255.0)
    if not tensor.is_floating_point():
        raise ValueError(f"{name} has dtype {tensor.dtype}: pass uint8 grey levels, booleans or floats in [0, 1]")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
        raise ValueError(f"{name} holds values outside [0, 1] or non-finite ones: scale the pixels to [0, 1]")
    return tensor, 1.0


class ImageModel(TransformerMixin, BaseEstimator):
    """A VAE on images with grouped latent variables (Gaussian style, Concrete classes), trained with HFVAE.

    Parameters
    ----------
    groups : str or GroupSpec
        E.g. ``"10,10c"``: 10 Gaussian dimensions and one 10-way Concrete variable (the paper's
        MNIST prior); ``"10,3c"`` for dSprites.
    architecture : {"mlp", "conv"}
        See :mod:`topicvae.images.models`.
    objective : {"hfvae", "vae", "beta-vae", "beta-tcvae"}
        A preset of the objective's weights; ``alpha``, ``beta``, ``gamma``, ``delta`` override
        what the preset lets you set.
    epochs, batch_size : int
        Passes over the images and images per step (the batch that estimates q(z)).
    lr : float
        Adam's learning rate.
    hidden_sizes : sequence of int
        The MLP's layers (ignored by ``conv``).
    temperature : float
        The Concrete groups' temperature lambda (posterior and prior).
    class_capacity, style_capacity, augmentation, imsat : float
        Weights of the levers that move the class into the Concrete group
        (:mod:`topicvae.images.class_levers`): a capacity on the categorical I(x; c) rising to log K,
        a capacity on the style's KL rising to 5 nats, the consistency of q(c | x) under
        small random affine maps, and IMSAT's regularized information maximization (virtual
        adversarial consistency at each image's radius, confident and balanced categories;
        fitting first computes every image's distance to its 10th nearest neighbour). 0 (the
        default) leaves a lever off. Measured on MNIST in docs/images.md: ``imsat=1000`` with
        ``class_encoder="separate"`` is what takes the digit.
    class_encoder : {"shared", "separate"}
        Where the first Concrete group's logits come from: a head on the style encoder's
        features, or IMSAT's network of its own on the pixels
        (:func:`~topicvae.images.models.imsat_class_encoder`; not with ``class_conditioned``).
    class_conditioned : bool
        Encode the Gaussian style given the class sample, q(c | x) q(z | x, c), as the
        authors' MNIST model does (needs one Concrete group; the heads are affine in c,
        :class:`~topicvae.images.models.ClassConditionedPosterior`). ``transform`` then gives
        the style at the most probable class.
    n_init : int
        Restarts from different random starts; the model kept is the one whose training
        objective (the loss minimized, levers included, averaged over its last epoch) is the
        lowest, an unsupervised choice as in scikit-learn's ``KMeans(n_init=...)``. Restart 0
        is the run ``n_init=1`` gives; ``restarts_`` lists every restart's seed and objective.
    seed : int
        Seeds the run's own random numbers (initial weights, batch order, samples) and the
        restarts' seeds.
    device : str
        "cpu", "cuda" or "auto".
    """

    def __init__(
        self,
        groups: str | GroupSpec = "10,10c",
        *,
        architecture: str = "mlp",
        objective: str = "hfvae",
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        delta: float | None = None,
        epochs: int = 20,
        batch_size: int = 100,
        lr: float = 1e-3,
        hidden_sizes: Sequence[int] = (400, 400),
        temperature: float = 0.66,
        class_capacity: float = 0.0,
        style_capacity: float = 0.0,
        augmentation: float = 0.0,
        imsat: float = 0.0,
        class_encoder: str = "shared",
        class_conditioned: bool = False,
        n_init: int = 1,
        seed: int = 0,
        device: str = "auto",
    ):
        self.groups = groups
        self.architecture = architecture
        self.objective = objective
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.delta = delta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.hidden_sizes = hidden_sizes
        self.temperature = temperature
        self.class_capacity = class_capacity
        self.style_capacity = style_capacity
        self.augmentation = augmentation
        self.imsat = imsat
        self.class_encoder = class_encoder
        self.class_conditioned = class_conditioned
        self.n_init = n_init
        self.seed = seed
        self.device = device

    def _levers(self, groups: GroupSpec) -> ClassLevers:
        levers = ClassLevers(
            class_capacity=plain(self.class_capacity), style_capacity=plain(self.style_capacity), augmentation=plain(self.augmentation),
            imsat=plain(self.imsat),
        )
        if (levers.class_capacity or levers.augmentation or levers.imsat) and not groups.concrete:
            raise ValueError(
                f"class_capacity, augmentation and imsat act on a Concrete group, and groups {groups} have none: e.g. groups='10,10c'"
            )
        if levers.style_capacity and not groups.gaussian:
            raise ValueError(f"style_capacity acts on Gaussian groups, and groups {groups} have none: e.g. groups='10,10c'")
        return levers

    def _validate(self) -> tuple[GroupSpec, ObjectiveWeights]:
        groups = GroupSpec.coerce(self.groups)
        weights = ObjectiveWeights.preset(self.objective, alpha=self.alpha, beta=self.beta, gamma=self.gamma, delta=self.delta)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r} is unknown: choose one of {', '.join(ARCHITECTURES)}")
        check_training_options(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, temperature=self.temperature,
            hidden_sizes=self.hidden_sizes, items="images", lr_example="1e-3",
        )
        check_seed(self.seed)
        if isinstance(self.n_init, bool) or not isinstance(self.n_init, (int, np.integer)) or self.n_init < 1:
            raise ValueError(f"n_init={self.n_init!r} is invalid: give a whole number of restarts >= 1")
        if self.hidden_sizes is None:
            raise ValueError("hidden_sizes=None is invalid: give one or more whole numbers >= 1")
        if not isinstance(self.class_conditioned, (bool, np.bool_)):
            raise ValueError(f"class_conditioned={self.class_conditioned!r} is invalid: give True or False")
        if self.class_conditioned and (len(groups.concrete) != 1 or not groups.gaussian):
            raise ValueError(
                f"class_conditioned=True needs one Concrete group and Gaussian groups, not {groups}: e.g. groups='10,10c'"
            )
        check_class_encoder(self.class_encoder, groups, self.class_conditioned)
        self._levers(groups)
        return groups, weights

    def _build(self, image_shape: Sequence[int], groups: GroupSpec) -> ImageVAE:
        return ImageVAE(
            image_shape, groups, architecture=self.architecture, hidden_sizes=tuple(int(h) for h in self.hidden_sizes), temperature=float(self.temperature),
            class_conditioned=bool(self.class_conditioned), class_encoder=str(self.class_encoder),
        )

    # -----------------------------------------------------------------------------------
    # fitting
    # -----------------------------------------------------------------------------------
    def fit(self, X, y=None) -> ImageModel:
        """Fit on images: uint8 grey levels, {0, 1} images or floats in [0, 1]."""
        for _ in self.fit_iter(X):
            pass
        return self

    def fit_iter(self, X) -> Iterator[TrainingProgress]:
        """Like :meth:`fit`, but yield a :class:`TrainingProgress` after every optimizer step (of every restart)."""
        groups, weights = self._validate()
        device = resolve_device(self.device)
        images, scale = _image_tensor(X)
        if images.shape[0] < 2:
            raise ValueError(f"X holds {images.shape[0]} image: training needs at least 2")
        self.groups_, self.weights_ = groups, weights
        self.image_shape_ = tuple(int(s) for s in images.shape[1:])
        self.n_images_ = int(images.shape[0])
        batches = ImageBatches(images, min(self.batch_size, images.shape[0]), scale=scale, device=device)
        levers = self._levers(groups)
        radius = None
        if levers.imsat:  # IMSAT's per-image VAT radius, from the training images' 10th neighbours
            radius = VAT_RADIUS_SCALE * neighbour_distances(
                images, scale=scale, generator=torch.Generator().manual_seed(int(self.seed))
            ).to(device)
        self.restarts_: list[dict[str, float]] = []
        best: tuple[float, ImageVAE, list[dict[str, float]]] | None = None
        for seed in restart_seeds(int(self.seed), int(self.n_init)):
            # the restart's own random numbers (RandomStreams): the caller's generators are left alone
            streams = RandomStreams(seed, cuda=device.type == "cuda")
            with streams.active():
                model = self._build(self.image_shape_, groups).to(device)
            self.model_, self.history_ = model, []  # what a caller of fit_iter sees while this restart trains
            optimizer = torch.optim.Adam(model.parameters(), lr=float(self.lr), betas=(0.9, 0.999))

            def regularizer(out, batch, progress, index, model=model):
                return levers.terms(model, batch, out, progress, radius=None if radius is None else radius[index.to(device)])

            steps = train(
                model, batches, weights, epochs=int(self.epochs), optimizer=optimizer, generator=streams.shuffle,
                regularizer=regularizer if levers.active else None,
            )
            try:
                for progress in streams.drawing(steps):
                    if progress.epoch_terms is not None:
                        self.history_.append({"epoch": progress.epoch, **progress.epoch_terms})
                    yield progress
            finally:
                model.eval()
            objective = final_training_objective(self.history_[-1])
            self.restarts_.append({"seed": seed, "objective": objective})
            if best is None or objective < best[0]:
                best = (objective, model, self.history_)
        _, self.model_, self.history_ = best

    # -----------------------------------------------------------------------------------
    # using a fitted model
    # -----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError("this ImageModel is not fitted yet: call fit() first, or ImageModel.load(path)")

    def _batches(self, X, batch_size: int = 1000) -> Iterator[torch.Tensor]:
        images, scale = _image_tensor(X)
        if tuple(images.shape[1:]) != self.image_shape_:
            raise ValueError(f"X has images of shape {tuple(images.shape[1:])}; the model was fitted on {self.image_shape_}")
        self.model_.eval()
        device = next(self.model_.parameters()).device
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size].to(device, torch.float32) * scale

    def group_moments(self, X) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per group, the posterior mean and variance of every image (Concrete: p and p(1 - p))."""
        self._check_fitted()
        with torch.no_grad():
            parts = [self.model_.posterior_moments(batch) for batch in self._batches(X)]
        return [
            (torch.cat([p[d][0] for p in parts]).cpu().numpy(), torch.cat([p[d][1] for p in parts]).cpu().numpy())
            for d in range(len(self.groups_))
        ]

    def transform(self, X) -> np.ndarray:
        """The code of every image: Gaussian posterior means and Concrete category probabilities."""
        return np.concatenate([mean for mean, _ in self.group_moments(X)], axis=1)

    def classes(self, X, group: str | None = None) -> np.ndarray:
        """The most probable category of a Concrete group (default: the first) for every image."""
        self._check_fitted()
        concrete = [i for i, g in enumerate(self.groups_) if g.is_concrete]
        if not concrete:
            raise ValueError(f"groups {self.groups_} have no Concrete group: classes() needs one, e.g. groups='10,10c'")
        names = [self.groups_[i].name for i in concrete]
        if group is not None and group not in names:
            raise ValueError(f"group={group!r} is not a Concrete group of this model: choose one of {', '.join(names)}")
        index = concrete[names.index(group)] if group is not None else concrete[0]
        return self.group_moments(X)[index][0].argmax(axis=1)

    def code_labels(self) -> list[str]:
        """A label per code column: '<group>:<index>'."""
        self._check_fitted()
        return [f"{group}:{index}" for group, index in self.groups_.topic_labels()]

    def variable_labels(self) -> list[str]:
        """A label per latent variable: each Gaussian dimension, and each Concrete group as a whole."""
        self._check_fitted()
        return self.groups_.variable_labels()

    def decode(self, code) -> np.ndarray:
        """Pixel probabilities [n, C, H, W] for codes [n, columns] laid out as :meth:`transform`'s."""
        self._check_fitted()
        code = torch.as_tensor(np.asarray(code, dtype=np.float32))
        if code.ndim != 2 or code.shape[1] != self.groups_.num_columns:
            raise ValueError(f"code has shape {tuple(code.shape)}: pass [n, {self.groups_.num_columns}] codes")
        device = next(self.model_.parameters()).device
        with torch.no_grad():
            return torch.sigmoid(self.model_.decode_logits(code.to(device))).cpu().numpy()

    def reconstruct(self, X) -> np.ndarray:
        """Pixel probabilities decoded from each image's posterior mean code."""
        return self.decode(self.transform(X))

    def reconstruction_error(self, X) -> np.ndarray:
        """Per image, the Bernoulli negative log-likelihood (nats) of its mean-code reconstruction."""
        self._check_fitted()
        errors = []
        with torch.no_grad():
            for batch in self._batches(X):
                moments = self.model_.posterior_moments(batch)
                logits = self.model_.decode_logits(torch.cat([mean for mean, _ in moments], dim=1))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch, reduction="none")
                errors.append(loss.flatten(1).sum(1).double().cpu())
        return torch.cat(errors).numpy()

    def image_elbo(self, X, *, seed: int = 0) -> np.ndarray:
        """Each image's ELBO in nats, shape [N]: log p(x | z) - KL(q(z | x) || p(z)), one sample.

        The plain bound (:func:`topicvae.objective.terms.item_elbo`) whatever weights the model was
        trained with; the sample is drawn with ``seed`` (a class-conditioned style at the class
        sample, as in training).
        """
        self._check_fitted()
        elbos = []
        with torch.no_grad(), seeded(seed):
            for batch in self._batches(X):
                out = self.model_(batch)
                elbos.append(item_elbo(out.log_likelihood, out.posteriors, out.priors, out.samples).double().cpu())
        return torch.cat(elbos).numpy()

    def score(self, X, y=None) -> float:
        """The mean ELBO per image in nats (higher is better), from :meth:`image_elbo` with seed 0.

        So scikit-learn's model selection (``GridSearchCV``) ranks image models by held-out
        ELBO without a custom scorer. ``y`` is ignored.
        """
        return float(self.image_elbo(X).mean())

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The names of :meth:`transform`'s columns: '<group>:<index>' (:meth:`code_labels`)."""
        return np.asarray(self.code_labels(), dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "model_", None) is not None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # images [N, H, W] or [N, C, H, W] with values in [0, 1], not a 2-D table of features
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.positive_only = True
        return tags

    def information(self, X, *, seed: int = 0, max_items: int | None = None) -> InformationReport:
        """I(x; z), I(x; z_d), I(x; z_de) and the total correlations over the images X.

        q(z) is the exact mixture over the N images given (objective.md, identity 2), one sample
        per image drawn with ``seed``. The cost grows as N^2: with ``max_items``, a random subset
        of that many images (drawn with ``seed``) stands for X, and N is its size.
        """
        self._check_fitted()
        images, _ = _image_tensor(X)
        if images.shape[0] < 2:
            raise ValueError("X holds 1 image: information needs at least 2")
        chosen = subset_indices(images.shape[0], max_items, seed)
        batches = self._batches(images if chosen is None else images[torch.from_numpy(chosen)])
        if self.model_.class_conditioned:  # the style's posterior depends on the class sample
            return sampled_information(self.model_.draw, batches, seed=seed)
        return encoder_information(self.model_.encode, batches, seed=seed)

    # -----------------------------------------------------------------------------------
    # persistence: data, not pickles
    # -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``weights.pt`` (a state dict) to a directory, atomically."""
        self._check_fitted()
        params = plain(self.get_params(deep=False))
        params["groups"] = str(self.groups_)
        params["hidden_sizes"] = [int(h) for h in self.hidden_sizes]
        config = {
            "format_version": FORMAT_VERSION,
            "estimator": "ImageModel",
            "topicvae_version": package_version(),
            "params": params,
            "weights": self.weights_.as_dict(),
            "fitted": {
                "image_shape": list(self.image_shape_), "n_images": self.n_images_, "history": self.history_,
                "restarts": self.restarts_,
            },
        }
        return write_model_directory(path, config, self.model_)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> ImageModel:
        """Load a model written by :meth:`save`; never unpickles objects."""
        directory = Path(path)
        config = read_config(directory, estimator="ImageModel")
        with interpreting_config(directory):
            params = dict(config["params"])
            params["device"] = device
            params["hidden_sizes"] = tuple(params["hidden_sizes"])
            estimator = cls(**params)
            estimator.groups_ = GroupSpec.parse(params["groups"])
            estimator.weights_ = ObjectiveWeights(**config["weights"])
            fitted = config["fitted"]
            estimator.image_shape_ = tuple(fitted["image_shape"])
            estimator.n_images_ = fitted["n_images"]
            estimator.history_ = fitted["history"]
            estimator.restarts_ = fitted.get("restarts", [])  # files written before n_init have none
            model = estimator._build(estimator.image_shape_, estimator.groups_)
        load_weights(directory, model)
        estimator.model_ = model.to(resolve_device(device)).eval()
        return estimator
