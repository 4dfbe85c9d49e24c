"""Image VAEs whose latent code is split into groups: Gaussian style groups beside Concrete classes.

The same :class:`~topicvae.groups.GroupSpec`, :class:`~topicvae.models.GroupedPosterior` and
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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from topicvae.groups import GroupSpec
from topicvae.models import GroupedPosterior, ModelOutput

__all__ = ["ImageVAE", "ARCHITECTURES"]

Tensor = torch.Tensor

ARCHITECTURES = ("mlp", "conv")
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
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={architecture!r} is unknown: choose one of {', '.join(ARCHITECTURES)}")
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape={image_shape!r} is invalid: give (channels, height, width)")
        self.groups = groups
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
        self.posterior = GroupedPosterior(features, groups, batch_norm=False, temperature=temperature)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # device and dtype of the priors

    # --- the interface the estimator and the objective use ---------------------------------
    def encode(self, images: Tensor) -> list[Distribution]:
        return self.posterior(self.encoder(images))

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
        posteriors = self.encode(images)
        samples = [q.rsample() for q in posteriors]
        logits = self.decode_logits(self.code(samples))
        log_likelihood = -F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1)
        return ModelOutput(log_likelihood, posteriors, self.priors(), samples)

    @torch.no_grad()
    def posterior_moments(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per group, the posterior mean and variance (Concrete: category probabilities p, p(1 - p))."""
        return self.posterior.moments(self.encoder(images))


def _relu_stack(sizes: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return layers
