"""topicvae: neural topic models with hierarchically factorized latent groups (HFVAE)."""

from topicvae.groups import GroupSpec, GroupSpecError, LatentGroup
from topicvae.objective import LossTerms, ObjectiveWeights, hfvae_objective, log_marginals

__version__ = "0.1.0"

__all__ = [
    "GroupSpec",
    "GroupSpecError",
    "LatentGroup",
    "LossTerms",
    "ObjectiveWeights",
    "hfvae_objective",
    "log_marginals",
    "__version__",
]
