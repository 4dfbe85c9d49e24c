"""Posteriors of the latent groups, and what one forward pass of any model hands to the objective.

``GroupedPosterior`` maps encoder features to q(z_d | x) for every group of a
:class:`~topicvae.latent.groups.GroupSpec`: a diagonal Gaussian per Gaussian group, a relaxed
one-hot (Concrete, Maddison et al., 2017) per Concrete group. ``posterior_parameters`` and
``posterior_with_parameters`` take those two families apart and put them together again, for
data-parallel gathering and for the estimator's per-item parameters. Both domains (text
topics and images) build their encoders on these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from topicvae.latent.groups import GroupSpec

__all__ = [
    "ModelOutput", "GroupedPosterior", "POSTERIOR_NORMS", "ShiftedBatchNorm",
    "posterior_parameters", "posterior_with_parameters",
]

Tensor = torch.Tensor


@dataclass(frozen=True)
class ModelOutput:
    """What one forward pass hands to the objective."""

    log_likelihood: Tensor  # log p(x^b | z^b), [B]
    posteriors: list[Distribution]  # q(z_d | x), one per group
    priors: list[Distribution]  # p(z_d), one per group
    samples: list[Tensor]  # z_d ~ q(z_d | x), reparameterized
    # Gaussian groups conditioned on a Concrete group's sample, q(z_d | x, c) (objective.ClassConditioning)
    conditionings: tuple = ()


def posterior_parameters(posterior: Distribution, purpose: str) -> list[Tensor]:
    """The tensors that define a posterior of one of the families the models make, per item.

    Gaussian groups: loc and scale; Concrete groups: the logits (the temperature is fixed).
    ``purpose`` names what needs them, for the error raised on any other family.
    """
    if type(posterior) is Normal:
        return [posterior.loc, posterior.scale]
    if type(posterior) is ExpRelaxedCategorical:
        return [posterior.logits]
    raise TypeError(
        f"{purpose} supports Normal and ExpRelaxedCategorical posteriors, not {type(posterior).__name__}"
    )


def posterior_with_parameters(posterior: Distribution, parameters: Sequence[Tensor]) -> Distribution:
    """A posterior of the same family (and temperature) as ``posterior`` with other parameters."""
    if type(posterior) is Normal:
        return Normal(*parameters, validate_args=False)
    temperature = posterior.temperature.to(parameters[0].dtype)
    return ExpRelaxedCategorical(temperature, logits=parameters[0], validate_args=False)


#: The learned parameters of ProdLDA's posterior batch-norms (see ``GroupedPosterior``).
POSTERIOR_NORMS = ("affine", "shift", "none", "off")
class ShiftedBatchNorm(nn.BatchNorm1d):
    """Batch-norm with a learned shift and no learned scale (``tf.contrib.layers.batch_norm``'s default)."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True)
        self.weight.requires_grad_(False)  # the scale stays 1: the state dict keeps the affine layout


def _posterior_batch_norm(size: int, norm: str) -> nn.Module | None:
    if norm == "off":
        return None
    if norm == "affine":
        return nn.BatchNorm1d(size, affine=True)
    if norm == "shift":
        return ShiftedBatchNorm(size)
    if norm == "none":
        return nn.BatchNorm1d(size, affine=False)
    raise ValueError(f"posterior_norm={norm!r} is unknown: choose one of {', '.join(POSTERIOR_NORMS)}")


class GroupedPosterior(nn.Module):
    """Maps encoder features to q(z_d | x) for every latent group.

    Gaussian groups share one linear map to the means and one to the log-variances (one column
    per dimension), optionally followed by batch-norm (ProdLDA), whose learned parameters
    ``norm`` names: ``"affine"`` a scale and a shift per topic (the scale can reach 0, so a
    topic's posterior can collapse to the prior and the objective can prune it), ``"shift"``
    a shift only (Srivastava & Sutton's code: ``tf.contrib.layers.batch_norm`` with its
    defaults), ``"none"`` neither (every topic's posterior mean then has unit variance over
    the batch, whatever the objective: no topic can be pruned, the mechanism BN-VAE,
    Zhu et al. 2020, uses to prevent collapse), ``"off"`` no batch-norm at all (the plain
    VAE's encoder: a topic's posterior reaches the prior when its mean stops depending on x).
    Each Concrete group has its own linear map to category logits, unless ``own_logits`` names
    it: that group's logits then come from elsewhere (an image model's class encoder of its
    own) and are passed to :meth:`forward` and :meth:`moments` as ``concrete_logits``.
    """

    def __init__(
        self,
        in_features: int,
        groups: GroupSpec,
        *,
        batch_norm: bool,
        temperature: float,
        variance_floor: float = 0.0,
        norm: str = "none",
        evidence_features: int = 0,
        own_logits: tuple[str, ...] = (),
    ):
        super().__init__()
        self.groups = groups
        self.temperature = float(temperature)
        self.variance_floor = float(variance_floor)
        num_gaussian = groups.num_gaussian_dims
        self.loc = nn.Linear(in_features, num_gaussian) if num_gaussian else None
        # ``evidence_features`` extra inputs reach the log-variances only (see ENCODER_INPUTS)
        self.evidence_features = int(evidence_features)
        self.log_var = nn.Linear(in_features + self.evidence_features, num_gaussian) if num_gaussian else None
        if self.log_var is not None:
            # Start from unit posterior variance: large initial log-variances make the first
            # steps' samples (and the softmax over them) explode.
            nn.init.zeros_(self.log_var.weight)
            nn.init.zeros_(self.log_var.bias)
        self.loc_norm = _posterior_batch_norm(num_gaussian, norm) if batch_norm and num_gaussian else None
        self.log_var_norm = _posterior_batch_norm(num_gaussian, norm) if batch_norm and num_gaussian else None
        self.logits = nn.ModuleDict({g.name: nn.Linear(in_features, g.size) for g in groups.concrete if g.name not in own_logits})
        self.register_buffer("_temperature", torch.tensor(self.temperature), persistent=False)

    def gaussian_parameters(self, features: Tensor, evidence: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Means and log-variances of all Gaussian dimensions, [B, num_gaussian] each."""
        loc = self.loc(features)
        log_var = self.log_var(features if evidence is None else torch.cat([features, evidence], dim=1))
        if self.loc_norm is not None:
            loc, log_var = self.loc_norm(loc), self.log_var_norm(log_var)
        return loc, log_var

    def _variance(self, log_var: Tensor) -> Tensor:
        return log_var.exp() + self.variance_floor  # adding a floor of 0.0 is exact

    def _scale(self, log_var: Tensor) -> Tensor:
        # Without a floor, exp(log_var / 2) as before: the same bits, and it underflows only
        # at log_var < -206 where sqrt(exp(log_var)) would at -103.
        return self._variance(log_var).sqrt() if self.variance_floor else torch.exp(0.5 * log_var)

    def _concrete_logits(self, group, features: Tensor, given: Mapping[str, Tensor] | None) -> Tensor:
        if group.name in self.logits:
            return self.logits[group.name](features)
        if given is None or group.name not in given:
            raise ValueError(f"the Concrete group {group.name!r} has no head here: pass its logits in concrete_logits")
        return given[group.name]

    def forward(
        self, features: Tensor, evidence: Tensor | None = None, concrete_logits: Mapping[str, Tensor] | None = None,
    ) -> list[Distribution]:
        posteriors: list[Distribution] = []
        if self.loc is not None:
            loc, log_var = self.gaussian_parameters(features, evidence)
            scale = self._scale(log_var)
            sizes = [g.size for g in self.groups.gaussian]
            gaussian = iter(zip(loc.split(sizes, dim=1), scale.split(sizes, dim=1)))
        for group in self.groups:
            if group.is_concrete:
                posteriors.append(
                    ExpRelaxedCategorical(
                        self._temperature, logits=self._concrete_logits(group, features, concrete_logits), validate_args=False
                    )
                )
            else:
                group_loc, group_scale = next(gaussian)
                posteriors.append(Normal(group_loc, group_scale, validate_args=False))
        return posteriors

    def moments(
        self, features: Tensor, evidence: Tensor | None = None, concrete_logits: Mapping[str, Tensor] | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Mean and variance of each group's posterior, per column of the code.

        Gaussian groups: the posterior mean and variance of z. Concrete groups: the category
        probabilities p and the variances p (1 - p) of the one-hot indicator they relax.
        """
        out: list[tuple[Tensor, Tensor]] = []
        if self.loc is not None:
            loc, log_var = self.gaussian_parameters(features, evidence)
            sizes = [g.size for g in self.groups.gaussian]
            gaussian = iter(zip(loc.split(sizes, dim=1), self._variance(log_var).split(sizes, dim=1)))
        for group in self.groups:
            if group.is_concrete:
                probs = F.softmax(self._concrete_logits(group, features, concrete_logits), dim=-1)
                out.append((probs, probs * (1 - probs)))
            else:
                out.append(next(gaussian))
        return out
