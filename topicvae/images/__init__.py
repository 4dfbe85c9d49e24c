"""The image domain: MNIST, Fashion-MNIST (:mod:`~topicvae.images.data`) and dSprites
(:mod:`~topicvae.images.dsprites`) through the same latent groups, the ``ImageModel`` estimator
(:mod:`~topicvae.images.estimator`), disentanglement metrics and the paper's recipes.
``from topicvae.images import ImageModel`` works as it did before this became a package.
"""

from topicvae.images.estimator import ImageModel

__all__ = ["ImageModel"]
