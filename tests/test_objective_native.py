"""The native (C++) Gaussian kernels against explicit float64 loops, and their fallbacks.

The kernels are built on first use (about 35 s once per machine, then cached); where no C++
compiler is found the tests that run them skip and say so, and the fallback tests still run.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from torch.distributions import Normal

from topicvae.objective import native
from topicvae.objective.marginals import log_marginals, training_kernels
from topicvae.objective.terms import ObjectiveWeights, hfvae_objective


@pytest.fixture(scope="module")
def built():
    module = native.native_module()
    if module is None:
        reason = native._NATIVE.failure or f"{native.NATIVE_ENVIRONMENT_VARIABLE}=0"
        pytest.skip(f"the native kernels cannot be built on this machine ({reason}); their fallback is tested below")
    return module


def posteriors_of(loc, scale, sizes):
    return [Normal(l, s) for l, s in zip(loc.split(sizes, 1), scale.split(sizes, 1))]


def loop_marginals(z, loc, scale, sizes, dataset_size, offset=0):
    """The stratified estimator written out item by item in float64 (objective.md, identity 2)."""
    Z, L, S = (t.detach().double().numpy() for t in (z, loc, scale))
    rows, batch = Z.shape[0], L.shape[0]
    starts = np.cumsum([0, *sizes])
    variable = np.empty((rows, Z.shape[1]))
    group = np.empty((rows, len(sizes)))
    joint = np.empty(rows)
    for b in range(rows):
        log_w = np.full(batch, np.log((dataset_size - 1) / (dataset_size * (batch - 1))) if batch > 1 else -np.inf)
        log_w[offset + b] = -np.log(dataset_size)
        pairwise = np.array([norm.logpdf(Z[b], L[c], S[c]) for c in range(batch)])  # [B, V]
        variable[b] = logsumexp(pairwise + log_w[:, None], axis=0)
        for d in range(len(sizes)):
            group[b, d] = logsumexp(pairwise[:, starts[d]:starts[d + 1]].sum(1) + log_w)
        joint[b] = logsumexp(pairwise.sum(1) + log_w)
    return variable, group, joint


def weighted_gradients(z, loc, scale, sizes, dataset_size, kernels, offset=0, dtype=torch.float32):
    """log q^ values and d/dz, d/dloc, d/dscale of a weighting of all three (each output counts)."""
    z, loc, scale = (t.detach().to(dtype).requires_grad_() for t in (z, loc, scale))
    rows = z.shape[0]
    local = posteriors_of(loc[offset:offset + rows], scale[offset:offset + rows], sizes)
    marginals = log_marginals(local, list(z.split(sizes, 1)), dataset_size, kernels=kernels,
                              batch_posteriors=posteriors_of(loc, scale, sizes), batch_offset=offset)
    weights = torch.linspace(-1.0, 2.0, z.shape[1], dtype=dtype)
    value = ((marginals.log_q_variable * weights).sum() - 1.7 * marginals.log_q_group[:, -1].sum()
             + 0.4 * marginals.log_q_group.sum() + 0.9 * marginals.log_q_joint.sum())
    value.backward()
    return marginals, (z.grad, loc.grad, scale.grad)


def problem(seed, batch, sizes, scale_range=(0.2, 1.2)):
    generator = torch.Generator().manual_seed(seed)
    width = sum(sizes)
    loc = torch.randn(batch, width, dtype=torch.float64, generator=generator)
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * torch.rand(batch, width, dtype=torch.float64, generator=generator)
    z = loc + scale * torch.randn(batch, width, dtype=torch.float64, generator=generator)
    return z.float().double(), loc.float().double(), scale.float().double()  # float32-representable inputs


# (batch, sizes, data-set size): tails of the C++ row tiles (4) and column chunks (256),
# one group, uneven groups, a batch of one (no off-diagonal item)
CASES = [(9, (3, 5, 1), 50), (70, (25, 25), 11314), (263, (7,), 1000), (1, (2, 3), 10)]


@pytest.mark.parametrize("batch, sizes, dataset_size", CASES)
def test_native_marginals_equal_float64_loops(built, batch, sizes, dataset_size):
    z, loc, scale = problem(batch, batch, list(sizes))
    marginals, _ = weighted_gradients(z, loc, scale, list(sizes), dataset_size, "native")
    expected = loop_marginals(z, loc, scale, sizes, dataset_size)
    for got, reference in zip((marginals.log_q_variable, marginals.log_q_group, marginals.log_q_joint), expected):
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.detach().double().numpy(), reference, rtol=2e-6, atol=2e-5)


@pytest.mark.parametrize("batch, sizes, dataset_size", CASES)
def test_native_gradients_equal_float64_autograd(built, batch, sizes, dataset_size):
    # The float64 eager kernels are themselves checked against autograd through the whole
    # [B, B, variables] tensor (test_objective_fused.py); here float32 native against them.
    z, loc, scale = problem(batch + 1, batch, list(sizes))
    _, expected = weighted_gradients(z, loc, scale, list(sizes), dataset_size, "eager", dtype=torch.float64)
    _, got = weighted_gradients(z, loc, scale, list(sizes), dataset_size, "native")
    for name, g, e in zip(("z", "loc", "scale"), got, expected):
        assert ((g.double() - e).abs().max() / e.abs().max()).item() < 2e-6, name


def test_native_kernels_take_a_process_share_of_the_batch(built):
    # data-parallel training: rows are items 40..69 of a batch of 100, columns the whole batch
    sizes, batch, offset, rows = [6, 4], 100, 40, 30
    z, loc, scale = problem(3, batch, sizes)
    z = z[offset:offset + rows]
    marginals, got = weighted_gradients(z, loc, scale, sizes, 5000, "native", offset=offset)
    expected = loop_marginals(z, loc, scale, sizes, 5000, offset=offset)
    np.testing.assert_allclose(marginals.log_q_joint.detach().double().numpy(), expected[2], rtol=2e-6, atol=2e-5)
    np.testing.assert_allclose(marginals.log_q_variable.detach().double().numpy(), expected[0], rtol=2e-6, atol=2e-5)
    _, reference = weighted_gradients(z, loc, scale, sizes, 5000, "eager", offset=offset, dtype=torch.float64)
    for g, e in zip(got, reference):
        assert ((g.double() - e).abs().max() / e.abs().max()).item() < 2e-6


def test_a_term_far_above_the_diagonal_one_is_summed_exactly(built):
    # The forward pass shifts each log-sum-exp by the row's own term; here item 0's posterior is
    # wide (its own joint term near -160 nats) and item 1's narrow one sits on z^0 (near -12):
    # z^0's joint term under item 1 is some 150 nats above its own, past the kernel's cap of 60,
    # so the row is summed again, shifted by the maximum. The separated, narrow rest puts most
    # other terms below the floor of e^-60.
    sizes, batch = [25, 25], 16
    z, loc, scale = problem(9, batch, sizes, scale_range=(0.02, 0.1))
    loc = loc * 4
    scale[0] = 10.0
    loc[1] = z[0] = loc[0]
    scale[1] = 0.5
    z[1:] = loc[1:] + scale[1:] * 0.3
    marginals, got = weighted_gradients(z, loc, scale, sizes, 1000, "native")
    expected = loop_marginals(z, loc, scale, sizes, 1000)
    pairwise_gap = (norm.logpdf(z[0].numpy(), loc[1].numpy(), scale[1].numpy()).sum()
                    - norm.logpdf(z[0].numpy(), loc[0].numpy(), scale[0].numpy()).sum())
    assert pairwise_gap > 100
    for g, reference in zip((marginals.log_q_variable, marginals.log_q_group, marginals.log_q_joint), expected):
        np.testing.assert_allclose(g.detach().double().numpy(), reference, rtol=2e-6, atol=5e-5)
    _, reference = weighted_gradients(z, loc, scale, sizes, 1000, "eager", dtype=torch.float64)
    for g, e in zip(got, reference):  # float32 itself: the eager float32 kernels are off by 8.9e-6 here too
        assert ((g.double() - e).abs().max() / e.abs().max()).item() < 2e-5


@pytest.mark.parametrize("gap", [55.0, 59.5, 60.5, 90.0])
def test_terms_near_the_cap_above_the_diagonal_one_are_summed_exactly(built, gap):
    # One variable, a batch of two, N = 2 (both weights 1/2): row 0's own term is
    # log N(0 | d, 1) and its other one log N(0 | 0, 1), which lies d^2 / 2 = gap nats above.
    # The first pass, shifted by the row's own term, sums e^gap, capped at e^60: up to 60 nats
    # the sum stands, and above them the row is summed again, shifted by the maximum.
    d = math.sqrt(2 * gap)
    z = torch.tensor([[0.0], [0.5]], dtype=torch.float64)
    loc = torch.tensor([[d], [0.0]], dtype=torch.float64)
    scale = torch.ones(2, 1, dtype=torch.float64)
    marginals, got = weighted_gradients(z, loc, scale, [1], 2, "native")
    expected = loop_marginals(z, loc, scale, [1], 2)
    for g, reference in zip((marginals.log_q_variable, marginals.log_q_group, marginals.log_q_joint), expected):
        np.testing.assert_allclose(g.detach().double().numpy(), reference, rtol=2e-6, atol=2e-5)
    _, reference = weighted_gradients(z, loc, scale, [1], 2, "eager", dtype=torch.float64)
    for g, e in zip(got, reference):
        assert ((g.double() - e).abs().max() / e.abs().max()).item() < 2e-6


def test_native_objective_terms_equal_the_eager_ones(built):
    sizes, batch, dataset_size = [25, 25], 200, 11314
    z, loc, scale = (t.float() for t in problem(5, batch, sizes))
    weights = ObjectiveWeights(alpha=1.0, beta=0.1, gamma=4.0, delta=1.0)

    def terms(kernels):
        l, s = loc.clone().requires_grad_(), scale.clone().requires_grad_()
        sample = l + s * (z - loc) / scale
        priors = [Normal(torch.zeros(e), torch.ones(e)) for e in sizes]
        result = hfvae_objective(-(sample**2).sum(1), posteriors_of(l, s, sizes), priors, list(sample.split(sizes, 1)),
                                 dataset_size, weights, kernels=kernels)
        result.objective.backward()
        return result, l.grad, s.grad

    eager, native_terms = terms("eager"), terms("native")
    for name in ("objective", "mutual_information", "tc_between", "tc_within", "dimwise_kl"):
        torch.testing.assert_close(getattr(native_terms[0], name), getattr(eager[0], name), rtol=1e-5, atol=1e-4)
    for g, e in zip(native_terms[1:], eager[1:]):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


def test_native_kernels_give_the_same_bits_every_call(built):
    sizes = [25, 25]
    z, loc, scale = problem(6, 300, sizes)
    first = weighted_gradients(z, loc, scale, sizes, 11314, "native")
    again = weighted_gradients(z, loc, scale, sizes, 11314, "native")
    assert torch.equal(first[0].log_q_joint, again[0].log_q_joint)
    for a, b in zip(first[1], again[1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch, width, scales", [(1, 500, (1e-3, 2e-3)), (64, 200, (0.2, 1.2))])
def test_group_and_joint_gradients_keep_float32_accuracy_with_many_variables(built, batch, width, scales):
    # The backward's softmax weights exp(sum - log q^) must see bit for bit the group sums the
    # forward's log q^ came from: a sum of hundreds of nats rounded differently in each pass
    # (as -ffast-math did to inlined copies) put a relative 7e-4 into these gradients, against
    # 1e-7 for the eager float32 kernels. Found in review; one summing function now serves both.
    generator = torch.Generator().manual_seed(1)
    loc = torch.randn(batch, width, generator=generator)
    scale = scales[0] + (scales[1] - scales[0]) * torch.rand(batch, width, generator=generator)
    z = loc + scale * torch.randn(batch, width, generator=generator)

    def joint_gradient(kernels, dtype):
        sample = z.to(dtype).requires_grad_()
        marginals = log_marginals([Normal(loc.to(dtype), scale.to(dtype))], [sample], 1000, kernels=kernels)
        marginals.log_q_joint.sum().backward()
        return sample.grad.double()

    reference = joint_gradient("eager", torch.float64)
    error = ((joint_gradient("native", torch.float32) - reference).abs().max() / reference.abs().max()).item()
    assert error < 1e-6


@pytest.mark.parametrize("why", ["a scale of 1e-20", "a subnormal scale"])
def test_scales_that_would_overflow_a_standardized_distance_run_eagerly(why):
    sizes = [2, 1]
    z, loc, scale = problem(4, 6, sizes)
    scale[2, 1] = 1e-20 if why == "a scale of 1e-20" else 1e-39
    assert not native.native_kernels_applicable(z.float(), loc.float(), scale.float())
    got = weighted_gradients(z, loc, scale, sizes, 50, "native")
    expected = weighted_gradients(z, loc, scale, sizes, 50, "eager")
    assert torch.equal(got[0].log_q_joint.nan_to_num(), expected[0].log_q_joint.nan_to_num())
    for g, e in zip(got[1], expected[1]):
        assert torch.equal(g.nan_to_num(), e.nan_to_num())


@pytest.mark.parametrize("why", ["float64", "an infinite location"])
def test_inputs_the_native_kernels_do_not_take_run_eagerly(why):
    # nothing is built or run: the eager kernels' own results, bit for bit
    sizes = [2, 1]
    z, loc, scale = problem(4, 6, sizes)
    dtype = torch.float64 if why == "float64" else torch.float32
    if why == "an infinite location":
        loc[1, 0] = math.inf
    got = weighted_gradients(z, loc, scale, sizes, 50, "native", dtype=dtype)
    expected = weighted_gradients(z, loc, scale, sizes, 50, "eager", dtype=dtype)
    assert torch.equal(got[0].log_q_joint, expected[0].log_q_joint)
    for g, e in zip(got[1], expected[1]):
        assert torch.equal(g.nan_to_num(), e.nan_to_num())


def test_a_failing_build_warns_once_and_runs_the_eager_kernels(monkeypatch):
    failing = native._NativeKernels()

    def no_compiler():
        raise RuntimeError("Error building extension: g++: not found\nmore")

    monkeypatch.setattr(failing, "_build", no_compiler)
    monkeypatch.setattr(native, "_NATIVE", failing)
    monkeypatch.delenv(native.NATIVE_ENVIRONMENT_VARIABLE, raising=False)
    sizes = [2, 2]
    z, loc, scale = problem(1, 10, sizes)
    with pytest.warns(RuntimeWarning, match=r"native HFVAE kernels could not be built \(RuntimeError: Error building extension: "
                                            r"g\+\+: not found\); .* TOPICVAE_NATIVE=0"):
        fallback = weighted_gradients(z, loc, scale, sizes, 40, "native")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once, not at every step
        weighted_gradients(z, loc, scale, sizes, 40, "native")
    eager = weighted_gradients(z, loc, scale, sizes, 40, "eager")
    assert torch.equal(fallback[0].log_q_joint, eager[0].log_q_joint)
    assert all(torch.equal(f, e) for f, e in zip(fallback[1], eager[1]))


def test_an_unknown_kernel_name_is_refused():
    z, loc, scale = (t.float() for t in problem(0, 4, [2]))
    with pytest.raises(ValueError, match=r"kernels='fast' is unknown: choose one of 'eager', 'compiled', 'native'"):
        log_marginals(posteriors_of(loc, scale, [2]), [z], 10, kernels="fast")


def test_training_takes_the_native_kernels_for_long_runs_on_a_cpu(monkeypatch):
    import topicvae.objective.marginals as marginals

    monkeypatch.delenv("TOPICVAE_COMPILE", raising=False)
    monkeypatch.delenv(native.NATIVE_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(marginals, "native_kernels_available", lambda: True)  # the choice, not the build
    monkeypatch.setattr(marginals, "compiled_kernels_available", lambda: True)
    loc = torch.zeros(200, 50)
    big = [Normal(loc, torch.ones_like(loc))], [loc]
    assert training_kernels(*big, steps=55 * 100) == "native"
    assert training_kernels(*big, steps=55 * 5) == "eager"  # too short to win back a build
    as_float64 = [Normal(loc.double(), torch.ones_like(loc).double())], [loc.double()]
    assert training_kernels(*as_float64, steps=55 * 100) == "compiled"  # the native kernels are float32 only
    monkeypatch.setattr(marginals, "native_kernels_available", lambda: False)  # a failed build, or TOPICVAE_NATIVE=0
    assert training_kernels(*big, steps=55 * 100) == "compiled"
    monkeypatch.setattr(marginals, "compiled_kernels_available", lambda: False)
    assert training_kernels(*big, steps=55 * 100) == "eager"


def test_the_switch_turns_the_build_off(monkeypatch):
    monkeypatch.setattr(native, "_NATIVE", native._NativeKernels())
    monkeypatch.setenv(native.NATIVE_ENVIRONMENT_VARIABLE, "0")
    assert native.native_module() is None and not native.native_kernels_available()


def test_the_switch_wins_over_kernels_built_earlier_in_the_process(built, monkeypatch):
    # TOPICVAE_NATIVE=0 set after a build (a test, a notebook) must still rule the kernels out
    monkeypatch.setenv(native.NATIVE_ENVIRONMENT_VARIABLE, "0")
    assert native.native_module() is None
    z, loc, scale = (t.float() for t in problem(2, 8, [3]))
    got = log_marginals(posteriors_of(loc, scale, [3]), [z], 20, kernels="native")
    expected = log_marginals(posteriors_of(loc, scale, [3]), [z], 20, kernels="eager")
    assert torch.equal(got.log_q_joint, expected.log_q_joint)
