"""The HFVAE objective (Esmaeili et al., 2019, eq. 4): its weights and named terms
(:mod:`~topicvae.objective.terms`), the stratified estimator of the inference marginals
(:mod:`~topicvae.objective.marginals`) and its kernels (:mod:`~topicvae.objective.kernels`), and
the information quantities over a whole data set (:mod:`~topicvae.objective.information`).
Pure functions of distributions and samples.

The names importable from ``topicvae.objective`` before it became a package still are
(``from topicvae.objective import ObjectiveWeights, hfvae_objective``).
"""

from topicvae.objective.marginals import ClassConditioning, LogMarginals, log_marginals, worth_compiling
from topicvae.objective.terms import PRESETS, LossTerms, ObjectiveWeights, hfvae_objective, item_elbo, weighted_objective

__all__ = [
    "ObjectiveWeights", "LossTerms", "LogMarginals", "hfvae_objective", "item_elbo", "log_marginals", "ClassConditioning",
    "weighted_objective", "worth_compiling", "PRESETS",
]
