"""The latent code: groups of Gaussian dimensions and Concrete variables (GroupSpec)."""
