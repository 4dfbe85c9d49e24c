"""topicvae: neural topic models with hierarchically factorized latent groups (HFVAE)."""

__version__ = "0.1.0"

from topicvae.topics.estimator import DegenerateCorpusWarning, EmptyDocumentWarning, TopicModel  # noqa: E402  (estimator reads __version__)
from topicvae.latent.groups import GroupSpec, GroupSpecError, LatentGroup  # noqa: E402
from topicvae.objective.terms import LossTerms, ObjectiveWeights, hfvae_objective
from topicvae.objective.marginals import log_marginals
from topicvae.text.corpus import read_corpus
from topicvae.text.vectorizer import TextVectorizer
from topicvae.images.estimator import ImageModel  # noqa: E402

__all__ = [
    "DegenerateCorpusWarning",
    "EmptyDocumentWarning",
    "GroupSpec",
    "GroupSpecError",
    "ImageModel",
    "LatentGroup",
    "LossTerms",
    "TextVectorizer",
    "TopicModel",
    "ObjectiveWeights",
    "hfvae_objective",
    "log_marginals",
    "read_corpus",
    "__version__",
]
