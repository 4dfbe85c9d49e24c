"""Levers that make a Concrete group take the class: capacities and augmentation consistency.

The HFVAE objective alone lets the continuous style carry an image's class: on MNIST the
Concrete group's unsupervised accuracy stays at 0.3 (docs/images.md, issue 16). Three terms,
each added to the loss with its own named weight, were measured to move the class into the
Concrete group (docs/images.md, "The discrete group and the class"):

``class_capacity`` (lambda_c)
    lambda_c |I(x; c) - C_c(t)| with I(x; c) the batch estimate of the categorical mutual
    information, H(mean_b q(c | x_b)) - mean_b H(q(c | x_b)) (:func:`categorical_information`;
    Hu et al., 2017, "IMSAT", Eq. 5), and C_c(t) rising linearly from 0 to log K over the first
    ``CAPACITY_RAMP`` of training (the capacity schedule of Burgess et al., 2018, used for a
    discrete code by Dupont, 2018, "JointVAE"). Confident, balanced categories.
``style_capacity`` (lambda_z)
    lambda_z |KL(q(z | x) || p(z)) - C_z(t)| on the Gaussian groups, C_z rising to
    ``STYLE_CAPACITY_NATS`` (JointVAE's MNIST setting): the style cannot take the class early.
``augmentation`` (lambda_a)
    lambda_a KL(q(c | x) || q(c | T(x))) with T a random affine map (rotation up to 15 degrees,
    shift up to 2/28 of the width, scale within 10%) and q(c | x) held fixed (no gradient), as
    in IMSAT's self-augmented training: a class is what survives small deformations, a
    style is what they change.

All three are 0 by default: the model then trains with the plain HFVAE objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

__all__ = [
    "ClassLevers",
    "categorical_information",
    "capacity_target",
    "random_affine",
    "CAPACITY_RAMP",
    "STYLE_CAPACITY_NATS",
]

Tensor = torch.Tensor

#: Share of the training steps over which the capacity targets rise from 0 to their values.
CAPACITY_RAMP = 0.5
#: The style's capacity target in nats (JointVAE's MNIST setting).
STYLE_CAPACITY_NATS = 5.0
#: The random affine maps of the augmentation: largest rotation (degrees), shift (share of
#: the half-width, as affine_grid measures it: 2/14 is 2 pixels of 28) and scale change.
MAX_ROTATION_DEGREES = 15.0
MAX_SHIFT = 2.0 / 14.0
MAX_SCALE_CHANGE = 0.1


def categorical_information(probabilities: Tensor) -> Tensor:
    """The batch estimate of I(x; c) for a categorical code: H(mean_b p_b) - mean_b H(p_b).

    Parameters
    ----------
    probabilities : Tensor [B, K]
        q(c | x_b) for each item (rows on the simplex).

    Returns
    -------
    Tensor (0-d), nats, between 0 and log K: the mutual information between the item and
    its category under q(c | x) and the batch's empirical distribution of items (IMSAT, Eq. 5).
    """
    if probabilities.dim() != 2:
        raise ValueError(f"probabilities has shape {tuple(probabilities.shape)}: pass [items, categories]")
    tiny = torch.finfo(probabilities.dtype).tiny
    marginal = probabilities.mean(0)
    marginal_entropy = -(marginal * marginal.clamp_min(tiny).log()).sum()
    conditional_entropy = -(probabilities * probabilities.clamp_min(tiny).log()).sum(-1).mean()
    return marginal_entropy - conditional_entropy


def capacity_target(final: float, progress: float, ramp: float = CAPACITY_RAMP) -> float:
    """C(t): rises linearly from 0 at the start to ``final`` at ``ramp`` of training, then stays."""
    if ramp <= 0:
        return final
    return final * min(1.0, max(0.0, progress) / ramp)


def random_affine(images: Tensor) -> Tensor:
    """Each image [B, C, H, W] under its own random rotation, shift and scale (torch's global generator)."""
    n = images.shape[0]
    angle = (torch.rand(n, device=images.device) * 2 - 1) * math.radians(MAX_ROTATION_DEGREES)
    scale = 1 + (torch.rand(n, device=images.device) * 2 - 1) * MAX_SCALE_CHANGE
    shift = (torch.rand(n, 2, device=images.device) * 2 - 1) * MAX_SHIFT
    cos, sin = scale * angle.cos(), scale * angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


@dataclass(frozen=True)
class ClassLevers:
    """The three weights (see the module docstring); each >= 0, all 0 for the plain objective."""

    class_capacity: float = 0.0
    style_capacity: float = 0.0
    augmentation: float = 0.0

    def __post_init__(self) -> None:
        for name in ("class_capacity", "style_capacity", "augmentation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid: give a weight >= 0 (0 leaves the lever off)")
            object.__setattr__(self, name, float(value))

    @property
    def active(self) -> bool:
        return any((self.class_capacity, self.style_capacity, self.augmentation))

    def terms(self, model, images: Tensor, out, progress: float) -> dict[str, Tensor]:
        """The weighted penalties (to add to the loss) and what they act on, named.

        ``model`` is an :class:`~topicvae.images.models.ImageVAE` with one Concrete group,
        ``out`` its output on ``images``, ``progress`` the share of training done (for the
        capacity targets). Returns ``penalty`` (the sum to add to the loss) and the unweighted
        quantities ``class_information``, ``style_kl`` and ``augmentation_kl`` that are in use.
        """
        concrete = model.class_group
        probabilities = out.posteriors[concrete].logits.softmax(-1)
        penalty = torch.zeros((), device=images.device)
        terms: dict[str, Tensor] = {}
        if self.class_capacity:
            information = categorical_information(probabilities)
            target = capacity_target(math.log(probabilities.shape[-1]), progress)
            penalty = penalty + self.class_capacity * (information - target).abs()
            terms["class_information"] = information
        if self.style_capacity:
            style_kl = sum(
                kl_divergence(q, p).sum(-1)
                for q, p, group in zip(out.posteriors, out.priors, model.groups)
                if not group.is_concrete and isinstance(q, Normal)
            ).mean()
            penalty = penalty + self.style_capacity * (style_kl - capacity_target(STYLE_CAPACITY_NATS, progress)).abs()
            terms["style_kl"] = style_kl
        if self.augmentation:
            log_q = out.posteriors[concrete].logits.log_softmax(-1).detach()  # the target: no gradient
            log_q_augmented = model.class_logits(random_affine(images)).log_softmax(-1)
            consistency = (log_q.exp() * (log_q - log_q_augmented)).sum(-1).mean()
            penalty = penalty + self.augmentation * consistency
            terms["augmentation_kl"] = consistency
        return {"penalty": penalty, **terms}
