"""topicvae: neural topic models with hierarchically factorized latent groups (HFVAE)."""

__version__ = "0.1.0"

from topicvae.estimator import DegenerateCorpusWarning, EmptyDocumentWarning, TopicModel  # noqa: E402  (estimator reads __version__)
from topicvae.groups import GroupSpec, GroupSpecError, LatentGroup  # noqa: E402
from topicvae.objective import LossTerms, ObjectiveWeights, hfvae_objective, log_marginals  # noqa: E402

__all__ = [
    "DegenerateCorpusWarning",
    "EmptyDocumentWarning",
    "GroupSpec",
    "GroupSpecError",
    "LatentGroup",
    "LossTerms",
    "TopicModel",
    "ObjectiveWeights",
    "hfvae_objective",
    "log_marginals",
    "__version__",
]
