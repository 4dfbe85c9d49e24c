"""The HFVAE objective (Esmaeili et al., 2019, eq. 4): its weights, its named terms and the
stratified estimator of the inference marginals. Pure functions of distributions and samples."""
