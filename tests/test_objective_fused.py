"""The fused Gaussian path of the estimator equals the generic autograd path (values and gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from torch.distributions import Normal

from topicvae.objective import ObjectiveWeights, hfvae_objective, log_marginals


def gaussian_batch(seed, batch, sizes, dtype=torch.float64, scale_floor=0.2):
    generator = torch.Generator().manual_seed(seed)
    width = sum(sizes)
    loc = torch.randn(batch, width, dtype=dtype, generator=generator).requires_grad_()
    scale = (torch.rand(batch, width, dtype=dtype, generator=generator) + scale_floor).requires_grad_()
    noise = torch.randn(batch, width, dtype=dtype, generator=generator)
    return loc, scale, noise


def terms_and_gradients(fused, seed, batch, sizes, dataset_size, block_elements):
    loc, scale, noise = gaussian_batch(seed, batch, sizes)
    z = loc + scale * noise  # rsample: gradients reach loc and scale through z too
    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    priors = [Normal(torch.zeros(e, dtype=loc.dtype), torch.ones(e, dtype=loc.dtype)) for e in sizes]
    log_likelihood = -(z**2).sum(1) * 0.3
    weights = ObjectiveWeights(alpha=0.7, beta=0.1, gamma=4.0, delta=1.3)
    samples = list(z.split(sizes, 1))
    # the generic path with every block checkpointed (memory_elements=0)
    kwargs = dict(block_elements=block_elements, fused=fused, memory_elements=10**12 if fused else 0)
    marginals = log_marginals(posteriors, samples, dataset_size, **kwargs)
    terms = hfvae_objective(log_likelihood, posteriors, priors, samples, dataset_size, weights, **kwargs)
    terms.objective.backward()
    return marginals, terms, loc.grad.clone(), scale.grad.clone()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch, sizes, dataset_size, block_elements", [(9, (3, 5, 1), 50, 40), (16, (4, 4), 16, 10**6), (2, (2,), 7, 1)])
def test_fused_gaussian_path_equals_generic_path(seed, batch, sizes, dataset_size, block_elements):
    fused = terms_and_gradients(True, seed, batch, list(sizes), dataset_size, block_elements)
    generic = terms_and_gradients(False, seed, batch, list(sizes), dataset_size, block_elements)
    for name in ("log_q_variable", "log_q_group", "log_q_joint"):
        torch.testing.assert_close(getattr(fused[0], name), getattr(generic[0], name), rtol=0, atol=1e-12)
    for name in ("objective", "mutual_information", "tc_between", "tc_within", "dimwise_kl", "elbo"):
        torch.testing.assert_close(getattr(fused[1], name), getattr(generic[1], name), rtol=0, atol=1e-11)
    torch.testing.assert_close(fused[2], generic[2], rtol=0, atol=1e-10)  # d objective / d loc
    torch.testing.assert_close(fused[3], generic[3], rtol=0, atol=1e-10)  # d objective / d scale


def test_fused_path_matches_float64_loop_with_narrow_float32_posteriors():
    # objective.md: with narrow posteriors, expanding the square into matrix products in
    # float32 loses whole nats; the element-wise fused path must not.
    batch, sizes, dataset_size = 12, [3, 2], 500
    generator = torch.Generator().manual_seed(5)
    loc64 = torch.randn(batch, 5, dtype=torch.float64, generator=generator) * 20
    scale64 = torch.full((batch, 5), 1e-3, dtype=torch.float64)
    z64 = loc64 + scale64 * torch.randn(batch, 5, dtype=torch.float64, generator=generator)
    loc, scale, z = loc64.float(), scale64.float(), z64.float()
    marginals = log_marginals([Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))], list(z.split(sizes, 1)), dataset_size)
    # reference: the stratified estimator written out in float64 from the float32 inputs
    L, S, Z = (t.double().numpy() for t in (loc, scale, z))
    log_w = np.full((batch, batch), np.log((dataset_size - 1) / (dataset_size * (batch - 1))))
    np.fill_diagonal(log_w, -np.log(dataset_size))
    pairwise = np.array([[norm.logpdf(Z[b], L[c], S[c]) for c in range(batch)] for b in range(batch)])
    expected_joint = logsumexp(pairwise.sum(-1) + log_w, axis=1)
    expected_variable = logsumexp(pairwise + log_w[..., None], axis=1)
    np.testing.assert_allclose(marginals.log_q_joint.double().numpy(), expected_joint, atol=2e-2)
    np.testing.assert_allclose(marginals.log_q_variable.double().numpy(), expected_variable, atol=2e-2)


def test_fused_path_handles_a_large_batch_in_bounded_blocks():
    batch, sizes = 512, [25, 25]
    loc, scale, noise = gaussian_batch(3, batch, sizes, dtype=torch.float32)
    z = loc + scale * noise
    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    blocked = log_marginals(posteriors, list(z.split(sizes, 1)), 10_000, block_elements=2**16)
    whole = log_marginals(posteriors, list(z.split(sizes, 1)), 10_000, block_elements=2**30)
    torch.testing.assert_close(blocked.log_q_joint, whole.log_q_joint)
    torch.testing.assert_close(blocked.log_q_variable, whole.log_q_variable)
