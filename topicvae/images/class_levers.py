"""Levers that make a Concrete group take the class: capacities, augmentation consistency and IMSAT.

The HFVAE objective alone lets the continuous style carry an image's class: on MNIST the
Concrete group's unsupervised accuracy stays at 0.3 (docs/images.md, issue 16). Three terms,
each added to the loss with its own named weight, were measured to move the class into the
Concrete group (docs/images.md, "The discrete group and the class"); the first three cap near
0.6 on MNIST, the fourth with a class encoder of its own reaches 0.84-0.90:

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
``imsat`` (lambda_i)
    lambda_i [R_vat + 0.1 (H(C | X) - 4 H(C))], IMSAT's regularized information maximization
    (Hu et al., 2017, Eq. 4 and 7 with their lambda = 0.1, mu = 4): H(C) the entropy of the
    batch's mean q(c | x) (balanced categories), H(C | X) the mean entropy of q(c | x_b)
    (confident ones), and R_vat = KL(q(c | x) || q(c | x + r_adv)) with q(c | x) held fixed and
    r_adv the virtual adversarial perturbation (Miyato et al., 2018; one power iteration with a
    finite-difference step of ``VAT_XI``), scaled to each image's radius: ``VAT_RADIUS_SCALE``
    times its distance to its ``VAT_NEIGHBOUR``-th nearest training image
    (:func:`neighbour_distances`). A category is then what no small change of the image can
    flip. With the shared class head it caps near 0.6 like the others; with
    ``class_encoder="separate"`` (:func:`~topicvae.images.models.imsat_class_encoder`) and a
    weight of 1,000, which outweighs the HFVAE terms that pull I(x; c) to 0, it takes the digit.

All are 0 by default: the model then trains with the plain HFVAE objective.
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
    "neighbour_distances",
    "virtual_adversarial_kl",
    "imsat_information_loss",
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
#: IMSAT's weights in H(C | X) - mu H(C), the whole weighted by lambda (Hu et al., 2017, Sec. 4).
IMSAT_LAMBDA = 0.1
IMSAT_MU = 4.0
#: VAT's finite-difference step for the power iteration, as an L2 norm in [0, 1] pixel units
#: (IMSAT's code: 10 in [-1, 1] units).
VAT_XI = 5.0
#: The adversarial perturbation's L2 norm: this share of the image's distance to its
#: VAT_NEIGHBOUR-th nearest training image (IMSAT's MNIST setting).
VAT_RADIUS_SCALE = 0.25
VAT_NEIGHBOUR = 10
#: neighbour_distances compares every image with at most this many (a random subset beyond):
#: all of MNIST's 60,000, so there the distances are exact.
MAX_REFERENCE_IMAGES = 60_000


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
    marginal_entropy, conditional_entropy = _category_entropies(probabilities)
    return marginal_entropy - conditional_entropy


def _category_entropies(probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """H(C), the entropy of the batch's mean q(c | x_b), and H(C | X), the mean of the entropies of q(c | x_b)."""
    tiny = torch.finfo(probabilities.dtype).tiny
    marginal = probabilities.mean(0)
    marginal_entropy = -(marginal * marginal.clamp_min(tiny).log()).sum()
    conditional_entropy = -(probabilities * probabilities.clamp_min(tiny).log()).sum(-1).mean()
    return marginal_entropy, conditional_entropy


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


def neighbour_distances(
    images: Tensor,
    *,
    scale: float = 1.0,
    neighbour: int = VAT_NEIGHBOUR,
    max_reference: int = MAX_REFERENCE_IMAGES,
    generator: torch.Generator | None = None,
    chunk: int = 1024,
) -> Tensor:
    """Each image's Euclidean distance to its ``neighbour``-th nearest other image, [N] float32.

    ``images`` [N, ...] (uint8 or float) times ``scale`` are the pixels in [0, 1]. Exact when
    N <= ``max_reference``; beyond, the distances are to a random subset of M = max_reference
    images (drawn from ``generator``) at the rank max(1, round(neighbour M / N)), which
    estimates the same distance. Costs N M pixels multiply-adds (MNIST: about a minute on
    two CPU cores). An image is never its own neighbour; duplicates count.
    """
    n = images.shape[0]
    if neighbour < 1 or n <= neighbour:
        raise ValueError(f"neighbour={neighbour} needs more than {neighbour} images; X holds {n}")
    if n <= max_reference:
        reference, rank = torch.arange(n), neighbour
    else:
        reference = torch.randperm(n, generator=generator)[:max_reference]
        rank = max(1, round(neighbour * max_reference / n))
    position = torch.full((n,), -1, dtype=torch.long)
    position[reference] = torch.arange(len(reference))  # where each image sits among the references

    def flat(index: Tensor) -> Tensor:
        return images[index].flatten(1).float() * scale

    points = flat(reference)
    squared = (points * points).sum(1)
    out = []
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        x = flat(rows)
        distance = ((x * x).sum(1, keepdim=True) + squared - 2 * x @ points.T).clamp_min(0)
        own = position[rows]
        mine = own >= 0
        distance[mine.nonzero().squeeze(1), own[mine]] = float("inf")  # not its own neighbour
        out.append(distance.topk(rank, dim=1, largest=False).values[:, -1].sqrt())
    return torch.cat(out)


