"""Training shared by both domains: the loop and its progress (:mod:`~topicvae.training.loop`),
batches (:mod:`~topicvae.training.batches`), checkpoints (:mod:`~topicvae.training.checkpoints`)
and data-parallel training (:mod:`~topicvae.training.distributed`).

The names importable from ``topicvae.training`` before it became a package still are.
"""

from topicvae.training.batches import BagOfWordsBatches, ImageBatches
from topicvae.training.checkpoints import TrainingCheckpoints, check_checkpoint_options
from topicvae.training.loop import TrainingProgress, check_training_options, train

__all__ = [
    "check_training_options", "check_checkpoint_options",
    "BagOfWordsBatches", "ImageBatches", "TrainingProgress", "TrainingCheckpoints", "train",
]
