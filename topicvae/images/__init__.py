"""The image domain: MNIST, Fashion-MNIST and dSprites through the same latent groups, the
ImageModel estimator, disentanglement metrics and the paper's recipes."""
