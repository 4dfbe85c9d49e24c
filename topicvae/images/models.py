"""Image VAEs whose latent code is split into groups: Gaussian style groups beside Concrete classes.

The same :class:`~topicvae.latent.groups.GroupSpec`, :class:`~topicvae.latent.posteriors.GroupedPosterior` and
objective that serve the topic models serve images; only the encoder, the decoder and the
likelihood change (the paper's Section 5 and Table 2: 10 Gaussian dimensions with a 10-way
Concrete group for MNIST and Fashion-MNIST, with a 3-way one for dSprites).

Likelihood: Bernoulli, log p(x | z) = sum_pixels [x log sigma(l) + (1 - x) log(1 - sigma(l))]
with decoder logits l; grey-level pixels in [0, 1] enter as the Bernoulli mean's target (the
usual continuous relaxation for MNIST-like data).

Priors: N(0, I) for Gaussian groups; for a Concrete group the uniform relaxed one-hot prior
Concrete(1/K, ..., 1/K; lambda) at the posterior's temperature lambda, with both densities
taken in log space (ExpRelaxedCategorical), so that low temperatures give no NaN.

Architectures (``architecture=``):

``"mlp"``
    Encoder: flatten, then ReLU layers ``hidden_sizes`` (default (400, 400)); the decoder
    mirrors it back to one logit per pixel.
``"conv"``
    Encoder: convolutions with 4 x 4 kernels and stride 2 (32, 32, 64, 64 channels, as many as
    the image size allows down to 4 x 4 for 64 x 64 images, 7 x 7 for 28 x 28), then one ReLU
    layer of 256 units; the decoder mirrors it with transposed convolutions (the beta-VAE
    architecture of Higgins et al., 2017 and Burgess et al., 2018).

Class encoders (``class_encoder=``), for the first Concrete group (the class):

``"shared"``
    A linear head on the style encoder's features.
``"separate"``
    A network of its own on the pixels, IMSAT's (Hu et al., 2017, Sec. 4): two ReLU layers
    of 1,200 units with batch-norm, He-normal weights scaled by 0.1 and a last layer started
    near 0, so that q(c | x) starts uniform. Trained with the ``imsat`` lever
    (:mod:`topicvae.images.class_levers`) it takes MNIST's digit where the shared head, under
    every lever measured, stays near 0.6 (docs/images.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from topicvae.latent.groups import GroupSpec
from topicvae.latent.posteriors import GroupedPosterior, ModelOutput
from topicvae.objective.marginals import ClassConditioning

__all__ = ["ImageVAE", "ClassConditionedPosterior", "ARCHITECTURES", "CLASS_ENCODERS", "check_class_encoder", "imsat_class_encoder"]

Tensor = torch.Tensor

ARCHITECTURES = ("mlp", "conv")
CLASS_ENCODERS = ("shared", "separate")
#: The separate class encoder's hidden layers (IMSAT's MNIST network).
CLASS_ENCODER_HIDDEN = (1200, 1200)
_CONV_CHANNELS = (32, 32, 64, 64)


def _conv_layers(image_size: int) -> int:
    """Stride-2 halvings from ``image_size`` down to at least 4 pixels (64 -> 4, 28 -> 7)."""
    layers, size = 0, image_size
    while size % 2 == 0 and size // 2 >= 4 and layers < len(_CONV_CHANNELS):
        size //= 2
        layers += 1
    return layers


class ImageVAE(nn.Module):
    """Encoder, grouped posterior, priors and Bernoulli decoder for images [B, C, H, W] in [0, 1]."""

    kind = "image"

    def __init__(
        self,
        image_shape: Sequence[int],
        groups: GroupSpec,
        *,
        architecture: str = "mlp",
        hidden_sizes: Sequence[int] = (400, 400),
        temperature: float = 0.66,
        class_conditioned: bool = False,
        class_encoder: str = "shared",
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={architecture!r} is unknown: choose one of {', '.join(ARCHITECTURES)}")
        check_class_encoder(class_encoder, groups, class_conditioned)
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape={image_shape!r} is invalid: give (channels, height, width)")
        self.groups = groups
        #: the first Concrete group (the class), or None: what class_logits and the class levers read
        self.class_group = next((d for d, group in enumerate(groups) if group.is_concrete), None)
        self.temperature = float(temperature)
        self.architecture = architecture
        channels, height, width = self.image_shape
        num_pixels = channels * height * width
        if architecture == "mlp":
            sizes = [num_pixels, *hidden_sizes]
            self.encoder = nn.Sequential(nn.Flatten(), *_relu_stack(sizes))
            features = sizes[-1]
            self.decoder = nn.Sequential(
                *_relu_stack([groups.num_columns, *reversed(hidden_sizes)]),
                nn.Linear(hidden_sizes[0], num_pixels),
                nn.Unflatten(1, self.image_shape),
            )
        else:
            if height != width:
                raise ValueError(f"image_shape={image_shape!r}: the conv architecture needs square images; use 'mlp'")
            layers = _conv_layers(height)
            if layers < 2:
                raise ValueError(f"images of {height} x {width} are too small for the conv architecture; use 'mlp'")
            widths = [channels, *_CONV_CHANNELS[:layers]]
            final = height // 2**layers
            flat = widths[-1] * final * final
            encoder: list[nn.Module] = []
            for n_in, n_out in zip(widths[:-1], widths[1:]):
                encoder += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.ReLU()]
            self.encoder = nn.Sequential(*encoder, nn.Flatten(), nn.Linear(flat, 256), nn.ReLU())
            features = 256
            decoder: list[nn.Module] = [
                nn.Linear(groups.num_columns, 256), nn.ReLU(), nn.Linear(256, flat), nn.ReLU(),
                nn.Unflatten(1, (widths[-1], final, final)),
            ]
            reverse = list(reversed(widths))
            for i, (n_in, n_out) in enumerate(zip(reverse[:-1], reverse[1:])):
                decoder.append(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1))
                if i < len(reverse) - 2:
                    decoder.append(nn.ReLU())
            self.decoder = nn.Sequential(*decoder)
        self.class_conditioned = bool(class_conditioned)
        #: IMSAT's network giving the class group's logits from the pixels, or None (a head on the shared features)
        self.class_encoder = (
            imsat_class_encoder(num_pixels, groups[self.class_group].size) if class_encoder == "separate" else None
        )
        own = (groups[self.class_group].name,) if self.class_encoder is not None else ()
        self.posterior = (
            ClassConditionedPosterior(features, groups, temperature=temperature)
            if class_conditioned else GroupedPosterior(features, groups, batch_norm=False, temperature=temperature, own_logits=own)
        )
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # device and dtype of the priors

    # --- the interface the estimator and the objective use ---------------------------------
    def _own_logits(self, images: Tensor) -> dict[str, Tensor] | None:
        if self.class_encoder is None:
            return None
        return {self.groups[self.class_group].name: self.class_encoder(images)}

    def encode(self, images: Tensor) -> list[Distribution]:
        """q(z_d | x) for every group (a class-conditioned style: at the most probable class)."""
        features = self.encoder(images)
        if self.class_conditioned:
            return self.posterior.at_most_probable_class(features)
        return self.posterior(features, concrete_logits=self._own_logits(images))

    def draw(self, images: Tensor) -> tuple[list[Distribution], list[Tensor], tuple[ClassConditioning, ...]]:
        """Posteriors, one reparameterized sample per image and the conditionings (the objective's inputs)."""
        if self.class_conditioned:
            return self.posterior.draw(self.encoder(images))
        posteriors = self.encode(images)
        return posteriors, [q.rsample() for q in posteriors], ()

    def class_logits(self, images: Tensor) -> Tensor:
        """The logits of q(c | x) of the first Concrete group, [B, K] (what the class levers compare)."""
        if self.class_encoder is not None:
            return self.class_encoder(images)
        features = self.encoder(images)
        if self.class_conditioned:
            return self.posterior.logits(features)
        return self.posterior(features)[self.class_group].logits

    def priors(self) -> list[Distribution]:
        like = self._anchor
        priors: list[Distribution] = []
        for group in self.groups:
            if group.is_concrete:
                temperature = torch.tensor(self.temperature, dtype=like.dtype, device=like.device)
                priors.append(ExpRelaxedCategorical(temperature, logits=like.new_zeros(group.size), validate_args=False))
            else:
                priors.append(Normal(like.new_zeros(group.size), like.new_ones(group.size), validate_args=False))
        return priors

    def code(self, samples: Sequence[Tensor]) -> Tensor:
        """The decoder's input: Gaussian values and Concrete points on the simplex, side by side."""
        return torch.cat([z.exp() if g.is_concrete else z for g, z in zip(self.groups, samples)], dim=1)

    def decode_logits(self, code: Tensor) -> Tensor:
        """Bernoulli logits of every pixel, [B, C, H, W]."""
        return self.decoder(code)

    def forward(self, images: Tensor) -> ModelOutput:
        posteriors, samples, conditionings = self.draw(images)
        logits = self.decode_logits(self.code(samples))
        log_likelihood = -F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1)
        return ModelOutput(log_likelihood, posteriors, self.priors(), samples, conditionings)

    @torch.no_grad()
    def posterior_moments(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per group, the posterior mean and variance (Concrete: category probabilities p, p(1 - p))."""
        features = self.encoder(images)
        if self.class_conditioned:
            return self.posterior.moments(features)
        return self.posterior.moments(features, concrete_logits=self._own_logits(images))


class ClassConditionedPosterior(nn.Module):
    """q(c | x) q(z | x, c): a Concrete class and Gaussian style groups whose heads are affine in c.

    The authors' MNIST model encodes the style given the class sample, so that the style
    need not carry the class. Here the style's mean and log-scale are

        loc(x, c) = loc_base(x) + loc_weight(x) c,   log_scale(x, c) = log_scale_base(x) + log_scale_weight(x) c

    with c the relaxed one-hot sample: a linear map of the features to E (K + 1) numbers for
    each head. The objective then has every pair q(z^b | x^b', c^b) in closed form
    (:class:`~topicvae.objective.marginals.ClassConditioning`).
    """

    def __init__(self, in_features: int, groups: GroupSpec, *, temperature: float):
        super().__init__()
        concrete = [d for d, group in enumerate(groups) if group.is_concrete]
        if len(concrete) != 1 or not groups.gaussian:
            raise ValueError(
                f"class_conditioned=True needs one Concrete group and Gaussian groups, not {groups}: e.g. groups='10,10c'"
            )
        self.groups = groups
        self.class_group = concrete[0]
        self.classes = groups[self.class_group].size
        self.width = groups.num_gaussian_dims
        self.logits = nn.Linear(in_features, self.classes)
        self.loc = nn.Linear(in_features, self.width * (self.classes + 1))
        self.log_scale = nn.Linear(in_features, self.width * (self.classes + 1))
        nn.init.zeros_(self.log_scale.weight)  # unit scale at the start, as GroupedPosterior
        nn.init.zeros_(self.log_scale.bias)
        self.register_buffer("_temperature", torch.tensor(float(temperature)), persistent=False)

    def _conditionings(self, features: Tensor) -> list[ClassConditioning]:
        shape = (features.shape[0], self.width, self.classes + 1)
        loc, log_scale = self.loc(features).view(shape), self.log_scale(features).view(shape)
        conditionings, start = [], 0
        for d, group in enumerate(self.groups):
            if group.is_concrete:
                continue
            columns = slice(start, start + group.size)
            start += group.size
            conditionings.append(ClassConditioning(
                d, self.class_group, loc[:, columns, 0], loc[:, columns, 1:], log_scale[:, columns, 0], log_scale[:, columns, 1:]
            ))
        return conditionings

    def draw(self, features: Tensor) -> tuple[list[Distribution], list[Tensor], tuple[ClassConditioning, ...]]:
        """The class sample first, then each style group at it: posteriors, samples, conditionings."""
        q_class = ExpRelaxedCategorical(self._temperature, logits=self.logits(features), validate_args=False)
        log_c = q_class.rsample()
        conditionings = iter(self._conditionings(features))
        posteriors, samples, used = [], [], []
        for group in self.groups:
            if group.is_concrete:
                posteriors.append(q_class)
                samples.append(log_c)
            else:
                conditioning = next(conditionings)
                q_style = conditioning.own(log_c)
                posteriors.append(q_style)
                samples.append(q_style.rsample())
                used.append(conditioning)
        return posteriors, samples, tuple(used)

    def _at_class(self, features: Tensor, one_hot: Tensor) -> list[Normal]:
        log_one_hot = torch.log(one_hot.clamp_min(torch.finfo(one_hot.dtype).tiny))
        return [conditioning.own(log_one_hot) for conditioning in self._conditionings(features)]

    def at_most_probable_class(self, features: Tensor) -> list[Distribution]:
        """q(c | x), and each style group's q(z | x, c) at the one-hot of the most probable class."""
        logits = self.logits(features)
        one_hot = F.one_hot(logits.argmax(1), self.classes).to(features.dtype)
        styles = iter(self._at_class(features, one_hot))
        return [
            ExpRelaxedCategorical(self._temperature, logits=logits, validate_args=False) if group.is_concrete else next(styles)
            for group in self.groups
        ]

    def moments(self, features: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Concrete: p and p(1 - p); style: mean and variance at the most probable class."""
        moments = []
        for posterior in self.at_most_probable_class(features):
            if isinstance(posterior, Normal):
                moments.append((posterior.loc, posterior.scale.square()))
            else:
                p = posterior.logits.softmax(-1)
                moments.append((p, p * (1 - p)))
        return moments


def check_class_encoder(class_encoder: str, groups: GroupSpec, class_conditioned: bool) -> None:
    """Raise ValueError unless ``class_encoder`` is one of ``CLASS_ENCODERS`` and fits the groups:
    ``"separate"`` needs a Concrete group and no class-conditioned style (whose heads read the
    class from the shared features)."""
    if not isinstance(class_encoder, str) or class_encoder not in CLASS_ENCODERS:
        raise ValueError(f"class_encoder={class_encoder!r} is unknown: choose one of {', '.join(CLASS_ENCODERS)}")
    if class_encoder == "separate" and (not groups.concrete or class_conditioned):
        raise ValueError(
            f"class_encoder='separate' needs a Concrete group and class_conditioned=False (groups {groups}, "
            f"class_conditioned={class_conditioned}): e.g. groups='10,10c'"
        )


def imsat_class_encoder(num_pixels: int, categories: int, hidden_sizes: Sequence[int] = CLASS_ENCODER_HIDDEN) -> nn.Sequential:
    """IMSAT's class network (Hu et al., 2017, Sec. 4 and their code): images [B, C, H, W] -> logits [B, categories].

    Linear layers with batch-norm and ReLU; weights drawn N(0, (0.1 sqrt(2 / fan_in))^2)
    (He-normal scaled by 0.1), the last layer's with a standard deviation of 1e-4 sqrt(2 / fan_in),
    so that every image starts near the uniform q(c | x) and no category wins by its start.
    """
    sizes = [num_pixels, *hidden_sizes]
    layers: list[nn.Module] = [nn.Flatten()]
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        linear = nn.Linear(n_in, n_out)
        nn.init.normal_(linear.weight, std=0.1 * math.sqrt(2 / n_in))
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.BatchNorm1d(n_out), nn.ReLU()]
    last = nn.Linear(sizes[-1], categories)
    nn.init.normal_(last.weight, std=1e-4 * math.sqrt(2 / sizes[-1]))
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def _relu_stack(sizes: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return layers