def _categorical_kl(probabilities: Tensor, log_q: Tensor) -> Tensor:
    tiny = torch.finfo(probabilities.dtype).tiny
    return (probabilities * (probabilities.clamp_min(tiny).log() - log_q)).sum(-1).mean()


def virtual_adversarial_kl(class_logits, images: Tensor, probabilities: Tensor, radius: Tensor, *, xi: float = VAT_XI) -> Tensor:
    """R_vat: mean_b KL(p_b || q(c | x_b + r_b)) at the virtual adversarial r_b of L2 norm radius_b.

    ``class_logits`` maps images [B, ...] to logits [B, K]; ``probabilities`` [B, K] is the
    target q(c | x) (pass it detached: VAT holds it fixed); ``radius`` [B]. r_b is found by one
    power iteration (Miyato et al., 2018, Eq. 12): the gradient of the KL at a random
    direction of norm ``xi``, normalized. Draws from torch's global generator.
    """
    shape = (-1,) + (1,) * (images.dim() - 1)
    direction = torch.randn_like(images)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    direction.requires_grad_(True)
    kl = _categorical_kl(probabilities, class_logits(images + xi * direction).log_softmax(-1))
    gradient, = torch.autograd.grad(kl, direction)
    adversarial = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    return _categorical_kl(probabilities, class_logits(images + radius.view(shape) * adversarial).log_softmax(-1))


def imsat_information_loss(probabilities: Tensor) -> dict[str, Tensor]:
    """IMSAT's information terms from q(c | x_b) [B, K]: H(C | X), H(C) and lambda (H(C | X) - mu H(C))."""
    marginal_entropy, conditional_entropy = _category_entropies(probabilities)
    return {
        "class_conditional_entropy": conditional_entropy,
        "class_marginal_entropy": marginal_entropy,
        "loss": IMSAT_LAMBDA * (conditional_entropy - IMSAT_MU * marginal_entropy),
    }


@dataclass(frozen=True)
class ClassLevers:
    """The four weights (see the module docstring); each >= 0, all 0 for the plain objective."""

    class_capacity: float = 0.0
    style_capacity: float = 0.0
    augmentation: float = 0.0
    imsat: float = 0.0

    def __post_init__(self) -> None:
        for name in ("class_capacity", "style_capacity", "augmentation", "imsat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid: give a weight >= 0 (0 leaves the lever off)")
            object.__setattr__(self, name, float(value))

    @property
    def active(self) -> bool:
        return any((self.class_capacity, self.style_capacity, self.augmentation, self.imsat))

    def terms(self, model, images: Tensor, out, progress: float, radius: Tensor | None = None) -> dict[str, Tensor]:
        """The weighted penalties (to add to the loss) and what they act on, named.

        ``model`` is an :class:`~topicvae.images.models.ImageVAE` with one Concrete group,
        ``out`` its output on ``images``, ``progress`` the share of training done (for the
        capacity targets), ``radius`` [B] the images' VAT radii (needed by ``imsat``). Returns
        ``penalty`` (the sum to add to the loss) and the unweighted quantities in use:
        ``class_information``, ``style_kl``, ``augmentation_kl``, ``vat_kl``,
        ``class_conditional_entropy`` and ``class_marginal_entropy``.
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
        if self.imsat:
            if radius is None:
                raise ValueError("the imsat lever needs each image's VAT radius: pass radius (see neighbour_distances)")
            information = imsat_information_loss(probabilities)
            vat = virtual_adversarial_kl(model.class_logits, images, probabilities.detach(), radius)
            penalty = penalty + self.imsat * (vat + information.pop("loss"))
            terms.update(vat_kl=vat, **information)
        return {"penalty": penalty, **terms}
