"""The fused Gaussian path of the estimator equals the generic autograd path (values and gradients)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from torch.distributions import Normal, RelaxedOneHotCategorical

from topicvae.objective.terms import ObjectiveWeights, hfvae_objective
from topicvae.objective.marginals import log_marginals


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


@pytest.mark.parametrize("fused", [True, False])
def test_separated_posteriors_give_the_unfloored_estimates_and_gradients(fused):
    # Narrow, distant posteriors put most pairs' terms hundreds of nats below the largest:
    # the floor of the exps (kernels.EXP_FLOOR) engages for most entries and must change
    # nothing against torch.logsumexp's estimates and autograd's gradients, in float64.
    from topicvae.objective.kernels import EXP_FLOOR, stratified_log_weight_values

    batch, sizes, dataset_size = 24, [3, 4], 300
    generator = torch.Generator().manual_seed(11)
    loc = (torch.randn(batch, 7, dtype=torch.float64, generator=generator) * 3).requires_grad_()
    scale = (torch.rand(batch, 7, dtype=torch.float64, generator=generator) * 0.05 + 0.02).requires_grad_()
    z = loc + scale * torch.randn(batch, 7, dtype=torch.float64, generator=generator)
    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    marginals = log_marginals(posteriors, list(z.split(sizes, 1)), dataset_size, fused=fused, memory_elements=10**12)
    combine = lambda v, g, j: 0.3 * v.sum() - 1.7 * g.sum() + 0.9 * j.sum()  # noqa: E731
    grads = torch.autograd.grad(
        combine(marginals.log_q_variable, marginals.log_q_group, marginals.log_q_joint), (loc, scale), retain_graph=True
    )
    # reference: the whole [B, B, variables] tensor through torch.logsumexp, differentiated by autograd
    pairwise = Normal(loc.unsqueeze(0), scale.unsqueeze(0)).log_prob(z.unsqueeze(1))
    on_diagonal, off_diagonal = stratified_log_weight_values(batch, dataset_size)
    log_w = torch.full((batch, batch), off_diagonal, dtype=torch.float64).fill_diagonal_(on_diagonal)
    variable = torch.logsumexp(pairwise + log_w.unsqueeze(-1), 1)
    grouped = torch.stack([part.sum(-1) for part in pairwise.split(sizes, -1)], -1)
    group = torch.logsumexp(grouped + log_w.unsqueeze(-1), 1)
    joint = torch.logsumexp(pairwise.sum(-1) + log_w, 1)
    expected_grads = torch.autograd.grad(combine(variable, group, joint), (loc, scale))
    assert ((pairwise + log_w.unsqueeze(-1) - variable.unsqueeze(1)) < EXP_FLOOR).double().mean() > 0.5  # the floor engages
    torch.testing.assert_close(marginals.log_q_variable, variable, rtol=0, atol=1e-12)
    torch.testing.assert_close(marginals.log_q_group, group, rtol=0, atol=1e-12)
    torch.testing.assert_close(marginals.log_q_joint, joint, rtol=0, atol=1e-12)
    for got, expected in zip(grads, expected_grads):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)


def test_log_sum_exp_equals_torch_logsumexp_including_empty_slices():
    from topicvae.objective.kernels import log_sum_exp

    values = torch.randn(6, 40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 200
    values[0, :, 1] = -torch.inf  # a slice of -inf only: -inf, as torch's
    values[1, 5, 2] = torch.inf
    expected = torch.logsumexp(values, dim=1)
    got = log_sum_exp(values, dim=1)
    assert got[0, 1] == -torch.inf and got[1, 2] == torch.inf
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite], rtol=0, atol=1e-12)


def test_fused_path_handles_a_large_batch_in_bounded_blocks():
    batch, sizes = 512, [25, 25]
    loc, scale, noise = gaussian_batch(3, batch, sizes, dtype=torch.float32)
    z = loc + scale * noise
    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    blocked = log_marginals(posteriors, list(z.split(sizes, 1)), 10_000, block_elements=2**16)
    whole = log_marginals(posteriors, list(z.split(sizes, 1)), 10_000, block_elements=2**30)
    torch.testing.assert_close(blocked.log_q_joint, whole.log_q_joint)
    torch.testing.assert_close(blocked.log_q_variable, whole.log_q_variable)


# ---------------------------------------------------------------------------------------------
# Compiled kernels (torch.compile) and the choice to use them
# ---------------------------------------------------------------------------------------------
def marginals_and_gradients(loc, scale, noise, sizes, dataset_size, *, kernels, block_elements=10**6):
    loc, scale = loc.detach().requires_grad_(), scale.detach().requires_grad_()
    z = loc + scale * noise
    posteriors = [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    marginals = log_marginals(posteriors, list(z.split(sizes, 1)), dataset_size, kernels=kernels, block_elements=block_elements)
    # an arbitrary weighting of the three outputs, so that each one's gradient counts
    (0.3 * marginals.log_q_variable.sum() - 1.7 * marginals.log_q_group.sum() + 0.9 * marginals.log_q_joint.sum()).backward()
    return marginals, loc.grad, scale.grad


def test_compiled_kernels_equal_eager_kernels():
    sizes, dataset_size = [3, 5], 300
    loc, scale, noise = gaussian_batch(4, 24, sizes)
    # two blocks of 17 and 7 rows: the compiled kernels serve blocks of different sizes
    eager = marginals_and_gradients(loc, scale, noise, sizes, dataset_size, kernels="eager", block_elements=17 * 24 * 8)
    compiled = marginals_and_gradients(loc, scale, noise, sizes, dataset_size, kernels="compiled", block_elements=17 * 24 * 8)
    for name in ("log_q_variable", "log_q_group", "log_q_joint"):
        torch.testing.assert_close(getattr(compiled[0], name), getattr(eager[0], name), rtol=0, atol=1e-10)
    torch.testing.assert_close(compiled[1], eager[1], rtol=0, atol=1e-9)
    torch.testing.assert_close(compiled[2], eager[2], rtol=0, atol=1e-9)


def test_a_failing_compiler_warns_once_and_falls_back_to_eager_kernels(monkeypatch):
    import topicvae.objective.kernels as objective

    def broken_compile(function, **_):
        def raises(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nsecond line")
        return raises

    monkeypatch.setattr(objective, "_COMPILED_KERNELS", objective._CompiledKernels())
    monkeypatch.setattr(torch, "compile", broken_compile)
    sizes = [2, 2]
    loc, scale, noise = gaussian_batch(1, 10, sizes)
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler found\); .* TOPICVAE_COMPILE=0"):
        fallback = marginals_and_gradients(loc, scale, noise, sizes, 40, kernels="compiled")
    assert not objective._COMPILED_KERNELS.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is reported once, not at every step
        marginals_and_gradients(loc, scale, noise, sizes, 40, kernels="compiled")
    eager = marginals_and_gradients(loc, scale, noise, sizes, 40, kernels="eager")
    torch.testing.assert_close(fallback[0].log_q_joint, eager[0].log_q_joint, rtol=0, atol=0)
    torch.testing.assert_close(fallback[1], eager[1], rtol=0, atol=0)


def test_training_compiles_only_large_long_runs(monkeypatch):
    import topicvae.objective.kernels as kernels
    import topicvae.objective.marginals as objective

    monkeypatch.setattr(kernels, "_COMPILED_KERNELS", kernels._CompiledKernels())
    monkeypatch.delenv("TOPICVAE_COMPILE", raising=False)

    def gaussian(batch, width=50):
        loc = torch.zeros(batch, width)
        return [Normal(loc, torch.ones_like(loc))], [loc]

    big, small = gaussian(200), gaussian(100)  # 2.0e6 and 5.0e5 pairwise elements per step
    assert objective.worth_compiling(*big, steps=55 * 100)  # 100 epochs of 20 Newsgroups at B = 200
    assert not objective.worth_compiling(*big, steps=55 * 5)  # 5 epochs would not win back the compile time
    assert not objective.worth_compiling(*small, steps=10**6)  # too small a step to gain
    # a process holding 100 items of a batch of 200 (data-parallel): 1.0e6 elements per step
    assert objective.worth_compiling(*small, steps=55 * 100, batch_items=200)
    concrete = [RelaxedOneHotCategorical(torch.tensor(0.5), logits=torch.zeros(200, 10))]
    assert not objective.worth_compiling(concrete, [concrete[0].rsample()], steps=10**6)  # no fused kernel to compile
    monkeypatch.setenv("TOPICVAE_COMPILE", "1")
    assert objective.worth_compiling(*small, steps=1)
    monkeypatch.setenv("TOPICVAE_COMPILE", "0")
    assert not objective.worth_compiling(*big, steps=10**6)


@pytest.mark.parametrize("weights", [ObjectiveWeights(), ObjectiveWeights(alpha=4.0, beta=4.0, gamma=4.0, delta=4.0)])
def test_equal_weights_give_the_gradient_of_the_elbo(weights):
    # With alpha = beta = gamma = delta the marginals cancel out of the objective, and the
    # estimator skips their backward pass: the gradient must still be that of
    # LL - weight * (log q(z|x) - log p(z)), and the reported terms must be unchanged.
    sizes, dataset_size = [3, 4], 60
    loc, scale, noise = gaussian_batch(7, 20, sizes)

    def objective_and_gradients(use_estimator):
        l, s = loc.detach().requires_grad_(), scale.detach().requires_grad_()
        z = l + s * noise
        posteriors = [Normal(a, b) for a, b in zip(l.split(sizes, 1), s.split(sizes, 1))]
        priors = [Normal(torch.zeros(e, dtype=l.dtype), torch.ones(e, dtype=l.dtype)) for e in sizes]
        log_likelihood = -(z**2).sum(1) * 0.3
        if use_estimator:
            terms = hfvae_objective(log_likelihood, posteriors, priors, list(z.split(sizes, 1)), dataset_size, weights)
            value = terms.objective
        else:
            log_q = Normal(l, s).log_prob(z).sum(1)
            log_p = Normal(torch.zeros_like(l), torch.ones_like(s)).log_prob(z).sum(1)
            value = (log_likelihood - weights.alpha * (log_q - log_p)).mean()
        value.backward()
        return value.detach(), l.grad, s.grad

    estimated, direct = objective_and_gradients(True), objective_and_gradients(False)
    for got, expected in zip(estimated, direct):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def marginal_gradients(loc, scale, z, sizes, dataset_size, fused):
    """d/dloc and d/dscale of an objective weighing the three log-marginals differently."""
    loc, scale = loc.clone().requires_grad_(), scale.clone().requires_grad_()
    posteriors = [Normal(l, s, validate_args=False) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]
    marginals = log_marginals(posteriors, list(z.split(sizes, 1)), dataset_size, fused=fused)
    (marginals.log_q_variable.sum() + 0.7 * marginals.log_q_group.sum() - 3.1 * marginals.log_q_joint.sum()).backward()
    return loc.grad, scale.grad


@pytest.mark.parametrize("distance", [10.0, 100.0, 1000.0])
def test_float32_gradients_keep_float32_accuracy_far_from_every_mean(distance):
    # Far from every mean the log densities reach -10^3 to -10^7 nats. The softmax weights of
    # the backward pass must come from the same sums, in the same dtype, as the log-sum-exps they
    # are divided by: otherwise each weight is off by e^(rounding of |log q^|), a relative 2e-3
    # at 10^5 nats in float32 (a rejected variant of the kernels, docs/benchmarks.md, did that).
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(6, 4, generator=generator)
    scale = torch.full((6, 4), 0.5)
    z = loc + distance
    expected = marginal_gradients(loc.double(), scale.double(), z.double(), [2, 2], 100, fused=False)
    for got, reference in zip(marginal_gradients(loc, scale, z, [2, 2], 100, fused=True), expected):
        assert ((got.double() - reference).abs().max() / reference.abs().max()).item() < 1e-5


def test_an_infinite_location_spoils_no_more_gradients_than_the_generic_path():
    generator = torch.Generator().manual_seed(4)
    loc = torch.randn(4, 3, generator=generator)
    scale = torch.full((4, 3), 0.5)
    z = loc + 0.5 * torch.randn(4, 3, generator=generator)
    loc[1, 0] = math.inf
    for fused, generic in zip(marginal_gradients(loc, scale, z, [2, 1], 50, fused=True),
                              marginal_gradients(loc, scale, z, [2, 1], 50, fused=False)):
        assert torch.equal(torch.isfinite(fused), torch.isfinite(generic))
        assert torch.isfinite(fused).sum() >= fused.numel() - 1
