"""topicvae: neural topic models with hierarchically factorized latent groups (HFVAE).

One core (``latent``: the groups and their posteriors; ``objective``: the HFVAE objective, its
estimator of the inference marginals and the information quantities; ``training``; ``io``)
serves two domains (``text`` and ``topics`` for documents, ``images``); ``cli`` is the
command line. The public API below loads on first use, so that ``topicvae.text`` (reading and
vectorizing corpora) can be used without starting torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Each public name and the module it lives in.
_EXPORTS = {
    "TopicModel": "topicvae.topics.estimator",
    "EmptyDocumentWarning": "topicvae.topics.estimator",
    "ImageModel": "topicvae.images.estimator",
    "GroupSpec": "topicvae.latent.groups",
    "GroupSpecError": "topicvae.latent.groups",
    "LatentGroup": "topicvae.latent.groups",
    "ObjectiveWeights": "topicvae.objective.terms",
    "LossTerms": "topicvae.objective.terms",
    "hfvae_objective": "topicvae.objective.terms",
    "log_marginals": "topicvae.objective.marginals",
    "read_corpus": "topicvae.text.corpus",
    "TextVectorizer": "topicvae.text.vectorizer",
    "DegenerateCorpusWarning": "topicvae.text.vectorizer",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'topicvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
